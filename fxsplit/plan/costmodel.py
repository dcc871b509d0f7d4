"""How long each build job will take, predicted before building, and learned from the builds in the cache.

Features (:func:`layer_features`), known from the traced model and the config before anything is built, per
layer and summed per partition (every one is additive):

- ``layers``: compute operations; ``elems``: activation elements they produce; ``weights``: parameters;
- ``macs``: multiply-accumulates per sample (Linear, Conv);
- ``digits``: nonzero bits of the weights quantized to the weight type (a constant multiplier is about one
  adder per nonzero digit, which is what da4ml builds and Yosys maps);
- ``adders``: ``digits`` times the positions a weight is applied at (conv: output pixels; fully unrolled in the
  RTL flow) times the input width over 16: the size of the fully parallel datapath;
- ``ports``: bits entering and leaving the partition (the stitched top's size grows with them).

Each step has one model ``t = a + b * layers + d * x ** c`` with ``x`` its size feature (:data:`STEP_SIZE`):
C simulation grows with code and weights, da4ml and Yosys with the datapath (Yosys superlinearly), Vitis HLS
with the multiply-accumulates. :meth:`CostModel.fit` fits ``a, b, d >= 0`` by least squares of the relative
error for every ``c`` on a grid and keeps the best, per step, from the jobs in the cache: every job records its features in its cache
manifest (``cost``), and its measured time is there already. A step with fewer than
:data:`MIN_RECORDS` distinct measurements keeps the shipped default (:data:`DEFAULTS`, measured on a 2-core
x86 machine, in seconds), so a fresh cache still predicts.

Peak memory (the resident memory of a job's worker and every tool it starts, measured by
:mod:`fxsplit.engine.usage` and recorded in the manifest as ``usage.peak_rss``) has the same form and the same
fit, per step, with its own shipped defaults (:data:`MEM_DEFAULTS`, bytes): ``CostModel.from_cache(cache,
target="peak_rss")``. The intercept is mostly the worker itself (Python, torch, hls4ml).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

FEATURES = ("layers", "elems", "weights", "macs", "digits", "adders", "ports")
STEP_SIZE = {"csim": "code", "rtl": "adders", "synth": "adders", "hls": "macs", "vivado": "adders",
             "stitch_rtl": "ports", "stitch_synth": "ports"}
# the per-layer term only where the work is per layer (C++ code per layer for g++); a tool run's fixed cost
# (Yosys, Vitis HLS start-up) is the intercept, else a relu-only partition would look free to cut off
PER_LAYER = {"csim", "hls"}
MIN_RECORDS = 4
STEP_TOOL = {"hls": "vitis_hls", "vivado": "vivado"}     # a step model applies only to jobs that run its tool
C_GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(41))          # 0.5 .. 2.5


def size_of(step: str, f: dict) -> float:
    """The size feature a step's time grows with."""
    kind = STEP_SIZE.get(step, "adders")
    if kind == "code":
        return float(f.get("weights", 0) + f.get("elems", 0))
    return float(f.get(kind, 0))


@dataclass
class StepModel:
    a: float
    b: float                   # per layer
    d: float
    c: float
    records: int = 0           # measurements it was fitted on (0: the shipped default)
    rms: float | None = None   # root-mean-square error on them (s); the fit minimises the relative error

    def predict(self, f: dict, step: str) -> float:
        x = size_of(step, f)
        return self.a + self.b * float(f.get("layers", 0)) + self.d * (x ** self.c if x > 0 else 0.0)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "d": self.d, "c": self.c, "records": self.records, "rms": self.rms}


