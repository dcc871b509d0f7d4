"""Layer splits: one wide ``nn.Linear`` or convolution built as several partitions, each computing a range of its
outputs (output channels for a convolution).

A cut between layers cannot balance a model whose time sits in one wide layer: the slowest partition is at least
that layer. ``splits=["fc2@32"]`` cuts *inside* layer ``fc2``: the graph computes ``fc2``'s outputs ``[0:32]`` and
``[32:]`` with two Linear layers holding those rows of its weights and bias (``fc2__o0``, ``fc2__o32``), joins them
with ``torch.cat`` (hls4ml's Concatenate, chained two at a time as hls4ml concatenates), and cuts before
``fc2__o32``. The join goes with the last piece; ``"fc2@64"`` (the layer's width) cuts between the last piece and
the join as well, so the join starts a partition with what follows. Either way a layer built as pieces adds a
partition on the pipeline's path (the join waits for every piece), so its latency grows by one partition's. Several bounds of one layer (``"fc2@16", "fc2@32"``) give several pieces; ``splits="auto"`` proposes
them itself (:mod:`fxsplit.plan.autosplit`).

Why the bits stay the same: every output neuron of a Dense layer is its own sum over the same inputs with its own
row of weights; nothing in it depends on the other neurons. ``lower`` pins each piece's weight, bias and result
types (and an explicit accumulator type) to the ones hls4ml gives the whole layer in the uncut model, and the
Concatenate's result type to the layer's result type, so each output is the same value in the same type; the
uncut reference is built from the model as written (``Partitioning.original``), and ``verify`` compares against it.

A convolution (``"stage3.0.conv1@16"``) splits the same way by output channels: every output channel of every
pixel is its own sum over the same window, in the same line buffer order (io_stream) or the same loop
(io_parallel), so each piece is a ``Conv1d``/``Conv2d`` holding those filters; a ``BatchNorm`` that is the
convolution's only user is sliced with it (each piece's BatchNorm holds its channels' statistics, pinned to the
BatchNorm's types) and the channel Concatenate joins the BatchNorms' outputs. A piece re-reads the whole input
(its own line buffer and padding): that is the price of building one convolution as several partitions.

What can be split: a call of a plain ``torch.nn.Linear`` on one feature vector per sample, whose output hls4ml
does not fuse with the next layer (a BatchNorm or a brevitas quantizer that is its only user), or of a plain
``Conv1d``/``Conv2d`` (no groups, zero padding), optionally followed by its own plain BatchNorm, in a model
without brevitas layers; anything else is refused, naming the module and its source line.
"""

from __future__ import annotations

import copy
import re

import torch
import torch.fx
from torch import nn

from .capture import node_shape, node_source, reshapes, shape_or_none
from ..errors import FxsplitError

SPLIT_RE = re.compile(r"^(?P<layer>[^@\s]+)@(?P<at>-?\d+)$")
PIECE_SEP = "__o"           # piece module / node: <layer>__o<first output>


def parse(entry: str) -> tuple[str, int] | None:
    """``"fc2@32"`` -> ("fc2", 32); anything else -> None."""
    m = SPLIT_RE.match(entry) if isinstance(entry, str) else None
    return (m.group("layer"), int(m.group("at"))) if m else None


def _find(gm: torch.fx.GraphModule, layer: str) -> torch.fx.Node | None:
    for n in gm.graph.nodes:
        if n.op == "call_module" and (n.target == layer or n.name == layer):
            return n
    return None


