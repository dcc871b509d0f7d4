"""How long each build job will take, predicted before building, and learned from the builds in the cache.

Features (:func:`layer_features`), known from the traced model and the config before anything is built, per
layer and summed per partition (every one is additive):

- ``layers``: compute operations; ``elems``: activation elements they produce; ``weights``: parameters;
- ``macs``: multiply-accumulates per sample (Linear, Conv);
- ``digits``: nonzero bits of the weights quantized to the weight type (a constant multiplier is about one
  adder per nonzero digit, which is what da4ml builds and Yosys maps);
- ``adders``: ``digits`` times the positions a weight is applied at (conv: output pixels; fully unrolled in the
  RTL flow) times the input width over 16: the size of the fully parallel datapath;
- ``kernels``: ``digits`` times the input width over 16, each weight counted once: the size of a streaming
  datapath, whose kernel computes one output pixel (all its channels) per beat;
- ``ports``: bits entering and leaving the partition (the stitched top's size grows with them);
- ``buffer``: the streaming datapath's registers in 16-bit words: every window unit's line buffer and window
  (``((fh - 1) * W + fh * fw) * C`` input elements for a convolution or pooling of an ``H x W x C`` input), and the
  gather of a spatial tensor into one vector before a Linear. A pooling window's reduction (an adder or comparator
  tree over ``fh * fw`` pixels of every channel) counts in ``kernels``.

Yosys on a streaming partition grows with ``stream`` = ``kernels + 3 * buffer`` (time) and ``stream_memory`` =
``kernels + buffer / 2`` (peak memory): a register word costs Yosys more time than an adder word of a kernel and
less memory (both weights fitted on 15 partitions of the full-width ResNet20 measured by
``benchmarks/bench_stream_resnet.py --wide resnet20 --partitions``, whose head, an average pooling over a whole
8x8x64 feature map before a Linear of 1,124 ``kernels``, took as long as a partition of 11,000 ``kernels``).

Each step a flow declares (``fxsplit.flows.base.Step``) has one model ``t = a + b * layers + d * x ** c`` with
``x`` its size feature (``StepModel.size``): C simulation grows with code and weights, da4ml and Yosys with the
datapath (Yosys superlinearly), Vitis HLS with the multiply-accumulates. :meth:`CostModel.fit` fits ``a, b, d >= 0`` by least squares of the relative
error for every ``c`` on a grid and keeps the best, per step, from the jobs in the cache: every job records its features in its cache
manifest (``cost``), and its measured time is there already. A step with fewer than
:data:`MIN_RECORDS` distinct measurements keeps the default its flow ships (``Step.seconds``, measured on a 2-core
x86 machine; :func:`default_models`), so a fresh cache still predicts.

Peak memory (the resident memory of a job's worker and every tool it starts, measured by
:mod:`fxsplit.engine.usage` and recorded in the manifest as ``usage.peak_rss``) has the same form and the same
fit, per step, with its own shipped defaults (``Step.memory``, bytes): ``CostModel.from_cache(cache,
target="peak_rss")``. The intercept is mostly the worker itself (Python, torch, hls4ml).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

FEATURES = ("layers", "elems", "weights", "macs", "digits", "adders", "kernels", "ports", "buffer")
SIZES = ("code", "adders", "kernels", "macs", "ports", "weights", "elems", "digits", "stream",
         "stream_memory")                                                     # what a step's time may grow with
BUFFER_TIME, BUFFER_MEMORY = 3.0, 0.5     # a streaming buffer word in kernel units: Yosys time, Yosys memory
MIN_RECORDS = 4
MiB = 2 ** 20
C_GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(41))          # 0.5 .. 2.5


def size_of(kind: str, f: dict) -> float:
    """The size feature ``kind`` (:data:`SIZES`; ``"code"``: weights + activation elements) of features ``f``."""
    if kind == "code":
        return float(f.get("weights", 0) + f.get("elems", 0))
    if kind in ("stream", "stream_memory"):
        return float(f.get("kernels", 0) + (BUFFER_TIME if kind == "stream" else BUFFER_MEMORY) * f.get("buffer", 0))
    return float(f.get(kind, 0))


@dataclass
class StepModel:
    """``t = a + b * layers + d * size ** c`` for one step; ``size``: the feature it grows with (:data:`SIZES`);
    ``per_layer``: may the fit use the per-layer term (only where the work is per layer, e.g. C++ code per layer
    for g++: a tool run's fixed cost is the intercept, else a relu-only partition would look free to cut off)."""
    a: float
    b: float                   # per layer
    d: float
    c: float
    records: int = 0           # measurements it was fitted on (0: the shipped default)
    rms: float | None = None   # root-mean-square error on them (s); the fit minimises the relative error
    size: str = "adders"
    per_layer: bool = False

    def predict(self, f: dict) -> float:
        x = size_of(self.size, f)
        return self.a + self.b * float(f.get("layers", 0)) + self.d * (x ** self.c if x > 0 else 0.0)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "d": self.d, "c": self.c, "records": self.records, "rms": self.rms,
                "size": self.size}


