"""C-simulation build time: ResNet20 uncut vs cut (markers, and fxsplit's automatic split) vs hls4ml's MultiModelGraph.

    python benchmarks/bench_hls_build.py [--quick] [--csim-opt -O3] [--jobs 2] [--model resnet20]

Builds of the same model with the same hls4ml configuration (io_stream, fixed<16,6>), all from
cold output and cache directories, one after the other on this machine:

(a0) plain hls4ml, what a user builds today: ``convert_from_pytorch_model(model, hls_config=
    config_from_pytorch_model(model, shape, default_precision=...), io_type='io_stream')``, then its
    ``compile()`` timed (hls4ml writes the project and runs its build_lib.sh: two translation units at -O3,
    no precompiled headers, in this process). Its predictions are checked bit for bit against fxsplit's.
(a) monolithic: the uncut model as ONE hls4ml project. Timed: fxsplit's build job for it
    (``fxsplit.flows.hls4ml.csim_job`` on the monolithic spec returned by ``lower``: write the
    hls4ml project + compile its C-simulation library with g++), run alone through the build
    engine on one worker. This is exactly the job ``compile(reference=True)`` adds.
(b) fxsplit: ``fxsplit.compile(model, ..., jobs=N, reference=False)`` -- the partition jobs of the
    model's markers in parallel; wall = the whole compile() call (trace, convert, build, copy, report) and
    ``design.build.wall_seconds`` (the build engine alone); plus the sum of the partition jobs.
    Both (a) and (b) without precompiled headers (``csim_pch=False``), then (b) with the host's
    precompiled hls4ml headers cold (the first job builds them, in this run's own directory); these
    three start their workers cold (Python, torch and hls4ml imported inside the timed build).
    Then (a') and (b'') with the headers warm and their workers warm (``prewarm(wait=True)`` before
    the timer: the build, not Python starting, is timed; bench_incremental.py covers worker start-up).
(d) fxsplit's automatic split: ``compile(strip_markers(model), splits="auto", workers=N, jobs=N,
    reference=False)``, headers and workers warm: the cuts fxsplit chooses for N workers. (d0) with a
    fresh cache (the shipped cost model); (d) with the cache of (b''), as a user's next build would: the
    cost model is fitted on the measured jobs of (b''), and every partition of (d) is built (checked).
(c) hls4ml MultiModelGraph: ``to_multi_model_graph(<uncut ModelGraph>, split_before_layers=...)``
    split before the first layer of every fxsplit partition, then ``compile()`` (= write every
    subgraph + the stitched bridge, then its build_lib.sh, which compiles all subgraphs at once
    in the background with ``&`` and links one library). Only csim; no Vivado.

(e) --repeat more rounds of (a') and (d0), interleaved, each from cold caches.
The target compares the build engine's wall of (d0) and of (a'): same headers, warm workers, the median
of the rounds' ratios (this machine's speed drifts by tens of percent within minutes). That is the strict
reading: the monolithic build gets the precompiled headers too, so only what is NOT shared between
partitions counts against them. Printed beside it: the auto split against plain hls4ml's own compile()
(a0) and against fxsplit's monolithic job without precompiled headers (a), the build the issue measured.
Then the stitched fxsplit predictions are checked bit for bit against the monolithic library
(and the MultiModelGraph library against both) on a few random inputs.
--quick: csim at -O0 and 3 samples (everything else identical).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import dataclasses
import math
import os
import re
import time
import traceback

import numpy as np

import _common as C

import fxsplit  # noqa: E402
from fxsplit.engine import Job, run_jobs  # noqa: E402
from fxsplit import lower as hflow  # noqa: E402
from fxsplit.flows.hls4ml import csim as csim_mod  # noqa: E402
from fxsplit import partition  # noqa: E402
from fxsplit.frontend.partitioner import strip_markers  # noqa: E402
from fxsplit.zoo import build as build_model  # noqa: E402


def warm_workers(n: int) -> float:
    """Start ``n`` build workers and wait until they have imported what a C-simulation job needs (they are
    parked; the next build on ``n`` workers takes them). Returns the seconds that took."""
    from fxsplit.engine.executors import prewarm
    from fxsplit.flows import get_flow
    t0 = time.time()
    prewarm(n, get_flow("hls4ml").job_modules, wait=True)
    return time.time() - t0


def job_span(build) -> float:
    """First job start to last job end (the jobs that ran)."""
    ran = [r for r in build if r.state == "built"]
    return max(r.end for r in ran) - min(r.start for r in ran) if ran else 0.0


def monolithic_build(model, shape, config, run_dir):
    """(a) the uncut model's C-simulation job alone, through the build engine on one worker."""
    t0 = time.time()
    pt = partition(model, shape)
    fc = hflow.normalize_config(config, pt)
    mono_spec = hflow.lower(pt, fc, str(run_dir / "mono_lower")).mono_spec
    t_lower = time.time() - t0
    job = Job(id=f"{mono_spec.name}/csim", partition=mono_spec.name, step="csim", fn=csim_mod.csim_job, tools=("g++", "hls4ml", "torch", "numpy"),
              params={"spec": mono_spec}, key_data=mono_spec.key_data())
    res = run_jobs([job], run_dir / "mono_cache", max_workers=1, progress=False, log_dir=run_dir / "mono_logs")
    res.raise_for_failures()
    r = res[job.id]
    meta = r.meta
    csim = csim_mod.CSim(os.path.join(r.artifact_dir, meta["lib"]), meta["project"],
                         [p.precision for p in pt.inputs], [p.precision for p in pt.outputs],
                         [math.prod(s) for s in meta["inputs"]], [math.prod(s) for s in meta["outputs"]])
    return {"lower_seconds": t_lower, "job_seconds": r.seconds, "engine_wall": res.wall_seconds,
            "write_seconds": meta["write_seconds"], "compile_seconds": meta["compile_seconds"],
            "state": r.state}, csim, mono_spec


