"""Lowering: one hls4ml ModelGraph (the single numerics source) per partition, shared by every flow.

Main process (fast, before any build): convert every partition through hls4ml's
PyTorch converter with explicit outputs and with each input layer pinned to the
type its producer emits, so the type on both sides of a cut is identical; convert
the uncut model the same way and check that every port exists there with the same
type. Worker processes rebuild the same ModelGraph from the picklable ``ModelSpec``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.fx

from ..capture import node_source
from ..errors import FxsplitError
from ..ir import Partition, Partitioning
from .brevitas import freeze_partitions
from .config import FlowConfig

MONOLITHIC = "monolithic"


def _supported_ops() -> set[str]:
    from hls4ml.converters.pytorch_to_hls import get_supported_pytorch_layers

    from . import quant  # noqa: F401  (registers fxsplit's exact quantized layers)
    return set(get_supported_pytorch_layers()) | {"Sequential", "getitem", *_NO_OPS}


# modules that compute nothing in eval mode: hls4ml's parser skips a Dropout (its consumers read its input), and
# fxsplit treats an Identity the same way (hls4ml's parser refuses it). Both are taken out of every module handed
# to hls4ml (``_without_noops``), so that one at a partition's start or end converts like one inside it.
_NO_OPS = ("Dropout", "Identity")


def _is_noop(node: torch.fx.Node, module: torch.nn.Module) -> bool:
    """``node`` calls a Dropout or an Identity module of ``module`` on one tensor."""
    if node.op != "call_module" or not node.args or not isinstance(node.args[0], torch.fx.Node):
        return False
    try:
        return type(module.get_submodule(node.target)).__name__ in _NO_OPS
    except AttributeError:
        return False


def _without_noops(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``module`` without its Dropout and Identity calls (a copy; their consumers, outputs included, read their
    input). hls4ml's parser gives a skipped Dropout the shape of the layer it parsed last, which does not exist
    when the Dropout reads a partition's input (the conversion failed inside hls4ml) and is another tensor's
    where the Dropout reads a tensor other than the one parsed last."""
    if not any(_is_noop(n, module) for n in module.graph.nodes):
        return module
    module = copy.deepcopy(module)
    for n in [n for n in module.graph.nodes if _is_noop(n, module)]:
        n.replace_all_uses_with(n.args[0])
        module.graph.erase_node(n)
    module.delete_all_unused_submodules()
    module.recompile()
    return module


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


def _name_map(module: torch.fx.GraphModule) -> dict[str, str]:
    """Node names of ``module`` -> the names hls4ml's own re-trace gives the same nodes."""
    from hls4ml.utils.torch import CustomFXTracer
    ours = [n for n in module.graph.nodes if n.op != "output"]
    theirs = [n for n in CustomFXTracer().trace(module).nodes if n.op != "output"]
    if len(ours) != len(theirs) or any(a.op != b.op for a, b in zip(ours, theirs)):
        raise FxsplitError("internal: hls4ml's re-trace of a partition differs from fxsplit's trace")
    return {a.name: b.name for a, b in zip(ours, theirs)}


_HLS4ML_NAME_TRIGGERS = ("const", "getitem")   # hls4ml's parser gives node names with these a meaning


def _safe_placeholders(module: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, dict[str, str]]:
    """A partition input named after a tensor hls4ml would misread by its name (a placeholder whose name holds
    'const' becomes a Constant layer; a consumer of a node named 'getitem...' reads that node's argument) is
    renamed in a copy of the module. Returns the module and {port name: new placeholder name}."""
    bad = [n for n in module.graph.nodes if n.op == "placeholder" and any(t in n.name for t in _HLS4ML_NAME_TRIGGERS)]
    if not bad:
        return module, {}
    module = copy.deepcopy(module)
    taken = {n.name for n in module.graph.nodes}
    renamed = {}
    for k, node in enumerate(n for n in module.graph.nodes if n.name in {b.name for b in bad}):
        new = f"fxs_input_{k}"
        while new in taken:
            new += "_"
        taken.add(new)
        renamed[node.name] = new
        node.name = node.target = new
    module.recompile()
    return module, renamed


