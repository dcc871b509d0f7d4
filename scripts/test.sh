#!/usr/bin/env bash
# All set-up, then the whole test suite (real hls4ml, g++, da4ml, Verilator, Icarus, Yosys, Dask).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ${PYTHON:-python3} -m pytest -q -ra --durations=15 "$@"