# Shipped defaults: fitted by benchmarks/fit_cost_defaults.py (158 jobs of the zoo through the RTL and hls4ml
# flows, fixed<8,3> and fixed<16,6>) on the 2-core development machine, jobs=2; refitted from every user's own
# cache as soon as it holds MIN_RECORDS jobs of a step. Vitis HLS and Vivado (hls, vivado) are not installed
# there: their defaults are rough guesses until a cache has measured them.
DEFAULTS: dict[str, StepModel] = {
    # csim: fitted on the 36 g++ -O3 jobs (the default csim_opt) of two `benchmarks/bench_hls_build.py --repeat 5`
    # runs of ResNet20 with warm precompiled headers (1.8 s .. 7.6 s; the head, a stage, two halves). Code size
    # counts: 32x32 feature maps compile slower than 8x8 ones with the same layers, which a fit on layers alone
    # (a=0.872, b=0.186, d=0, from mixed -O0/-O3 jobs) missed by 1 s on two 6 s halves
    "csim": StepModel(a=1.596, b=0.0652, d=7.816e-07, c=1.15),    # rms 0.47 s on 36 jobs
    # rtl: fitted on the 27 jobs of three `benchmarks/bench_auto_split.py --models wide_mlp` runs (4.3 s .. 317 s);
    # median error 11 % there
    "rtl": StepModel(a=0.0101, b=0.0, d=7.18e-05, c=1.35),        # rms 1.5 s on 27 jobs
    # synth, stitch_synth: fitted on the 25 synth jobs of three `benchmarks/bench_auto_split.py --models wide_mlp
    # --repeat 2` rounds (4.7 s .. 277 s) with the Yosys script that skips synth_xilinx's memory maps where there
    # are no memories and reads the cell libraries from RTLIL; the stitched top: the mean of its 7 jobs there
    # (1.4 s .. 3.9 s). `benchmarks/fit_cost_defaults.py` refits all of them from a cache
    "synth": StepModel(a=3.13, b=0.0, d=0.00763, c=1.2),          # rms 7.1 s on 25 jobs (4.7 s .. 277 s)
    "stitch_rtl": StepModel(a=0.0071, b=0.0, d=0.0, c=1.0),       # 10 jobs
    "stitch_synth": StepModel(a=2.47, b=0.0, d=0.0, c=1.0),       # 7 jobs, 1.4 s .. 3.9 s
    "hls": StepModel(a=30.0, b=5.0, d=1.0e-3, c=1.0),
    "vivado": StepModel(a=300.0, b=0.0, d=1.0e-2, c=1.0),
}


MiB = 2 ** 20
# Shipped defaults of the peak memory (bytes): fitted on 75 measured jobs of benchmarks/bench_memory.py (jet tagger,
# wide MLP through the RTL flow at fixed<8,3>, ResNet20's C simulation) on the 2-core development machine; the
# intercept is mostly the worker (Python, torch, hls4ml: about 340 MiB). The stitched top's jobs are their mean.
# Vitis HLS and Vivado (hls, vivado) are not installed there: rough guesses until a cache has measured them.
MEM_DEFAULTS: dict[str, StepModel] = {
    "csim": StepModel(a=5.924e8, b=7.015e5, d=1.869e5, c=0.5),     # rms 14 MiB on 26 jobs (570 .. 780 MiB)
    "rtl": StepModel(a=3.665e8, b=0.0, d=3445.0, c=1.0),           # rms 6 MiB on 21 jobs
    "synth": StepModel(a=5.197e8, b=0.0, d=4.016e5, c=1.0),        # rms 25 MiB on 20 jobs (520 MiB .. 2.6 GiB)
    "stitch_rtl": StepModel(a=360 * MiB, b=0.0, d=0.0, c=1.0),     # 4 jobs
    "stitch_synth": StepModel(a=495 * MiB, b=0.0, d=0.0, c=1.0),   # 4 jobs
    "hls": StepModel(a=2048 * MiB, b=50 * MiB, d=0.0, c=1.0),
    "vivado": StepModel(a=4096 * MiB, b=0.0, d=1.0e4, c=1.0),
}


def model_name(step: str, partition: str, stitched: str = "stitched") -> str:
    """Which step model predicts a job: the stitched top's jobs have their own (they grow with the ports)."""
    return f"stitch_{step}" if partition == stitched and step in ("rtl", "synth") else step


