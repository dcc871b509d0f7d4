"""The streaming open RTL flow on ResNet20's topology: Yosys end to end, uncut vs cut, side by side in one run.

    python benchmarks/bench_stream_resnet.py [--jobs 2] [--model resnet20_small] [--frames 3] [--out-root DIR]

Every build is cold (its own cache), ``flow="rtl"`` with ``io_type="io_stream"``, 8-bit weight types spanning each
layer's weights (``fxsplit.zoo.spanning_config``), synthesis on, no uncut C-simulation reference (the same on
every side: what is compared is the design's build):

1. **uncut on one job**: the model (markers erased) as one partition, ``jobs=1``;
2. **auto on the machine**: ``splits="auto", workers=--jobs``, ``jobs=--jobs``;
3. **auto for 8 workers**: the plan for 8 workers built here on ``--jobs`` jobs; its jobs' measured times
   list-scheduled on 8 workers (``fxsplit.engine.predict_wall_time``, the scheduler's own rule) give its wall on an
   8-core machine.

Printed: walls and their ratios to the uncut build (targets: >= 2.0x for 2, >= 7x for the 8-worker schedule),
the largest job's peak memory against the uncut one's (target <= 0.3 for the 8-worker plan), the largest single
job (what bounds the 8-worker wall: io_stream cannot cut inside a layer), stitched resources, and the latency and
interval of each design from ``verify(level="rtl")`` (Verilator, ``--frames`` frames back to back). The step models'
coefficients fitted on this run's jobs are printed too (``--fit``), ready for ``flows/rtl/streamflow.py``.
"""

from __future__ import annotations

import argparse
import time

import _common as C

import fxsplit  # noqa: E402
from fxsplit.engine import predict_wall_time  # noqa: E402
from fxsplit.frontend.partitioner import strip_markers  # noqa: E402
from fxsplit.plan.autosplit import plan_auto  # noqa: E402
from fxsplit.plan.costmodel import CostModel, cache_records  # noqa: E402
from fxsplit.zoo import build, spanning_config  # noqa: E402

MiB = 2 ** 20


