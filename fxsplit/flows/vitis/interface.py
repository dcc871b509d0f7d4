"""The RTL interface of a partition's Vitis HLS IP, read from the hls4ml pragmas of its top function.

hls4ml's Vitis writer puts the interface in pragmas of the top function (``firmware/<project>.cpp``):

- io_parallel: ``#pragma HLS INTERFACE ap_vld port=a,b`` with ``ARRAY_RESHAPE ... complete`` (one wide port
  ``a``, element 0 in the LSBs, plus ``a_ap_vld``) or ``ARRAY_PARTITION ... complete`` (one port per element,
  ``a_0``, ``a_1``, ..., each with its ``a_<i>_ap_vld``) per argument;
- io_stream: ``#pragma HLS INTERFACE axis port=a,b``: an AXI4-Stream per argument (``a_TDATA``, ``a_TVALID``,
  ``a_TREADY``), one ``nnet::array`` pack of elements per beat, ``TDATA`` rounded up to whole bytes;
- block control ``ap_ctrl_hs`` (Vitis HLS's default): ``ap_clk``, ``ap_rst``, ``ap_start``, ``ap_done``,
  ``ap_idle``, ``ap_ready``.

These are Vitis HLS's naming rules (UG1399, "Port-level interface protocols"; hls4ml's own
``ip_stitcher.tcl`` relies on the same ``layer<N>_out_<i>`` / ``_ap_vld`` / ``_TDATA`` names). What this module
proves is that fxsplit reads the pragmas hls4ml wrote and applies those rules; what Vitis HLS really emits is
only seen where it runs (the ``hls`` job then checks the exported IP's ports against this description).
"""

from __future__ import annotations

import re
from typing import Any

from ...errors import FxsplitError
from ...fixed import layout

_PRAGMA = re.compile(r"#pragma\s+HLS\s+(\w+)\s+(.*)", re.I)
_CONTROL = ["ap_clk", "ap_rst", "ap_start", "ap_done", "ap_idle", "ap_ready"]


def _top_function(text: str, project: str) -> tuple[list[str], str]:
    """Argument names of ``void <project>(...)`` and the body's pragma lines."""
    m = re.search(rf"\bvoid\s+{re.escape(project)}\s*\((.*?)\)\s*\{{(.*?)\n\}}", text, re.S)
    if m is None:
        raise FxsplitError(f"no top function {project}(...) in the generated firmware/{project}.cpp")
    args = []
    for a in m.group(1).split(","):
        name = re.search(r"(\w+)\s*(?:\[[^\]]*\])?\s*$", a.strip())
        if name:
            args.append(name.group(1))
    return args, m.group(2)


def read_interface(cpp_text: str, project: str, io_type: str, inputs: list[dict], outputs: list[dict]) -> dict:
    """The IP's RTL ports, as Vitis HLS names them, for the top function's arguments.

    ``inputs``/``outputs``: per argument, in order, ``{"port": fxsplit port name, "precision": hls4ml type,
    "size": elements, "pack": elements per stream beat}``. Returns ``{"control": [...], "inputs": [...],
    "outputs": [...]}``, each argument ``{"port", "arg", "protocol": "ap_vld"|"axis", "pins": [{"name",
    "width", "dir", "role", "elements": [first, count]}]}``."""
    args, body = _top_function(cpp_text, project)
    if len(args) != len(inputs) + len(outputs):
        raise FxsplitError(f"{project}: the top function has {len(args)} arguments, the partition "
                           f"{len(inputs)} inputs and {len(outputs)} outputs")
    protocol: dict[str, str] = {}
    array_mode: dict[str, str] = {}
    for line in body.splitlines():
        m = _PRAGMA.search(line)
        if not m:
            continue
        kind, rest = m.group(1).upper(), m.group(2)
        if kind == "INTERFACE":
            mode = rest.split()[0].lower()
            ports = re.search(r"port=([\w,]+)", rest)
            for p in (ports.group(1).split(",") if ports else []):
                protocol[p] = mode
        elif kind in ("ARRAY_RESHAPE", "ARRAY_PARTITION"):
            var = re.search(r"variable=(\w+)", rest)
            if var and re.search(r"\bcomplete\b", rest):
                array_mode[var.group(1)] = "reshape" if kind == "ARRAY_RESHAPE" else "partition"
    expected = "ap_vld" if io_type == "io_parallel" else "axis"
    out: dict[str, Any] = {"control": list(_CONTROL), "inputs": [], "outputs": []}
    for k, (arg, desc) in enumerate(zip(args, [*inputs, *outputs])):
        direction = "in" if k < len(inputs) else "out"
        if protocol.get(arg) != expected:
            raise FxsplitError(f"{project}: argument {arg!r} has interface {protocol.get(arg)!r} in the pragmas, "
                               f"expected {expected!r} for {io_type}")
        width = layout(desc["precision"]).width
        pins = []
        if expected == "ap_vld":
            mode = array_mode.get(arg)
            if mode == "reshape":
                pins = [{"name": arg, "width": width * desc["size"], "dir": direction, "role": "data",
                         "elements": [0, desc["size"]]},
                        {"name": f"{arg}_ap_vld", "width": 1, "dir": direction, "role": "valid"}]
            elif mode == "partition":
                for i in range(desc["size"]):
                    pins += [{"name": f"{arg}_{i}", "width": width, "dir": direction, "role": "data",
                              "elements": [i, 1]},
                             {"name": f"{arg}_{i}_ap_vld", "width": 1, "dir": direction, "role": "valid"}]
            else:
                raise FxsplitError(f"{project}: argument {arg!r} is neither reshaped nor partitioned completely")
        else:
            tdata = -(-width * desc["pack"] // 8) * 8
            pins = [{"name": f"{arg}_TDATA", "width": tdata, "dir": direction, "role": "data",
                     "elements": [0, desc["pack"]], "beats": desc["size"] // desc["pack"]},
                    {"name": f"{arg}_TVALID", "width": 1, "dir": direction, "role": "valid"},
                    {"name": f"{arg}_TREADY", "width": 1, "dir": "out" if direction == "in" else "in",
                     "role": "ready"}]
        out["inputs" if direction == "in" else "outputs"].append(
            {"port": desc["port"], "arg": arg, "protocol": expected, "element_width": width, "pins": pins})
    return out
