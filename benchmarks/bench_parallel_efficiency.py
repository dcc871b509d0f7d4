"""How much two builds side by side gain on this machine: the ceiling of every parallel speedup fxsplit measures.

    python benchmarks/bench_parallel_efficiency.py [--rounds 3] [--jobs 2]

Two real build steps, each run alone and then ``--jobs`` copies at once (the same input, separate directories),
``--rounds`` times, interleaved:

1. g++: the C-simulation library of ResNet20's first half (io_stream, ``-O3``, the precompiled hls4ml headers:
   what ``bench_hls_build.py`` times), compiled by the project's own ``build_lib.sh``;
2. Yosys: ``synth_xilinx`` of the wide MLP's 64x32 layer (da4ml's Verilog, what ``bench_auto_split.py`` times).

Printed per tool: the median time of one job alone and of one job among ``--jobs`` at once, the efficiency
(alone / together) and the speedup ceiling on ``--jobs`` workers (``jobs * efficiency``). Two jobs that slow
each other by a factor f cap a two-partition build at f/2 of the one-partition build, before any partition's
own fixed cost: e.g. bench_hls_build's target of 0.6x needs f <= 1.2.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common as C

import fxsplit  # noqa: E402
from fxsplit.zoo import build  # noqa: E402


def _timed(fn, n: int) -> list[float]:
    """``n`` calls of ``fn(k)`` at once (threads: each call waits on its own subprocess); seconds per call."""
    def one(k):
        t0 = time.time()
        fn(k)
        return time.time() - t0
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, range(n)))


def gxx_case(run: Path, jobs: int):
    """Copies of a ResNet20 partition's hls4ml project and a function compiling copy k."""
    from fxsplit.flows.hls4ml.csim import PCH_EXTRA, WEIGHTS_DIR
    from fxsplit.flows.hls4ml.pch import ensure_pch
    model, shape = build("resnet20")
    d = fxsplit.compile(model, shape, splits=["stage2.0"], config={"io_type": "io_stream"}, reference=False,
                        output_dir=run / "resnet20", progress=False, jobs=jobs)
    src = Path(d.output_dir) / d.partitions[0].name / "hls4ml"
    copies = []
    for k in range(jobs):
        dst = run / f"gxx{k}"
        shutil.copytree(src, dst)
        copies.append(dst)
    pch = ensure_pch(str(copies[0]), PCH_EXTRA, WEIGHTS_DIR)
    env = {"FXSPLIT_PCH": pch["header"]} if pch.get("header") else {}
    import os

    def compile_copy(k: int) -> None:
        for so in (copies[k] / "firmware").glob("*.so"):
            so.unlink()
        r = subprocess.run(["bash", "./build_lib.sh"], cwd=copies[k], env={**os.environ, **env},
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
    return compile_copy, f"g++ -O3, ResNet20 {d.partitions[0].name} ({'PCH' if env else 'no PCH'})"


def yosys_case(run: Path, jobs: int):
    from fxsplit.flows.rtl.synth import synthesize
    model, shape = build("wide_mlp")
    d = fxsplit.compile(model, shape, flow="rtl", config={"precision": "fixed<8,3>", "csim_opt": "-O0",
                                                          "synth": False},
                        reference=False, output_dir=run / "wide_mlp", progress=False, jobs=jobs)
    import json
    rtl = Path(d.output_dir) / "l3" / "rtl"
    meta = json.loads((rtl / "rtl_meta.json").read_text())
    files, top = [str(rtl / f) for f in meta["files"]], meta["top"]

    def synth(k: int) -> None:
        synthesize(str(run / f"yosys{k}"), files, top, netlist=False)
    return synth, "Yosys synth_xilinx, wide MLP l3 (64x32)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    run = C.fresh_run_dir("bench_parallel_efficiency")
    info = C.machine()
    print(f"run dir: {run}\njobs={a.jobs} cpus={info['cpus']} loadavg={info['loadavg_at_start']}", flush=True)
    rows, payload = [], {"benchmark": "bench_parallel_efficiency", "jobs": a.jobs, "machine": info, "tools": {}}
    for case in (gxx_case, yosys_case):
        fn, what = case(run, a.jobs)
        fn(0)                                          # warm: files in the page cache, PCH loaded once
        alone, together = [], []
        for _ in range(a.rounds):
            alone += _timed(fn, 1)
            together += _timed(fn, a.jobs)
        t1, tn = statistics.median(alone), statistics.median(together)
        eff = t1 / tn
        rows.append([what, f"{t1:.2f}s", f"{tn:.2f}s", f"{eff:.2f}", f"{a.jobs * eff:.2f}x"])
        payload["tools"][what] = {"alone": alone, "together": together, "efficiency": eff}
        print(f"{what}: alone {alone}, {a.jobs} at once {together}", flush=True)
    print()
    print(C.table(rows, ["job", "alone", f"{a.jobs} at once (each)", "efficiency", f"ceiling on {a.jobs}"],
                  "the same job alone and side by side (medians)"))
    print("figures:", C.write_json(run, payload))


if __name__ == "__main__":
    main()
