"""Cut discovery and DAG slicing.

Cut points come from ``Cut`` modules / ``cut()`` calls in the model and from
``splits=[name, ...]`` (cut *before* that module, as hls4ml's ``split_before_layers``).
Every node gets the number of cut points that precede it in the traced program
order; since that order is topological, every edge goes forward, so any cut set
through a DAG is legal. torch.fx ``split_module`` slices the graph; every tensor
that crosses a cut becomes an output port of its producer and an input port of
each consumer (skip connections may bypass several partitions).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch.fx
from torch import nn
from torch.fx.passes.split_module import split_module

from .capture import COMPUTE_OPS, channels_last, node_shape, node_source, trace
from ..errors import FxsplitError
from ..ir import MODEL_INPUT, MONOLITHIC, STITCHED, CutPoint, Partition, Partitioning, Port
from .markers import cut_name, is_cut_node

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RESERVED_NAMES = {STITCHED, MONOLITHIC, MODEL_INPUT, "output", "cache"}


@dataclass
class _Boundary:
    position: int            # index (in program order) of the first node after the cut
    name: str | None         # partition name requested for the partition starting here
    what: str                # human description for errors
    source: str | None
    from_splits: bool = False  # came from splits=[...] (not a marker in the model source)


def check_name(name: str, what: str) -> None:
    """Partition names become directory and HDL names: keep them plain identifiers."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name.startswith("_") or name.lower() in RESERVED_NAMES:
        raise FxsplitError(
            f"{what} {name!r} is not a usable partition name",
            hint="use a plain identifier (letters, digits, underscores; not starting with '_' or a digit, at most "
                 f"64 characters, not one of {sorted(RESERVED_NAMES)}); it names the partition's directory "
                 "inside output_dir and its HDL module")


def _module_names(gm: torch.fx.GraphModule) -> list[str]:
    return [n for n, _ in gm.named_modules() if n]


def resolve_split(gm: torch.fx.GraphModule, nodes: list[torch.fx.Node], name: str) -> int:
    """Program-order index of the first node computed by module ``name`` (or the node called ``name``)."""
    if not isinstance(name, str):
        raise FxsplitError(f"splits must be a list of module names (strings), got {name!r}")
    for i, n in enumerate(nodes):
        if n.op == "call_module" and n.target == name:
            return i
    for i, n in enumerate(nodes):
        stack = n.meta.get("nn_module_stack") or {}
        if n.op in COMPUTE_OPS and any(path == name for path, _ in stack.values()):
            return i
    for i, n in enumerate(nodes):
        if n.name == name and n.op in COMPUTE_OPS:
            return i
    modules = _module_names(gm)
    if name in modules:
        raise FxsplitError(f"splits names {name!r}, a module of the model, but no traced operation is attributed to "
                           "it (its forward never runs, or the graph was traced without module paths)",
                           module=name, hint="name a module whose forward runs, e.g. its first layer")
    known = modules + [n.name for n in nodes if n.op in COMPUTE_OPS]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close else
            "use a qualified module name as in model.named_modules(), e.g. 'layer2.0.conv1'")
    raise FxsplitError(f"splits names {name!r}, which is neither a module nor a traced operation of the model",
                       hint=hint)


def _merge_coinciding(boundaries: list[_Boundary], nodes: list[torch.fx.Node], gm) -> list[_Boundary]:
    """A ``splits`` entry that falls where another cut already is (no operation between them) adds
    nothing: drop it, keeping the marker (and its name). Two markers at one place stay an error."""
    def first_op_at_or_after(pos: int) -> int:
        for i in range(pos, len(nodes)):
            if nodes[i].op in COMPUTE_OPS and not is_cut_node(nodes[i], gm):
                return i
        return len(nodes)

    kept: list[_Boundary] = []
    for bd in boundaries:
        if kept and first_op_at_or_after(kept[-1].position) == first_op_at_or_after(bd.position):
            if bd.from_splits:
                continue
            if kept[-1].from_splits:
                kept[-1] = bd
                continue
        kept.append(bd)
    return kept


def partition(model: nn.Module, input_shape, splits: Sequence[str | CutPoint] | None = None) -> Partitioning:
    """Trace ``model`` and slice it at its Cut markers and at ``splits``, without building anything.

    Args:
        model: the PyTorch model, with its ``fxsplit.Cut`` / ``fxsplit.cut`` markers.
        input_shape: one input's shape without the batch dimension (a list of shapes for several inputs).
        splits: more cuts: module names to cut before, ``"fc2@32"`` inside a Linear, or :class:`~fxsplit.ir.CutPoint`.

    Returns:
        The :class:`~fxsplit.ir.Partitioning`: partitions in program order, each with its ports (the tensors that
        cross its boundary; skip connections included) and the DAG between them (ports untyped until lowering).

    Raises:
        FxsplitError: the model does not trace, a split names nothing in the model, a cut leaves a partition empty,
            or partition names clash (the message names the marker or module and its source line).
    """
    return partition_graph(trace_eval(model, input_shape), splits or [])


