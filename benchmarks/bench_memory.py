"""Peak memory per job, uncut vs partitioned, and a build scheduled under a memory budget.

    python benchmarks/bench_memory.py [--quick] [--jobs 2] [--precision fixed<8,3>]

One run, fresh directories, every build cold:

1. the wide MLP through the open RTL flow with ``compare_monolithic=True``: its 4 partitions (da4ml + Yosys
   each) and the uncut design (da4ml + one Yosys run) in the same build. Printed: every job's peak resident
   memory (the worker and the tools it started, ``fxsplit.engine.usage``), CPU time and wall; the largest and
   the sum, uncut vs partitioned.
2. ResNet20's C-simulation build (io_stream, -O3, its markers): every partition's csim job and the uncut
   reference's (``monolithic/csim``, the uncut C simulation): the same figures.
3. the wide MLP's partitioned RTL build again, cold (a new cache seeded with the first build's manifests, so
   that the peak-memory model is fitted from them), under a memory budget that holds one large job at a time
   (1.5x the largest predicted peak). Printed: the schedule (start, end, predicted and measured peak of every
   job), checked from the jobs' own start and end times: the largest sum of predicted peaks running together
   against the budget, and the same for the measured peaks.

--quick: the jet tagger instead of the wide MLP, and no ResNet20.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import _common as C

import fxsplit  # noqa: E402
from fxsplit.plan.costmodel import CostModel, cache_records  # noqa: E402
from fxsplit.zoo import build as build_model  # noqa: E402

MiB = 2 ** 20


def mib(n):
    return None if n is None else round(n / MiB, 1)


def job_table(build, title):
    rows = []
    for r in sorted(build, key=lambda r: (r.partition, r.step)):
        rows.append([r.id, r.state, round(r.build_seconds, 2), r.cpu_seconds, mib(r.peak_rss),
                     mib(r.peak_rss - r.base_rss) if r.peak_rss is not None and r.base_rss is not None else None,
                     mib(r.predicted_rss)])
    return C.table(rows, ["job", "state", "wall s", "CPU s", "peak MiB", "added MiB", "predicted MiB"], title)


def peaks(jobs):
    p = [r.peak_rss for r in jobs if r.peak_rss is not None]
    return {"jobs": len(jobs), "largest": max(p) if p else None, "sum": sum(p) if p else None,
            "cpu_seconds": round(sum(r.cpu_seconds or 0.0 for r in jobs), 2),
            "job_seconds": round(sum(r.build_seconds for r in jobs), 2)}


def side_by_side(uncut, split, title):
    u, s = peaks(uncut), peaks(split)
    rows = [["jobs", u["jobs"], s["jobs"], None],
            ["largest job peak (MiB)", mib(u["largest"]), mib(s["largest"]), C.ratio(u["largest"], s["largest"])],
            ["sum of job peaks (MiB)", mib(u["sum"]), mib(s["sum"]), C.ratio(u["sum"], s["sum"])],
            ["CPU (s)", u["cpu_seconds"], s["cpu_seconds"], C.ratio(u["cpu_seconds"], s["cpu_seconds"])],
            ["sum of job walls (s)", u["job_seconds"], s["job_seconds"], C.ratio(u["job_seconds"], s["job_seconds"])]]
    print(C.table(rows, ["", "uncut", "partitioned", "uncut/partitioned"], title), flush=True)
    return {"uncut": u, "partitioned": s}


def concurrent_max(build, value):
    """The largest sum of ``value(r)`` over jobs running at the same time (from their own start/end times)."""
    ran = [r for r in build if r.state == "built" and r.start is not None]
    ev = sorted([(r.start, 1, r) for r in ran] + [(r.end, 0, r) for r in ran], key=lambda e: (e[0], e[1]))
    cur, best, running = 0, 0, []
    for _, kind, r in ev:
        if kind:
            running.append(r)
            cur += value(r) or 0
            best = max(best, cur)
        else:
            running.remove(r)
            cur -= value(r) or 0
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--precision", default="fixed<8,3>")
    args = ap.parse_args()
    mlp = "jet_tagger" if args.quick else "wide_mlp"
    run = C.fresh_run_dir("bench_memory")
    info = C.machine()
    print(f"run dir: {run}\ncpus={info['cpus']} loadavg={info['loadavg_at_start']} jobs={args.jobs}", flush=True)
    payload = {"benchmark": "bench_memory", "machine": info, "run_dir": str(run)}

    # 1. RTL: uncut vs partitioned in one build
    model, shape = build_model(mlp)
    cfg = {"precision": args.precision, "csim_opt": "-O0"}
    t0 = time.time()
    d = fxsplit.compile(model, shape, flow="rtl", config=cfg, output_dir=run / "rtl", jobs=args.jobs,
                        compare_monolithic=True, progress=False, memory="off")
    print(f"\n1. {mlp}, RTL flow, {args.precision}: compile() {time.time() - t0:.1f} s", flush=True)
    print(job_table(d.build, "jobs"), flush=True)
    steps = ("rtl", "synth")
    uncut = [r for r in d.build if r.partition == "monolithic" and r.step in steps]
    split = [r for r in d.build if r.partition != "monolithic" and r.step in steps]
    payload["rtl"] = {"model": mlp, "config": cfg, "jobs": C.job_rows(d.build),
                      "usage": {r.id: {"peak_rss": r.peak_rss, "base_rss": r.base_rss, "cpu_seconds": r.cpu_seconds}
                                for r in d.build},
                      "side_by_side": side_by_side(uncut, split, f"\n{mlp} RTL (da4ml + Yosys): uncut vs partitioned"),
                      "compare_monolithic": d.report.get("compare_monolithic")}

    # 2. ResNet20 C simulation
    if not args.quick:
        model, shape = build_model("resnet20")
        t0 = time.time()
        r20 = fxsplit.compile(model, shape, config={"io_type": "io_stream"}, output_dir=run / "resnet20",
                              jobs=args.jobs, progress=False, memory="off")
        print(f"\n2. resnet20, C simulation (io_stream, -O3): compile() {time.time() - t0:.1f} s", flush=True)
        print(job_table(r20.build, "jobs"), flush=True)
        payload["resnet20"] = {"jobs": C.job_rows(r20.build), "side_by_side": side_by_side(
            [r for r in r20.build if r.partition == "monolithic"],
            [r for r in r20.build if r.partition != "monolithic"], "\nresnet20 C simulation: uncut vs partitioned")}

    # 3. the partitioned RTL build under a budget that holds one large job at a time
    cache = run / "cache3"
    cache.mkdir()
    for m in (run / "rtl" / ".cache").glob("*/manifest.json"):     # the manifests only: the model learns, no hit
        (cache / ("seed-" + m.parent.name)).mkdir()
        shutil.copy(m, cache / ("seed-" + m.parent.name) / "manifest.json")
    mm = CostModel.from_cache(cache, target="peak_rss")
    print(f"\n3. peak-memory model fitted on {len(cache_records(cache, 'peak_rss'))} measured jobs: "
          + ", ".join(f"{s}: {mm.source(s)}" for s in ("csim", "rtl", "synth")), flush=True)
    model, shape = build_model(mlp)
    # the predictions of this build's jobs, before building (compile annotates its jobs the same way)
    from fxsplit.plan.costmodel import annotate, partition_features
    from fxsplit.flows import get_flow
    from fxsplit.lower import lower, normalize_config
    pt = fxsplit.partition(model, shape)
    fc = normalize_config(cfg, pt, exact_accum_default=True)
    lw = lower(pt, fc, str(run / "dry"))
    fl = get_flow("rtl")(lw.partitioning, lw, fc, run / "dry", reference=False)
    fl.validate()
    jl = fl.jobs()
    annotate(jl, partition_features(lw.partitioning, fc.precision, fc.input_precision), CostModel.from_cache(cache),
             fl.steps, memory=mm)
    largest = max(j.cost["predicted_rss"] for j in jl if j.cost)
    budget = int(1.5 * largest)
    t0 = time.time()
    d3 = fxsplit.compile(model, shape, flow="rtl", config=cfg, output_dir=run / "budget", cache_dir=cache,
                         jobs=args.jobs, progress=False, reference=False, memory=budget)
    wall = time.time() - t0
    print(f"budget {mib(budget)} MiB (1.5x the largest predicted job peak, {mib(largest)} MiB): compile() {wall:.1f} s",
          flush=True)
    t_first = min(r.start for r in d3.build if r.start is not None)
    rows = [[r.id, round(r.start - t_first, 2), round(r.end - t_first, 2), mib(r.predicted_rss), mib(r.peak_rss)]
            for r in sorted((r for r in d3.build if r.start is not None), key=lambda r: r.start)]
    print(C.table(rows, ["job", "start s", "end s", "predicted MiB", "measured MiB"], "schedule under the budget"))
    pmax = concurrent_max(d3.build, lambda r: r.predicted_rss)
    mmax = concurrent_max(d3.build, lambda r: r.peak_rss)
    print(f"largest sum of predicted peaks running together: {mib(pmax)} MiB (budget {mib(budget)} MiB: "
          f"{'held' if pmax <= budget else 'EXCEEDED'}); of measured peaks: {mib(mmax)} MiB", flush=True)
    errs = [(r.predicted_rss - r.peak_rss) / r.peak_rss for r in d3.build if r.predicted_rss and r.peak_rss]
    print(f"peak-memory prediction error per job: {min(errs) * 100:+.0f} % .. {max(errs) * 100:+.0f} %"
          if errs else "no prediction error (nothing measured)")
    payload["budget"] = {"budget": budget, "largest_predicted": largest, "compile_wall": wall,
                         "concurrent_predicted_max": pmax, "concurrent_measured_max": mmax, "held": pmax <= budget,
                         "warnings": d3.build.warnings, "schedule": rows,
                         "prediction_error": [min(errs), max(errs)] if errs else None}
    payload["loadavg_at_end"] = C.loadavg()
    print(f"\nfigures: {C.write_json(run, json.loads(json.dumps(payload, default=str)))}")


if __name__ == "__main__":
    main()
