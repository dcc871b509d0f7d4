#!/usr/bin/env bash
# The main job: a zoo model through the open RTL flow, end to end (cuts chosen for this machine's cores, hls4ml
# numerics, da4ml Verilog, parallel Yosys synthesis, stitched top, self-checking Verilator testbench), with a report
# and a line comparing the build's time with the uncut build's predicted time on one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${FXSPLIT_VENV:-.venv}
export VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH"
OUT=${1:-out/jet_tagger}
WORKERS=$(nproc)
exec "$VENV/bin/python" -m fxsplit compile models:jet_tagger --flow rtl --precision 'fixed<8,3>' \
  --auto-split "$WORKERS" -j "$WORKERS" -o "$OUT" --verify 500 --simulator verilator
