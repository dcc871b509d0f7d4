"""Vitis HLS (and Vivado) synthesis reports of one partition, read with hls4ml's own reader, strictly.

``hls4ml.report.parse_vivado_report`` reads ``<project>/<name>_prj/solution*/syn/report/<top>_csynth.xml``
(and ``vivado_synth.rpt`` when Vivado synthesis ran). When something is missing it prints a line and
returns ``None`` or a report without the section; fxsplit does not pass that on as an empty result: a
partition whose synthesis report cannot be read is an error naming the project and what hls4ml said.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from ...errors import FxsplitError

RESOURCES = ("LUT", "FF", "DSP", "BRAM_18K", "URAM")


def _int(v):
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return None


def _float(v):
    try:
        return float(str(v).strip())
    except (TypeError, ValueError):
        return None


def read_hls_report(project_dir: str, partition: str | None = None) -> dict:
    """The C-synthesis figures of a Vitis HLS project (and Vivado's, if it ran there):

    ``{"latency_cycles": {"best", "worst"}, "interval": {"min", "max"}, "clock_ns": {"target", "estimated"},
    "resources": {LUT, FF, DSP, BRAM_18K, URAM}, "available": {...}, "vivado_synth": {...} or None}``."""
    from hls4ml.report import parse_vivado_report
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            rep = parse_vivado_report(project_dir)
    except (IndexError, OSError, KeyError, AttributeError) as e:    # no solution, unreadable XML, ...
        rep, err = None, f"{type(e).__name__}: {e}"
    else:
        err = ""
    where = f"partition {partition!r}: " if partition else ""
    c = (rep or {}).get("CSynthesisReport")
    if not c:
        raise FxsplitError(f"{where}no Vitis HLS synthesis report could be read in {project_dir}",
                           partition=partition,
                           hint="hls4ml's reader said: " + (" ".join(said.getvalue().split()) or err or "nothing")
                                + "; run Vitis HLS C synthesis (csynth) for this project first")
    out = {"latency_cycles": {"best": _int(c.get("BestLatency")), "worst": _int(c.get("WorstLatency"))},
           "interval": {"min": _int(c.get("IntervalMin")), "max": _int(c.get("IntervalMax"))},
           "clock_ns": {"target": _float(c.get("TargetClockPeriod")),
                        "estimated": _float(c.get("EstimatedClockPeriod"))},
           "resources": {k: _int(c.get(k)) for k in RESOURCES},
           "available": {k: _int(c.get("Available" + k)) for k in RESOURCES}}
    missing = [k for k in ("LUT", "FF", "DSP", "BRAM_18K") if out["resources"][k] is None]
    if missing or None in out["latency_cycles"].values() or None in out["interval"].values():
        raise FxsplitError(f"{where}the Vitis HLS report in {project_dir} lacks "
                           f"{missing or 'its latency or interval'} (latency and interval are undefined when a "
                           "loop has a variable trip count)", partition=partition)
    v = rep.get("VivadoSynthReport")
    if v:
        out["vivado_synth"] = {"LUT": _int(v.get("LUT")), "FF": _int(v.get("FF")), "DSP": _int(v.get("DSP48E")),
                               "BRAM_18K": _int(v.get("BRAM_18K")), "URAM": _int(v.get("URAM"))}
    else:
        out["vivado_synth"] = None
    return out


def total(reports: dict[str, dict]) -> dict:
    """Sum of the partitions' C-synthesis resource estimates (the stitched design's glue is not in it:
    only Vivado's report of the stitched design counts that)."""
    return {k: sum(int(r["resources"][k] or 0) for r in reports.values()) for k in RESOURCES}


# ----------------------------------------------------------------------------- Vivado's reports of the stitched design

# report_utilization rows: (section number, row labels across Vivado versions and families) -> key
_UTIL_ROWS = {"LUT": (1, ("CLB LUTs", "Slice LUTs")), "FF": (1, ("CLB Registers", "Slice Registers")),
              "BRAM_tiles": (2, ("Block RAM Tile",)), "URAM": (2, ("URAM",)), "DSP": (3, ("DSPs",))}


def read_utilization(path: str) -> dict:
    """``report_utilization``'s totals: LUT, FF, BRAM_tiles (36 Kb tiles, halves counted), URAM, DSP. The row
    names are the ones hls4ml's reader matches (``CLB``/``Slice``, UltraScale and 7-series); a report in which
    any of LUT, FF, BRAM or DSP cannot be found is an error, not a zero."""
    import re
    found: dict[str, float] = {}
    section = 0
    with open(path) as f:
        for line in f:
            m = re.match(r"^(\d+)\.\s", line)
            if m:
                section = int(m.group(1))
            if "|" not in line:
                continue
            cells = [c.strip() for c in line.split("|")]
            if len(cells) < 3:
                continue
            label = cells[1].rstrip("*").strip()
            for key, (sec, labels) in _UTIL_ROWS.items():
                if section == sec and key not in found and label in labels:
                    try:
                        v = float(cells[2])
                    except ValueError:
                        continue
                    found[key] = int(v) if v == int(v) else v
    missing = [k for k in ("LUT", "FF", "BRAM_tiles", "DSP") if k not in found]
    if missing:
        raise FxsplitError(f"the Vivado utilization report {path} has no {', '.join(missing)} row",
                           hint="is it the output of report_utilization (not report_utilization -hierarchical)?")
    found.setdefault("URAM", 0)          # 7-series parts have no URAM row
    return found


def read_timing(path: str) -> dict:
    """``report_timing_summary``'s design summary: WNS, TNS, WHS, THS (ns) and whether every constraint is met."""
    import re
    text = Path(path).read_text()
    m = re.search(r"^\s*WNS\(ns\)\s+TNS\(ns\).*\n\s*-[- ]+\n\s*(\S+)\s+(\S+)\s+\S+\s+\S+\s+(\S+)\s+(\S+)", text, re.M)
    if m is None:
        raise FxsplitError(f"no Design Timing Summary table in {path}",
                           hint="is it the output of report_timing_summary?")
    wns, tns, whs, ths = (None if v == "NA" else float(v) for v in m.groups())
    return {"wns_ns": wns, "tns_ns": tns, "whs_ns": whs, "ths_ns": ths,
            "met": "All user specified timing constraints are met." in text}
