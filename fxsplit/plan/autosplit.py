"""Automatic, balanced cuts: ``compile(..., splits="auto", workers=W)`` and :func:`auto_splits`.

The model is traced once (the markers stay in the graph: they are constraints, and so are ``splits`` names the
user gives). Every position between two operations in program order is a candidate cut (the partitioner turns
whatever tensors cross it into ports: skip connections too), except inside a group hls4ml fuses: a Linear or
Conv followed by the BatchNorm that is its only user (hls4ml folds that BatchNorm into the weights; cutting
between them would change the numerics against the uncut design), or by a brevitas QuantIdentity/QuantHardTanh
(hls4ml merges that linear quantizer into the layer's result type).

For every number of partitions K, a dynamic program over the operations finds the cuts that minimise the
slowest partition's predicted build time (:mod:`fxsplit.plan.costmodel`: each partition's jobs for the flow,
summed), never moving a required cut and, among plans within 1 % of that, the one whose cuts carry the
fewest bits. Each plan's whole job graph (partition jobs, the uncut reference, the stitched top) is then
list-scheduled on W workers (``build.predict_wall_time``, the scheduler's own rule), plus the serial work of
the main process (:data:`MAIN_FIXED`, :data:`MAIN_PER_PARTITION`); one cut at a time moves to a neighbouring
candidate while that shortens the scheduled wall (with more partitions than workers, how they pack onto the
workers matters, not only the slowest one), and the K with the shortest predicted wall wins (the smaller K unless
a larger one is predicted 5 % faster: every partition also costs what the model does not see).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .costmodel import FEATURES, SIZES, CostModel, layer_features
from ..errors import FxsplitError
from ..ir import MONOLITHIC, STITCHED, CutPoint
TIE_WALL = 0.05            # a plan with more partitions must be predicted 5 % faster to be taken
TIE_MAX = 0.01
# serial work of the main process around the jobs (trace, validation and lowering before them; copying artifacts and
# the report after them), measured with cProfile on the zoo's RTL builds with 3 to 9 partitions, hls4ml imported and the
# jobs cached: 0.7 .. 1.1 s, with no trend in the number of partitions (the lowering of one partition: about 0.05 s)
MAIN_FIXED = 1.0           # s
MAIN_PER_PARTITION = 0.05  # s


@dataclass
class AutoPlan:
    cuts: list[CutPoint]                   # the cuts it adds (the markers are not in it: they stay)
    workers: int
    partitions: int
    predicted_wall: float                  # s, the whole build on ``workers`` workers
    predicted: list[float]                 # s, per partition (all its jobs), in order
    crossing_bits: int                     # bits on the cuts auto added
    markers_only: dict = field(default_factory=dict)     # the same prediction for the required cuts alone
    candidates: int = 0
    model: dict = field(default_factory=dict)            # the cost model used (its source per step)
    max_job_memory: int | None = None                    # bytes: the per-job limit the cuts respect
    predicted_rss: list[int] = field(default_factory=list)   # bytes, per partition: its largest job's predicted peak
    layer_splits: dict[str, list[int]] = field(default_factory=dict)   # layer -> first outputs of its later pieces
                                                                        # (its width: a cut before the join)
    uncut: dict = field(default_factory=dict)            # the same prediction for the model in one partition
                                                         # on one worker (markers erased)

    @property
    def splits(self) -> list[str]:
        """The cuts as ``compile``'s ``splits`` names them (``"layer"``, ``"fc2@32"``)."""
        return [str(c) for c in self.cuts]

    def to_dict(self) -> dict:
        return {"splits": self.splits, "workers": self.workers, "partitions": self.partitions,
                "predicted_wall": round(self.predicted_wall, 3),
                "predicted": [round(t, 3) for t in self.predicted], "crossing_bits": self.crossing_bits,
                "markers_only": self.markers_only, "candidates": self.candidates, "model": self.model,
                "max_job_memory": self.max_job_memory, "predicted_rss": list(self.predicted_rss),
                "layer_splits": {k: list(v) for k, v in self.layer_splits.items()}, "uncut": self.uncut}