def trace_eval(model: nn.Module, input_shape) -> torch.fx.GraphModule:
    """The traced graph of ``model`` in eval mode (its training flag restored afterwards)."""
    if not isinstance(model, nn.Module):
        raise FxsplitError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        return trace(model, input_shape)
    finally:
        model.train(was_training)


def strip_markers(model: nn.Module, input_shape) -> torch.fx.GraphModule:
    """``model`` without its Cut markers: its traced graph with the marker nodes erased, a GraphModule that
    fxsplit traces like any module (so that ``splits`` or ``splits="auto"`` alone decide the cuts)."""
    gm = trace_eval(model, input_shape)
    _erase_markers(gm)
    return torch.fx.GraphModule(gm, gm.graph, type(model).__name__)


def partition_graph(gm: torch.fx.GraphModule, splits: Sequence[str | CutPoint]) -> Partitioning:
    """Slice the traced graph ``gm`` (changed in place: markers erased, split layers rewritten) at its markers and
    at ``splits`` (names or :class:`~fxsplit.ir.CutPoint`)."""
    from . import layersplit
    if isinstance(splits, (str, CutPoint)):
        splits = [splits]
    cuts = [CutPoint.of(s) for s in splits]
    inside = [(c.layer, c.output, str(c)) for c in cuts if c.output is not None]
    original, pieces = None, {}
    if inside:                         # cuts inside a layer (splits=["fc2@32"]): the layer becomes its pieces
        bounds = layersplit.resolve(gm, inside)
        original = layersplit.copy_graph(gm)
        pieces = layersplit.apply(gm, bounds)
    graph = gm.graph
    nodes = list(graph.nodes)
    index = {n.name: i for i, n in enumerate(nodes)}
    boundaries: list[_Boundary] = []
    for i, n in enumerate(nodes):
        if is_cut_node(n, gm):
            nm = cut_name(n, gm)
            what = f"Cut marker {n.target!r}" if n.op == "call_module" else "cut() call"
            boundaries.append(_Boundary(i, nm, what, node_source(n)))
    for c in cuts:
        if c.output is not None:
            layer = next(name for name, e in pieces.items() if c.layer in (name, e["module"]))
            i = index[pieces[layer]["starts"][c.output]]
            boundaries.append(_Boundary(i, None, f"split inside {pieces[layer]['module']!r} at output {c.output}",
                                        node_source(nodes[i]), from_splits=True))
            continue
        whole = next((e for name, e in pieces.items() if c.layer in (name, e["module"])), None)
        i = index[whole["pieces"][0]] if whole is not None else resolve_split(gm, nodes, c.layer)
        boundaries.append(_Boundary(i, None, f"split before {c.layer!r}", node_source(nodes[i]), from_splits=True))
    boundaries.sort(key=lambda b: b.position)
    boundaries = _merge_coinciding(boundaries, nodes, gm)

    # partition id of every node: number of boundaries at or before it
    part_of: dict[str, int] = {}
    cut_nodes = []
    b = 0
    for i, n in enumerate(nodes):
        while b < len(boundaries) and boundaries[b].position <= i:
            b += 1
        if is_cut_node(n, gm):
            cut_nodes.append(n)
        elif n.op in COMPUTE_OPS or n.op == "get_attr":
            part_of[n.name] = b
    n_parts = len(boundaries) + 1

    names = ["p0"] + [bd.name or f"p{k + 1}" for k, bd in enumerate(boundaries)]
    for k, bd in enumerate(boundaries):
        if bd.name is not None:
            check_name(bd.name, f"the {bd.what} at {bd.source or '?'} has name")
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise FxsplitError(f"several partitions would be named {dup[0]!r}",
                           hint="give every Cut marker a distinct name (or leave names out: p0, p1, ...)")
    folded: dict[str, str] = {}
    for x in names:               # a case-insensitive file system (macOS, Windows) gives them one directory
        other = folded.setdefault(x.lower(), x)
        if other != x:
            raise FxsplitError(f"partitions {other!r} and {x!r} differ only in case: on a case-insensitive file "
                               "system they would share one directory of output_dir (and one HDL module name "
                               "for tools that fold case)", hint="give them names that differ in more than case")

    # erase markers: consumers read the marker's input directly
    for n in cut_nodes:
        n.replace_all_uses_with(n.args[0])
        graph.erase_node(n)
    graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()

    counts = [0] * n_parts
    for n in graph.nodes:
        if n.op in COMPUTE_OPS:
            counts[part_of[n.name]] += 1
    for k, c in enumerate(counts):
        if c == 0:
            bd = boundaries[k - 1] if k > 0 else boundaries[0]
            where = ("before any operation of the model" if k == 0 else
                     "after the last operation of the model" if k == n_parts - 1 else
                     "right after another cut")
            raise FxsplitError(f"the {bd.what} leaves partition {names[k]!r} empty: it sits {where}",
                               partition=names[k], source=bd.source,
                               hint="remove this cut, or move it between two layers")

    for n in graph.nodes:  # get_attr constants belong with their first user
        if n.op == "get_attr" and n.users:
            part_of[n.name] = min(part_of[u.name] for u in n.users if u.name in part_of)

    split = split_module(gm, gm, lambda n: part_of[n.name], keep_original_order=True,
                         keep_original_node_name=True, tuple_return=True)

    node_by_name = {n.name: n for n in graph.nodes}
    ports: dict[str, Port] = {}

    def port(name: str) -> Port:
        if name not in ports:
            node = node_by_name[name]
            shp = node_shape(node)
            ports[name] = Port(name, channels_last(shp), shp)
        return ports[name]

    inputs = [port(n.name) for n in graph.nodes if n.op == "placeholder"]
    partitions: list[Partition] = []
    for k in range(n_parts):
        sub: torch.fx.GraphModule = getattr(split, f"submod_{k}")
        _own_constants(sub, gm, node_by_name)
        in_names = [n.name for n in sub.graph.nodes if n.op == "placeholder"]
        out_node = next(n for n in sub.graph.nodes if n.op == "output")
        outs = out_node.args[0]
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        out_names = [o.name for o in outs]
        missing = [nm for nm in in_names + out_names if nm not in node_by_name]
        if missing:  # split_module renamed something: never expected with keep_original_node_name
            raise FxsplitError(f"internal: partition {names[k]} has ports {missing} unknown to the uncut graph")
        sources = {}
        for nm in in_names:
            src = node_by_name[nm]
            sources[nm] = MODEL_INPUT if src.op == "placeholder" else names[part_of[nm]]
        members = [n for n in graph.nodes if n.op in COMPUTE_OPS and part_of[n.name] == k]
        layers = [f"{n.target}" if n.op == "call_module" else n.name for n in members]
        sub.graph.lint()
        partitions.append(Partition(names[k], k, sub, [port(nm) for nm in in_names], [port(nm) for nm in out_names],
                                    [n.name for n in members], sources, layers))

    out_arg = next(n for n in graph.nodes if n.op == "output").args[0]
    out_list = list(out_arg) if isinstance(out_arg, (tuple, list)) else [out_arg]
    if not all(isinstance(o, torch.fx.Node) for o in out_list):
        raise FxsplitError("the model must return a tensor or a tuple/list of tensors")
    outputs = []
    output_sources = {}
    for o in out_list:
        if o.op == "placeholder":
            raise FxsplitError(f"model output {o.name!r} is a model input passed through unchanged; nothing to build")
        outputs.append(port(o.name))
        output_sources[o.name] = names[part_of[o.name]]
    if original is not None:           # the uncut reference: the model as written, markers erased
        _erase_markers(original)
    return Partitioning(gm, partitions, inputs, outputs, output_sources, original=original, layer_splits=pieces)