def default_models(target: str = "seconds") -> dict[str, StepModel]:
    """The shipped default of every step model, as the flows declare them (``fxsplit.flows.base.Step``: each
    step's ``seconds`` and ``memory``, measured on the machine and with the command its declaration names)."""
    from ..flows import declared_steps
    if target not in ("seconds", "peak_rss"):
        raise ValueError(f"target must be 'seconds' or 'peak_rss', not {target!r}")
    return {name: (s.memory if target == "peak_rss" else s.seconds) for name, s in declared_steps().items()}


def annotate(jobs: list, feats: dict[str, dict], model: "CostModel", steps, memory: "CostModel | None" = None) -> None:
    """Give every job its features, predicted time and (with a ``memory`` model) predicted peak memory
    (``Job.cost``), with the step model its flow declares for it (``steps``: the flow's :class:`Step` list). The
    features of the uncut reference are the whole model's (``feats["*"]``), the stitched top's the partitions'
    ports. A job whose step's timed tool is not among its tools (an emit-only Vitis HLS job writes a project and
    runs no Vitis HLS) gets no prediction, and teaches the model nothing."""
    from ..engine.tools import tool_name
    from ..ir import MONOLITHIC, STITCHED
    top = {k: 0 for k in FEATURES}
    top["layers"] = sum(1 for k in feats if k != "*")
    top["ports"] = sum(f["ports"] for k, f in feats.items() if k != "*")
    declared = {(s.scope, s.name): s for s in steps}
    for j in jobs:
        scope = "stitched" if j.partition == STITCHED else "partition"
        step = declared.get((scope, j.step))
        if step is None:
            raise ValueError(f"job {j.id!r}: its flow declares no {scope} step {j.step!r}")
        f = feats["*"] if j.partition == MONOLITHIC else top if scope == "stitched" else feats.get(j.partition)
        if f is None or (step.tool is not None and step.tool not in map(tool_name, j.tools)):
            continue
        j.cost = {"model": step.model, "features": dict(f), "predicted": round(model.predict(step.model, f), 3)}
        if memory is not None:
            j.cost["predicted_rss"] = int(memory.predict(step.model, f))


def _fit_step(default: StepModel, recs: list[tuple[dict, float]]) -> StepModel | None:
    if default.size in ("stream", "stream_memory"):      # (jobs recorded before the buffer feature: incomplete)
        recs = [r for r in recs if "buffer" in r[0]]
    xs = np.array([size_of(default.size, f) for f, _ in recs])
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
            if mask & 2 and not default.per_layer:
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
                     rms=float(np.sqrt(np.mean((pred - ts) ** 2))), size=default.size, per_layer=default.per_layer)