def one(tag, model, shape, run, cfg, jobs, frames, **kw):
    t0 = time.time()
    d = fxsplit.compile(model, shape, flow="rtl", config=cfg, output_dir=run / tag, cache_dir=run / f"{tag}.cache",
                        jobs=jobs, progress=False, reference=False, **kw)
    wall = time.time() - t0
    jobs_ = [r for r in d.build]
    peaks = [r.peak_rss for r in jobs_ if r.peak_rss]
    biggest = max(jobs_, key=lambda r: r.build_seconds)
    res = {"tag": tag, "wall": wall, "partitions": len(d.partitions), "splits": kw.get("splits"),
           "job_seconds": sum(r.build_seconds for r in jobs_), "peak_rss": max(peaks) if peaks else None,
           "biggest_job": {"id": biggest.id, "seconds": biggest.build_seconds},
           "w8": predict_wall_time(d.build, 8), "resources": d.report["stitched"]["resources_total"],
           "jobs": C.job_rows(d.build), "auto": d.report.get("auto_split")}
    if frames:
        v = d.verify(d.stress_inputs(frames, seed=1), level="rtl")
        res.update(bit_exact=bool(v), latency=v.extra["latency_cycles"], interval=v.extra["interval_cycles"],
                   sim_seconds=v.extra["sim_seconds"])
    print(f"  {tag}: {res['partitions']} partitions, wall {wall:.1f} s, jobs {res['job_seconds']:.1f} s, "
          f"largest job {biggest.id} {biggest.build_seconds:.1f} s, peak {(res['peak_rss'] or 0) / MiB:.0f} MiB"
          + (f", latency {res['latency']} interval {res['interval']} bit-exact {res['bit_exact']}" if frames else ""),
          flush=True)
    return res, d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--model", default="resnet20_small")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--out-root", default=None)
    ap.add_argument("--fit", action="store_true", help="fit the stream steps' models on this run's jobs")
    a = ap.parse_args()
    run = C.fresh_run_dir("bench_stream_resnet", a.out_root)
    info = C.machine()
    print(f"run dir: {run}\nmodel={a.model} jobs={a.jobs} cpus={info['cpus']} loadavg={info['loadavg_at_start']}",
          flush=True)
    model, shape = build(a.model)
    cfg = spanning_config(model, shape, io_type="io_stream", csim_opt="-O0")
    uncut_model = strip_markers(model, shape)
    res = {}
    res["uncut"], _ = one("uncut", uncut_model, shape, run, cfg, 1, a.frames)
    res["auto"], _ = one(f"auto{a.jobs}", model, shape, run, cfg, a.jobs, a.frames, splits="auto", workers=a.jobs)
    p8 = plan_auto(model, shape, 8, precision=cfg["precision"], flow="rtl", reference=False,
                   options={"synth": True, "parallel": False, "stream": True}, cost_model=CostModel())
    print(f"  plan for 8 workers: {p8.splits} (predicted {p8.predicted_wall:.1f} s)", flush=True)
    res["plan8"], _ = one("plan8", model, shape, run, cfg, a.jobs, 0, splits=p8.splits)
    u = res["uncut"]
    rows = []
    for tag, r in res.items():
        rows.append([tag, r["partitions"], f"{r['wall']:.1f}s", f"{r['job_seconds']:.1f}s", f"{r['w8']:.1f}s",
                     f"{r['biggest_job']['id']} {r['biggest_job']['seconds']:.1f}s",
                     f"{(r['peak_rss'] or 0) / MiB:.0f}", (r["resources"] or {}).get("LUT"),
                     (r["resources"] or {}).get("FF"), r.get("latency", "-"), r.get("interval", "-")])
    print()
    print(C.table(rows, ["build", "parts", "wall", "job total", "wall W=8", "largest job", "peak MiB", "LUT", "FF",
                         "latency", "interval"], f"{a.model}, streaming RTL flow, Yosys (cold builds)"))
    r2 = u["wall"] / res["auto"]["wall"]
    r8 = u["wall"] / res["plan8"]["w8"]
    mem2 = res["auto"]["peak_rss"] / u["peak_rss"]
    mem8 = res["plan8"]["peak_rss"] / u["peak_rss"]
    print()
    print(f"uncut on 1 job {u['wall']:.1f} s / auto on {a.jobs} jobs {res['auto']['wall']:.1f} s = {r2:.2f}x "
          f"(target >= 2.0x) -> {'OK' if r2 >= 2.0 else 'MISSED'}")
    print(f"uncut on 1 job {u['wall']:.1f} s / 8-worker plan list-scheduled on 8 {res['plan8']['w8']:.1f} s = "
          f"{r8:.2f}x (target >= 7x) -> {'OK' if r8 >= 7 else 'MISSED'}; bounded below by its largest job "
          f"{res['plan8']['biggest_job']['id']} ({res['plan8']['biggest_job']['seconds']:.1f} s)")
    print(f"largest job's peak memory vs uncut: auto on {a.jobs} {mem2:.2f}, 8-worker plan {mem8:.2f} "
          f"(target <= 0.3) -> {'OK' if mem8 <= 0.3 else 'MISSED'}")
    if a.fit:
        for target, unit in (("seconds", "s"), ("peak_rss", "MiB")):
            recs = []
            for tag in res:
                recs += [r for r in cache_records(run / f"{tag}.cache", target=target) if "stream" in r[0]]
            cm = CostModel.fit(recs, target=target)
            for step in ("stream", "stream_synth", "stitch_stream", "stitch_stream_synth"):
                m = cm.steps.get(step)
                n = sum(1 for r in recs if r[0] == step)
                if m is not None:
                    print(f'  {target} "{step}": StepModel(a={m.a:.4g}, b={m.b:.4g}, d={m.d:.4g}, c={m.c:.3g}, '
                          f'size="{m.size}")  # {n} jobs, {cm.source(step)}, rms {m.rms}')
    print("figures:", C.write_json(run, {"benchmark": "bench_stream_resnet", "machine": info, "model": a.model,
                                         "jobs": a.jobs, "results": res, "plan8": p8.to_dict()}))


if __name__ == "__main__":
    main()
