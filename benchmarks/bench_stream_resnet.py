"""The streaming open RTL flow on ResNet20's topology: Yosys end to end, uncut vs cut, side by side in one run.

    python benchmarks/bench_stream_resnet.py [--jobs 2] [--model resnet20_small] [--frames 3] [--out-root DIR]
    python benchmarks/bench_stream_resnet.py --wide resnet20 [--synth-limit 3600] [--max-job-memory 8] [--run-dir DIR]

Every build is cold (its own cache), ``flow="rtl"`` with ``io_type="io_stream"``, 8-bit weight types spanning each
layer's weights (``fxsplit.zoo.spanning_config``), synthesis on, with the uncut C-simulation reference that
``verify`` compares against (one C-simulation job, the same on every side):

1. **uncut on one job**: the model (markers erased) as one partition, ``jobs=1``;
2. **auto on the machine**: ``splits="auto", workers=--jobs``, ``jobs=--jobs``;
3. **auto for 8 workers**: the plan for 8 workers built here on ``--jobs`` jobs; its jobs' measured times
   list-scheduled on 8 workers (``fxsplit.engine.predict_wall_time``, the scheduler's own rule) give its wall on an
   8-core machine.

Printed: walls and their ratios to the uncut build (targets: >= 2.0x for 2, >= 7x for the 8-worker schedule),
the largest job's peak memory against the uncut one's (target <= 0.3 for the 8-worker plan), the largest single
job (what bounds the 8-worker wall), stitched resources, and the latency and
interval of each design from ``verify(level="rtl")`` (Verilator, ``--frames`` frames back to back). The step models'
coefficients fitted on this run's jobs are printed too (``--fit``), ready for ``flows/rtl/streamflow.py``.

``--wide MODEL[,MODEL]`` (the zoo's ``resnet20_half``, 8/16/32 channels, or the full-width ``resnet20``, 16/32/64): the plan for 8 workers,
every partition built here (C simulation and streaming Verilog, measured); each partition's Yosys time and peak
memory predicted by the cost model and measured where every partition is predicted under ``--synth-limit`` seconds
and 12 GiB; the uncut build likewise (predicted, and said so, where it would not fit). ``--max-job-memory GIB``:
the plan keeps every partition's predicted peak under it (cutting inside convolutions), so that ``--jobs`` of them fit
the machine at once. ``--run-dir DIR``: build in DIR, resuming an interrupted run there: jobs its caches hold are
reused, and their times and peak memory are the ones recorded when they were built (their manifests).
``--partitions p3,p7``: of the ``--wide`` plan, build only these partitions' streaming Verilog and Yosys jobs (the
jobs ``compile`` makes, measured by the same engine; no C simulation), to measure a large plan a few partitions at
a time; their figures go to the run directory's ``figures.json``. After them, every partition of the plan whose
Yosys job the run directory's cache holds (a job of the same partition: same id and size features, built by any
version of fxsplit) is list-scheduled on 8 workers with its measured CPU time (the least of its builds: other work
on the same cores inflates it), the others with their predicted
time: the plan's wall on 8 workers, measured as far as it is. ``--plan FIGURES.json``: the plan for 8 workers of an
earlier ``--wide`` run (its ``wide.<model>.plan8.splits``), not planned anew, so that a plan measured over several
runs stays the same plan when the cost model changes meanwhile. ``benchmarks/plans/resnet20_plan8.json`` is the
full-width ResNet20's plan whose partitions ``docs/performance.md`` measures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common as C

import fxsplit  # noqa: E402
from fxsplit.engine import predict_wall_time  # noqa: E402
from fxsplit.frontend.partitioner import strip_markers  # noqa: E402
from fxsplit.plan.autosplit import plan_auto  # noqa: E402
from fxsplit.lower import normalize_config  # noqa: E402
from fxsplit.plan.costmodel import CostModel, partition_features, weight_types  # noqa: E402
from fxsplit.zoo import build, spanning_config  # noqa: E402

MiB = 2 ** 20
GiB = 2 ** 30
STREAM = {"synth": True, "parallel": False, "stream": True}


def types_of(model, shape, cfg) -> dict:
    """The per-layer weight types the config gives (what compile prices the layers with)."""
    return weight_types(normalize_config(cfg, fxsplit.partition(model, shape)).layer_name)


def plan8(model, shape, cfg, max_job_memory=None):
    return plan_auto(model, shape, 8, precision=cfg["precision"], flow="rtl", options=STREAM,
                     cost_model=CostModel(), types=types_of(model, shape, cfg), split_layers=True,
                     max_job_memory=max_job_memory)


def wide(name, run, jobs, synth_limit, max_job_memory=None):
    """A wide model: the 8-worker plan's partitions built (Yosys where predicted to fit), the rest predicted."""
    model, shape = build(name)
    cfg = spanning_config(model, shape, io_type="io_stream", csim_opt="-O0")
    cm, mm = CostModel(), CostModel.fit([], target="peak_rss")
    p8 = plan8(model, shape, cfg, max_job_memory)
    pt = fxsplit.partition(model, shape, splits=p8.splits)
    feats = partition_features(pt, cfg["precision"], types=types_of(model, shape, cfg))
    pred = {n: (cm.predict("stream_synth", f), mm.predict("stream_synth", f)) for n, f in feats.items()}
    fits = all(t <= synth_limit and m <= 12 * GiB for n, (t, m) in pred.items() if n != "*")
    budget = f" (max_job_memory {max_job_memory / GiB:g} GiB)" if max_job_memory else ""
    print(f"{name}: plan for 8 workers{budget} {p8.splits}; Yosys per partition predicted "
          + ", ".join(f"{n} {t:.0f} s / {m / GiB:.1f} GiB" for n, (t, m) in pred.items() if n != "*")
          + f"; uncut {pred['*'][0]:.0f} s / {pred['*'][1] / GiB:.1f} GiB (predicted)", flush=True)
    t0 = time.time()
    d = fxsplit.compile(model, shape, flow="rtl", config={**cfg, "synth": fits}, splits=p8.splits,
                        output_dir=run / f"wide_{name}", cache_dir=run / f"wide_{name}.cache", jobs=jobs,
                        progress=False, reference=False)
    wall = time.time() - t0
    reused = sum(r.state == "cached" for r in d.build)
    rows = []
    for p in d.partitions:
        got = {r.step: r for r in d.build if r.partition == p.name}
        syn = got.get("stream_synth")
        rows.append([name, p.name, f["kernels"] if (f := feats.get(p.name)) else "-",
                     f"{got['csim'].build_seconds:.1f}s", f"{got['stream'].build_seconds:.1f}s",
                     f"{pred[p.name][0]:.0f}s", f"{pred[p.name][1] / GiB:.1f}",
                     (f"{syn.build_seconds:.0f}s" + (" (reused)" if syn.state == "cached" else "")) if syn
                     else "predicted only",
                     f"{syn.cpu_seconds:.0f}s" if syn and syn.cpu_seconds else "-",
                     f"{syn.peak_rss / GiB:.1f}" if syn and syn.peak_rss else "-"])
    # Yosys runs on one core: its CPU time is its wall time on an idle core, whatever else shared the machine
    print(C.table(rows, ["model", "partition", "kernels", "csim", "stream emit", "Yosys pred", "GiB pred",
                         "Yosys", "Yosys CPU", "GiB"], f"{name}: the 8-worker plan, built on {jobs} jobs in {wall:.0f} s"
                   + (f" ({reused} jobs reused from an earlier run in this directory)" if reused else "")))
    print(f"{name} uncut: Yosys predicted {pred['*'][0]:.0f} s and {pred['*'][1] / GiB:.1f} GiB "
          + ("(not built: predicted over the limit)" if pred["*"][0] > synth_limit or pred["*"][1] > 12 * GiB
             else "(under the limit: build it with --model)"), flush=True)
    return {"plan8": p8.to_dict(), "wall": wall, "synth": fits, "predicted": pred, "jobs": C.job_rows(d.build)}


