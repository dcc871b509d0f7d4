"""The report dict of a compiled design (rendered to JSON/HTML/text by fxsplit.report)."""

from __future__ import annotations

import torch

from ..flows import get_flow
from ..frontend.capture import node_macs


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
            ops += node_macs(n, mod)
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
    flow = get_flow(design.flow)
    report["steps"] = [s.to_dict() for s in flow.steps]
    flow.report(report, design)            # the flow's own sections (flow.report_sections)
    return report


def compare_monolithic(build, rtl, stitched: dict) -> dict:
    """The uncut design beside the stitched one, from this build's own jobs (a reused job counts with the figures
    of the build that made it): the build wall on the build's workers (its jobs list-scheduled with their measured
    times, as the report predicts walls), CPU time, peak memory, resources and latency."""
    from ..engine import predict_wall_time
    from ..ir import MONOLITHIC

    def side(jobs) -> dict:
        ids = {r.id for r in jobs}
        rows = [{"id": r.id, "build_seconds": r.build_seconds, "deps": [d for d in r.deps if d in ids]} for r in jobs]
        peaks = [r.peak_rss for r in jobs if r.peak_rss is not None]
        return {"jobs": len(jobs), "wall_seconds": round(predict_wall_time(rows, build.workers or 1), 3),
                "job_seconds": round(sum(r.build_seconds for r in jobs), 3),
                "cpu_seconds": round(sum(r.cpu_seconds or 0.0 for r in jobs), 3),
                "peak_rss_max": max(peaks) if peaks else None, "peak_rss_sum": sum(peaks) if peaks else None}

    synth_steps = ("rtl", "synth", "stream", "stream_synth")     # the Verilog and its synthesis, either design
    uncut = [r for r in build if r.partition == MONOLITHIC and r.step in synth_steps]
    split = [r for r in build if r.partition != MONOLITHIC and r.step in synth_steps]
    mono = rtl.monolithic_report()
    return {"workers": build.workers,
            "uncut": {**side(uncut), "latency": mono["latency"], "resources": mono["resources"],
                      "synth_log": mono["synth_log"], "verilog": mono["verilog"]},
            "stitched": {**side(split), "latency": stitched.get("latency"), "resources": stitched.get("resources_total")}}


def stitched_update(report: dict, rtl) -> None:
    """Refresh the stitched section and the partitions' RTL figures after an RTL simulation (it records the last
    simulation; a streaming design's latency and interval come from it)."""
    report["stitched"] = rtl.stitched_report()
    for entry in report.get("partitions", []):
        if entry.get("name") in rtl.partitions:
            entry.update(rtl.partition_report(entry["name"]))