def _own_constants(sub: torch.fx.GraphModule, gm: torch.fx.GraphModule, node_by_name: dict) -> None:
    """torch's ``split_module`` passes a tensor constant of the root (a ``get_attr``: a registered buffer such as a
    normalization's mean) into a partition as an input: here it becomes the partition's own constant again, a copy
    under the same node name, so no port carries a constant."""
    changed = False
    for ph in [n for n in sub.graph.nodes if n.op == "placeholder"]:
        src = node_by_name.get(ph.name)
        if src is None or src.op != "get_attr":
            continue
        value = gm
        for part in str(src.target).split("."):
            value = getattr(value, part)
        attr = "fxs_const_" + str(src.target).replace(".", "_")
        while hasattr(sub, attr):
            attr += "_"
        if isinstance(value, torch.nn.Parameter):
            sub.register_parameter(attr, value)
        elif isinstance(value, torch.Tensor):
            sub.register_buffer(attr, value)
        else:
            setattr(sub, attr, value)
        with sub.graph.inserting_before(ph):
            new = sub.graph.get_attr(attr)
        new.meta = dict(src.meta)
        ph.replace_all_uses_with(new)
        sub.graph.erase_node(ph)
        sub.graph._graph_namespace._rename_object(new, ph.name)
        new.name = ph.name
        changed = True
    if changed:
        sub.recompile()


def _erase_markers(gm: torch.fx.GraphModule) -> None:
    for n in list(gm.graph.nodes):
        if is_cut_node(n, gm):
            n.replace_all_uses_with(n.args[0])
            gm.graph.erase_node(n)
    gm.delete_all_unused_submodules()
    gm.recompile()