def hls4ml_source(module: torch.fx.GraphModule, name: str) -> str:
    """The node whose hls4ml layer holds tensor ``name``: hls4ml's parser has no layer for ``getitem`` (it
    reads the indexed node's layer instead, e.g. ``lstm(x)[0][:, -1, :]`` is the LSTM layer's output) nor for a
    ``Dropout`` or an ``Identity`` (taken out before conversion), so those resolve to their source."""
    import operator
    node = next((n for n in module.graph.nodes if n.name == name), None)
    while node is not None and isinstance(node.args[0] if node.args else None, torch.fx.Node) and (
            (node.op == "call_function" and node.target is operator.getitem) or _is_noop(node, module)):
        node = node.args[0]         # (a Dropout or Identity is no layer: its consumers read its input)
    return node.name if node is not None else name


_MODULE_INTERNALS = frozenset(vars(torch.nn.Module())) - {"training"}


def module_settings(m: torch.nn.Module) -> str:
    """Every non-tensor attribute of module ``m`` (``vars(m)`` less its parameters, buffers, submodules and hooks),
    encoded deterministically: what a converter may read from the module (``AvgPool2d.count_include_pad``,
    ``Upsample.align_corners``, ``RNN.nonlinearity``), which ``extra_repr()`` does not always show. Plain tensors
    kept as attributes are encoded by value; an object is encoded by its type and its own attributes."""
    return _encode({k: v for k, v in vars(m).items() if k not in _MODULE_INTERNALS}, 0, set())


def _encode(v, depth: int, seen: set) -> str:
    import enum

    import numpy as np
    if v is None or isinstance(v, (bool, int, float, complex, str, bytes)):
        return f"{type(v).__name__}:{v!r}"
    if isinstance(v, enum.Enum):
        return f"enum:{type(v).__qualname__}.{v.name}"
    if isinstance(v, (torch.dtype, torch.device, torch.Size)):
        return f"{type(v).__name__}:{v}"
    if isinstance(v, torch.Tensor):
        a = v.detach().cpu().contiguous()
        return f"tensor:{a.dtype}:{tuple(a.shape)}:{hashlib.sha256(a.numpy().tobytes()).hexdigest()}"
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        return f"ndarray:{a.dtype}:{a.shape}:{hashlib.sha256(a.tobytes()).hexdigest()}"
    if isinstance(v, np.generic):
        return f"{type(v).__name__}:{v.item()!r}"
    if isinstance(v, (list, tuple, set, frozenset)):
        items = [_encode(x, depth + 1, seen) for x in v]
        if isinstance(v, (set, frozenset)):
            items.sort()
        return f"{type(v).__name__}[{','.join(items)}]"
    if isinstance(v, dict):
        items = sorted(f"{_encode(k, depth + 1, seen)}={_encode(x, depth + 1, seen)}" for k, x in v.items())
        return f"dict{{{','.join(items)}}}"
    if isinstance(v, torch.nn.Module):           # a module kept outside _modules: its kind and settings
        return f"module:{type(v).__qualname__}({_encode(module_settings(v), depth + 1, seen)})"
    if callable(v) and hasattr(v, "__qualname__"):      # a function or class: by name
        return f"callable:{getattr(v, '__module__', '')}.{v.__qualname__}"
    state = getattr(v, "__dict__", None)
    if isinstance(state, dict) and id(v) not in seen and depth < 8:
        seen = seen | {id(v)}
        return f"object:{type(v).__module__}.{type(v).__qualname__}({_encode(state, depth + 1, seen)})"
    # no attributes to read (a C object, a cycle): its repr without memory addresses
    return f"repr:{type(v).__qualname__}:{re.sub(r' at 0x[0-9a-fA-F]+', '', repr(v))}"