def plain_hls4ml_build(model, shape, args, run_dir):
    """(a0) plain hls4ml on the uncut model, the way its users build it: config_from_pytorch_model's defaults
    with the benchmark's precision, convert, then ``compile()`` (write + build_lib.sh), timed."""
    import hls4ml
    from hls4ml.utils.config import config_from_pytorch_model
    t0 = time.time()
    cfg = config_from_pytorch_model(model, shape, granularity="model", default_precision=args.precision)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=str(run_dir / "plain_hls4ml"),
                                                          backend="Vivado", io_type="io_stream")
        t1 = time.time()
        hm.compile()
    t2 = time.time()
    return {"convert_seconds": t1 - t0, "compile_seconds": t2 - t1}, hm


def mmg_build_any(mono_spec, pt, run_dir, csim_opt):
    """(c) with the configured backend (Vivado); hls4ml 1.3's MultiModelGraph.write() only works with a
    VitisWriter (it calls ``super(type(writer), writer).write_hls(..., is_multigraph=True)``, which for a
    VivadoWriter lands on the base Writer), so on failure retry with backend='Vitis'."""
    attempts = []
    for backend in dict.fromkeys([mono_spec.backend, "Vitis"]):
        spec = dataclasses.replace(mono_spec, backend=backend)
        info, mmg = mmg_build(spec, pt, run_dir / f"mmg_{backend}", csim_opt)
        info["backend"] = backend
        attempts.append(info)
        if info["ok"]:
            break
    final = dict(attempts[-1])
    final["attempts"] = [{k: a.get(k) for k in ("backend", "ok", "error", "traceback")} for a in attempts]
    return final, mmg


