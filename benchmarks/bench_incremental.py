"""Incremental rebuilds: cold build, one-partition change, no change, and a change in a fresh process.

    python benchmarks/bench_incremental.py [--quick] [--model residual_cnn] [--flow hls4ml|rtl]
                                           [--change reuse|precision] [--no-reference] [--jobs 2]

Four ``fxsplit.compile`` calls on the same output dir (and its default cache ``output_dir/.cache``),
created fresh for this run, the first three in this process (as in a notebook session), the last in
a new Python process (as ``python -m fxsplit compile`` would run it):

1. cold: nothing cached.
2. one-partition change: the LAST partition (in topological order) gets a new
   ``config['partitions'][last]`` override (``reuse_factor: 2``, or ``precision`` with --change precision).
   Why the last one: a partition's hls4ml project depends on its own layers/config and on the types
   of its input ports, which are pinned to what its producers emit. Changing a partition can change its
   output types and so every partition downstream; nothing is downstream of the last one, so only its
   jobs rebuild. The uncut reference (``monolithic/csim``, built when ``reference=True``, the default)
   rebuilds only for a numeric change (precision); a reuse factor changes no bit of a C simulation and
   the reference is built without one (``lower.spec.reference_config``).
   In the RTL flow a reuse_factor change does not change the fully parallel Verilog (same da4ml
   program -> same key): only the csim job reruns; a precision change reruns csim, rtl and synth.
   Its workers are the cold build's, kept warm (``fxsplit.engine.executors``: they imported torch and
   hls4ml once, when ``compile`` started them before lowering the model).
3. no change: the same call again; everything comes from the cache. Target: < 2 s wall (PASS/FAIL printed).
4. the same kind of change (``reuse_factor: 3`` / another precision) in a fresh process: no warm
   workers; they start while that process lowers the model.

Wall times are of the whole ``compile()`` call (trace, hls4ml conversion of every partition and of the
uncut model in this process, cache lookups with manifest verification, artifact copies, report) and of
the build engine alone (``design.build.wall_seconds``). The one-partition rebuild is compared with
that partition's share of the cold build (the cold durations of exactly the jobs that reran, list-scheduled
on the same number of workers) plus the cold main-process overhead ("stitching": compile() wall minus
engine wall); and with the same jobs as long as they took in the rebuild (the changed partition is another
program, whose g++ time differs from the old one's): what the rebuild adds around its own work.
--quick: jet_tagger, csim -O0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import _common as C

import fxsplit  # noqa: E402
from fxsplit.engine import predict_wall_time  # noqa: E402
from fxsplit.zoo import build as build_model  # noqa: E402

TARGET_NOCHANGE_S = 2.0


def run(name, model_name, flow, config, out, jobs, reference):
    model, shape = build_model(model_name)
    la = C.loadavg()
    t0 = time.time()
    d = fxsplit.compile(model, shape, flow=flow, config=config, output_dir=out, jobs=jobs, progress=False,
                        reference=reference)
    wall = time.time() - t0
    b = d.build
    return d, {"run": name, "config": config, "compile_wall": wall, "engine_wall": b.wall_seconds,
               "overhead": wall - b.wall_seconds, "loadavg_before": la,
               "built": sorted(r.id for r in b if r.state == "built"),
               "cached": sorted(r.id for r in b if r.state == "cached"),
               "job_seconds": {r.id: round(r.seconds, 3) for r in b}, "jobs": C.job_rows(b)}


_FRESH = """
import json, sys, time
sys.path.insert(0, {root!r})
import fxsplit
from fxsplit.zoo import build
model, shape = build({model!r})
t0 = time.time()
d = fxsplit.compile(model, shape, flow={flow!r}, config={config!r}, output_dir={out!r}, jobs={jobs!r},
                    progress=False, reference={reference!r})
wall = time.time() - t0
b = d.build
print("FXSPLIT-BENCH " + json.dumps({{"compile_wall": wall, "engine_wall": b.wall_seconds,
      "built": sorted(r.id for r in b if r.state == "built"), "cached": sorted(r.id for r in b if r.state == "cached"),
      "job_seconds": {{r.id: round(r.seconds, 3) for r in b}}}}))