def annotate(jobs: list, feats: dict[str, dict], model: "CostModel", mono: str, stitched: str = "stitched",
             memory: "CostModel | None" = None) -> None:
    """Give every job its features, predicted time and (with a ``memory`` model) predicted peak memory
    (``Job.cost``); the features of the uncut reference are the whole model's (``feats["*"]``), the stitched
    top's the partitions' ports."""
    top = {k: 0 for k in FEATURES}
    top["layers"] = sum(1 for k in feats if k != "*")
    top["ports"] = sum(f["ports"] for k, f in feats.items() if k != "*")
    for j in jobs:
        f = feats["*"] if j.partition == mono else top if j.partition == stitched else feats.get(j.partition)
        if f is None:
            continue
        name = model_name(j.step, j.partition, stitched)
        if STEP_TOOL.get(name, "") not in (*j.tools, ""):
            continue            # e.g. an emit-only hls job writes a project, it runs no Vitis HLS: no prediction,
                                # and no record that would teach the hls model a 0 s synthesis
        j.cost = {"model": name, "features": dict(f), "predicted": round(model.predict(name, f), 3)}
        if memory is not None:
            j.cost["predicted_rss"] = int(memory.predict(name, f))


def _fit_step(step: str, recs: list[tuple[dict, float]]) -> StepModel | None:
    xs = np.array([size_of(step, f) for f, _ in recs])
    ls = np.array([float(f.get("layers", 0)) for f, _ in recs])
    ts = np.array([t for _, t in recs])
    if len({(x, l) for x, l in zip(xs, ls)}) < MIN_RECORDS:
        return None
    best = None
    w = 1.0 / ts                     # relative errors: a 2 s job mispredicted by 2 s matters as much as 100 by 100
    for c in C_GRID:
        cols = np.stack([np.ones_like(xs), ls, np.where(xs > 0, xs, 0.0) ** c], axis=1)
        # non-negative least squares over three terms: the best of the subsets whose solution is >= 0
        for mask in range(1, 8):
            if mask & 2 and step not in PER_LAYER:
                continue
            idx = [k for k in range(3) if mask >> k & 1]
            sol, *_ = np.linalg.lstsq(cols[:, idx] * w[:, None], ts * w, rcond=None)
            if (sol < 0).any():
                continue
            coef = np.zeros(3)
            coef[idx] = sol
            err = float(np.sqrt(np.mean(((cols @ coef - ts) * w) ** 2)))
            if best is None or err < best[0] - 1e-12:
                best = (err, coef, c)
    if best is None:
        return None
    _, (a, b, d), c = best
    pred = a + b * ls + d * np.where(xs > 0, xs, 0.0) ** c
    return StepModel(a=float(a), b=float(b), d=float(d), c=float(c), records=len(recs),
                     rms=float(np.sqrt(np.mean((pred - ts) ** 2))))


@dataclass
class CostModel:
    steps: dict[str, StepModel] = field(default_factory=lambda: dict(DEFAULTS))
    defaults: dict[str, StepModel] = field(default_factory=lambda: DEFAULTS)
    target: str = "seconds"            # or "peak_rss" (bytes)

    def predict(self, step: str, f: dict) -> float:
        m = self.steps.get(step) or self.defaults.get(step) or self.defaults["rtl"]
        return max(0.0, m.predict(f, step))

    def source(self, step: str) -> str:
        m = self.steps.get(step)
        return f"fitted on {m.records} jobs" if m is not None and m.records else "shipped default"

    def to_dict(self) -> dict:
        return {s: {**m.to_dict(), "source": self.source(s)} for s, m in self.steps.items()}

    @classmethod
    def fit(cls, records: Iterable[tuple[str, dict, float]], target: str = "seconds") -> "CostModel":
        """``records``: (step, features, measured seconds, or peak bytes with ``target="peak_rss"``). Steps
        without enough of them keep the default."""
        defaults = MEM_DEFAULTS if target == "peak_rss" else DEFAULTS
        by_step: dict[str, list] = {}
        for step, f, t in records:
            if t is not None and t > 0 and f:
                by_step.setdefault(step, []).append((f, float(t)))
        steps = dict(defaults)
        for step, recs in by_step.items():
            m = _fit_step(step, recs)
            if m is not None:
                steps[step] = m
        return cls(steps, defaults, target)

    @classmethod
    def from_cache(cls, cache_dir: str | Path | None, target: str = "seconds") -> "CostModel":
        if cache_dir:
            return cls.fit(cache_records(cache_dir, target), target)
        return cls.fit([], target)


