"""The hls4ml adapter: a partition (or the uncut model) as a picklable ``ModelSpec`` (module, shapes, its slice of
the hls4ml config; keyed on everything hls4ml builds from) and hls4ml's PyTorch converter run on it
(``build_modelgraph``), with Dropout and Identity taken out first."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from ..errors import FxsplitError
from .config import FlowConfig


def _supported_ops() -> set[str]:
    from hls4ml.converters.pytorch_to_hls import get_supported_pytorch_layers

    from . import quant  # noqa: F401  (registers fxsplit's exact quantized layers)
    return set(get_supported_pytorch_layers()) | {"Sequential", "getitem", *_NO_OPS}


# modules that compute nothing in eval mode: hls4ml's parser skips a Dropout (its consumers read its input), and
# fxsplit treats an Identity the same way (hls4ml's parser refuses it). Both are taken out of every module handed
# to hls4ml (``_without_noops``), so that one at a partition's start or end converts like one inside it.
_NO_OPS = ("Dropout", "Identity")


_RESHAPES = ("flatten", "view", "reshape", "contiguous")


def _is_noop(node: torch.fx.Node, module: torch.nn.Module) -> bool:
    """``node`` calls a Dropout or an Identity module of ``module`` on one tensor, or reshapes a tensor to the shape
    it has (``x.view(x.shape[0], -1)`` of a vector: hls4ml's channels-last pass would transpose a 1-d tensor)."""
    if not node.args or not isinstance(node.args[0], torch.fx.Node):
        return False
    if node.op in ("call_function", "call_method"):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        a, b = node.args[0].meta.get("tensor_meta"), node.meta.get("tensor_meta")
        return (name in _RESHAPES and a is not None and b is not None and hasattr(a, "shape") and hasattr(b, "shape")
                and tuple(a.shape) == tuple(b.shape))
    if node.op != "call_module":
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


