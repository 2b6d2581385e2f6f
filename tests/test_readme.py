"""The README's Python examples run as written (in a scratch folder, default storage)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
import re

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    """The complete programs among the README's Python blocks: those that start with
    ``import bsopt`` on a line of its own (the others are sketches around your own code)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if b.startswith("import bsopt\n")]


def test_the_readme_has_the_own_model_examples() -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 3
    joined = "\n".join(blocks)
    for needle in ("suggest=", "loss=", 'metric="roc_auc"', ".retrain(", '{"image":'):
        assert needle in joined


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_example_runs_as_written(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_python_blocks()[index], f"README.md block {index}", "exec"), {})
    printed = out.getvalue()
    assert (tmp_path / "storage" / "bsopt.db").is_file()  # the default storage was used
    if ".retrain(" in _python_blocks()[index]:
        assert printed.rstrip().endswith("True")  # the retrained value equals the stored one
    if '{"image":' in _python_blocks()[index]:
        assert printed.strip() == "1200"
