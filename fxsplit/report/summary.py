"""The report dict of a compiled design (rendered to JSON/HTML/text by fxsplit.report)."""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from ..frontend.capture import node_shape


def _node_ops(node, module: nn.Module | None) -> int:
    """Multiply-accumulates of one node (Linear, Conv); 0 for the rest."""
    try:
        out = node_shape(node)
    except Exception:
        return 0
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features * (math.prod(out[:-1]) if len(out) > 1 else 1)
    if isinstance(module, nn.modules.conv._ConvNd):
        per_out = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return per_out * math.prod(out)
    return 0


def partition_stats(design) -> dict[str, dict]:
    uncut = design.partitioning.graph
    nodes = {n.name: n for n in uncut.graph.nodes}
    stats = {}
    for part in design.partitions:
        params = ops = layers = 0
        for name in part.nodes:
            n = nodes[name]
            mod = uncut.get_submodule(n.target) if n.op == "call_module" else None
            layers += 1
            if mod is not None:
                params += sum(p.numel() for p in mod.parameters(recurse=False))
                params += sum(b.numel() for b in mod.buffers(recurse=False) if isinstance(b, torch.Tensor))
            ops += _node_ops(n, mod)
        stats[part.name] = {"layers": layers, "params": int(params), "ops": int(ops)}
    return stats


def build_report(design, model_name: str, timings: dict) -> dict:
    build = design.build
    stats = partition_stats(design)
    rtl = design.rtl
    parts = []
    for part in design.partitions:
        jobs = [r.to_dict() for r in build if r.partition == part.name] if build is not None else []
        entry = {"name": part.name, **stats[part.name],
                 "inputs": [{**p.to_dict(), "source": part.sources.get(p.name)} for p in part.inputs],
                 "outputs": [p.to_dict() for p in part.outputs], "latency": None, "resources": None,
                 "jobs": jobs, "modules": part.layers}
        if rtl is not None:
            entry.update(rtl.partition_report(part.name))
        hls = _hls_report(build, part.name)
        if hls is not None:                      # flow="vitis" where Vitis HLS ran: its C-synthesis estimates
            entry["hls"] = hls
            entry["latency"] = hls["latency_cycles"]["worst"]
            entry["resources"] = dict(hls["resources"])
        parts.append(entry)
    b = build.to_dict() if build is not None else {}
    report = {
        "model": model_name, "flow": design.flow, "output_dir": design.output_dir,
        "wall_seconds": timings.get("total"), "validate_seconds": timings.get("validate"),
        "partitions": parts,
        "model_inputs": [p.to_dict() for p in design.partitioning.inputs],
        "model_outputs": [{**p.to_dict(), "source": design.partitioning.output_sources[p.name]}
                          for p in design.partitioning.outputs],
        "jobs": b.get("jobs", []), "build": {k: v for k, v in b.items() if k != "jobs"},
        "predicted_wall": b.get("predicted_wall"),
        "verification": None,
    }
    if rtl is not None:
        report["stitched"] = rtl.stitched_report()
        if rtl.monolithic:
            report["compare_monolithic"] = compare_monolithic(build, rtl, report["stitched"])
    if design.flow == "vitis":
        report["vitis"] = _vitis_summary(parts, design.output_dir)
    return report


def compare_monolithic(build, rtl, stitched: dict) -> dict:
    """The uncut design beside the stitched one, from this build's own jobs (a reused job counts with the figures
    of the build that made it): the build wall on the build's workers (its jobs list-scheduled with their measured
    times, as the report predicts walls), CPU time, peak memory, resources and latency."""
    from ..engine import predict_wall_time
    from ..lower.spec import MONOLITHIC

    def side(jobs) -> dict:
        ids = {r.id for r in jobs}
        rows = [{"id": r.id, "build_seconds": r.build_seconds, "deps": [d for d in r.deps if d in ids]} for r in jobs]
        peaks = [r.peak_rss for r in jobs if r.peak_rss is not None]
        return {"jobs": len(jobs), "wall_seconds": round(predict_wall_time(rows, build.workers or 1), 3),
                "job_seconds": round(sum(r.build_seconds for r in jobs), 3),
                "cpu_seconds": round(sum(r.cpu_seconds or 0.0 for r in jobs), 3),
                "peak_rss_max": max(peaks) if peaks else None, "peak_rss_sum": sum(peaks) if peaks else None}

    synth_steps = ("rtl", "synth")
    uncut = [r for r in build if r.partition == MONOLITHIC and r.step in synth_steps]
    split = [r for r in build if r.partition != MONOLITHIC and r.step in synth_steps]
    mono = rtl.monolithic_report()
    return {"workers": build.workers,
            "uncut": {**side(uncut), "latency": mono["latency"], "resources": mono["resources"],
                      "synth_log": mono["synth_log"], "verilog": mono["verilog"]},
            "stitched": {**side(split), "latency": stitched.get("latency"), "resources": stitched.get("resources_total")}}


def _hls_report(build, partition: str) -> dict | None:
    if build is None:
        return None
    r = build.results.get(f"{partition}/hls")
    return (r.meta or {}).get("hls_report") if r is not None and r.state in ("built", "cached") else None


def _vitis_summary(parts: list[dict], output_dir: str) -> dict:
    """The vendor flow's section: per-partition C-synthesis estimates and their sum, or, where Vitis HLS
    did not run (emit only), what was written instead."""
    from ..flows.vitis.reports import total
    hls = {p["name"]: p["hls"] for p in parts if p.get("hls")}
    out = {"bundle": os.path.join(output_dir, "stitched", "vitis"), "ran": bool(hls)}
    if hls:
        if len(hls) != len(parts):
            missing = [p["name"] for p in parts if not p.get("hls")]
            out["missing"] = missing             # a sum that leaves partitions out is labelled so, not shown
        else:
            out["total_estimate"] = total(hls)
    return out


def stitched_update(report: dict, rtl) -> None:
    """Refresh the stitched section after an RTL simulation (it records the last simulation)."""
    report["stitched"] = rtl.stitched_report()