def flow_steps(flow: str, options: dict | None = None) -> list:
    """The steps a flow runs under ``options`` (``{"synth": False}``...), as the flow declares them; an option not
    given is the flow's own under a default config (``Flow.run_options``: e.g. the rtl flow's fully parallel design)."""
    from types import SimpleNamespace

    from ..flows import get_flow
    cls = get_flow(flow)
    return cls.active_steps({**cls.run_options(SimpleNamespace(synth=True, io_type="io_parallel")), **(options or {})})


def _job_rows(seg_feats: list[dict], whole: dict, steps: list, reference: bool, cm: CostModel,
              ports: int) -> tuple[list[dict], list[float]]:
    """The build's job graph for partitions with features ``seg_feats``, each job priced by its step's model:
    every partition's steps, the uncut reference's, and the stitched design's (its features: the ports)."""
    rows, per = [], []
    part = [s for s in steps if s.scope == "partition"]
    for k, f in enumerate(seg_feats):
        tot = 0.0
        for s in part:
            t = cm.predict(s.model, f)
            tot += t
            rows.append({"id": f"q{k}/{s.name}", "build_seconds": t, "deps": [f"q{k}/{d}" for d in s.deps]})
        per.append(tot)
    if reference:
        for s in part:
            if s.reference:
                rows.append({"id": f"{MONOLITHIC}/{s.name}", "build_seconds": cm.predict(s.model, whole),
                             "deps": [f"{MONOLITHIC}/{d}" for d in s.deps]})
    top = {k: 0 for k in FEATURES}
    top["layers"], top["ports"] = len(seg_feats), ports
    for s in steps:
        if s.scope == "stitched":
            deps = [f"{STITCHED}/{d}" for d in s.deps] + [f"q{k}/{a}" for a in s.after for k in range(len(seg_feats))]
            rows.append({"id": f"{STITCHED}/{s.name}", "build_seconds": cm.predict(s.model, top), "deps": deps})
    return rows, per


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def plan_auto(model, input_shape, workers: int, *, precision: str = "fixed<16,6>",
              input_precision: str | None = None, flow: str = "rtl", synth: bool = True, reference: bool = True,
              splits=None, cost_model: CostModel | None = None, max_partitions: int | None = None,
              max_job_memory: int | None = None, memory_model: CostModel | None = None,
              split_layers: bool = False, options: dict | None = None, traced=None,
              types: dict[str, str] | None = None) -> AutoPlan:
    """Choose the cuts (see the module docstring). ``splits``: names that must be cut too (as for compile).
    ``split_layers``: cuts inside a wide Linear or convolution (by outputs, :mod:`fxsplit.frontend.layersplit`) are candidates too.
    ``max_job_memory`` (bytes): only plans whose every partition job is predicted (``memory_model``, default the
    shipped peak-memory model) to peak under it; a single operation predicted above it is an error. ``types``:
    per-layer weight types (:func:`~fxsplit.plan.costmodel.weight_types`) where the config sets them."""
    from torch import nn

    from ..engine import predict_wall_time
    from ..frontend.capture import node_shape
    from ..fixed import layout
    from ..frontend.markers import is_cut_node
    from ..frontend.capture import COMPUTE_OPS
    from ..frontend.partitioner import resolve_split, trace_eval

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise FxsplitError(f"workers must be a positive integer, got {workers!r}")
    cm = cost_model or CostModel()
    mm = memory_model or CostModel.fit([], target="peak_rss")
    if max_job_memory is not None and (isinstance(max_job_memory, bool) or not isinstance(max_job_memory, int)
                                       or max_job_memory <= 0):
        raise FxsplitError(f"max_job_memory must be a positive number of bytes, got {max_job_memory!r}")
    from ..frontend import layersplit
    # the model's traced graph (``traced``: compile's own trace, copied: the layer splits offered rewrite it)
    gm = layersplit.copy_graph(traced) if traced is not None else trace_eval(model, input_shape)
    user = [CutPoint.of(s) for s in ([splits] if isinstance(splits, (str, CutPoint)) else list(splits or []))]
    required = layersplit.resolve(gm, [(c.layer, c.output, str(c)) for c in user if c.output is not None])
    steps = flow_steps(flow, {"synth": synth, **(options or {})})
    per_share = STREAM_PIECES_PER_SHARE if (options or {}).get("stream") else PIECES_PER_SHARE
    pieces = _offer_layer_splits(gm, workers if split_layers else 0, cm, precision, input_precision, steps, required,
                                 types, per_share, mm, max_job_memory)
    inside = {}                                          # piece node name -> its 'layer@first output' split name
    cats = set()
    for e in pieces.values():
        inside.update({nm: f"{e['module']}@{a}" for a, nm in e["starts"].items() if a > 0})
        cats.update(e["cats"])
    nodes = list(gm.graph.nodes)
    index = {n.name: i for i, n in enumerate(nodes)}
    ops = [i for i, n in enumerate(nodes) if n.op in COMPUTE_OPS and not is_cut_node(n, gm)]
    n = len(ops)
    if n == 0:
        raise FxsplitError("the model computes nothing: no operation to cut between")
    lf = layer_features(gm, precision, input_precision, types, layersplit.origins(pieces))
    for e in pieces.values():          # a run of pieces in one partition is lowered as one layer, without joins
        for nm in (*e["pieces"], *e.get("norms", ())):
            lf[nm] = {**lf[nm], "layers": 1.0 / len(e["pieces"])}
        for nm in e["cats"]:
            lf[nm] = {k: 0 for k in FEATURES}
    try:
        width = layout(precision).width
    except ValueError:
        width = 16

    def first_op_at_or_after(node_index: int) -> int:
        for k, i in enumerate(ops):
            if i >= node_index:
                return k
        return n

    # required cuts: every marker, every user split
    forced = set()
    for i, nd in enumerate(nodes):
        if is_cut_node(nd, gm):
            forced.add(first_op_at_or_after(i))
    node_index = {nd.name: i for i, nd in enumerate(nodes)}
    for c in user:
        whole = next((e for name, e in pieces.items() if c.layer in (name, e["module"])), None)
        if whole is not None:                          # a split layer: before the piece, or before the layer
            forced.add(first_op_at_or_after(node_index[whole["starts"][c.output or 0]]))
        else:
            forced.add(first_op_at_or_after(resolve_split(gm, nodes, c.layer)))
    forced = {k for k in forced if 0 < k < n}

    # candidates: between any two operations, except inside a group hls4ml fuses, and nameable
    def fused(k: int) -> bool:
        a, b = nodes[ops[k - 1]], nodes[ops[k]]
        if a.op != "call_module" or b.op != "call_module":
            return False
        ma, mb = gm.get_submodule(a.target), gm.get_submodule(b.target)
        # hls4ml folds a BatchNorm into the layer before it, and merges a linear activation (a brevitas
        # QuantIdentity / QuantHardTanh quantizer) into it as its result type
        return (isinstance(ma, (nn.Linear, nn.Conv1d, nn.Conv2d)) and list(a.users) == [b] and
                (isinstance(mb, nn.modules.batchnorm._BatchNorm) or
                 type(mb).__name__ in ("QuantIdentity", "QuantHardTanh")))

    names: dict[int, str] = {}
    for k in range(1, n):
        if k in forced or fused(k):
            continue
        nd = nodes[ops[k]]
        if nd.name in inside:                          # inside a split layer: before one of its pieces
            names[k] = inside[nd.name]
            continue
        if nd.name in cats:                            # before a Concatenate of pieces: nothing to gain
            continue
        whole = next((e["module"] for e in pieces.values() if e["pieces"][0] == nd.name), None)
        if whole is not None:                          # before a split layer's first piece: before the layer
            names[k] = whole
            continue
        for cand in ([nd.target] if nd.op == "call_module" else []) + [nd.name]:
            try:
                if first_op_at_or_after(resolve_split(gm, nodes, str(cand))) == k:
                    names[k] = str(cand)
                    break
            except FxsplitError:
                continue

    # features of ops[0:k] as prefix sums; bits crossing the boundary before ops[k]
    pre = [{f: 0 for f in FEATURES}]
    for i in ops:
        f = lf.get(nodes[i].name, {})
        pre.append({x: pre[-1][x] + f.get(x, 0) for x in FEATURES})

    def bits(nd) -> int:
        try:
            return math.prod(node_shape(nd)) * width
        except FxsplitError:
            return 0

    def users(nd):                                     # through markers: a marker passes its input on
        for u in nd.users:
            if is_cut_node(u, gm):
                yield from users(u)
            else:
                yield u

    last_use = {}
    for nd in nodes:
        if nd.op in COMPUTE_OPS or nd.op == "placeholder":
            us = [index[u.name] for u in users(nd)]
            last_use[nd.name] = max(us) if us else index[nd.name]
    cross = [0] * (n + 1)
    for k in range(n + 1):
        at = ops[k] if k < n else len(nodes)
        cross[k] = sum(bits(nd) for nd in nodes if (nd.op == "placeholder" or (nd.op in COMPUTE_OPS and not
                       is_cut_node(nd, gm))) and index[nd.name] < at and last_use[nd.name] >= at)
    out_node = next(nd for nd in nodes if nd.op == "output")
    cross[n] = sum(bits(a) for a in out_node.all_input_nodes)

    part_steps = [s for s in steps if s.scope == "partition"]

    def seg(i: int, j: int) -> dict:
        f = {x: pre[j][x] - pre[i][x] for x in FEATURES}
        f["ports"] = cross[i] + cross[j]
        return f

    def seg_time(i: int, j: int) -> float:
        f = seg(i, j)
        return sum(cm.predict(s.model, f) for s in part_steps)

    def seg_mem(i: int, j: int) -> int:
        f = seg(i, j)
        return int(max(mm.predict(s.model, f) for s in part_steps))

    bounds = sorted({0, n, *forced, *names})          # positions a partition may start or end at
    cost = {}
    for a_i, a in enumerate(bounds):
        for b in bounds[a_i + 1:]:
            if max_job_memory is None or seg_mem(a, b) <= max_job_memory:
                cost[a, b] = seg_time(a, b)
            if b in forced:
                break                                   # a segment never spans a required cut
    if max_job_memory is not None:
        for a, b in zip(bounds, bounds[1:]):            # the smallest partitions fxsplit can make
            if (a, b) not in cost:
                what = ", ".join(nodes[ops[k]].name for k in range(a, b))
                raise FxsplitError(
                    f"no cut makes every job fit in max_job_memory={_size(max_job_memory)}: the partition "
                    f"of {what} alone is predicted to need {_size(seg_mem(a, b))}",
                    hint="raise max_job_memory, " + ("" if split_layers else "let the cuts go inside layers "
                                                                 "(split_layers=True), ") +
                         "or lower that layer's cost (precision, size); the prediction comes from the peak-memory "
                         "model fitted from your cache (report: predicted vs measured)")
    whole = seg(0, n)
    total_ports = lambda cuts: sum(seg(a, b)["ports"] for a, b in zip(cuts, cuts[1:]))  # noqa: E731

    def evaluate(cuts: list[int], on: int = workers) -> tuple[float, list[float]]:
        feats = [seg(a, b) for a, b in zip(cuts, cuts[1:])]
        rows, per = _job_rows(feats, whole, steps, reference, cm, total_ports(cuts))
        return predict_wall_time(rows, on) + MAIN_FIXED + MAIN_PER_PARTITION * len(feats), per

    def refine(cuts: list[int]) -> tuple[float, list[float], list[int]]:
        """The dynamic program balances the slowest partition; with more partitions than workers the wall also
        depends on how they pack onto the workers. Move one added cut at a time to a neighbouring position while
        that shortens the list-scheduled wall (by more than TIE_MAX)."""
        wall, per = evaluate(cuts)
        pos = {b: i for i, b in enumerate(bounds)}
        improved = True
        while improved:
            improved = False
            for i in range(1, len(cuts) - 1):
                if cuts[i] in forced:
                    continue
                for step in (-1, 1):
                    j = pos[cuts[i]] + step
                    if not 0 < j < len(bounds) - 1:
                        continue
                    b = bounds[j]
                    if (not cuts[i - 1] < b < cuts[i + 1] or (cuts[i - 1], b) not in cost
                            or (b, cuts[i + 1]) not in cost):
                        continue
                    trial = cuts[:i] + [b] + cuts[i + 1:]
                    w, p = evaluate(trial)
                    if w < wall * (1 - TIE_MAX):
                        wall, per, cuts, improved = w, p, trial, True
                        break
        return wall, per, cuts

    k_min = len(forced) + 1
    k_max = min(len(bounds) - 1, max_partitions or (len(bounds) - 1 if max_job_memory is not None
                                                     else max(k_min, len(forced) + 1 + 4 * workers)))
    # dp[b] = (key, max time, crossing bits, previous bound) for the best way to cover ops[0:b] with k segments;
    # among plans as fast (TIE_MAX), the fewest cuts inside layers, then the fewest crossing bits
    is_inside = {k: 1 if names.get(k, "") and "@" in names[k] else 0 for k in range(n + 1)}
    dp = {0: ((0, 0, 0), 0.0, 0, None)}
    best = None
    plans = {}
    for k in range(1, k_max + 1):
        nxt = {}
        for b in bounds[1:]:
            cand = None
            for a, (key_a, mx_a, bits_a, _) in dp.items():
                if a >= b or (a, b) not in cost:
                    continue
                mx = max(mx_a, cost[a, b])
                cb = bits_a + (cross[b] if b < n else 0)
                key = (round(math.log(max(mx, 1e-9)) / math.log1p(TIE_MAX)), key_a[1] + is_inside[b], cb)
                if cand is None or key < cand[0]:
                    cand = (key, mx, cb, a)
            if cand is not None:
                nxt[b] = cand
        # back-pointers per level
        plans[k] = nxt
        dp = nxt
        if n in nxt and k >= k_min:
            cuts = [n]
            b, level = n, k
            while level > 0:
                a = plans[level][b][3]
                cuts.append(a)
                b, level = a, level - 1
            cuts = cuts[::-1]
            if not forced <= set(cuts):
                continue
            wall, per, cuts = refine(cuts)
            if best is None or wall < best[0] * (1 - TIE_WALL):
                best = (wall, cuts, per)
    if best is None:
        raise FxsplitError("no plan covers the model with the required cuts")   # cannot happen: K = k_min works
    wall, cuts, per = best
    chosen = [b for b in cuts[1:-1] if b not in forced]
    req = sorted({0, n, *forced})
    m_wall, m_per = evaluate(req)
    u_wall, _ = evaluate([0, n], on=1)
    layer_splits: dict[str, list[int]] = {}
    for b in chosen:
        if "@" in names[b]:
            layer, at = names[b].rsplit("@", 1)
            layer_splits.setdefault(layer, []).append(int(at))
    return AutoPlan(cuts=[CutPoint.of(names[b]) for b in chosen], workers=workers, partitions=len(cuts) - 1,
                    layer_splits={k: sorted(v) for k, v in layer_splits.items()},
                    predicted_wall=wall, predicted=per, crossing_bits=sum(cross[b] for b in chosen),
                    markers_only={"partitions": len(req) - 1, "predicted_wall": round(m_wall, 3),
                                  "predicted": [round(t, 3) for t in m_per]},
                    uncut={"workers": 1, "predicted_wall": round(u_wall, 3)},
                    candidates=len(names), model=cm.to_dict(), max_job_memory=max_job_memory,
                    predicted_rss=[seg_mem(a, b) for a, b in zip(cuts, cuts[1:])])