SAME_PARTITION = ("kernels", "weights", "macs", "digits", "layers")     # features that identify a partition's content


def measured_schedule(name: str, run: Path, order: list[str], feats: dict, cm: CostModel, workers: int = 8) -> dict:
    """The plan's Yosys jobs list-scheduled on ``workers`` (longest first, each to the first free worker): measured
    CPU time where the run directory's cache holds the partition's job (the least of its builds), predicted
    otherwise."""
    import glob
    import json
    found = {}
    for m in glob.glob(str(run / f"wide_{name}.cache" / "*" / "manifest.json")):
        try:
            r = json.loads(Path(m).read_text())
        except (OSError, ValueError):
            continue
        part, _, step = str(r.get("id", "")).partition("/")
        f = (r.get("cost") or {}).get("features") or {}
        cpu = (r.get("usage") or {}).get("cpu_seconds")
        if step == "stream_synth" and part in feats and cpu and all(f.get(k) == feats[part][k] for k in SAME_PARTITION):
            found[part] = min(float(cpu), found.get(part, float("inf")))     # (a loaded machine inflates CPU time)
    times = {n: found.get(n, cm.predict("stream_synth", feats[n])) for n in order}
    free = [0.0] * workers
    for t in sorted(times.values(), reverse=True):
        free[free.index(min(free))] += t
    return {"measured": sorted(found), "partitions": len(order), "wall": max(free), "total": sum(times.values()),
            "largest": max(times, key=times.get), "seconds": times}


