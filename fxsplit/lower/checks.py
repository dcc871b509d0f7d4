"""Cut checks: what hls4ml built for each partition must be a design that equals the uncut model bit for bit (every
operation one hls4ml converts, code for every layer, ports of PyTorch's sizes and layout, no fusion across a cut,
equal types on both sides); each refusal names the nearest legal cut."""

from __future__ import annotations

import torch
import torch.fx

from ..frontend.capture import COMPUTE_OPS, node_source
from ..errors import FxsplitError
from ..ir import Partition, Partitioning
from .spec import _is_noop, _supported_ops, hls4ml_source, type_width

def _merge_handler(op: str) -> bool:
    """hls4ml's handler for ``op`` is one of its merge/concatenate parsers (they fail on x op x)."""
    from hls4ml.converters.pytorch_to_hls import layer_handlers
    handler = layer_handlers.get(op)
    return handler is not None and handler.__module__.endswith("pytorch.merge")


def _op_name(node: torch.fx.Node, root: torch.nn.Module) -> str:
    from hls4ml.converters.pytorch_to_hls import layer_name_map
    if node.op == "call_module":
        return type(root.get_submodule(node.target)).__name__
    op = node.name
    if op.split("_")[-1].isdigit():
        op = "_".join(op.split("_")[:-1])
    return layer_name_map.get(op, op)


def check_layers(part: Partition, uncut: torch.fx.GraphModule) -> None:
    """Every operation of the partition must be one hls4ml's PyTorch converter knows."""
    supported = _supported_ops()
    uncut_nodes = {n.name: n for n in uncut.graph.nodes}
    for n in part.module.graph.nodes:
        if n.op not in ("call_module", "call_function", "call_method"):
            continue
        op = _op_name(n, part.module)
        tensor_args = []
        torch.fx.node.map_arg(n.args, tensor_args.append)
        if (n.op != "call_module" and len(set(tensor_args)) < len(tensor_args) and _merge_handler(op)):
            orig = uncut_nodes.get(n.name, n)
            raise FxsplitError(f"hls4ml cannot convert operation {n.name!r} ({op}): it uses the same tensor "
                               f"{tensor_args[0].name!r} twice, and hls4ml's merge layers (add, sub, mul, maximum, "
                               "minimum, cat) fail on that", module=n.name, partition=part.name,
                               source=node_source(orig), hint="e.g. write x * 2 instead of x + x")
        if op not in supported:
            orig = uncut_nodes.get(n.name, n)
            what = f"module {orig.target!r}" if n.op == "call_module" else f"operation {n.name!r}"
            raise FxsplitError(f"hls4ml cannot convert {what} ({op})", module=str(orig.target),
                               partition=part.name, source=node_source(orig),
                               hint="replace it with a layer hls4ml supports (see "
                                    "hls4ml.converters.pytorch_to_hls.get_supported_pytorch_layers()), or keep it "
                                    "outside the model you compile")


_NO_CODE_OK = {"Input", "InputLayer", "Reshape", "Constant"}   # layers hls4ml implements without a function call


def _check_graph(hm, part: Partition, uncut: torch.fx.GraphModule, backend: str, channels_last: bool = True) -> None:
    """What hls4ml built for a partition must be a design: code for every layer, ports of PyTorch's sizes,
    outputs in the channels-last layout the ports carry, and not an input wired straight to an output."""
    nodes = {n.name: n for n in uncut.graph.nodes}

    def err(msg: str, port: str, hint: str):
        node = nodes.get(port)
        return FxsplitError(msg, partition=part.name, module=str(node.target) if node is not None else port,
                            source=node_source(node) if node is not None else None, hint=hint)

    for layer in hm.get_layers():
        if layer.class_name not in _NO_CODE_OK and layer.get_attr("function_cpp", None) is None:
            raise FxsplitError(
                f"hls4ml's {backend} backend writes no code for layer {layer.name!r} ({layer.class_name}): the design "
                "would read data nothing wrote (plain hls4ml builds it the same way, silently wrong)",
                partition=part.name, hint="replace the layer with one hls4ml implements for this backend")
    passed = [port.name for port, layer in zip(part.outputs, hm.outputs) if layer in hm.inputs]
    if passed:
        raise _holds_nothing(part, uncut, None if len(passed) == len(part.outputs) else passed)
    _check_sizes(hm, part.inputs, part.outputs, f"partition {part.name!r}", uncut, part.name)
    for port, layer_name in zip(part.outputs, hm.outputs):
        node = nodes.get(hls4ml_source(uncut, port.name))      # (a Dropout after a flatten hands the flatten on)
        if channels_last and node is not None and _flattens(uncut, node) and not _transposed(hm, layer_name):
            users = ", ".join(repr(u.name) for u in nodes[port.name].users)
            raise err(f"the flattened tensor {port.name!r} leaves partition {part.name!r} in hls4ml's channels-last "
                      f"order: hls4ml reorders the weights of the layers that read it inside the partition instead of "
                      f"transposing it, so the partitions after the cut would read it in another order than PyTorch's "
                      f"(it is read by {users})", port.name,
                      f"cut before the flatten (splits=[{_split_name(node)!r}]) or after every layer that reads it")
        if f"pre_transpose_for_{layer_name}" in hm.graph and f"post_transpose_for_{layer_name}" not in hm.graph:
            port_node = nodes.get(port.name)
            later = _op_after(uncut, next(iter(port_node.users))) if port_node is not None and len(
                port_node.users) == 1 else None
            raise err(f"the cut after {port.name!r} takes the output of a layer hls4ml computes channels-first "
                      f"({hm.graph[layer_name].class_name}) and transposes back only where another layer reads it: "
                      "at a partition's end the data would stay channels-first", port.name,
                      "cut one layer later (after the layer that reads it" +
                      (f": splits=[{_split_name(later)!r}]" if later is not None else "") + "), or before it" +
                      (f" (splits=[{_split_name(port_node)!r}])" if port_node is not None else ""))




