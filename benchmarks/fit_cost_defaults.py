"""Fit the cost model's shipped defaults (each flow's ``Step.seconds`` and ``Step.memory``) on this machine.

    python benchmarks/fit_cost_defaults.py [--quick] [--cache DIR] [--jobs 2]

Builds zoo models through the RTL flow (C simulation, da4ml, Yosys) and the hls4ml flow with several cuts each
(uncut, the markers, a cut before every layer), all into one cache, then fits every step model on the jobs
that cache records (``CostModel.from_cache``, exactly what a user's cache does) and prints the coefficients
with their fit error, ready to paste into the steps' ``seconds=``, and the same for the peak memory (``memory=``). Markers are erased from the traced graph so that the
``splits`` of each case are the only cuts. ``--quick``: the small models only (minutes instead of ~20).
"""

from __future__ import annotations

import argparse
import time

import _common as C

import fxsplit  # noqa: E402
from fxsplit.plan.costmodel import CostModel, cache_records  # noqa: E402
from fxsplit.frontend.partitioner import strip_markers  # noqa: E402
from fxsplit.zoo import build  # noqa: E402


def unmarked(name):
    """A zoo model without its markers."""
    model, shape = build(name)
    return strip_markers(model, shape), shape


def every_layer(model, shape):
    pt = fxsplit.partition(model, shape)
    return [n for part in pt.partitions for n in part.layers][1:]


P8 = {"precision": "fixed<8,3>", "csim_opt": "-O0"}
P16 = {"precision": "fixed<16,6>"}
CASES = [  # (model, flow, splits: None | "markers" | "each" | list, config)
    ("jet_tagger", "rtl", None, P8), ("jet_tagger", "rtl", "each", P8), ("jet_tagger", "rtl", ["fc3"], P8),
    ("jet_tagger", "rtl", "each", P16),
    ("wide_mlp", "rtl", "each", P8), ("wide_mlp", "rtl", ["fc3"], P8), ("wide_mlp", "rtl", ["fc2", "fc4"], P8),
    ("residual_cnn", "rtl", "markers", P8), ("branchy_cnn", "rtl", "markers", P8),
    ("residual_cnn", "hls4ml", "each", P16), ("branchy_cnn", "hls4ml", None, P16),
    ("jet_tagger", "hls4ml", "each", P16), ("wide_mlp", "hls4ml", None, P16),
]
SLOW = [("wide_mlp", "rtl", None, P8), ("resnet20", "hls4ml", "markers", {"io_type": "io_stream"})]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    run = C.fresh_run_dir("fitcost")
    cache = a.cache or str(run / "cache")
    for k, (name, flow, splits, cfg) in enumerate(CASES + ([] if a.quick else SLOW)):
        model, shape = build(name) if splits == "markers" else unmarked(name)
        s = every_layer(model, shape) if splits == "each" else None if splits in (None, "markers") else splits
        t = time.time()
        d = fxsplit.compile(model, shape, splits=s, flow=flow, config=cfg, output_dir=run / f"c{k}",
                            cache_dir=cache, jobs=a.jobs, progress=False)
        print(f"{name:13s} {flow:7s} {len(d.partitions)} partitions  {time.time() - t:7.1f} s", flush=True)
    recs = cache_records(cache)
    cm = CostModel.from_cache(cache)
    print(f"\n{len(recs)} jobs with features in {cache}")
    for step, m in sorted(cm.steps.items()):
        n = sum(1 for r in recs if r[0] == step)
        print(f'    "{step}": StepModel(a={m.a:.3g}, b={m.b:.3g}, d={m.d:.3g}, c={m.c:.3g}, size="{m.size}"),'
              f"   # {n} jobs, {cm.source(step)}, rms {m.rms if m.rms is None else round(m.rms, 2)} s")
    mrecs = cache_records(cache, target="peak_rss")
    mm = CostModel.from_cache(cache, target="peak_rss")
    print(f"\npeak memory (the steps' memory=, bytes): {len(mrecs)} jobs measured")
    for step, m in sorted(mm.steps.items()):
        n = sum(1 for r in mrecs if r[0] == step)
        print(f'    "{step}": StepModel(a={m.a:.4g}, b={m.b:.4g}, d={m.d:.4g}, c={m.c:.3g}, size="{m.size}"),'
              f"   # {n} jobs, {mm.source(step)}, rms {m.rms if m.rms is None else round(m.rms / 2**20)} MiB")
    print("written:", C.write_json(run, {"machine": C.machine(), "model": cm.to_dict(), "memory": mm.to_dict()}))


if __name__ == "__main__":
    main()
