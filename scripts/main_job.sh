#!/usr/bin/env bash
# The main job: a zoo model through the open RTL flow, end to end (partition, hls4ml numerics,
# da4ml Verilog, parallel Yosys synthesis, stitched top, self-checking Verilator testbench), with a report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${FXSPLIT_VENV:-.venv}
export VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH"
OUT=${1:-out/jet_tagger}
exec "$VENV/bin/python" -m fxsplit compile models:jet_tagger --flow rtl --precision 'fixed<8,3>' \
  -o "$OUT" --verify 500 --simulator verilator