MIN_PIECE_OUTPUTS = 2     # a piece of a split layer computes at least this many outputs
MAX_PIECES = 32
PIECES_PER_SHARE = 16     # a piece is about 1/16 of a worker's fair share: the balance the plan can reach
MEMORY_MARGIN = 0.9       # a layer's pieces under a memory budget: each predicted under 90 % of it (its ports too)
STREAM_PIECES_PER_SHARE = 2    # streaming: every piece re-reads the layer's input through a line buffer of its own


def _offer_layer_splits(gm, workers: int, cm: CostModel, precision: str, input_precision: str | None, steps: list,
                        required: dict[str, list[int]], types: dict[str, str] | None = None,
                        per_share: int = PIECES_PER_SHARE, memory_model: CostModel | None = None,
                        max_job_memory: int | None = None) -> dict:
    """Rewrite ``gm`` with every Linear or convolution whose own build is predicted above ``1/per_share`` of a
    worker's fair share (the whole model's predicted time / (per_share W); :data:`PIECES_PER_SHARE` for a fully
    parallel design, :data:`STREAM_PIECES_PER_SHARE` for a streaming one, whose pieces each hold a line buffer) cut
    into pieces of about that size (equal output ranges, at most :data:`MAX_PIECES`, at least
    :data:`MIN_PIECE_OUTPUTS` outputs each): the dynamic program may then cut between pieces, so a partition's
    predicted time can land within one piece of the fair share; bounds it does not cut at are not applied. With
    ``max_job_memory``, a layer predicted (``memory_model``) above it is cut into pieces predicted under it (at
    :data:`MEMORY_MARGIN`), however small its time. Returns ``layersplit.apply``'s description."""
    from ..frontend import layersplit
    lf = layer_features(gm, precision, input_precision, types)

    def t(f: dict) -> float:
        return sum(cm.predict(s.model, {**f, "ports": 0}) for s in steps if s.scope == "partition")

    def rss(f: dict, m: int) -> float:      # a piece of 1/m of the layer: its sizes scale with its outputs
        piece = {k: (v / m if k in SIZES else v) for k, v in f.items()}
        return max(memory_model.predict(s.model, {**piece, "ports": 0}) for s in steps if s.scope == "partition")

    bounds = {k: list(v) for k, v in required.items()}            # the user's own cuts inside layers
    if workers:                                                     # 0: offer none
        per = {name: t(f) for name, f in lf.items()}
        share = sum(per.values()) / (per_share * workers)
        for nd in gm.graph.nodes:
            if nd.name not in per or layersplit.why_not(gm, nd) is not None:
                continue
            width = layersplit.width(gm.get_submodule(nd.target))
            cap = min(MAX_PIECES, width // MIN_PIECE_OUTPUTS)
            m = math.ceil(per[nd.name] / share) if per[nd.name] > share else 1
            if max_job_memory is not None and memory_model is not None:
                while m < cap and rss(lf[nd.name], m) > MEMORY_MARGIN * max_job_memory:
                    m += 1
            m = min(cap, m)
            if m >= 2:
                bounds[nd.name] = sorted({*bounds.get(nd.name, []), *(round(i * width / m) for i in range(1, m))})
    return layersplit.apply(gm, bounds) if bounds else {}


def splits_layers_by_default(flow: str, io_type: str) -> bool:
    """``split_layers=None``: may the automatic cuts go inside wide Linear layers or convolutions? As the flow says
    (``Flow.splits_layers_by_default``: the open RTL flow, where one layer's Yosys time can be the build's);
    elsewhere only when asked (``split_layers=True``)."""
    from ..flows import get_flow
    return get_flow(flow).splits_layers_by_default(io_type)


def auto_splits(model, input_shape, workers: int | None = None, config: dict | None = None, flow: str = "rtl",
                splits=None, cache_dir=None, reference: bool = True, split_layers: bool | None = None) -> list[str]:
    """The cuts ``compile(splits="auto")`` would add to the model's markers, without building anything.

    Args:
        model, input_shape: as for :func:`fxsplit.compile`.
        workers: the workers the build is balanced for (default: this machine's CPUs).
        config: the fxsplit config of the build (its precision sizes the datapath; ``synth``, ``io_type``).
        flow: the flow whose steps are priced (``Flow.steps``).
        splits: cuts that must be made too (names, as for ``compile``).
        cache_dir: a build cache to fit the cost model on (else each step's shipped model).
        reference: the build includes the uncut reference C simulation.
        split_layers: may the cuts go inside a wide Linear or convolution (``"fc2@32"``, :mod:`fxsplit.frontend.layersplit`);
            None: as the flow says.

    Returns:
        The names to pass as ``splits`` (the markers stay in the model and are not repeated).

    Raises:
        FxsplitError: the model does not trace, a required split names nothing, or ``workers`` is not positive."""
    import os

    from ..flows import get_flow
    from ..frontend.layersplit import copy_graph
    from ..frontend.partitioner import partition_graph, trace_eval
    from ..lower import normalize_config
    from .costmodel import weight_types
    flow_cls = get_flow(flow)
    traced = trace_eval(model, input_shape)
    # the config as compile reads it: its per-layer weight types and the steps its io_type runs
    fc = normalize_config(dict(config or {}), partition_graph(copy_graph(traced), []),
                          exact_accum_default=flow_cls.exact_accum_default)
    if split_layers is None:
        split_layers = flow_cls.splits_layers_by_default(fc.io_type)
    plan = plan_auto(model, input_shape, workers or os.cpu_count() or 1,
                     precision=fc.precision, input_precision=fc.input_precision,
                     flow=flow, synth=fc.synth, reference=reference, splits=splits,
                     cost_model=CostModel.from_cache(cache_dir), split_layers=bool(split_layers),
                     options=flow_cls.run_options(fc), traced=traced, types=weight_types(fc.layer_name))
    return plan.splits


__all__ = ["auto_splits", "plan_auto", "AutoPlan", "flow_steps"]