CONVS = (nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def width(mod: nn.Module) -> int:
    """How many outputs (features or channels) a splittable layer has."""
    return mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels


def norm_of(gm: torch.fx.GraphModule, node: torch.fx.Node) -> torch.fx.Node | None:
    """The plain BatchNorm a convolution's pieces carry a slice of: the convolution's only user, if it is one."""
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and len(users[0].all_input_nodes) == 1:
        bn = gm.get_submodule(users[0].target)
        if type(bn) in NORMS and bn.running_mean is not None and not users[0].kwargs and len(users[0].args) == 1:
            return users[0]
    return None


def why_not(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str | None:
    """Why ``node`` cannot be split by outputs (None: it can)."""
    if node.op != "call_module":
        return "it is not a module call"
    mod = gm.get_submodule(node.target)
    if type(mod) not in (nn.Linear, *CONVS):
        return (f"it is a {type(mod).__name__}; only a plain torch.nn.Linear, Conv1d or Conv2d is split by "
                "outputs")
    if len(node.all_input_nodes) != 1 or node.kwargs or len(node.args) != 1:
        return "it is called with more than one argument"
    try:
        shape_in = node_shape(node.all_input_nodes[0])
    except FxsplitError:
        return "its input is not a single tensor"
    if any(type(m).__module__.startswith("brevitas.") for m in gm.modules()):
        return "the model has brevitas layers, whose exact reading does not cover split layers"
    if isinstance(mod, CONVS):
        if mod.groups != 1:
            return f"it has groups={mod.groups}; only a convolution over all its input channels is split"
        if mod.padding_mode != "zeros":
            return f"it pads with {mod.padding_mode!r}; hls4ml pads with zeros only"
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and norm_of(gm, node) is None:
            nxt = gm.get_submodule(users[0].target)
            if isinstance(nxt, nn.modules.batchnorm._BatchNorm):
                return (f"the {type(nxt).__name__} {users[0].target!r} that follows is not a plain BatchNorm1d/2d "
                        "called on it alone, so it could not be sliced with the pieces")
        return None
    if len(shape_in) != 1:
        return (f"its input has shape {shape_in} per sample; only a Linear on one feature vector per sample "
                "is split (hls4ml builds a Linear over more dimensions differently)")
    src = node.all_input_nodes[0]
    if reshapes(gm, src) and len(shape_or_none(src.all_input_nodes[0]) or ()) > 1:
        return (f"its input is {src.name!r}, a flattened multi-dimensional tensor: hls4ml reads it in its own "
                "channels-last order inside the partition that flattens it, and in PyTorch's order in any other, so "
                "the pieces would not see the same vector")
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module":
        nxt = gm.get_submodule(users[0].target)
        if isinstance(nxt, nn.modules.batchnorm._BatchNorm) or type(nxt).__name__ in ("QuantIdentity",
                                                                                     "QuantHardTanh"):
            return (f"hls4ml fuses it with the {type(nxt).__name__} {users[0].target!r} that follows; the pieces "
                    "would not be fused the same way")
    return None


def resolve(gm: torch.fx.GraphModule, entries: list[tuple[str, int, str]]) -> dict[str, list[int]]:
    """``[(layer, bound, entry text)]`` -> {fx node name: sorted inner bounds}, every entry validated."""
    out: dict[str, list[int]] = {}
    joins: dict[str, tuple] = {}
    for layer, at, text in entries:
        node = _find(gm, layer)
        if node is None:
            import difflib
            known = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
            close = difflib.get_close_matches(layer, known, n=4, cutoff=0.5)
            raise FxsplitError(f"splits entry {text!r} names layer {layer!r}, which is not a module the model calls",
                               hint=(f"did you mean {', '.join(map(repr, close))}?" if close else
                                     "write '<Linear or Conv module>@<first output of the second piece>', "
                                     "e.g. 'fc2@32'"))
        reason = why_not(gm, node)
        if reason is not None:
            raise FxsplitError(f"splits entry {text!r}: layer {node.target!r} cannot be split by outputs: {reason}",
                               module=str(node.target), source=node_source(node),
                               hint="cut before or after this layer instead (splits=['<module>'])")
        n_out = width(gm.get_submodule(node.target))
        if not 0 < at <= n_out:
            raise FxsplitError(f"splits entry {text!r}: {node.target!r} has {n_out} outputs, so a piece can start "
                               f"at 1 .. {n_out - 1} ({n_out}: between the pieces and the Concatenates joining them), "
                               f"not {at}", module=str(node.target), source=node_source(node),
                               hint=f"e.g. '{node.target}@{n_out // 2}' builds it as two partitions")
        out.setdefault(node.name, [])
        if at not in out[node.name]:
            out[node.name].append(at)
        joins.setdefault(node.name, (n_out, text, node))
    for name, (n_out, text, node) in joins.items():
        if out[name] == [n_out]:
            raise FxsplitError(f"splits entry {text!r} cuts between the pieces of {node.target!r} and their join, but "
                               "nothing splits that layer into pieces", module=str(node.target),
                               source=node_source(node),
                               hint=f"add a cut inside it too, e.g. '{node.target}@{n_out // 2}'")
    return {k: sorted(b for b in v if b != joins[k][0]) for k, v in out.items()}


def _meta(src: torch.fx.Node, features: int) -> dict:
    meta = dict(src.meta)
    tm = meta.get("tensor_meta")
    if tm is not None and hasattr(tm, "shape"):          # (batch, features or channels, spatial...)
        meta["tensor_meta"] = tm._replace(shape=torch.Size([*tm.shape[:1], features, *tm.shape[2:]]))
    return meta


def _piece(mod: nn.Module, a: int, b: int) -> nn.Module:
    """A layer holding outputs ``a:b`` of ``mod`` (a Linear, convolution or BatchNorm): the layer's own values in
    its own dtype, not float32 copies."""
    ref = next(t for t in (*mod.parameters(recurse=False), *mod.buffers(recurse=False)) if t.is_floating_point())
    kw = {"dtype": ref.dtype, "device": ref.device}
    if isinstance(mod, nn.Linear):
        out = nn.Linear(mod.in_features, b - a, bias=mod.bias is not None, **kw)
    elif isinstance(mod, CONVS):
        out = type(mod)(mod.in_channels, b - a, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                        dilation=mod.dilation, bias=mod.bias is not None, padding_mode=mod.padding_mode, **kw)
    else:
        out = type(mod)(b - a, eps=mod.eps, momentum=mod.momentum, affine=mod.affine,
                        track_running_stats=mod.track_running_stats, **kw)
    with torch.no_grad():
        for name, t in [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]:
            if t is None:
                continue
            mine = getattr(out, name)
            mine.copy_(t if t.dim() == 0 else t[a:b])      # num_batches_tracked: a scalar, kept
    out.train(mod.training)
    return out


def _add(gm: torch.fx.GraphModule, target: str, a: int, mod: nn.Module, layer: str) -> str:
    parent, _, leaf = target.rpartition(".")
    qual = f"{parent + '.' if parent else ''}{leaf}{PIECE_SEP}{a}"
    if _has(gm, qual):
        raise FxsplitError(f"cannot split {layer!r}: the model already has a module {qual!r}", module=layer,
                           hint="rename that module")
    gm.add_submodule(qual, mod)
    return qual


def apply(gm: torch.fx.GraphModule, bounds: dict[str, list[int]]) -> dict[str, dict]:
    """Rewrite ``gm`` in place: every node in ``bounds`` becomes its pieces (each convolution piece followed by its
    slice of the layer's own BatchNorm, if it has one) and a chain of binary ``torch.cat`` over the channels (placed
    right after the last piece). Returns {original node name: {"module", "bounds" (with 0 and the width), "pieces":
    [node names], "norm": the BatchNorm's node name or None, "norms": [its pieces' node names], "starts": {bound:
    piece node name}, "cats": [node names]}}."""
    info: dict[str, dict] = {}
    nodes = {n.name: n for n in gm.graph.nodes}
    for name, inner in bounds.items():
        node = nodes[name]
        target = str(node.target)
        mod = gm.get_submodule(target)
        n_out = width(mod)
        edges = [0, *inner, n_out]
        bn = norm_of(gm, node) if isinstance(mod, CONVS) else None
        bn_mod = gm.get_submodule(bn.target) if bn is not None else None
        last = bn if bn is not None else node              # the node whose output the join replaces
        pieces, norms, starts = [], [], {}
        with gm.graph.inserting_before(last):
            for a, b in zip(edges, edges[1:]):
                p = gm.graph.call_module(_add(gm, target, a, _piece(mod, a, b), target), node.args)
                p.meta = _meta(node, b - a)
                pieces.append(p)
                starts[a] = p.name
                if bn is not None:
                    q = gm.graph.call_module(_add(gm, str(bn.target), a, _piece(bn_mod, a, b), target), (p,))
                    q.meta = _meta(bn, b - a)
                    norms.append(q)
            ends = norms or pieces
            acc, cats = ends[0], []
            for k, p in enumerate(ends[1:], start=1):
                acc = gm.graph.call_function(torch.cat, ((acc, p),), {"dim": 1})
                acc.meta = _meta(last, edges[k + 1])
                cats.append(acc.name)
        starts[n_out] = cats[0]          # "<layer>@<width>": between the pieces and their join
        last.replace_all_uses_with(acc)
        gm.graph.erase_node(last)
        if bn is not None:
            gm.graph.erase_node(node)
        info[name] = {"module": target, "bounds": edges, "pieces": [p.name for p in pieces],
                      "norm": bn.name if bn is not None else None, "norm_module": str(bn.target) if bn else None,
                      "norms": [q.name for q in norms], "starts": starts, "cats": cats}
    gm.delete_all_unused_submodules()
    gm.recompile()
    return info


def _has(gm: nn.Module, qual: str) -> bool:
    try:
        gm.get_submodule(qual)
        return True
    except AttributeError:
        return False


def copy_graph(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """An independent copy of ``gm`` (graph, meta, modules), for the uncut reference."""
    return copy.deepcopy(gm)


def origins(info: dict[str, dict]) -> dict[str, str]:
    """{piece, BatchNorm piece or cat node name: the uncut graph's node it computes part of (the layer; its
    BatchNorm for the BatchNorm pieces and the cats that join them)}."""
    out = {}
    for name, e in info.items():
        for x in e["pieces"]:
            out[x] = name
        for x in (*e.get("norms", ()), *e["cats"]):
            out[x] = e.get("norm") or name
    return out


__all__ = ["parse", "resolve", "apply", "why_not", "origins", "copy_graph", "width", "norm_of", "PIECE_SEP"]
