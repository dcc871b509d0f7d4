#!/usr/bin/env bash
# All set-up, then the whole test suite (real hls4ml, g++, da4ml, Verilator, Icarus, Yosys, Dask),
# in the project's virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${FXSPLIT_VENV:-.venv}
export VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH"
exec "$VENV/bin/python" -m pytest -q -ra --durations=15 "$@"