def mmg_build(mono_spec, pt, run_dir, csim_opt):
    """(c) hls4ml's own MultiModelGraph split at the same places, compile() (csim only)."""
    from hls4ml.model.graph import to_multi_model_graph
    out = {"ok": False}
    t0 = time.time()
    hm = hflow.build_modelgraph(mono_spec, str(run_dir / "hls4ml_prj"))
    nmap = mono_spec.name_map
    split_before = []
    for part in pt.partitions[1:]:
        # the first layer of the partition in the uncut ModelGraph: the consumer(s) of the cut tensor(s)
        cons = []
        for port in part.inputs:
            src = hm.graph[nmap.get(port.name, port.name)]
            cons += [n for n, layer in hm.graph.items() if set(src.outputs) & set(layer.inputs)]
        order = list(hm.graph)
        cons = sorted(set(cons), key=order.index)
        if len(cons) != 1 or len(part.inputs) != 1:
            # not a single-edge cut: give hls4ml the earliest layer anyway and record what it does
            out.setdefault("notes", []).append(
                f"partition {part.name!r} has {len(part.inputs)} input tensor(s) whose consumers are {cons}: "
                "not a single-edge cut; trying MultiModelGraph with the earliest one")
        split_before.append(cons[0])
    out["split_before_layers"] = split_before
    out["convert_seconds"] = time.time() - t0
    try:
        t1 = time.time()
        mmg = to_multi_model_graph(hm, split_before)
        out["split_seconds"] = time.time() - t1
        out["n_graphs"] = len(mmg.graphs)
        t2 = time.time()
        mmg.write()
        out["write_seconds"] = time.time() - t2
        script = os.path.join(mmg.config.get_output_dir(), "build_lib.sh")
        if csim_opt != "-O3":   # hls4ml hard-codes -O3; use the same level as the fxsplit builds
            with open(script) as f:
                text = f.read()
            with open(script, "w") as f:
                f.write(re.sub(r'CFLAGS="-O3', f'CFLAGS="{csim_opt}', text))
        t3 = time.time()
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):   # hls4ml prints g++'s output when build_lib.sh fails
                mmg._compile()
        finally:
            errs = [ln.strip() for ln in buf.getvalue().splitlines() if "error:" in ln]
            if errs:
                out["compiler_errors"] = errs[:10]
        out["compile_seconds"] = time.time() - t3
        out["total_seconds"] = time.time() - t1   # split + write + compile (= MultiModelGraph.compile())
        out["ok"] = True
        return out, mmg
    except Exception as e:  # a finding, not a crash of the benchmark
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc(limit=6)
        return out, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="csim -O0, 3 samples")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--csim-opt", default=None, help="g++ level for every build (default -O3, --quick: -O0)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3,
                    help="more rounds of the target pair, (a') then (d0), interleaved (default 3; --quick: 0)")
    ap.add_argument("--precision", default="fixed<16,6>")
    ap.add_argument("--out-root", default=None, help="where the run directory is created (default: $TMPDIR)")
    args = ap.parse_args()
    csim_opt = args.csim_opt or ("-O0" if args.quick else "-O3")
    n_samples = args.samples or (3 if args.quick else 8)
    config = {"io_type": "io_stream", "precision": args.precision, "csim_opt": csim_opt}

    run_dir = C.fresh_run_dir("bench_hls_build", args.out_root)
    info = C.machine()
    print(f"run dir: {run_dir}\nmodel={args.model} config={config} jobs={args.jobs} "
          f"cpus={info['cpus']} loadavg={info['loadavg_at_start']}", flush=True)
    payload = {"benchmark": "bench_hls_build", "model": args.model, "config": config, "jobs": args.jobs,
               "quick": args.quick, "machine": info, "run_dir": str(run_dir)}

    # The host's precompiled hls4ml headers (fxsplit/flows/hls4ml/pch.py) live in this run's directory,
    # so the first build that uses them pays for building them (cold), and later ones find them (warm).
    os.environ["FXSPLIT_PCH_DIR"] = str(run_dir / "pch")

    def fx_build(tag, pch, auto=False, warm=False, cache_tag=None):
        model, shape = build_model(args.model)
        extra = {}
        if auto:
            model = strip_markers(model, shape)
            extra = {"splits": "auto", "workers": args.jobs}
        warm_s = warm_workers(args.jobs) if warm else None
        la = C.loadavg()
        t0 = time.time()
        d = fxsplit.compile(model, shape, config={**config, "csim_pch": pch}, output_dir=run_dir / f"fxsplit_{tag}",
                            cache_dir=run_dir / f"fxsplit_cache_{cache_tag or tag}", jobs=args.jobs, progress=False,
                            reference=False, **extra)
        wall = time.time() - t0
        b = d.build
        parts = [r for r in b if r.step == "csim"]
        if any(r.state != "built" for r in parts):     # a shared cache must not hand a timed build old results
            raise RuntimeError(f"({tag}) not every job was built: {[(r.id, r.state) for r in parts]}")
        row = {"compile_wall": wall, "engine_wall": b.wall_seconds, "job_span": job_span(b),
               "warm_up_seconds": warm_s, "partitions": [p.name for p in d.partitioning.partitions],
               "auto": d.report.get("auto_split"),
               "sum_partition_jobs": sum(r.seconds for r in parts),
               "max_partition_job": max(r.seconds for r in parts), "loadavg_before": la,
               "states": {r.id: r.state for r in b}, "jobs": C.job_rows(b), "pch": pch,
               "pch_used": [bool(r.meta.get("pch", {}).get("used")) for r in parts],
               "pch_built_seconds": sum(r.meta.get("pch", {}).get("seconds", 0.0) for r in parts),
               "predicted_wall": {w: fxsplit.engine.predict_wall_time(b, w) for w in (1, 2, 4, 8)}}
        print(f"    compile() {wall:.1f} s, build engine {b.wall_seconds:.1f} s"
              + (f" (of which building the precompiled headers {row['pch_built_seconds']:.1f} s)"
                 if row["pch_built_seconds"] else ""), flush=True)
        if pch and not all(row["pch_used"]):
            print("    WARNING: g++ did not use the precompiled headers in every job", flush=True)
        return d, parts, row

    model, shape = build_model(args.model)
    print("(a) monolithic C-simulation build, no precompiled headers (one job, one worker) ...", flush=True)
    la = C.loadavg()
    mono, mono_csim, mono_spec = monolithic_build(model, shape, {**config, "csim_pch": False}, run_dir / "mono_nopch")
    mono["loadavg_before"] = la
    print(f"    {mono['job_seconds']:.1f} s (write {mono['write_seconds']:.1f} + g++ {mono['compile_seconds']:.1f})",
          flush=True)
    payload["monolithic"] = mono

    print("(a0) plain hls4ml: convert_from_pytorch_model(...).compile() of the uncut model (write + its build_lib.sh) ...",
          flush=True)
    la = C.loadavg()
    plain, plain_hm = plain_hls4ml_build(model, shape, args, run_dir)
    plain["loadavg_before"] = la
    print(f"    compile() {plain['compile_seconds']:.1f} s (convert {plain['convert_seconds']:.1f} s before it)", flush=True)
    payload["plain_hls4ml"] = plain

    print(f"(b) fxsplit.compile(jobs={args.jobs}, reference=False), no precompiled headers ...", flush=True)
    design_nopch, parts_nopch, fx_nopch = fx_build("nopch", False)
    payload["fxsplit_nopch"] = fx_nopch

    print(f"(b') fxsplit.compile(jobs={args.jobs}, reference=False), precompiled headers cold (built by the "
          "first job) ...", flush=True)
    _d, _p, fx_cold = fx_build("pch_cold", True)
    payload["fxsplit_pch_cold"] = fx_cold

    print("(a') monolithic C-simulation build, precompiled headers warm, worker warm ...", flush=True)
    model, shape = build_model(args.model)
    warm_mono = warm_workers(1)
    la = C.loadavg()
    mono_p, mono_p_csim, _spec = monolithic_build(model, shape, {**config, "csim_pch": True}, run_dir / "mono_pch")
    mono_p["loadavg_before"] = la
    mono_p["warm_up_seconds"] = warm_mono
    print(f"    build engine {mono_p['engine_wall']:.1f} s: job {mono_p['job_seconds']:.1f} s (write "
          f"{mono_p['write_seconds']:.1f} + g++ {mono_p['compile_seconds']:.1f}); the worker warmed up in "
          f"{warm_mono:.1f} s before", flush=True)
    payload["monolithic_pch"] = mono_p

    print(f"(b'') fxsplit.compile(jobs={args.jobs}, reference=False), precompiled headers warm, workers warm ...",
          flush=True)
    design, parts, fx_warm = fx_build("pch_warm", True, warm=True)
    payload["fxsplit"] = fx_warm
    b = design.build
    compile_wall = fx_warm["compile_wall"]
    part_sum = fx_warm["sum_partition_jobs"]

    def show_plan(row):
        plan = row["auto"] or {}
        csim = (plan.get("model") or {}).get("csim", {})
        print(f"    auto split: {len(row['partitions'])} partitions, cuts before {plan.get('splits')}, predicted wall "
              f"{plan.get('predicted_wall', float('nan')):.1f} s on {args.jobs} workers (csim model: "
              f"{csim.get('source')}), measured {row['engine_wall']:.1f} s", flush=True)

    print(f"(d0) fxsplit.compile(strip_markers(model), splits='auto', workers={args.jobs}, jobs={args.jobs}, "
          "reference=False), a fresh cache (the shipped cost model), precompiled headers and workers warm ...",
          flush=True)
    design_auto0, parts_auto0, fx_auto0 = fx_build("auto_fresh", True, auto=True, warm=True)
    payload["fxsplit_auto_fresh_cache"] = fx_auto0
    show_plan(fx_auto0)
    # what a user's second build does: the same cache as (b''), whose four jobs the cost model is fitted on
    # (the auto split's partitions are other projects: every one of them is built, which fx_build checks)
    print(f"(d) the same, with the cache of (b'') (the cost model fitted on its {len(parts)} measured jobs) ...",
          flush=True)
    design_auto, parts_auto, fx_auto = fx_build("auto", True, auto=True, warm=True, cache_tag="pch_warm")
    payload["fxsplit_auto"] = fx_auto
    show_plan(fx_auto)

    # the target pair again, interleaved (this machine's speed drifts by tens of percent within minutes):
    # every round a cold monolithic build, then a cold auto build, both with warm headers and workers
    rounds = [(mono_p["engine_wall"], fx_auto0["engine_wall"])]
    repeat = 0 if args.quick else args.repeat
    for i in range(1, repeat + 1):
        warm_workers(1)
        m_i = monolithic_build(model, shape, {**config, "csim_pch": True}, run_dir / f"mono_pch_r{i}")[0]
        _d, _p, a_i = fx_build(f"auto_r{i}", True, auto=True, warm=True)
        rounds.append((m_i["engine_wall"], a_i["engine_wall"]))
        print(f"(e) round {i}: monolithic {m_i['engine_wall']:.1f} s, auto ({len(a_i['partitions'])} partitions, "
              f"cuts {a_i['auto']['splits']}) {a_i['engine_wall']:.1f} s: {a_i['engine_wall'] / m_i['engine_wall']:.2f}x",
              flush=True)
    round_ratios = [a / m for m, a in rounds]
    payload["target_rounds"] = [{"monolithic": m, "auto": a, "ratio": a / m} for m, a in rounds]

    # (c) hls4ml MultiModelGraph
    print("(c) hls4ml MultiModelGraph compile() ...", flush=True)
    la = C.loadavg()
    mmg_info, mmg = mmg_build_any(mono_spec, design.partitioning, run_dir, csim_opt)
    mmg_info["loadavg_before"] = la
    payload["multimodelgraph"] = {k: v for k, v in mmg_info.items()}
    if mmg_info["ok"]:
        for a in mmg_info["attempts"][:-1]:
            print(f"    backend={a['backend']}: FAILED: {a['error']}", flush=True)
        print(f"    backend={mmg_info['backend']}: {mmg_info['total_seconds']:.1f} s (write {mmg_info['write_seconds']:.1f} + "
              f"build_lib.sh {mmg_info['compile_seconds']:.1f})", flush=True)
    else:
        for a in mmg_info["attempts"]:
            print(f"    backend={a['backend']}: FAILED: {a['error']}", flush=True)
        for e in mmg_info.get("compiler_errors", []):
            print(f"      g++: {e[-200:]}", flush=True)

    # bit-exactness
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(n_samples, *shape))

    def verify_vs_mono(d):
        d._mono = mono_csim             # the monolithic library from (a) as every design's reference
        return d.verify(x)

    t0 = time.time()
    res = verify_vs_mono(design)
    verify_seconds = time.time() - t0
    exact = {"n_samples": n_samples, "fxsplit_vs_monolithic_bit_exact": res.bit_exact,
             "mismatching_elements": res.mismatches, "max_abs_error_vs_torch": res.max_abs_error_vs_torch,
             "seconds": verify_seconds}
    if mmg is not None:
        xs = design._inputs(x)
        try:
            y_mmg = np.asarray(mmg.predict(np.ascontiguousarray(xs[0].reshape(n_samples, -1)))).reshape(n_samples, -1)
            y_mono = mono_csim(xs)[0].reshape(n_samples, -1)
            exact["multimodelgraph_vs_monolithic_bit_exact"] = bool(np.array_equal(y_mmg, y_mono))
            exact["multimodelgraph_vs_monolithic_max_abs_diff"] = float(np.max(np.abs(y_mmg - y_mono)))
        except Exception as e:
            exact["multimodelgraph_predict_error"] = f"{type(e).__name__}: {e}"
    # the precompiled headers change nothing: every library gives the same bits as its twin without them
    xs = design._inputs(x)
    exact["monolithic_pch_vs_nopch_bit_exact"] = all(
        np.array_equal(a, b_) for a, b_ in zip(mono_p_csim.run([mono_p_csim.quantize(0, xs[0])]),
                                               mono_csim.run([mono_csim.quantize(0, xs[0])])))
    exact["fxsplit_nopch_vs_monolithic_bit_exact"] = verify_vs_mono(design_nopch).bit_exact
    res_auto, res_auto0 = verify_vs_mono(design_auto), verify_vs_mono(design_auto0)
    exact["fxsplit_auto_vs_monolithic_bit_exact"] = res_auto.bit_exact
    exact["fxsplit_auto_shipped_model_vs_monolithic_bit_exact"] = res_auto0.bit_exact
    # plain hls4ml's own library (its double bridge, PyTorch-layout input) against fxsplit's stitched design
    y_plain = np.asarray(plain_hm.predict(np.ascontiguousarray(x, dtype=np.float64))).reshape(n_samples, -1)
    y_auto = np.asarray(design_auto0.predict(x)).reshape(n_samples, -1)
    exact["plain_hls4ml_vs_fxsplit_auto_bit_exact"] = bool(np.array_equal(y_plain, y_auto))
    payload["bit_exact"] = exact

    # ---- report
    rows = [["(a0) plain hls4ml compile() of the uncut model (2 TUs, no PCH)", "1", plain["compile_seconds"], None,
             None],
            ["(a) monolithic, 1 project, no PCH, cold worker: job", "1", mono["job_seconds"], mono["write_seconds"],
             mono["compile_seconds"]],
            ["(a) monolithic, no PCH, cold worker: build engine wall", "1", mono["engine_wall"], None, None],
            ["(a') monolithic, 1 project, PCH warm: job", "1", mono_p["job_seconds"], mono_p["write_seconds"],
             mono_p["compile_seconds"]],
            ["(a') monolithic, PCH warm, warm worker: build engine wall", "1", mono_p["engine_wall"], None, None]]
    for r in parts:
        rows.append([f"    partition {r.partition} (markers, PCH warm)", "1", r.seconds, r.meta.get("write_seconds"),
                     r.meta.get("compile_seconds")])
    for label, ps in (("auto, shipped cost model", parts_auto0), ("auto, fitted cost model", parts_auto)):
        for r in ps:
            rows.append([f"    partition {r.partition} ({label}, PCH warm)", "1", r.seconds, r.meta.get("write_seconds"),
                         r.meta.get("compile_seconds")])
    for label, row in (("markers, no PCH, cold workers", fx_nopch), ("markers, PCH cold, cold workers", fx_cold),
                       ("markers, PCH warm, warm workers", fx_warm),
                       ("auto (shipped model), PCH and workers warm", fx_auto0),
                       ("auto (fitted model), PCH and workers warm", fx_auto)):
        n = str(len(row["partitions"]))
        rows.append([f"(b) fxsplit sum of partition jobs, {label}", n, row["sum_partition_jobs"], None, None])
        rows.append([f"(b) fxsplit first job start to last end, {label}", str(args.jobs), row["job_span"], None, None])
        rows.append([f"(b) fxsplit build engine wall, jobs={args.jobs}, {label}", str(args.jobs), row["engine_wall"],
                     None, None])
        rows.append([f"(b) fxsplit compile() wall, jobs={args.jobs}, {label}", str(args.jobs), row["compile_wall"],
                     None, None])
    if mmg_info["ok"]:
        rows.append([f"(c) MultiModelGraph compile() [{mmg_info['backend']}]", "bash &", mmg_info["total_seconds"], mmg_info["write_seconds"],
                     mmg_info["compile_seconds"]])
    else:
        rows.append(["(c) MultiModelGraph compile()", "-", "FAILED", None, None])
    print()
    print(C.table(rows, ["build", "parallel", "seconds", "write", "g++"],
                  f"C-simulation build, {args.model}, {len(parts)} partitions, io_stream, {csim_opt}, cold caches"))
    print(f"precompiled headers (once per host, toolchain, flags and hls4ml version): built in "
          f"{fx_cold['pch_built_seconds']:.1f} s by the first job of (b', PCH cold)")
    target = float(np.median(round_ratios))
    ratios = {
        f"fxsplit auto ({len(parts_auto0)} partitions) / monolithic, build-engine walls, PCH and workers warm, median "
        f"of {len(rounds)} interleaved rounds (target <= 0.6)": C.ratio(target, 1.0),
        f"fxsplit auto ({len(parts_auto0)} partitions, shipped cost model) / monolithic, the same, first round":
            C.ratio(fx_auto0["engine_wall"], mono_p["engine_wall"]),
        f"fxsplit auto ({len(parts_auto)} partitions, cost model fitted on the cache) / monolithic, first round":
            C.ratio(fx_auto["engine_wall"], mono_p["engine_wall"]),
        f"fxsplit markers ({len(parts)} partitions) / monolithic, build-engine walls, PCH and workers warm":
            C.ratio(fx_warm["engine_wall"], mono_p["engine_wall"]),
        "fxsplit auto (shipped model) build-engine wall / plain hls4ml compile() of the uncut model, first round":
            C.ratio(fx_auto0["engine_wall"], plain["compile_seconds"]),
        "fxsplit auto (shipped model) compile() wall / plain hls4ml convert + compile(), first round":
            C.ratio(fx_auto0["compile_wall"], plain["convert_seconds"] + plain["compile_seconds"]),
        "fxsplit auto (shipped model) build-engine wall, PCH warm / the monolithic job without PCH (a), first round":
            C.ratio(fx_auto0["engine_wall"], mono["job_seconds"]),
        "fxsplit auto (shipped model), first job start to last end / monolithic job, PCH warm, first round":
            C.ratio(fx_auto0["job_span"], mono_p["job_seconds"]),
        "fxsplit markers, first job start to last end / monolithic job, PCH warm":
            C.ratio(fx_warm["job_span"], mono_p["job_seconds"]),
        "fxsplit auto (shipped model), sum of partition jobs / monolithic job, PCH warm, first round":
            C.ratio(fx_auto0["sum_partition_jobs"], mono_p["job_seconds"]),
        "fxsplit markers / monolithic, build-engine walls, neither with PCH, cold workers":
            C.ratio(fx_nopch["engine_wall"], mono["engine_wall"]),
        "fxsplit markers with PCH cold (built in the run) / monolithic without, build-engine walls, cold workers":
            C.ratio(fx_cold["engine_wall"], mono["engine_wall"]),
        "fxsplit sum of partition jobs / monolithic job, both PCH warm":
            C.ratio(part_sum, mono_p["job_seconds"]),
        "fxsplit sum of partition jobs / monolithic job, neither with PCH":
            C.ratio(fx_nopch["sum_partition_jobs"], mono["job_seconds"]),
        "monolithic no PCH / PCH warm": C.ratio(mono["job_seconds"], mono_p["job_seconds"]),
        "MultiModelGraph / fxsplit compile() wall (PCH warm)": C.ratio(mmg_info.get("total_seconds"), compile_wall)
        if mmg_info["ok"] else None,
        "MultiModelGraph / fxsplit build-engine wall (PCH warm)": C.ratio(mmg_info.get("total_seconds"), b.wall_seconds)
        if mmg_info["ok"] else None,
        "monolithic (no PCH) / MultiModelGraph": C.ratio(mono["job_seconds"], mmg_info.get("total_seconds"))
        if mmg_info["ok"] else None,
    }
    print(f"target (the auto split's build <= 0.6x the monolithic one, same headers, warm workers, median of "
          f"{len(rounds)} rounds): {'MET' if target <= 0.6 else 'NOT MET'} ({target:.2f}x; rounds "
          f"{', '.join(f'{r:.2f}' for r in round_ratios)}; the markers' {len(parts)} partitions, first round: "
          f"{fx_warm['engine_wall'] / mono_p['engine_wall']:.2f}x)")
    print(f"  beside it: the same auto build against plain hls4ml's compile() of the uncut model "
          f"{fx_auto0['engine_wall'] / plain['compile_seconds']:.2f}x, against fxsplit's monolithic job without "
          f"precompiled headers {fx_auto0['engine_wall'] / mono['job_seconds']:.2f}x (first round)")
    payload["ratios"] = ratios
    print()
    print(C.table([[k, v] for k, v in ratios.items()], ["ratio", "x"], "Ratios (same run)"))
    pw = payload["fxsplit"]["predicted_wall"]
    print(f"\nfxsplit predicted build wall from the measured jobs: "
          + ", ".join(f"{w} workers {pw[w]:.1f} s" for w in (1, 2, 4, 8)))
    if not mmg_info["ok"]:
        print(f"\nMultiModelGraph failed (split_before_layers={mmg_info.get('split_before_layers')}):")
        for a in mmg_info["attempts"]:
            print(f"  backend={a['backend']}: {a['error']}")
        for e in mmg_info.get("compiler_errors", []):
            print(f"    g++: {e[-200:]}")
        for n in mmg_info.get("notes", []):
            print(f"  note: {n}")
    else:
        print(f"\nMultiModelGraph (backend={mmg_info['backend']}) split_before_layers="
              f"{mmg_info['split_before_layers']}")
        for a in mmg_info["attempts"][:-1]:
            print(f"  backend={a['backend']} failed first: {a['error']}")
    print(f"\nprecompiled headers change no bit: monolithic PCH vs no PCH "
          f"{'BIT-EXACT' if exact['monolithic_pch_vs_nopch_bit_exact'] else 'MISMATCH'}; fxsplit no PCH vs "
          f"monolithic {'BIT-EXACT' if exact['fxsplit_nopch_vs_monolithic_bit_exact'] else 'MISMATCH'}")
    print(f"\nbit-exactness on {n_samples} random inputs: fxsplit stitched (PCH) vs monolithic (no PCH): "
          f"{'BIT-EXACT' if res.bit_exact else 'MISMATCH (%d elements)' % res.mismatches}"
          f" (max |design - torch float| = {res.max_abs_error_vs_torch:.4g})")
    for label, r_, ps in (("fitted", res_auto, parts_auto), ("shipped", res_auto0, parts_auto0)):
        print(f"  fxsplit auto split, {label} cost model ({len(ps)} partitions) vs monolithic: "
              f"{'BIT-EXACT' if r_.bit_exact else 'MISMATCH (%d elements)' % r_.mismatches}")
    print(f"  plain hls4ml's own library vs the fxsplit auto split: "
          f"{'BIT-EXACT' if exact['plain_hls4ml_vs_fxsplit_auto_bit_exact'] else 'MISMATCH'}")
    if "multimodelgraph_vs_monolithic_bit_exact" in exact:
        print(f"  MultiModelGraph vs monolithic: "
              f"{'BIT-EXACT' if exact['multimodelgraph_vs_monolithic_bit_exact'] else 'MISMATCH'} "
              f"(max |diff| = {exact['multimodelgraph_vs_monolithic_max_abs_diff']:.4g})")
    elif "multimodelgraph_predict_error" in exact:
        print(f"  MultiModelGraph predict failed: {exact['multimodelgraph_predict_error']}")
    payload["loadavg_at_end"] = C.loadavg()
    print(f"\nloadavg start {info['loadavg_at_start']} end {payload['loadavg_at_end']} (other work on this "
          f"machine inflates times)")
    print(f"figures: {C.write_json(run_dir, payload)}")


if __name__ == "__main__":
    main()
