#!/usr/bin/env bash
# All set-up, then the whole test suite (real hls4ml, g++, da4ml, Verilator, Icarus, Yosys, Dask),
# in the project's virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${FXSPLIT_VENV:-.venv}
export VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH"
# Two pytest workers (pytest-xdist), a test file per worker at a time (its module fixtures built once): most
# tests spend long stretches on one core (a g++, Yosys or simulator run, Python start-up), so the second core
# would sit idle in a serial run. FXSPLIT_TEST_WORKERS=0 runs serially.
# As root, setup.sh has installed yosys, iverilog and tclsh: a test that needs one must run, not skip.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then export FXSPLIT_REQUIRE_TOOLS="${FXSPLIT_REQUIRE_TOOLS-yosys iverilog vvp tclsh}"; fi
N=${FXSPLIT_TEST_WORKERS:-2}
XDIST=()
if [ "$N" != 0 ]; then XDIST=(-n "$N" --dist loadfile); fi
exec "$VENV/bin/python" -m pytest -q -ra --durations=15 "${XDIST[@]}" "$@"