@dataclass
class CostModel:
    """One :class:`StepModel` per step model name (a flow's ``Step.model``): fitted from a cache where it holds
    enough jobs of the step, else the flow's shipped default."""
    steps: dict[str, StepModel] = field(default_factory=default_models)
    defaults: dict[str, StepModel] = field(default_factory=default_models)
    target: str = "seconds"            # or "peak_rss" (bytes)

    def predict(self, step: str, f: dict) -> float:
        m = self.steps.get(step) or self.defaults.get(step)
        if m is None:
            from ..errors import FxsplitError
            raise FxsplitError(f"no cost model for the step {step!r}: no registered flow declares it",
                               hint="declare the step in its flow's `steps` (fxsplit.flows.base.Step)")
        return max(0.0, m.predict(f))

    def source(self, step: str) -> str:
        m = self.steps.get(step)
        return f"fitted on {m.records} jobs" if m is not None and m.records else "shipped default"

    def to_dict(self) -> dict:
        return {s: {**m.to_dict(), "source": self.source(s)} for s, m in self.steps.items()}

    @classmethod
    def fit(cls, records: Iterable[tuple[str, dict, float]], target: str = "seconds") -> "CostModel":
        """``records``: (step, features, measured seconds, or peak bytes with ``target="peak_rss"``). Steps
        without enough of them keep the default."""
        defaults = default_models(target)
        by_step: dict[str, list] = {}
        for step, f, t in records:
            if t is not None and t > 0 and f:
                by_step.setdefault(step, []).append((f, float(t)))
        steps = dict(defaults)
        for step, recs in by_step.items():
            if step not in defaults:      # a step no registered flow declares (any more): its size is unknown
                continue
            m = _fit_step(defaults[step], recs)
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


def weight_types(layer_name: dict) -> dict[str, str]:
    """The weight type the config gives each layer (fx node name -> type string), from a normalized config's
    per-layer section (``FlowConfig.layer_name``): the weights' digits are counted in the type they are built in."""
    out = {}
    for name, sec in (layer_name or {}).items():
        prec = sec.get("Precision") if isinstance(sec, dict) else None
        w = prec.get("weight") if isinstance(prec, dict) else None
        if isinstance(w, str):
            out[name] = w
    return out