"""


def run_fresh(name, model_name, flow, config, out, jobs, reference):
    """compile() in a new Python process; the wall of the call itself (the process' imports excluded)."""
    code = _FRESH.format(root=str(C.ROOT), model=model_name, flow=flow, config=config, out=str(out), jobs=jobs,
                         reference=reference)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(C.ROOT))
    line = [x for x in p.stdout.splitlines() if x.startswith("FXSPLIT-BENCH ")]
    if p.returncode != 0 or not line:
        raise SystemExit(f"the fresh-process compile failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    r = json.loads(line[0].split(" ", 1)[1])
    return {"run": name, "config": config, "overhead": r["compile_wall"] - r["engine_wall"], "jobs": [],
            "loadavg_before": C.loadavg(), **r}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="jet_tagger, csim -O0")
    ap.add_argument("--model", default=None, help="zoo model (default residual_cnn; --quick: jet_tagger)")
    ap.add_argument("--flow", default="hls4ml", choices=["hls4ml", "rtl"])
    ap.add_argument("--change", default=None, choices=["reuse", "precision"],
                    help="what changes in the last partition (default: reuse for hls4ml, precision for rtl)")
    ap.add_argument("--no-reference", action="store_true", help="compile(reference=False): no uncut csim job")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--csim-opt", default=None, help="default -O3 (--quick: -O0)")
    ap.add_argument("--precision", default="fixed<16,6>", help="base precision (rtl flow: default fixed<8,3>)")
    ap.add_argument("--out-root", default=None)
    args = ap.parse_args()
    model_name = args.model or ("jet_tagger" if args.quick else "residual_cnn")
    change = args.change or ("reuse" if args.flow == "hls4ml" else "precision")
    reference = not args.no_reference
    precision = args.precision
    if args.flow == "rtl" and precision == "fixed<16,6>":
        precision = "fixed<8,3>"   # keep Yosys short
    base = {"precision": precision, "csim_opt": args.csim_opt or ("-O0" if args.quick else "-O3")}

    model, shape = build_model(model_name)
    from fxsplit import partition
    names = [p.name for p in partition(model, shape).partitions]
    last = names[-1]
    override = {"reuse_factor": 2} if change == "reuse" else {"precision": "fixed<12,5>" if args.flow == "hls4ml"
                                                                  else "fixed<7,3>"}
    changed = {**base, "partitions": {last: override}}
    override2 = {"reuse_factor": 3} if change == "reuse" else {"precision": "fixed<11,4>" if args.flow == "hls4ml"
                                                                   else "fixed<6,3>"}
    changed2 = {**base, "partitions": {last: override2}}

    run_dir = C.fresh_run_dir("bench_incremental", args.out_root)
    out = run_dir / "out"
    info = C.machine()
    print(f"run dir: {run_dir}\nmodel={model_name} partitions={names} flow={args.flow} config={base} "
          f"reference={reference} jobs={args.jobs} cpus={info['cpus']} loadavg={info['loadavg_at_start']}",
          flush=True)
    print(f"change in run 2: config['partitions'][{last!r}] = {override}", flush=True)

    runs = []
    for label, cfg in (("cold", base), (f"change {last}", changed), ("no change", changed)):
        print(f"{label} ...", flush=True)
        _d, r = run(label, model_name, args.flow, cfg, out, args.jobs, reference)
        print(f"   compile() {r['compile_wall']:.2f} s, engine {r['engine_wall']:.2f} s, built {r['built']}", flush=True)
        runs.append(r)
    print(f"change {last} again, in a fresh process: {override2} ...", flush=True)
    r = run_fresh(f"change {last}, fresh process", model_name, args.flow, changed2, out, args.jobs, reference)
    print(f"   compile() {r['compile_wall']:.2f} s, engine {r['engine_wall']:.2f} s, built {r['built']}", flush=True)
    runs.append(r)
    cold, warm1, warm0, fresh = runs

    # the rebuilt jobs' share of the cold build, scheduled like the cold build
    cold_rows = {j["id"]: j for j in cold["jobs"]}
    rebuilt = [cold_rows[i] for i in warm1["built"] if i in cold_rows]
    share = predict_wall_time([{"id": j["id"], "build_seconds": j["seconds"], "deps": j["deps"]} for j in rebuilt],
                              args.jobs)
    share_sum = sum(j["seconds"] for j in rebuilt)
    expected = share + cold["overhead"]
    # the same jobs as long as they took in the rebuild (a changed partition is another program: its g++ time
    # differs): what the rebuild adds around its own work, the idle time of the issue
    own = predict_wall_time([{"id": j["id"], "build_seconds": warm1["job_seconds"][j["id"]], "deps": j["deps"]}
                             for j in rebuilt], args.jobs)

    rows = []
    for r in runs:
        rows.append([r["run"], r["compile_wall"], r["engine_wall"], r["overhead"], len(r["built"]), len(r["cached"]),
                     C.ratio(r["compile_wall"], cold["compile_wall"])])
    print()
    print(C.table(rows, ["run", "compile() s", "engine s", "main-proc s", "built", "cached", "/cold"],
                  f"Incremental rebuilds, {model_name}, flow={args.flow}, jobs={args.jobs}"))
    print()
    all_ids = sorted(cold["job_seconds"])
    jrows = [[i, cold["job_seconds"][i], *("BUILT %.1f" % r["job_seconds"][i] if i in r["built"] else "reused"
                                            for r in (warm1, warm0, fresh))] for i in all_ids]
    print(C.table(jrows, ["job", "cold s", f"change {last}", "no change", "change, fresh process"], "Jobs per run"))
    nochange_pass = warm0["compile_wall"] < TARGET_NOCHANGE_S
    ratios = {
        "one-partition rebuild / cold (compile())": C.ratio(warm1["compile_wall"], cold["compile_wall"]),
        "no-change rebuild / cold (compile())": C.ratio(warm0["compile_wall"], cold["compile_wall"]),
        "no-change rebuild / cold (engine)": C.ratio(warm0["engine_wall"], cold["engine_wall"]),
        "one-partition rebuild / (its cold share + cold stitching)": C.ratio(warm1["compile_wall"], expected),
        "same, in a fresh process (no warm workers)": C.ratio(fresh["compile_wall"], expected),
        "one-partition rebuild / (its jobs as long as they took now + cold stitching)":
            C.ratio(warm1["compile_wall"], own + cold["overhead"]),
    }
    print()
    print(C.table([[k, v] for k, v in ratios.items()], ["ratio", "x"], "Ratios (same run)"))
    print(f"\none-partition rebuild: {warm1['compile_wall']:.2f} s; the rebuilt jobs {warm1['built']} took "
          f"{share_sum:.2f} s in the cold build ({share:.2f} s scheduled on {args.jobs} workers) + cold main-process "
          f"overhead (trace, convert, copy, report) {cold['overhead']:.2f} s = {expected:.2f} s expected; the same "
          f"jobs took {own:.2f} s in this rebuild")
    print(f"one-partition rebuild in a fresh process: {fresh['compile_wall']:.2f} s (built {fresh['built']})")
    print(f"no-change rebuild: {warm0['compile_wall']:.2f} s wall (engine {warm0['engine_wall']:.2f} s) -> "
          f"{'PASS' if nochange_pass else 'FAIL'} against the < {TARGET_NOCHANGE_S:.0f} s target")
    payload = {"benchmark": "bench_incremental", "model": model_name, "partitions": names, "flow": args.flow,
               "reference": reference, "jobs": args.jobs, "base_config": base, "change": {last: override},
               "machine": info, "run_dir": str(run_dir), "runs": runs, "ratios": ratios,
               "rebuilt_share_cold": {"sum": share_sum, "scheduled": share, "cold_overhead": cold["overhead"],
                                      "expected": expected, "rebuilt_jobs_now": own},
               "nochange_target_seconds": TARGET_NOCHANGE_S, "nochange_pass": nochange_pass,
               "loadavg_at_end": C.loadavg()}
    print(f"\nloadavg start {info['loadavg_at_start']} end {payload['loadavg_at_end']}")
    print(f"figures: {C.write_json(run_dir, payload)}")


if __name__ == "__main__":
    main()