def cache_records(cache_dir: str | Path, target: str = "seconds") -> list[tuple[str, dict, float]]:
    """(step, features, seconds) of every job in the cache whose manifest carries features; with
    ``target="peak_rss"``, (step, features, peak memory in bytes) of those whose build was measured."""
    out = []
    root = Path(cache_dir)
    if not root.is_dir():
        return out
    for m in root.glob("*/manifest.json"):
        try:
            d = json.loads(m.read_text())
        except (OSError, ValueError):
            continue
        cost = d.get("cost") or {}
        value = (d.get("usage") or {}).get("peak_rss") if target == "peak_rss" else d.get("seconds")
        if cost.get("features") and cost.get("model") and value:
            out.append((cost["model"], cost["features"], float(value)))
    return out


# ----------------------------------------------------------------------------- features of a traced model

def _popcount_sum(q: np.ndarray) -> int:
    q = np.abs(q.astype(np.int64))
    n = 0
    while q.any():
        n += int((q & 1).sum())
        q >>= 1
    return n


def layer_features(gm, weight_precision: str, input_precision: str | None = None) -> dict[str, dict]:
    """Per compute node of a traced GraphModule (ShapeProp shapes in ``tensor_meta``): its features."""
    import torch
    from torch import nn

    from ..frontend.capture import node_shape
    from ..fixed import layout
    from ..frontend.partitioner import _COMPUTE_OPS
    from ..report.summary import _node_ops
    try:
        wl = layout(weight_precision)
    except ValueError:
        wl = layout("fixed<16,6>")
    try:
        in_w = layout(input_precision or weight_precision).width
    except ValueError:
        in_w = 16
    lim = (1 << (wl.width - 1)) - 1 if wl.signed else (1 << wl.width) - 1
    feats: dict[str, dict] = {}
    from ..frontend.markers import is_cut_node
    for n in gm.graph.nodes:
        if n.op not in _COMPUTE_OPS or is_cut_node(n, gm):
            continue
        try:
            out = node_shape(n)
        except Exception:                               # noqa: BLE001  (a tuple-producing op: no size)
            out = ()
        elems = int(np.prod(out)) if out else 0
        f = {k: 0 for k in FEATURES}
        f["layers"], f["elems"] = 1, elems
        mod = gm.get_submodule(n.target) if n.op == "call_module" else None
        w = getattr(mod, "weight", None) if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)) else None
        if w is not None:
            w = w.detach().to(torch.float64).cpu().numpy()
            f["weights"] = int(w.size + (mod.bias.numel() if getattr(mod, "bias", None) is not None else 0))
            q = np.clip(np.round(w * (1 << wl.frac) if wl.frac >= 0 else w / (1 << -wl.frac)), -lim, lim)
            f["digits"] = _popcount_sum(q)
            if isinstance(mod, nn.Linear):
                positions = max(1, elems // max(1, mod.out_features))
            else:
                positions = max(1, elems // max(1, mod.out_channels))
            f["macs"] = _node_ops(n, mod)                  # the report's own count of multiply-accumulates
            f["adders"] = int(round(f["digits"] * positions * in_w / 16))
        feats[n.name] = f
    return feats


def add(fs: Iterable[dict]) -> dict:
    out = {k: 0 for k in FEATURES}
    for f in fs:
        for k in FEATURES:
            out[k] += int(f.get(k, 0))
    return out


def partition_features(pt, weight_precision: str, input_precision: str | None = None,
                       width: int | None = None) -> dict[str, dict]:
    """Features per partition of a Partitioning (and ``"*"``: the whole model)."""
    from ..fixed import layout
    lf = layer_features(pt.graph, weight_precision, input_precision)
    if width is None:
        try:
            width = layout(weight_precision).width
        except ValueError:
            width = 16
    out = {}
    for p in pt.partitions:
        f = add(lf[n] for n in p.nodes if n in lf)
        f["ports"] = int(sum(math.prod(port.shape) for port in [*p.inputs, *p.outputs]) * width)
        out[p.name] = f
    # the whole model as written (with layer splits, the pieces' sum would count its Concatenates too)
    out["*"] = add(lf.values()) if pt.original is None else add(
        layer_features(pt.original, weight_precision, input_precision).values())
    out["*"]["ports"] = int(sum(math.prod(port.shape) for port in [*pt.inputs, *pt.outputs]) * width)
    return out


__all__ = ["CostModel", "StepModel", "DEFAULTS", "MEM_DEFAULTS", "FEATURES", "layer_features", "partition_features",
           "cache_records", "size_of", "add", "annotate", "model_name"]