def wide_partitions(name, run, jobs, names, max_job_memory=None, plan_file=None):
    """Of the 8-worker plan of ``name``, only the partitions ``names``: their ``stream`` and ``stream_synth`` jobs,
    as ``compile`` makes them (same lowering, keys and cost annotations), run by the engine on ``jobs`` jobs."""
    from fxsplit.engine import run_jobs
    from fxsplit.flows import get_flow
    from fxsplit.frontend.partitioner import partition_graph, trace_eval
    from fxsplit.lower import lower
    from fxsplit.plan.costmodel import annotate
    model, shape = build(name)
    cfg = {**spanning_config(model, shape, io_type="io_stream", csim_opt="-O0"), "synth": True}
    if plan_file:
        import json
        splits = json.loads(Path(plan_file).read_text())["wide"][name]["plan8"]["splits"]
        p8 = None
    else:
        p8 = plan8(model, shape, cfg, max_job_memory)
        splits = p8.splits
    out = run / f"wide_{name}"
    frontend = partition_graph(trace_eval(model, shape), list(splits))
    fc = normalize_config(cfg, frontend)
    flow_cls = get_flow("rtl")
    flow_cls.configure(cfg, fc)
    lowered = lower(frontend, fc, str(out))
    pt = lowered.partitioning
    unknown = sorted(set(names) - {p.name for p in pt.partitions})
    if unknown:
        raise SystemExit(f"--partitions: {unknown} not in the plan's partitions {[p.name for p in pt.partitions]}")
    fl = flow_cls(pt, lowered, fc, out, reference=False)
    fl.validate()
    chosen = [j for j in fl.jobs() if j.partition in names and j.step in ("stream", "stream_synth")]
    feats = partition_features(pt, fc.precision, types=types_of(model, shape, cfg))
    cm, mm = CostModel(), CostModel.fit([], target="peak_rss")
    annotate(chosen, feats, cm, flow_cls.steps, memory=mm)
    print(f"{name}: plan for 8 workers {splits}; building {', '.join(names)} "
          f"({len(chosen)} jobs on {jobs} jobs)", flush=True)
    t0 = time.time()
    res = run_jobs(chosen, run / f"wide_{name}.cache", max_workers=jobs, progress=False, log_dir=out / "logs",
                   memory_budget=None)
    rows = []
    for n in names:
        got = {r.step: r for r in res if r.partition == n}
        syn, f = got.get("stream_synth"), feats[n]
        rows.append([name, n, f["kernels"], f"{got['stream'].build_seconds:.1f}s",
                     f"{cm.predict('stream_synth', f):.0f}s", f"{mm.predict('stream_synth', f) / GiB:.1f}",
                     (f"{syn.build_seconds:.0f}s" + (" (reused)" if syn.state == "cached" else "")) if syn else "failed",
                     f"{syn.cpu_seconds:.0f}s" if syn and syn.cpu_seconds else "-",
                     f"{syn.peak_rss / GiB:.2f}" if syn and syn.peak_rss else "-"])
    print(C.table(rows, ["model", "partition", "kernels", "stream emit", "Yosys pred", "GiB pred", "Yosys",
                         "Yosys CPU", "GiB"], f"{name}: partitions of the 8-worker plan, {time.time() - t0:.0f} s"))
    if not res.ok:
        raise SystemExit(f"failed jobs: {[r.id for r in res if r.state == 'failed']} (logs in {out / 'logs'})")
    sched = measured_schedule(name, run, [p.name for p in pt.partitions], feats, cm)
    print(f"{name}: the plan's {sched['partitions']} Yosys jobs on 8 workers (measured CPU time for "
          f"{len(sched['measured'])}, predicted for the rest): wall {sched['wall']:.0f} s, total {sched['total']:.0f} s, "
          f"largest {sched['largest']} {sched['seconds'][sched['largest']]:.0f} s", flush=True)
    return {"plan8": p8.to_dict() if p8 is not None else {"splits": list(splits), "from": str(plan_file)},
            "partitions": names, "jobs": C.job_rows(res), "schedule8": sched}


