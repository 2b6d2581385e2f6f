"""The complete lock: what this environment runs is what constraints.txt pins."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
# The virtual environment's own installer tools, not the project's dependencies.
BOOTSTRAP = {"pip", "setuptools", "wheel", "bsopt"}


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line)
        assert match, f"constraints.txt: {line!r} is not a pin (name==version)"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_every_installed_distribution_is_pinned_at_its_version() -> None:
    pins = _pins()
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()
    }
    unpinned = sorted(set(installed) - set(pins) - BOOTSTRAP)
    assert not unpinned, (
        f"installed but not in constraints.txt: {unpinned}; run scripts/lock.sh to refresh"
    )
    drift = {n: (v, pins[n]) for n, v in installed.items() if n in pins and v != pins[n]}
    assert not drift, f"installed (version, pinned) differ: {drift}; install from the lock"


def test_the_lock_satisfies_the_ranges_users_get() -> None:
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency but constraints.txt does not pin it"
        assert requirement.specifier.contains(pins[name]), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {text!r}"
        )


def test_torch_is_the_local_cpu_wheel() -> None:
    # Any other torch pulls several GB of CUDA packages on a fresh machine.
    if _pins().get("torch", "").split("+")[0] != "2.13.0":
        pytest.fail("constraints.txt must pin torch==2.13.0, the CPU wheel on disk")