@dataclass
class ModelSpec:
    """Everything needed to rebuild one ModelGraph, picklable (for worker processes)."""
    name: str                         # project name (partition name or 'monolithic')
    module: torch.fx.GraphModule
    input_shapes: list[tuple[int, ...]]   # PyTorch per-sample shapes, in placeholder order
    output_layers: list[str]          # hls4ml layer names, in port order
    hls_config: dict[str, Any]
    io_type: str
    backend: str
    part: str | None
    clock_period: float
    csim_opt: str = "-O3"
    name_map: dict[str, str] = field(default_factory=dict)   # fx node name -> hls4ml layer name
    csim_pch: bool = True             # build with the host's precompiled headers: speed only, not in the key

    def key_data(self) -> bytes:
        """Content that determines the generated project (graph, weights, config). The versions of the
        tools that build it (hls4ml, g++, torch) are measured by the engine (``Job.tools``)."""
        h = hashlib.sha256()
        h.update(self.module.code.encode())
        for mname, m in sorted(self.module.named_modules()):
            if mname:                     # the GraphModule itself: its code is hashed above
                h.update(f"{mname}:{type(m).__module__}.{type(m).__qualname__}:".encode())
                h.update(module_settings(m).encode())
        for k, v in sorted(self.module.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        meta = {"name": self.name, "shapes": self.input_shapes, "outputs": self.output_layers,
                "hls": self.hls_config, "io": self.io_type, "backend": self.backend, "part": self.part,
                "clock": self.clock_period, "opt": self.csim_opt}
        h.update(json.dumps(meta, sort_keys=True, default=str).encode())
        return h.hexdigest().encode()


# hls4ml config keys that change how a layer is scheduled in hardware, never the bits its C simulation computes
# (hls4ml's dense/conv kernels accumulate the same products in the same accum_t whatever the reuse factor).
NON_NUMERIC_KEYS = ("ReuseFactor",)


def reference_config(cfg: dict) -> dict:
    """The uncut reference's hls4ml config: ``cfg`` with the :data:`NON_NUMERIC_KEYS` set to 1 at model level and
    removed everywhere else (an entry left empty goes too), so that the reference (a C simulation, only ever
    compared bit for bit) is not rebuilt when only the reuse factor of a partition or layer changes. Were a reuse
    factor ever to change the bits, the stitched design, built with the user's reuse factors, would differ from
    this reference and ``verify`` would say so."""
    out = copy.deepcopy(cfg)
    model = out.get("Model")
    if isinstance(model, dict):
        for k in NON_NUMERIC_KEYS:
            if k in model:
                model[k] = 1
    for section in ("LayerName", "LayerType"):
        entries = out.get(section)
        if not isinstance(entries, dict):
            continue
        for name in list(entries):
            lc = entries[name]
            if isinstance(lc, dict):
                for k in NON_NUMERIC_KEYS:
                    lc.pop(k, None)
                if not lc:
                    del entries[name]
    return out


def channels_last_conversion(fc: FlowConfig) -> str:
    """The ChannelsLastConversion hls4ml applies under ``fc``: the config's; without one, 'off' for a user's
    hls_config (hls4ml's converter converts nothing when the key is absent, although
    ``config_from_pytorch_model`` writes 'full' by default), fxsplit's channels-last ports otherwise."""
    conv = fc.model.get("ChannelsLastConversion")
    if conv is None:
        return "off" if fc.from_hls_config else "internal"
    return conv


def make_spec(name: str, module: torch.fx.GraphModule, input_names: list[str], input_shapes: list[tuple[int, ...]],
              output_names: list[str], input_precisions: dict[str, str], fc: FlowConfig) -> ModelSpec:
    """The hls4ml config of one partition: the uncut model's config (``fc``) restricted to this partition's
    layers, renamed to the names hls4ml gives them here, with every input that crosses a cut pinned to the
    type its producer emits (``input_precisions``; model inputs keep the user's setting).
    hls4ml converts ``module`` without its Dropout and Identity calls (``_without_noops``)."""
    sources = [hls4ml_source(module, o) for o in output_names]
    module, renamed = _safe_placeholders(_without_noops(module))
    nmap = _name_map(module)
    for port, new in renamed.items():        # keyed by port names again, as every flow expects
        nmap[port] = nmap.pop(new)
    shapes = [tuple(s) for s in input_shapes]
    model_cfg = copy.deepcopy(fc.model)
    # layout only: ports stay channels-last, fxsplit transposes at the model's inputs and outputs
    # ('off' keeps PyTorch's layout everywhere, ports included: see Partitioning.keep_torch_layout)
    if channels_last_conversion(fc) != "off":
        model_cfg["ChannelsLastConversion"] = "internal"
    model_cfg["TransposeOutputs"] = False
    layer_cfg = {nmap[node]: copy.deepcopy(lc) for node, lc in fc.layer_name.items() if node in nmap}
    for inp in input_names:
        if inp in input_precisions:
            lc = layer_cfg.setdefault(nmap[inp], {})
            prec = lc.get("Precision")
            lc["Precision"] = {**(prec if isinstance(prec, dict) else {}), "result": input_precisions[inp]}
    cfg = {"Model": model_cfg, "LayerName": layer_cfg}
    if fc.layer_type:
        cfg["LayerType"] = copy.deepcopy(fc.layer_type)
    return ModelSpec(name, module, shapes, [nmap[src] for src in sources], cfg, fc.io_type,
                     fc.backend,
                     fc.part, fc.clock_period, fc.csim_opt, nmap, fc.csim_pch)


def build_modelgraph(spec: ModelSpec, output_dir: str, log=None):
    """hls4ml's PyTorch converter, with explicit outputs (its parser marks only sink layers).

    What hls4ml prints (and warns) goes to ``log`` (a text stream) when given, else to stdout: in a
    build worker that is the job's log."""
    import contextlib
    import warnings
    from hls4ml.converters import _check_hls_config, _check_model_config
    from hls4ml.converters.pytorch_to_hls import parse_pytorch_model
    from hls4ml.model import ModelGraph
    from hls4ml.utils.config import create_config

    from . import quant  # noqa: F401  (fxsplit's exact quantized layers: their handlers in hls4ml's converter)

    kwargs = {"io_type": spec.io_type, "clock_period": spec.clock_period}
    if spec.part:
        kwargs["part"] = spec.part
    config = create_config(output_dir=output_dir, project_name=spec.name, backend=spec.backend, **kwargs)
    config["PytorchModel"] = spec.module
    config["InputShape"] = spec.input_shapes if len(spec.input_shapes) > 1 else spec.input_shapes[0]
    hls_config = copy.deepcopy(spec.hls_config)
    config["HLSConfig"] = {"Model": _check_model_config(hls_config.get("Model"))}
    _check_hls_config(config, hls_config)
    stream = log if log is not None else sys.stdout
    with contextlib.redirect_stdout(stream), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer_list, inputs, _sinks = parse_pytorch_model(config, verbose=False)
        hm = ModelGraph.from_layer_list(config, layer_list, inputs=inputs, outputs=list(spec.output_layers))
    for w in caught:
        print(f"warning: {w.category.__name__}: {w.message} ({w.filename}:{w.lineno})", file=stream)
    return hm


def write_project(hm, spec: ModelSpec) -> None:
    """``hm.write()``, except that the project's ``hls4ml_config.yml`` names the partition's PyTorch module
    instead of holding it: hls4ml's writer dumps the ``PytorchModel`` entry with PyYAML as a pickled
    object, weights included (2.1 MB of YAML for ResNet20, 4.1 of its 5.2 s of writing, measured), and
    nothing reads it back (a ``!!python/object`` entry cannot be loaded safely anyway). Every other file
    of the project is hls4ml's own."""
    cfg = hm.config.config
    module = cfg.get("PytorchModel")
    cfg["PytorchModel"] = (f"fxsplit: the torch.fx GraphModule of {spec.name!r} (not serialized here; it is in the "
                           "fxsplit design that built this project)")
    try:
        hm.write()
    finally:
        cfg["PytorchModel"] = module


def output_precisions(hm) -> list[str]:
    return [str(v.type.precision) for v in hm.get_output_variables()]


def type_width(precision: str | None, what: str = "a port") -> int:
    """Bit width of an hls4ml fixed-point or integer type; anything else is an error (never 0)."""
    from ..fixed import layout
    try:
        return layout(precision).width
    except ValueError:
        raise FxsplitError(f"{what} has type {precision!r}, which fxsplit cannot read as a fixed-point or integer "
                           "type: the C-simulation bridge cannot carry it bit for bit",
                           hint="give this tensor an explicit fixed-point result precision, e.g. 'fixed<16,6>'") from None


class Lowered(NamedTuple):
    """What lowering hands every flow."""
    specs: dict[str, "ModelSpec"]     # by partition name, in partition order
    graphs: dict[str, Any]            # hls4ml ModelGraphs by partition name
    mono_spec: "ModelSpec"            # the uncut reference
    mono: Any                         # its ModelGraph
    logs: dict[str, str] = {}         # what hls4ml printed and warned while converting, by project name
    brevitas: Any = None              # lower.brevitas.Plan: how the brevitas layers were read (None: no brevitas)

    def write_logs(self, log_dir) -> None:
        """``<log_dir>/<name>_lower.log``: hls4ml's conversion messages, where it printed or warned any
        (written after validation)."""
        os.makedirs(log_dir, exist_ok=True)
        for name, text in self.logs.items():
            if not text:
                continue
            with open(os.path.join(log_dir, f"{name}_lower.log"), "w") as f:
                f.write(text)


def lower(pt: Partitioning, fc: FlowConfig, output_dir: str) -> Lowered:
    """Convert every partition and the uncut model; fill in port precisions.

    A tensor that crosses a cut gets the type its producer emits, pinned on the consumer's input layer.
    A model input gets the type hls4ml gives it from the user's config (read back from the graphs, and
    checked equal in every partition that reads it and in the uncut model)."""
    uncut = pt.uncut
    bq = _brevitas_plan(pt, fc)
    if bq is not None and pt.layer_splits:
        layer = next(iter(pt.layer_splits.values()))["module"]
        raise FxsplitError(f"layer {layer!r} is split by outputs, but the model has brevitas layers, whose exact "
                           "reading does not cover split layers", module=layer,
                           hint="cut before or after the layer instead")
    parts = pt.partitions if bq is None else freeze_partitions(pt, bq)
    exact_uncut = uncut if bq is None else bq.freeze(uncut)
    if channels_last_conversion(fc) == "off":
        pt.keep_torch_layout()
    if fc.from_hls_config:
        # plain hls4ml's predict returns channels-last outputs unless the config says TransposeOutputs
        pt.outputs_torch_layout = bool(fc.model.get("TransposeOutputs", False))
    precisions: dict[str, str] = {}
    model_inputs = {p.name for p in pt.inputs}
    specs, graphs = {}, {}
    logs: dict[str, io.StringIO] = {}

    def lower_uncut():
        placeholders = [n.name for n in uncut.graph.nodes if n.op == "placeholder"]
        spec = make_spec(MONOLITHIC, exact_uncut, placeholders, [p.torch_shape for p in pt.inputs],
                         [pt.origin(p.name) for p in pt.outputs], {}, fc)
        spec.hls_config = reference_config(spec.hls_config)
        return spec, _convert(spec, os.path.join(output_dir, MONOLITHIC), logs, None)

    if pt.layer_splits:               # the pieces of a split layer take the types the uncut layer has
        mono_spec, mono = lower_uncut()
        _pin_split_layers(pt, fc, mono, mono_spec.name_map)
    for part in parts:
        check_layers(part, pt.graph if bq is None else exact_uncut)
        if all(_is_noop(n, part.module) for n in part.module.graph.nodes if n.op in _COMPUTE_OPS):
            raise _holds_nothing(part, pt.graph if bq is None else exact_uncut)     # (only Dropout/Identity)
        spec = make_spec(part.name, part.module, [p.name for p in part.inputs], [p.torch_shape for p in part.inputs],
                         [p.name for p in part.outputs],
                         {p.name: precisions[p.name] for p in part.inputs if p.name not in model_inputs}, fc)
        hm = _convert(spec, os.path.join(output_dir, part.name), logs, part.name)
        _check_graph(hm, part, pt.graph if bq is None else exact_uncut, fc.backend, pt.channels_last)
        for port in part.inputs:
            if port.name in model_inputs:
                got = _layer_type(hm, spec.name_map[port.name])
                if precisions.setdefault(port.name, got) != got:
                    raise FxsplitError(f"model input {port.name!r} has type {got} in partition {part.name!r} but "
                                       f"{precisions[port.name]} in an earlier partition", partition=part.name,
                                       hint="give this input one explicit result precision in the config")
        for port, prec in zip(part.outputs, output_precisions(hm)):
            precisions[port.name] = prec
        for port in (*part.inputs, *part.outputs):
            port.precision = precisions[port.name]
        specs[part.name], graphs[part.name] = spec, hm

    if not pt.layer_splits:
        mono_spec, mono = lower_uncut()
    _check_sizes(mono, pt.inputs, pt.outputs, "the uncut model", uncut)
    for p in pt.inputs:
        got = _layer_type(mono, mono_spec.name_map[p.name])
        if p.name in precisions and precisions[p.name] != got:
            raise FxsplitError(f"model input {p.name!r} has type {precisions[p.name]} in the partitions but {got} in "
                               "the uncut model", hint="give this input an explicit result precision in the config")
        p.precision = precisions.setdefault(p.name, got)
    _check_boundaries(pt, mono, mono_spec.name_map, graphs, specs, fc.io_type)
    return Lowered(specs, graphs, mono_spec, mono, {k: v.getvalue() for k, v in logs.items()}, bq)


def accumulator_changes(pt: Partitioning, fc: FlowConfig, lowered: "Lowered") -> list[dict]:
    """The accumulators ``exact_accum`` replaced, as the report lists them: ``{"layer", "from", "to"}`` with the
    type plain hls4ml gives the layer under the config and the exact type hls4ml derived in the uncut model."""
    out = []
    nodes = {n.name: n for g in (pt.graph, pt.original) if g is not None for n in g.graph.nodes}
    for node, before in fc.accum_changes.items():
        hl = lowered.mono.graph.get(lowered.mono_spec.name_map.get(node, ""))
        if hl is None:                 # a piece of a split layer: the layer itself is listed
            continue
        n = nodes.get(node)
        out.append({"layer": str(n.target) if n is not None and n.op == "call_module" else node,
                    "from": before, "to": str(hl.get_attr("accum_t").precision)})
    return out


def _pin_split_layers(pt: Partitioning, fc: FlowConfig, mono, nmap: dict[str, str]) -> None:
    """Every piece of a split layer gets the weight, bias and result types hls4ml gives the whole layer in the
    uncut model (and its accumulator type, unless that is exact: 'auto'), every Concatenate joining them the
    layer's result type: each output neuron is then the same sum in the same types (see fxsplit.layersplit)."""
    for layer, e in pt.layer_splits.items():
        node = next(n for n in pt.uncut.graph.nodes if n.name == layer)
        hl = mono.graph.get(nmap.get(layer, ""))
        if hl is None or hl.class_name != "Dense":
            raise FxsplitError(f"layer {e['module']!r} is split by outputs, but hls4ml does not build it as one Dense "
                               "layer in the uncut model, so its pieces could not match it", module=e["module"],
                               source=node_source(node), hint="cut before or after this layer instead")
        types = {"result": str(hl.get_output_variable().type.precision),
                 "weight": str(hl.weights["weight"].type.precision)}
        if "bias" in hl.weights:
            types["bias"] = str(hl.weights["bias"].type.precision)
        given = (fc.layer_name.get(layer) or {}).get("Precision")
        if not (isinstance(given, dict) and given.get("accum") == "auto"):
            accum = str(hl.get_attr("accum_t").precision)
            if "SAT" in accum.upper():
                raise FxsplitError(f"layer {e['module']!r} is split by outputs, but its accumulator type {accum} "
                                   "saturates: the order of its sums could change the result", module=e["module"],
                                   source=node_source(node),
                                   hint="give it an exact accumulator (config exact_accum=True, or accum 'auto') or a "
                                        "wrapping one, or cut before or after the layer instead")
            types["accum"] = accum
        for piece in e["pieces"]:
            lc = fc.layer_name.setdefault(piece, {})
            prec = lc.get("Precision")
            lc["Precision"] = {**(prec if isinstance(prec, dict) else {}), **types}
        for cat in e["cats"]:
            fc.layer_name[cat] = {"Precision": {"result": types["result"]}}


def _brevitas_plan(pt: Partitioning, fc: FlowConfig):
    """brevitas layers read exactly (``lower/brevitas.py``), their types pinned in the config; None without."""
    from . import brevitas
    bq = brevitas.plan(pt.graph, [p.torch_shape for p in pt.inputs])
    if bq is None:
        return None
    nodes = {n.name: n for n in pt.graph.graph.nodes}
    pinned = {**bq.precisions, **{name: {"result": t} for name, t in bq.input_precisions.items()}}
    for name, prec in pinned.items():
        lc = fc.layer_name.setdefault(name, {})
        given = lc.get("Precision")
        given = {"result": given} if isinstance(given, str) else dict(given or {})
        clash = {k: v for k, v in given.items() if k in prec and str(v) != prec[k] and k != "accum"}
        if clash or ("accum" in given and "accum" in prec and given["accum"] not in ("auto", prec["accum"])):
            node = nodes[name]
            what = "model input" if node.op == "placeholder" else "brevitas layer"
            raise FxsplitError(f"the config sets {given} for {what} {name!r}, whose exact types fxsplit derives from "
                               f"its quantizers ({prec})", module=str(node.target), source=node_source(node),
                               hint="drop the precision of this layer from the config (and input_precision for a "
                                    "brevitas model): the quantizers decide the types")
        lc["Precision"] = {**given, **prec}
    pt.float32_inputs = True
    pt.torch_exact = bq.torch_exact
    return bq


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


_COMPUTE_OPS = ("call_module", "call_function", "call_method")


def _split_name(n: torch.fx.Node) -> str:
    """What ``splits`` names to cut right before node ``n``: its module, else the node."""
    return str(n.target) if n.op == "call_module" else n.name


def _op_after(gm: torch.fx.GraphModule, node: torch.fx.Node) -> torch.fx.Node | None:
    """The operation after ``node`` in program order (where a cut right after ``node`` is given), else None."""
    ops = [n for n in gm.graph.nodes if n.op in _COMPUTE_OPS]
    i = next((k for k, n in enumerate(ops) if n is node), None)
    return ops[i + 1] if i is not None and i + 1 < len(ops) else None


def _keeps_nothing(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """hls4ml may keep no layer of its own for ``node``: a Dropout or Identity, a getitem, or a change of shape
    only (a reshape hls4ml drops at the end of a graph in io_parallel)."""
    import operator

    from ..capture import reshapes
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
    ops = [n for n in gm.graph.nodes if n.op in _COMPUTE_OPS]
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
    from ..capture import reshapes, shape_or_none
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


def _layer_type(hm, layer: str) -> str:
    return str(hm.graph[layer].get_output_variable().type.precision)


def _convert(spec: ModelSpec, output_dir: str, logs: dict, partition: str | None):
    what = f"partition {partition!r}" if partition else "the uncut model"
    try:
        return build_modelgraph(spec, output_dir, log=logs.setdefault(spec.name, io.StringIO()))
    except FxsplitError:
        raise
    except Exception as e:
        raise FxsplitError(f"hls4ml could not convert {what}: {type(e).__name__}: {e}", partition=partition,
                           hint="check its layers and config against hls4ml's supported PyTorch layers; if plain "
                                "hls4ml converts the uncut model, please report this") from e


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