def one(tag, model, shape, run, cfg, jobs, frames, **kw):
    t0 = time.time()
    d = fxsplit.compile(model, shape, flow="rtl", config=cfg, output_dir=run / tag, cache_dir=run / f"{tag}.cache",
                        jobs=jobs, progress=False, **kw)
    wall = time.time() - t0
    jobs_ = [r for r in d.build]
    peaks = [r.peak_rss for r in jobs_ if r.peak_rss]
    biggest = max(jobs_, key=lambda r: r.build_seconds)
    auto = d.report.get("auto_split") or {}
    res = {"tag": tag, "wall": wall, "partitions": len(d.partitions), "splits": kw.get("splits"),
           "cuts": auto.get("splits", kw.get("splits")) if kw.get("splits") == "auto" else kw.get("splits") or [],
           "job_seconds": sum(r.build_seconds for r in jobs_), "peak_rss": max(peaks) if peaks else None,
           "biggest_job": {"id": biggest.id, "seconds": biggest.build_seconds},
           "w8": predict_wall_time(d.build, 8), "resources": d.report["stitched"]["resources_total"],
           "jobs": C.job_rows(d.build), "auto": d.report.get("auto_split")}
    print(f"  {tag}: built in {wall:.1f} s", flush=True)
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
    ap.add_argument("--wide", default=None, help="wide models instead (e.g. resnet20): see the docstring")
    ap.add_argument("--synth-limit", type=float, default=3600.0)
    ap.add_argument("--max-job-memory", type=float, default=None, help="GiB: every --wide partition predicted under it")
    ap.add_argument("--run-dir", default=None, help="build here, resuming a run interrupted in it (its caches reused)")
    ap.add_argument("--partitions", default=None, help="with --wide: only these partitions' Verilog and Yosys jobs")
    ap.add_argument("--plan", default=None, help="with --partitions: the 8-worker plan of this earlier figures JSON")
    a = ap.parse_args()
    if a.run_dir:
        run = Path(a.run_dir).expanduser().resolve()
        run.mkdir(parents=True, exist_ok=True)
    else:
        run = C.fresh_run_dir("bench_stream_resnet", a.out_root)
    info = C.machine()
    if a.wide:
        budget = int(a.max_job_memory * GiB) if a.max_job_memory else None
        if a.partitions:
            names = a.partitions.split(",")
            out = {n: wide_partitions(n, run, a.jobs, names, budget, a.plan) for n in a.wide.split(",")}
            print("figures:", C.write_json(run, {"benchmark": "bench_stream_resnet --wide --partitions",
                                                 "machine": info, "wide": out}))
            return
        out = {n: wide(n, run, a.jobs, a.synth_limit, budget) for n in a.wide.split(",")}
        print("figures:", C.write_json(run, {"benchmark": "bench_stream_resnet --wide", "machine": info, "wide": out}))
        return
    print(f"run dir: {run}\nmodel={a.model} jobs={a.jobs} cpus={info['cpus']} loadavg={info['loadavg_at_start']}",
          flush=True)
    model, shape = build(a.model)
    cfg = spanning_config(model, shape, io_type="io_stream", csim_opt="-O0")
    uncut_model = strip_markers(model, shape)
    res = {}
    res["uncut"], _ = one("uncut", uncut_model, shape, run, cfg, 1, a.frames)
    res["auto"], _ = one(f"auto{a.jobs}", model, shape, run, cfg, a.jobs, a.frames, splits="auto", workers=a.jobs)
    p8 = plan8(model, shape, cfg)
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
        fit(run, {"uncut": (uncut_model, []), f"auto{a.jobs}": (model, res["auto"]["cuts"]),
                  "plan8": (model, p8.splits)}, shape, cfg)
    print("figures:", C.write_json(run, {"benchmark": "bench_stream_resnet", "machine": info, "model": a.model,
                                         "jobs": a.jobs, "results": res, "plan8": p8.to_dict()}))


def fit(run, builds: dict, shape, cfg) -> None:
    """The stream steps' models fitted on this run's jobs (time and peak memory from each build's cache manifests),
    each partition's features computed as compile computes them."""
    import json
    recs = {"seconds": [], "peak_rss": []}
    for tag, (model, cuts) in builds.items():
        pt = fxsplit.partition(model, shape, splits=cuts)
        feats = partition_features(pt, cfg["precision"], types=types_of(model, shape, cfg))
        top = {"layers": len(pt.partitions), "ports": sum(f["ports"] for n, f in feats.items() if n != "*")}
        for m in (run / f"{tag}.cache").glob("*/manifest.json"):
            d = json.loads(m.read_text())
            model_name = (d.get("cost") or {}).get("model")
            f = top if d["partition"] == "stitched" else feats.get(d["partition"])
            if model_name and "stream" in model_name and f is not None:
                recs["seconds"].append((model_name, f, float(d["seconds"])))
                if (d.get("usage") or {}).get("peak_rss"):
                    recs["peak_rss"].append((model_name, f, float(d["usage"]["peak_rss"])))
    for target in ("seconds", "peak_rss"):
        cm = CostModel.fit(recs[target], target=target)
        for step in ("stream", "stream_synth", "stitch_stream", "stitch_stream_synth"):
            m = cm.steps.get(step)
            n = sum(1 for r in recs[target] if r[0] == step)
            if m is not None:
                print(f'  {target} "{step}": StepModel(a={m.a:.4g}, b={m.b:.4g}, d={m.d:.4g}, c={m.c:.3g}, '
                      f'size="{m.size}")  # {n} jobs, {cm.source(step)}, rms {m.rms}')


if __name__ == "__main__":
    main()
