#!/usr/bin/env bash
# The test command from the README: creates .venv if needed, installs bsopt with its dev
# extras from constraints.txt (the complete lock; scripts/lock.sh makes it), then runs
# ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt -e '.[dev]'
.venv/bin/ruff check bsopt tests studies benchmarks
.venv/bin/mypy bsopt
.venv/bin/python -m pytest "$@"
