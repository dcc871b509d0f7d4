"""One convolution cut by output channels, Yosys side by side: the layer whole vs in pieces, in one run.

    python benchmarks/bench_conv_split.py [--model resnet20_half] [--layer stage3.1.conv1] [--pieces 2] [--jobs 2]

The block a convolution opens in a zoo model (the convolution, its BatchNorm and ReLU; the model's own
shape at that layer, its own weights), streaming open RTL flow (``io_type="io_stream"``), 8-bit weight types
spanning the weights (``fxsplit.zoo.spanning_config``), synthesis on, cold. One compile with
``splits=["0@k", ...]`` (the convolution in ``--pieces`` equal channel ranges) and ``compare_monolithic=True``
builds the pieces and the whole layer as separate Yosys jobs on ``--jobs`` workers; the stitched design is then
verified bit-exact in Verilator (3 frames back to back, gaps and backpressure).

Printed: every synthesis job's time, CPU time and peak memory, the largest piece's against the whole layer's
(what cutting inside a layer buys the job that bounds a parallel build), and the resources of both designs.
"""

from __future__ import annotations

import argparse
import copy
import time

import _common as C

import fxsplit  # noqa: E402
from fxsplit.frontend.partitioner import trace_eval  # noqa: E402
from fxsplit.zoo import build, spanning_config  # noqa: E402

GiB = 2 ** 30


def block(name: str, layer: str):
    """``nn.Sequential(conv, bn, relu)`` of ``layer`` in zoo model ``name`` (its BatchNorm and ReLU: the modules
    its output runs through), and the convolution's input shape."""
    from torch import nn
    model, shape = build(name)
    gm = trace_eval(model, shape)
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer)
    chain = [node]
    while len(chain) < 3 and len(chain[-1].users) == 1:
        user = next(iter(chain[-1].users))
        if user.op != "call_module" or not isinstance(gm.get_submodule(user.target), (nn.BatchNorm2d, nn.ReLU)):
            break
        chain.append(user)
    mods = [copy.deepcopy(gm.get_submodule(n.target)) for n in chain]
    src = node.all_input_nodes[0]
    return nn.Sequential(*mods).eval(), tuple(src.meta["tensor_meta"].shape[1:]), [str(n.target) for n in chain]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20_half")
    ap.add_argument("--layer", default="stage3.1.conv1")
    ap.add_argument("--pieces", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--out-root", default=None)
    a = ap.parse_args()
    run = C.fresh_run_dir("bench_conv_split", a.out_root)
    info = C.machine()
    model, shape, chain = block(a.model, a.layer)
    cout = model[0].out_channels
    bounds = [round(k * cout / a.pieces) for k in range(1, a.pieces)]
    splits = [f"0@{b}" for b in bounds]
    print(f"run dir: {run}\n{a.model}: {' -> '.join(chain)} on {shape}, {cout} output channels cut at {bounds}; "
          f"jobs={a.jobs} cpus={info['cpus']} loadavg={info['loadavg_at_start']}", flush=True)
    cfg = spanning_config(model, shape, io_type="io_stream", csim_opt="-O0", synth=True)
    t0 = time.time()
    d = fxsplit.compile(model, shape, flow="rtl", config=cfg, splits=splits, output_dir=run / "out",
                        cache_dir=run / "cache", jobs=a.jobs, progress=False, compare_monolithic=True)
    wall = time.time() - t0
    synth = [r for r in d.build if r.step.endswith("synth")]
    rows = [[r.partition, r.step, f"{r.build_seconds:.1f}s", f"{r.cpu_seconds or 0:.1f}s",
             f"{(r.peak_rss or 0) / GiB:.2f}"] for r in synth]
    print(C.table(rows, ["partition", "step", "Yosys", "CPU", "peak GiB"], f"built in {wall:.0f} s on {a.jobs} jobs"))
    whole = next(r for r in synth if r.partition == "monolithic" and r.step == "stream_synth")
    pieces = [r for r in synth if r.partition not in ("monolithic", "stitched")]
    big = max(pieces, key=lambda r: r.cpu_seconds or r.build_seconds)
    cmp = d.report["compare_monolithic"]
    print(f"largest piece {big.partition}: {big.cpu_seconds:.1f} s CPU, {big.peak_rss / GiB:.2f} GiB; whole layer "
          f"{whole.cpu_seconds:.1f} s CPU, {whole.peak_rss / GiB:.2f} GiB: time x{big.cpu_seconds / whole.cpu_seconds:.2f}, "
          f"memory x{big.peak_rss / whole.peak_rss:.2f}; all pieces together {sum(r.cpu_seconds for r in pieces):.1f} s CPU")
    print(f"resources: whole {cmp['uncut']['resources']}, in pieces (stitched) {cmp['stitched']['resources']}")
    v = d.verify(d.stress_inputs(a.frames, seed=1), level="rtl")
    print(f"stitched == uncut C simulation in Verilator: {bool(v)} ({v.n_samples} frames); latency "
          f"{v.extra['latency_cycles']} interval {v.extra['interval_cycles']}")
    print("figures:", C.write_json(run, {"benchmark": "bench_conv_split", "machine": info, "model": a.model,
                                         "layer": a.layer, "chain": chain, "shape": shape, "splits": splits,
                                         "wall": wall, "jobs": C.job_rows(d.build), "compare_monolithic": cmp,
                                         "bit_exact": bool(v)}))


if __name__ == "__main__":
    main()
