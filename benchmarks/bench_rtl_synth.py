"""Yosys synthesis time: the uncut wide MLP vs its 4 partitions synthesized in parallel (flow='rtl').

    python benchmarks/bench_rtl_synth.py [--quick] [--precision fixed<8,3>] [--jobs 2] [--model wide_mlp]

One run, same machine, same hls4ml configuration, everything cold (fresh directories):

1. uncut: the monolithic ModelGraph (from ``fxsplit.flows.hls4ml.lower``) lowered with
   ``rtl_lower.extract_program`` + ``flows.rtl.rtl_job`` (da4ml -> Verilog), then ONE Yosys
   ``synth_xilinx`` run (``flows.rtl.synth_job``) in this process. Timed separately: emit, synth.
2. partitioned, in two ``fxsplit.compile(flow='rtl', jobs=N, reference=False)`` calls sharing one cache:
   2a. ``synth=False``: builds every partition's csim library and Verilog (timed: the emit phase);
   2b. ``synth=True``, fresh output dir: csim and RTL jobs come from the cache, so this call builds
       exactly the N-parallel Yosys runs (one per partition) and stitches the top. Its wall time
       (compile() and the build engine alone) is the "partitioned parallel synth wall".
   Summed: 2a + 2b = a cold end-to-end RTL compile (slightly pessimistic: two main-process passes).

Printed: uncut synth / partitioned parallel synth wall, sum of partition synth times vs uncut,
LUT/FF/CARRY/DSP of both, the wall time predicted for 4 and 8 workers from the measured
partition synth times (``fxsplit.engine.predict_wall_time``). Reference point: the 3.5x
synthesis-time reduction reported for ResNet20 with Vivado (not comparable tool-for-tool).
--quick: precision fixed<6,2>.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import _common as C

import fxsplit  # noqa: E402
from fxsplit.engine import predict_wall_time  # noqa: E402
from fxsplit import lower as hflow  # noqa: E402
from fxsplit.flows import rtl as rflow  # noqa: E402
from fxsplit.flows.rtl import lower as rl  # noqa: E402
from fxsplit import partition  # noqa: E402
from fxsplit.zoo import build as build_model  # noqa: E402

RES = ("lut", "ff", "carry", "dsp")


def yosys_cpu(log_path) -> float | None:
    """user+system CPU seconds Yosys reports at the end of its log (robust to a loaded machine,
    unlike wall time)."""
    try:
        with open(log_path) as f:
            text = f.read()
    except OSError:
        return None
    m = re.findall(r"CPU: user ([0-9.]+)s system ([0-9.]+)s", text)
    return round(float(m[-1][0]) + float(m[-1][1]), 2) if m else None


def uncut_synth(model, shape, config, run_dir):
    t0 = time.time()
    pt = partition(model, shape)
    fc = hflow.normalize_config(config, pt)
    lw = hflow.lower(pt, fc, str(run_dir / "uncut_lower"))
    mono_spec, mono = lw.mono_spec, lw.mono
    rl.check_rtl_supported(mono, "monolithic")
    inv = {v: k for k, v in mono_spec.name_map.items()}
    prog = rl.extract_program(mono, "monolithic", input_names=[inv.get(v, v) for v in mono.inputs],
                              output_names=[p.name for p in pt.outputs])
    t_lower = time.time() - t0
    cutoff = rflow.DEFAULT_LATENCY_CUTOFF if fc.latency_cutoff is None else fc.latency_cutoff
    rtl_dir, syn_dir = run_dir / "uncut" / "rtl", run_dir / "uncut" / "synth"
    t1 = time.time()
    meta = rflow.rtl_job(str(rtl_dir), {}, prog, rflow.module_name("monolithic"), cutoff)
    t_emit = time.time() - t1
    t2 = time.time()
    syn = rflow.synth_job(str(syn_dir), {"monolithic/rtl": str(rtl_dir)}, "monolithic/rtl")
    t_synth = time.time() - t2
    return {"lower_seconds": t_lower, "emit_seconds": t_emit, "synth_seconds": t_synth,
            "yosys_seconds": syn["seconds"], "yosys_cpu": yosys_cpu(syn_dir / syn["log"]), "latency": meta["latency"], "cells": syn["cells"],
            **{k: syn[k] for k in RES}, "log": str(syn_dir / syn["log"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="precision fixed<6,2>")
    ap.add_argument("--model", default="wide_mlp")
    ap.add_argument("--precision", default=None, help="default fixed<8,3> (--quick: fixed<6,2>)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out-root", default=None)
    args = ap.parse_args()
    precision = args.precision or ("fixed<6,2>" if args.quick else "fixed<8,3>")
    base_cfg = {"precision": precision, "csim_opt": "-O0"}   # csim libraries are not what is measured here

    run_dir = C.fresh_run_dir("bench_rtl_synth", args.out_root)
    info = C.machine()
    print(f"run dir: {run_dir}\nmodel={args.model} precision={precision} jobs={args.jobs} cpus={info['cpus']} "
          f"loadavg={info['loadavg_at_start']}", flush=True)
    payload = {"benchmark": "bench_rtl_synth", "model": args.model, "precision": precision, "jobs": args.jobs,
               "quick": args.quick, "machine": info, "run_dir": str(run_dir)}

    # 1. uncut
    print("1. uncut: lower + da4ml emit + one Yosys run ...", flush=True)
    model, shape = build_model(args.model)
    la = C.loadavg()
    unc = uncut_synth(model, shape, base_cfg, run_dir)
    unc["loadavg_before"] = la
    payload["uncut"] = unc
    print(f"   emit {unc['emit_seconds']:.1f} s, Yosys {unc['synth_seconds']:.1f} s, {unc['cells']} cells", flush=True)

    # 2a. partitions: csim + RTL (no synthesis)
    cache = run_dir / "cache"
    print(f"2a. fxsplit.compile(flow='rtl', synth=False, jobs={args.jobs}) ...", flush=True)
    model, shape = build_model(args.model)
    t0 = time.time()
    d_emit = fxsplit.compile(model, shape, flow="rtl", config={**base_cfg, "synth": False},
                             output_dir=run_dir / "part_emit", cache_dir=cache, jobs=args.jobs,
                             progress=False, reference=False)
    emit_wall = time.time() - t0
    print(f"    {emit_wall:.1f} s", flush=True)

    # 2b. partitions: the parallel Yosys runs alone
    print(f"2b. fxsplit.compile(flow='rtl', synth=True, jobs={args.jobs}), csim+RTL cached ...", flush=True)
    model, shape = build_model(args.model)
    la = C.loadavg()
    t0 = time.time()
    design = fxsplit.compile(model, shape, flow="rtl", config=base_cfg, output_dir=run_dir / "part_synth",
                             cache_dir=cache, jobs=args.jobs, progress=False, reference=False)
    synth_wall = time.time() - t0
    b = design.build
    built = sorted(r.id for r in b if r.state == "built")
    synth_jobs = [r for r in b if r.step == "synth"]
    synth_sum = sum(r.seconds for r in synth_jobs)
    span = max(r.end for r in synth_jobs) - min(r.start for r in synth_jobs)
    print(f"    {synth_wall:.1f} s (built: {built})", flush=True)
    parts = {r.partition: {"synth_seconds": r.seconds, "yosys_seconds": r.meta.get("seconds"),
                           "yosys_cpu": yosys_cpu(Path(r.artifact_dir) / "yosys.log"),
                           "cells": r.meta.get("cells"), **{k: r.meta.get(k) for k in RES},
                           "latency": design.rtl.partitions.get(r.partition, {}).get("latency")}   # "stitched": the top
             for r in synth_jobs}
    totals = {k: sum(int(p[k] or 0) for p in parts.values()) for k in RES + ("cells",)}
    pred_synth = {w: predict_wall_time(synth_jobs, w) for w in (1, 2, 4, 8)}
    pred_flow = {w: predict_wall_time(b, w) for w in (1, 2, 4, 8)}   # csim+rtl durations from when they were built
    cpu_sum = sum(p["yosys_cpu"] or 0 for p in parts.values())
    cpu_rows = [{"id": r.id, "build_seconds": parts[r.partition]["yosys_cpu"] or 0.0, "deps": []} for r in synth_jobs]
    pred_cpu = {w: predict_wall_time(cpu_rows, w) for w in (1, 2, 4, 8)}
    payload["partitioned"] = {
        "emit_compile_wall": emit_wall, "emit_engine_wall": d_emit.build.wall_seconds,
        "synth_compile_wall": synth_wall, "synth_engine_wall": b.wall_seconds, "synth_span": span,
        "synth_sum": synth_sum, "loadavg_before": la, "built_in_2b": built, "partitions": parts,
        "totals": totals, "yosys_cpu_sum": cpu_sum, "predicted_synth_wall_from_cpu": pred_cpu,
        "stitched_latency": design.rtl.latency,
        "predicted_synth_wall": pred_synth, "predicted_flow_wall": pred_flow,
        "jobs_2a": C.job_rows(d_emit.build), "jobs_2b": C.job_rows(b)}

    # ---- report
    rows = [["uncut (1 Yosys run)", unc["synth_seconds"], unc["yosys_cpu"], unc["cells"], *(unc[k] for k in RES), unc["latency"]]]
    for name, p in parts.items():
        rows.append([f"  partition {name}", p["synth_seconds"], p["yosys_cpu"], p["cells"], *(p[k] for k in RES), p["latency"]])
    rows.append(["partitions: sum", synth_sum, cpu_sum, totals["cells"], *(totals[k] for k in RES), design.rtl.latency])
    rows.append([f"partitions: parallel wall, engine (jobs={args.jobs})", b.wall_seconds, None, None, None, None,
                 None, None, None])
    rows.append([f"partitions: parallel wall, compile() (jobs={args.jobs})", synth_wall, None, None, None, None,
                 None, None, None])
    print()
    print(C.table(rows, ["Yosys synth_xilinx", "wall s", "CPU s", "cells", "LUT", "FF", "CARRY", "DSP", "latency"],
                  f"{args.model}, {precision}, {len(parts)} partitions, flow='rtl' (da4ml + Yosys), cold"))
    ratios = {
        "uncut synth / partitioned parallel wall (compile())": C.ratio(unc["synth_seconds"], synth_wall),
        "uncut synth / partitioned parallel wall (engine)": C.ratio(unc["synth_seconds"], b.wall_seconds),
        "uncut synth / sum of partition synth": C.ratio(unc["synth_seconds"], synth_sum),
        "uncut synth / slowest partition synth": C.ratio(unc["synth_seconds"], max(r.seconds for r in synth_jobs)),
        "uncut synth / predicted wall, 4 workers": C.ratio(unc["synth_seconds"], pred_synth[4]),
        "uncut synth / predicted wall, 8 workers": C.ratio(unc["synth_seconds"], pred_synth[8]),
        "CPU: uncut / sum of partitions": C.ratio(unc["yosys_cpu"], cpu_sum),
        "CPU: uncut / partitions scheduled on 2 workers": C.ratio(unc["yosys_cpu"], pred_cpu[2]),
        "CPU: uncut / partitions scheduled on 4 workers": C.ratio(unc["yosys_cpu"], pred_cpu[4]),
        "CPU: uncut / partitions scheduled on 8 workers": C.ratio(unc["yosys_cpu"], pred_cpu[8]),
        "uncut (emit+synth) / partitioned cold end-to-end (2a+2b)":
            C.ratio(unc["emit_seconds"] + unc["synth_seconds"], emit_wall + synth_wall),
        "LUT partitioned / uncut": C.ratio(totals["lut"], unc["lut"]),
        "FF partitioned / uncut": C.ratio(totals["ff"], unc["ff"]),
    }
    payload["ratios"] = ratios
    print()
    print(C.table([[k, v] for k, v in ratios.items()], ["ratio", "x"], "Ratios (same run)"))
    print(f"\npredicted partitioned synth wall from the measured partition synth times: "
          + ", ".join(f"{w} workers {pred_synth[w]:.1f} s" for w in (1, 2, 4, 8)))
    print(f"the same from Yosys' own CPU times (load-independent): "
          + ", ".join(f"{w} workers {pred_cpu[w]:.1f} s" for w in (1, 2, 4, 8)) + f" vs uncut {unc['yosys_cpu']} s CPU")
    print(f"predicted whole partitioned flow (csim+rtl+synth jobs): "
          + ", ".join(f"{w} workers {pred_flow[w]:.1f} s" for w in (1, 2, 4, 8)))
    print(f"uncut: lower {unc['lower_seconds']:.1f} s, da4ml emit {unc['emit_seconds']:.1f} s; partitioned cold "
          f"csim+emit compile() {emit_wall:.1f} s")
    print("reference point: 3.5x synthesis-time reduction reported for ResNet20 with Vivado "
          f"(here: {ratios['uncut synth / partitioned parallel wall (compile())']}x on {args.jobs} workers, Yosys)")
    payload["loadavg_at_end"] = C.loadavg()
    print(f"\nloadavg start {info['loadavg_at_start']} end {payload['loadavg_at_end']}")
    print(f"figures: {C.write_json(run_dir, payload)}")


if __name__ == "__main__":
    main()