def _split_name(n: torch.fx.Node) -> str:
    """What ``splits`` names to cut right before node ``n``: its module, else the node."""
    return str(n.target) if n.op == "call_module" else n.name


def _op_after(gm: torch.fx.GraphModule, node: torch.fx.Node) -> torch.fx.Node | None:
    """The operation after ``node`` in program order (where a cut right after ``node`` is given), else None."""
    ops = [n for n in gm.graph.nodes if n.op in COMPUTE_OPS]
    i = next((k for k, n in enumerate(ops) if n is node), None)
    return ops[i + 1] if i is not None and i + 1 < len(ops) else None


def _keeps_nothing(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """hls4ml may keep no layer of its own for ``node``: a Dropout or Identity, a getitem, or a change of shape
    only (a reshape hls4ml drops at the end of a graph in io_parallel)."""
    import operator

    from ..frontend.capture import reshapes
    return (_is_noop(node, gm) or reshapes(gm, node) or
            (node.op == "call_function" and node.target in (operator.getitem, torch.squeeze, torch.unsqueeze)) or
            (node.op == "call_method" and node.target in ("squeeze", "unsqueeze")))


def _kinds(part: Partition, gm: torch.fx.GraphModule) -> str:
    """What partition ``part`` holds, for a message: "Dropout '_2'", "unsqueeze 'unsqueeze'"."""
    nodes = {n.name: n for n in gm.graph.nodes}
    out = []
    for name in part.nodes:
        n = nodes[name]
        kind = type(gm.get_submodule(n.target)).__name__ if n.op == "call_module" else _op_name(n, gm)
        out.append(f"{kind} {name!r}")
    return ", ".join(out)


def _holds_nothing(part: Partition, gm: torch.fx.GraphModule, passed: list[str] | None = None) -> FxsplitError:
    """The refusal of a partition with no layer hls4ml keeps (``passed``: only these outputs are its inputs,
    handed on through such operations), naming the nearest cuts that give it one."""
    what = (f"partition {part.name!r} holds nothing hls4ml keeps (only {_kinds(part, gm)}): its input would be its "
            "output" if passed is None else
            f"partition {part.name!r} hands {', '.join(map(repr, passed))} on unchanged (hls4ml keeps no layer between "
            "its input and that output): its input would be its output")
    return FxsplitError(what, partition=part.name,
                        hint=f"{_cuts_around(part, gm)}, so that the partition holds a layer hls4ml keeps")


def _cuts_around(part: Partition, gm: torch.fx.GraphModule) -> str:
    """The nearest cuts that give partition ``part`` a layer hls4ml keeps: the cut after it moved past the next such
    layer, or the cut before it moved before the previous one (where that leaves the partition before a layer)."""
    ops = [n for n in gm.graph.nodes if n.op in COMPUTE_OPS]
    where = {n.name: i for i, n in enumerate(ops)}
    first, last = where[part.nodes[0]], where[part.nodes[-1]]
    alts = []
    later = next((i for i in range(last + 1, len(ops)) if not _keeps_nothing(gm, ops[i])), None)
    if later is not None and later + 1 < len(ops):
        alts.append(f"cut after {ops[later].name!r} (splits=[{_split_name(ops[later + 1])!r}])")
    earlier = next((i for i in range(first - 1, -1, -1) if not _keeps_nothing(gm, ops[i])), None)
    if earlier is not None and any(not _keeps_nothing(gm, ops[i]) for i in range(earlier)):
        alts.append(f"{'' if alts else 'cut '}before {ops[earlier].name!r} (splits=[{_split_name(ops[earlier])!r}])")
    if not alts:
        return "remove the cut (none near it leaves a layer hls4ml keeps on both sides)"
    return " or ".join(alts) + " instead"


def _transposed(hm, layer_name: str) -> bool:
    """hls4ml's layer ``layer_name`` is a Transpose, or a reshape of one (the data leaves in PyTorch's order)."""
    layer = hm.graph[layer_name]
    if layer.class_name in ("Reshape", "Repack") and layer.inputs:
        layer = hm.graph.get(layer.inputs[0], layer)
    return layer.class_name == "Transpose"


def _flattens(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """``node`` reshapes a tensor of more than one dimension per sample (a Flatten of channels-first data)."""
    from ..frontend.capture import reshapes, shape_or_none
    return reshapes(gm, node) and len(shape_or_none(node.all_input_nodes[0]) or ()) > 1


def _check_sizes(hm, inputs, outputs, what: str, uncut: torch.fx.GraphModule, partition: str | None = None) -> None:
    """Every port of ``hm`` holds as many elements as PyTorch's tensor (hls4ml converts some operations to
    other shapes, e.g. an einsum that keeps a dummy batch dimension)."""
    import math
    nodes = {n.name: n for n in uncut.graph.nodes}
    for kind, ports, variables in (("input", inputs, hm.get_input_variables()),
                                   ("output", outputs, hm.get_output_variables())):
        for port, var in zip(ports, variables):
            size = math.prod(int(d) for d in var.shape)
            if size != port.size:
                node = nodes.get(port.name)
                raise FxsplitError(
                    f"in {what}, hls4ml's {kind} for {port.name!r} holds {size} elements where PyTorch's tensor has "
                    f"{port.size} (shape {port.torch_shape}): hls4ml converts this operation to something else "
                    "(plain hls4ml gives the same wrong size)", partition=partition,
                    module=str(node.target) if node is not None else port.name,
                    source=node_source(node) if node is not None else None,
                    hint="replace the operation with one hls4ml converts as PyTorch computes it")



# hls4ml passes that replace a layer one for one under a new name (same data): io_stream turns a Reshape into
# 'repack_<name>', a multiplication by a constant becomes 'bn_<name>' (ApplyAlpha)
_RENAMES = (("{}", None), ("repack_{}", "Repack"), ("bn_{}", "ApplyAlpha"))


def _in_graph(hm, name: str | None, flat: bool = True):
    """The layer hls4ml keeps for ``name`` (under its own name or a one-for-one rename), else None.
    ``flat``: the tensor is 1-D per sample; only then is a 'repack_' the same data (for a multi-dimensional
    target, io_stream's Repack at a graph's end lays elements out differently from the uncut Reshape)."""
    if name is None:
        return None
    for pattern, cls in _RENAMES:
        if pattern.startswith("repack_") and not flat:
            continue
        layer = hm.graph.get(pattern.format(name))
        if layer is not None and (cls is None or layer.class_name == cls):
            return layer
    return None


def _legal_cuts_near(node: torch.fx.Node, kept, refused: torch.fx.Node | None = None) -> str:
    """Where a cut through the group hls4ml merged ``node`` into is legal: before the group's first layer or
    after its last one (``kept(name)``: hls4ml keeps that node as a layer of its own in the uncut model).
    ``refused``: the refused cut is the one right after this node, so a group ending there goes on at least
    through the layer that reads it (the refused cut itself is never suggested)."""
    start = node
    while not kept(start.name) and start.all_input_nodes:
        start = start.all_input_nodes[0]
    end = node
    while len(end.users) == 1 and not kept(next(iter(end.users)).name) and next(iter(end.users)).op != "output":
        end = next(iter(end.users))
    if end is refused and len(end.users) == 1 and next(iter(end.users)).op != "output":
        end = next(iter(end.users))
    after = next(iter(end.users)) if len(end.users) == 1 else None

    alt = [f"cut after {end.name!r}" + (f" (splits=[{_split_name(after)!r}])" if after is not None and
                                         after.op != "output" else "")]
    if start.op != "placeholder":
        alt.append(f"before {start.name!r} (splits=[{_split_name(start)!r}])")
    return " or ".join(alt) + " instead, so that no group hls4ml merges is split"


def _merged_quantizer(gm: torch.fx.GraphModule, node: torch.fx.Node | None) -> bool:
    """``node`` is a brevitas linear quantizer (QuantIdentity, QuantHardTanh): hls4ml's MergeLinearActivation folds it
    into a Dense/Conv before it as that layer's result type."""
    return (node is not None and node.op == "call_module" and len(node.all_input_nodes) == 1 and
            type(gm.get_submodule(node.target)).__name__ in ("QuantIdentity", "QuantHardTanh"))


def _check_boundaries(pt: Partitioning, mono, nmap: dict[str, str], graphs: dict, specs: dict, io_type: str) -> None:
    """hls4ml must keep the same layers on both sides (no fusion across a cut), and each cut
    tensor must exist in the uncut model with the same type.

    One difference is not a fusion: with io_parallel hls4ml drops a Reshape that ends a graph (its
    ``RemoveFinalReshape``: a flat array is the same in any shape), so a reshape at the end of a
    partition is gone there but kept in the uncut model; the partition's output is then the reshape's
    input, element for element the same data."""
    uncut_nodes = {n.name: n for n in pt.graph.graph.nodes}
    model_outputs = [p.name for p in pt.outputs]
    mono_out_types = [str(v.type.precision) for v in mono.get_output_variables()]

    def flat(name: str) -> bool:
        node = uncut_nodes.get(name)
        shape = getattr(node.meta.get("tensor_meta"), "shape", None) if node is not None else None
        return shape is not None and len(shape) == 2

    def kept(name: str) -> bool:
        return _in_graph(mono, nmap.get(name), flat(name)) is not None

    for part in pt.partitions:
        pmap = specs[part.name].name_map
        # (a port that is a Dropout or Identity hands on its input: a Reshape before one ends the partition too)
        outs = {p.name for p in part.outputs} | {hls4ml_source(pt.graph, p.name) for p in part.outputs}
        for node_name in part.nodes:
            in_part = _in_graph(graphs[part.name], pmap.get(node_name), flat(node_name)) is not None
            if pt.origin(node_name) != node_name:      # a piece of a split layer, or a Concatenate joining them
                if not in_part:
                    raise FxsplitError(f"hls4ml merges {node_name!r}, a piece of the split layer "
                                       f"{pt.origin(node_name)!r}, with a neighbour", partition=part.name,
                                       hint="cut before or after that layer instead of inside it")
                continue
            in_mono = kept(node_name)
            if in_part == in_mono:
                continue
            if (in_mono and node_name in outs and io_type == "io_parallel"
                    and _in_graph(mono, nmap[node_name]).class_name == "Reshape"):
                continue                       # a final Reshape hls4ml drops from the partition: same data
            node = uncut_nodes[node_name]
            producer = node.all_input_nodes[0].name if node.all_input_nodes else "?"
            raise FxsplitError(
                f"hls4ml merges {node_name!r} into {producer!r} in the uncut model, but the cut keeps them apart"
                if not in_mono else f"hls4ml merges {node_name!r} with a neighbour inside partition {part.name!r} "
                "but not in the uncut model", partition=part.name, module=_split_name(node), source=node_source(node),
                hint=f"the partitioned design could not equal the uncut one bit for bit; "
                     f"{_legal_cuts_near(node, kept)}")
    for part in pt.partitions:          # (every fusion first: a split group is named as such, not as a type)
        for port in part.outputs:
            node = uncut_nodes[port.name]
            type_width(port.precision, f"the tensor {port.name!r} leaving partition {part.name!r}")
            src = pt.origin(hls4ml_source(pt.graph, port.name))
            layer = _in_graph(mono, nmap.get(src, src), flat(src))
            merged = uncut_nodes.get(src)
            if layer is None and _merged_quantizer(pt.graph, merged):
                # a brevitas quantizer hls4ml merged into its producer as the producer's result type (it is the
                # producer's only user): the producer's output is its data
                prod = merged.all_input_nodes[0]
                if list(prod.users) == [merged] and prod.op != "placeholder":
                    layer = _in_graph(mono, nmap.get(prod.name), flat(prod.name))
            if layer is not None:
                mono_prec = str(layer.get_output_variable().type.precision)
            elif port.name in model_outputs:   # dropped by hls4ml in the uncut model too (a final Reshape)
                mono_prec = mono_out_types[model_outputs.index(port.name)]
            else:
                raise FxsplitError(
                    f"the cut after {port.name!r} (end of partition {part.name!r}) splits a group of layers hls4ml "
                    "merges in the uncut model; the partitioned design could not equal the uncut one bit for bit",
                    partition=part.name, module=_split_name(node), source=node_source(node),
                    hint=_legal_cuts_near(merged if merged is not None else node, kept, refused=node))
            if mono_prec != port.precision:
                raise FxsplitError(
                    f"the tensor {port.name!r} has type {port.precision} at the cut but {mono_prec} in the uncut "
                    "model", partition=part.name, module=_split_name(node), source=node_source(node),
                    hint="set an explicit result precision for this layer in config['layers']")
    for port in pt.outputs:
        type_width(port.precision, f"model output {port.name!r}")
