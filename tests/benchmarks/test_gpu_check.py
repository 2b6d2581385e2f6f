"""benchmarks/gpu_check.py: its table and exit code, its GPU sizing, and its CPU path."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
from pathlib import Path
import subprocess
import sys
from types import ModuleType, SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _load() -> ModuleType:
    # benchmarks/ is not a package: load the script from its file, with its neighbour
    # _common importable while it loads.
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


gc = _load()


def _row(name: str, status: str) -> object:
    return gc.Row(name, status, "1.0x", "goal", "detail")


def test_any_failing_row_makes_the_exit_code_non_zero() -> None:
    assert gc.exit_code([_row("a", gc.PASS), _row("b", gc.SKIP)]) == 0
    assert gc.exit_code([_row("a", gc.PASS), _row("b", gc.FAIL), _row("c", gc.SKIP)]) == 1
    assert gc.exit_code([]) == 0


def test_a_verdict_fails_naming_each_condition_that_did_not_hold() -> None:
    v = gc.Verdict()
    v.need(True, "never shown")
    v.need(False, "samples_seen 10 != 12")
    v.need(False, "trial PRUNED")
    row = v.row("probe", "limit 5", "the detail", cpu_skip=True)
    assert row.status == gc.FAIL  # a failure is never hidden behind a SKIP
    assert row.detail == "samples_seen 10 != 12; trial PRUNED | the detail"

    assert gc.Verdict().row("oom", "-", "ok", cpu_skip=True).status == gc.SKIP
    assert "CUDA not available" in gc.Verdict().row("oom", "-", "ok", cpu_skip=True).detail
    assert gc.Verdict().row("memory", "-", "ok").status == gc.PASS


def test_the_last_line_counts_rows_and_says_when_cuda_is_missing() -> None:
    rows = [_row("a", gc.PASS), _row("b", gc.SKIP), _row("c", gc.SKIP)]
    line = gc.last_line(rows, seconds=12.3, gpu=None)
    assert line.startswith("gpu_check: 1 PASS, 0 FAIL, 2 SKIP in 12 s;")
    assert "CUDA not available" in line
    on_gpu = gc.last_line(rows, seconds=12.3, gpu="NVIDIA H200, 140 GiB")
    assert on_gpu.endswith("on NVIDIA H200, 140 GiB")
    assert "CUDA not available" not in on_gpu


def test_the_table_has_a_header_a_rule_and_one_line_per_row() -> None:
    lines = gc.render([_row("trainer", gc.PASS), _row("nccl", gc.FAIL)]).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(gc.HEADER)
    assert set(lines[1]) == {"|", "-"}
    assert lines[2].startswith("| trainer | PASS")
    assert lines[3].startswith("| nccl    | FAIL")
    assert len({len(line) for line in lines}) == 1


def test_the_memory_hog_is_sized_to_fill_the_free_memory_at_the_target_batch() -> None:
    free = 138 * 10**9  # an H200 with a CUDA context
    width, depth = gc.hog_shape(free, 2**15)
    # 0.9 * 138e9 / 32768 / (4 * 65536) = 14.46 -> 14 per-sample activations -> depth 13.
    assert (width, depth) == (65536, 13)
    share = gc.hog_bytes(width, depth) * 2**15 / free
    assert 0.8 < share < 0.95
    assert gc.hog_shape(10**6, 2**15) == (65536, 2)  # never below two layers


def test_the_memory_hogs_activations_are_what_the_estimate_says() -> None:
    # On the CPU, MemoryBudget counts the inputs and every leaf module's output: the fp32
    # Linear output, depth tanh outputs and the logits.
    import torch

    import bsopt

    model = gc.memory_hog(16, 3)
    budget = bsopt.training.MemoryBudget(1e9, optimizer_states=0)
    with budget.attach(model):
        model(torch.zeros(10, gc.FEATURES))
    static = budget.static_bytes(model)
    activations = budget.last_mb * 2**20 - static
    assert activations == 10 * (4 * gc.FEATURES + gc.hog_bytes(16, 3) + 4 * 4)


def test_most_at_once_counts_overlapping_trials() -> None:
    t0 = dt.datetime(2026, 1, 1)

    def trial(start: float, end: float) -> SimpleNamespace:
        return SimpleNamespace(
            datetime_start=t0 + dt.timedelta(seconds=start),
            datetime_complete=t0 + dt.timedelta(seconds=end),
        )

    assert gc.most_at_once([trial(0, 1), trial(1, 2), trial(2, 3)]) == 1  # back to back
    assert gc.most_at_once([trial(0, 2), trial(1, 3), trial(4, 5)]) == 2
    assert gc.most_at_once([]) == 0


def test_a_check_past_its_time_limit_is_stopped_and_fails(tmp_path: Path) -> None:
    # Importing torch alone takes longer than 2 s, so the child cannot finish in time.
    row = gc.run_in_child(gc.CHECKS["memory"], tmp_path / "memory", quick=True, limit=2.0)
    assert row.status == gc.FAIL
    assert "stopped at its time limit of 2 s" in row.detail
    assert row.goal == gc.CHECKS["memory"].goal
    assert gc.exit_code([row]) == 1


@pytest.mark.slow
def test_the_cpu_path_runs_and_says_cuda_is_not_available(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this test checks the CPU path")
    out = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "BSOPT_STORAGE"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--only", "probe", "--only", "oom"]
    done = subprocess.run(
        [*cmd, "--json", str(out)], capture_output=True, text=True, env=env, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert "CUDA not available" in lines[-1]
    assert lines[-1].startswith("gpu_check: 1 PASS, 0 FAIL, 1 SKIP")
    table = [line for line in lines if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table] == ["check", "probe", "oom"]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["probe"]["status"] == "PASS"
    assert "trained as 2 x 635, samples_seen 1024" in rows["probe"]["detail"]
    assert rows["oom"]["status"] == "SKIP"
    assert "recovered after 3 halvings" in rows["oom"]["detail"]