def layer_features(gm, weight_precision: str, input_precision: str | None = None,
                   types: dict[str, str] | None = None, origin: dict[str, str] | None = None) -> dict[str, dict]:
    """Per compute node of a traced GraphModule (ShapeProp shapes in ``tensor_meta``): its features. ``types``: a
    layer's own weight type where the config sets one (:func:`weight_types`), else ``weight_precision``; ``origin``:
    with layer splits, each piece's layer in the model as written (``layersplit.origins``): a piece is built in its
    layer's own type."""
    import torch
    from torch import nn

    from ..frontend.capture import node_shape
    from ..fixed import layout
    from ..frontend.capture import COMPUTE_OPS, node_macs
    def weight_layout(t: str):
        try:
            return layout(t)
        except ValueError:
            return layout("fixed<16,6>")
    try:
        in_w = layout(input_precision or weight_precision).width
    except ValueError:
        in_w = 16
    types, origin = types or {}, origin or {}
    feats: dict[str, dict] = {}
    from ..frontend.markers import is_cut_node
    for n in gm.graph.nodes:
        if n.op not in COMPUTE_OPS or is_cut_node(n, gm):
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
            wl = weight_layout(types.get(origin.get(n.name, n.name), weight_precision))
            lim = (1 << (wl.width - 1)) - 1 if wl.signed else (1 << wl.width) - 1
            f["weights"] = int(w.size + (mod.bias.numel() if getattr(mod, "bias", None) is not None else 0))
            q = np.clip(np.round(w * (1 << wl.frac) if wl.frac >= 0 else w / (1 << -wl.frac)), -lim, lim)
            f["digits"] = _popcount_sum(q)
            if isinstance(mod, nn.Linear):
                positions = max(1, elems // max(1, mod.out_features))
            else:
                positions = max(1, elems // max(1, mod.out_channels))
            f["macs"] = node_macs(n, mod)                  # the report's own count of multiply-accumulates
            f["adders"] = int(round(f["digits"] * positions * in_w / 16))
            f["kernels"] = int(round(f["digits"] * in_w / 16))
        _stream_features(n, mod, f, in_w)
        feats[n.name] = f
    return feats


_POOLS = {"avg_pool1d": ("avg", 1), "avg_pool2d": ("avg", 2), "max_pool1d": ("max", 1), "max_pool2d": ("max", 2)}
_MODULE_POOLS = {"AvgPool1d": ("avg", 1), "AvgPool2d": ("avg", 2), "MaxPool1d": ("max", 1), "MaxPool2d": ("max", 2)}
_FLATTENS = {"flatten", "view", "reshape"}


def _window(n, mod):
    """(kind, filter height, filter width) of a node the streaming flow builds as a window unit, else None."""
    from torch import nn
    if isinstance(mod, nn.Conv2d):
        return "conv", int(mod.kernel_size[0]), int(mod.kernel_size[1])
    if isinstance(mod, nn.Conv1d):
        return "conv", 1, int(mod.kernel_size[0])
    name = type(mod).__name__ if mod is not None else getattr(n.target, "__name__", str(n.target))
    pool = _MODULE_POOLS.get(name) if mod is not None else _POOLS.get(name)
    if pool is None:
        return None
    kind, dims = pool
    k = getattr(mod, "kernel_size", None) if mod is not None else (n.args[1] if len(n.args) > 1 else
                                                                    n.kwargs.get("kernel_size"))
    k = (k,) * dims if isinstance(k, int) else tuple(int(v) for v in (k or ()))
    if len(k) != dims:
        return None
    return (kind, *((1, k[0]) if dims == 1 else k))


def _stream_features(n, mod, f: dict, in_w: int) -> None:
    """``buffer`` (and a pooling's reduction in ``kernels``) of node ``n`` as the streaming flow builds it."""
    from torch import nn

    from ..frontend.capture import shape_or_none
    src = n.all_input_nodes[0] if n.all_input_nodes else None
    shape = shape_or_none(src) if src is not None else None
    if not shape:
        return
    win = _window(n, mod)
    if win is not None and len(shape) >= 2:
        kind, fh, fw = win
        C, W = int(shape[0]), int(shape[-1])
        pad = getattr(mod, "padding", 0)               # a convolution's padding: a zero-padding layer widens rows
        W += (fw - 1 if pad == "same" else 0 if isinstance(pad, str) else
              2 * int(pad[-1] if isinstance(pad, (tuple, list)) else pad))
        f["buffer"] += int(round(((fh - 1) * W + fh * fw) * C * in_w / 16))
        if kind in ("avg", "max"):                  # a reduction tree over the window, per channel
            f["kernels"] += int(round((fh * fw - 1) * C * in_w / 16 * (2 if kind == "max" else 1)))
    elif isinstance(mod, nn.Linear) and src.all_input_nodes and (
            isinstance(src.graph.owning_module.get_submodule(src.target), nn.Flatten) if src.op == "call_module"
            else src.op in ("call_function", "call_method") and
            getattr(src.target, "__name__", str(src.target)) in _FLATTENS):
        inner = shape_or_none(src.all_input_nodes[0])
        if inner and len(inner) >= 2:               # a spatial tensor gathered into one beat
            f["buffer"] += int(round(int(np.prod(inner)) * in_w / 16))


def add(fs: Iterable[dict]) -> dict:
    out = {k: 0 for k in FEATURES}
    for f in fs:
        for k in FEATURES:
            out[k] += int(f.get(k, 0))
    return out


def partition_features(pt, weight_precision: str, input_precision: str | None = None,
                       width: int | None = None, types: dict[str, str] | None = None) -> dict[str, dict]:
    """Features per partition of a Partitioning (and ``"*"``: the whole model); ``types``: per-layer weight types."""
    from ..fixed import layout
    from ..frontend.layersplit import origins
    lf = layer_features(pt.graph, weight_precision, input_precision, types, origins(pt.layer_splits))
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
        layer_features(pt.original, weight_precision, input_precision, types).values())
    out["*"]["ports"] = int(sum(math.prod(port.shape) for port in [*pt.inputs, *pt.outputs]) * width)
    return out


__all__ = ["CostModel", "StepModel", "default_models", "FEATURES", "SIZES", "layer_features", "partition_features",
           "weight_types",
           "cache_records", "size_of", "add", "annotate"]
