"""Config: the user's settings validated, and per-partition settings expanded to per-layer ones
(so the uncut reference model is configured exactly like the partitions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import FxsplitError
from ..ir import Partitioning

DEFAULT_PRECISION = "fixed<16,6>"

_CONFIG_KEYS = {"precision", "input_precision", "reuse_factor", "strategy", "io_type", "backend", "part",
                "clock_period", "partitions", "layers", "latency_cutoff", "csim_opt", "csim_pch",
                "tb_vectors", "synth", "exact_accum", "da4ml_solver"}
# da4ml's constant-matrix solver settings the rtl flow passes on (da4ml.cmvm.solve's keyword arguments)
_SOLVER_KEYS = {"method0": str, "method1": str, "hard_dc": int, "decompose_dc": int, "search_all_decompose_dc": bool}
_SOLVER_METHODS = {"method0": ("wmc", "wmc-dc", "wmc-pdc", "mc", "mc-dc", "mc-pdc", "dummy"),
                   "method1": ("auto", "wmc", "wmc-dc", "wmc-pdc", "mc", "mc-dc", "mc-pdc", "dummy")}
# keys that describe numerics: with hls_config= they live in the user's hls4ml config instead
_NUMERIC_KEYS = {"precision", "input_precision", "reuse_factor", "strategy", "partitions", "layers"}
_OVERRIDE_KEYS = {"precision", "reuse_factor", "strategy"}
# what fxsplit applies from an hls4ml config (PytorchModel is ignored: the model is compile's argument;
# InputShape is checked against compile's input_shape); any other section is refused, never ignored
_HLS_SECTIONS = {"Model", "LayerType", "LayerName", "PytorchModel", "InputShape"}
_ACCUM_MODULES = ("Linear", "Conv1d", "Conv2d")
_HLS4ML_CLASS = {"Linear": "Dense", "Conv1d": "Conv1D", "Conv2d": "Conv2D"}    # hls4ml's LayerType names



@dataclass
class FlowConfig:
    """Normalised user config: one hls4ml config of the uncut model (``model``, ``layer_type``,
    ``layer_name``), from which every partition's config is cut (``lower.spec.make_spec``), so the uncut
    reference is configured exactly like the partitions; plus fxsplit's own settings."""
    precision: str = DEFAULT_PRECISION
    input_precision: str | None = None
    reuse_factor: int = 1
    strategy: str = "Latency"
    # the hls4ml config of the uncut model (hls4ml's own format), with LayerName keyed by fx node name:
    # the user's hls_config translated, or fxsplit's config keys expressed in it
    model: dict[str, Any] = field(default_factory=dict)
    layer_type: dict[str, Any] = field(default_factory=dict)
    layer_name: dict[str, dict[str, Any]] = field(default_factory=dict)
    from_hls_config: bool = False
    io_type: str = "io_parallel"
    backend: str = "Vivado"
    part: str | None = None
    clock_period: float = 5.0
    latency_cutoff: float | None = None
    synth: bool = True                # rtl flow: run Yosys on every partition
    exact_accum: bool | None = None   # accum_t 'auto' (exact sums) for Dense/Conv unless the config names it;
                                      # None: off with an hls_config (as hls4ml), else the flow decides (rtl: on)
    accum_changes: dict[str, str] = field(default_factory=dict)   # fx node -> the accumulator exact_accum replaced
    csim_opt: str = "-O3"             # g++ optimisation of the C-simulation library (numerics do not depend on it)
    tb_vectors: int = 200             # vitis flow: random samples in the vendor testbench's vectors
    csim_pch: bool = True             # precompiled hls4ml headers, once per host (speed only; same bits)
    da4ml_solver: dict = field(default_factory=dict)   # rtl flow: da4ml.cmvm.solve settings (adder graphs; exact)


def _close(name, known):
    import difflib
    c = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
    return f"did you mean {', '.join(map(repr, c))}?" if c else f"known: {', '.join(sorted(known)[:12])}"


def _check_keys(d: dict, allowed: set[str], where: str):
    for k in d:
        if k not in allowed:
            raise FxsplitError(f"unknown config key {k!r} in {where}", hint=_close(k, allowed))


def _check_override(ov: dict, where: str) -> dict:
    if not isinstance(ov, dict):
        raise FxsplitError(f"{where} must be a dict like {{'precision': 'fixed<12,4>', 'reuse_factor': 2}}")
    _check_keys(ov, _OVERRIDE_KEYS, where)
    prec = ov.get("precision")
    if prec is not None and not isinstance(prec, (str, dict)):
        raise FxsplitError(f"{where}: precision must be a string such as 'fixed<12,4>' or a dict "
                           "{'result': ..., 'weight': ..., 'bias': ...}")
    return dict(ov)


def normalize_config(config: dict | None, pt: Partitioning, hls_config: dict | None = None,
                     hls_names: dict[str, str] | None = None, exact_accum_default: bool = False) -> FlowConfig:
    """Validate ``config`` (fxsplit's keys) and ``hls_config`` (an hls4ml config dict of the uncut model,
    any granularity); express both as one hls4ml config whose LayerName is keyed by fx node name.

    ``hls_names`` maps the layer names hls4ml gives the user's model to fx node names
    (:func:`hls4ml_layer_names`); it is needed only with ``hls_config``."""
    config = dict(config or {})
    _check_keys(config, _CONFIG_KEYS, "config")
    if hls_config is not None:
        clash = sorted(set(config) & _NUMERIC_KEYS)
        if clash:
            raise FxsplitError(f"config sets {clash} and hls_config is given: the hls4ml config holds the numerics",
                               hint="set precisions, reuse factors and strategies in hls_config (Model, LayerType, "
                                    "LayerName), and keep config for fxsplit's own keys (io_type, csim_opt, ...)")
    fc = FlowConfig(**{k: v for k, v in config.items() if k not in ("partitions", "layers")})
    if fc.csim_opt not in ("-O0", "-O1", "-O2", "-O3"):
        raise FxsplitError(f"config csim_opt must be one of -O0..-O3, got {fc.csim_opt!r}")
    if not isinstance(fc.tb_vectors, int) or isinstance(fc.tb_vectors, bool) or fc.tb_vectors < 1:
        raise FxsplitError(f"config tb_vectors must be a positive number of samples, got {fc.tb_vectors!r}")
    if not isinstance(fc.csim_pch, bool):
        raise FxsplitError(f"config csim_pch must be True or False, got {fc.csim_pch!r}")
    if fc.io_type not in ("io_parallel", "io_stream"):
        raise FxsplitError(f"config io_type must be 'io_parallel' or 'io_stream', got {fc.io_type!r}")
    _check_solver(fc.da4ml_solver)
    # qualified module name (layer2.0.conv1) or node name (layer2_0_conv1) -> node name
    alias: dict[str, str] = {}
    part_of: dict[str, str] = {}
    for p in pt.partitions:
        for n in p.module.graph.nodes:
            if n.op in ("call_module", "call_function", "call_method"):
                alias[n.name] = n.name
                part_of[n.name] = p.name
    graphs = [pt.graph] if pt.original is None else [pt.graph, pt.original]
    for g in graphs:
        for n in g.graph.nodes:
            if n.op == "call_module":
                alias[str(n.target)] = n.name
            elif n.op == "placeholder" or n.name in pt.layer_splits:
                alias.setdefault(n.name, n.name)
    if hls_config is not None:
        _from_hls_config(fc, hls_config, hls_names or {}, pt)
    else:
        _from_fxsplit_config(fc, config, pt, alias, part_of)
    if fc.exact_accum is None:
        # the user's hls4ml config is the config: every layer keeps the accumulator plain hls4ml gives it, unless
        # exact accumulators are asked for by name; fxsplit's own config takes the flow's default
        fc.exact_accum = False if fc.from_hls_config else exact_accum_default
    if not isinstance(fc.exact_accum, bool):
        raise FxsplitError(f"config exact_accum must be True or False, got {fc.exact_accum!r}")
    if fc.exact_accum:
        _exact_accumulators(fc, graphs)
    _settle_split_layers(fc, pt)
    return fc


def _check_solver(opts) -> None:
    """config['da4ml_solver']: da4ml.cmvm.solve's settings, each known and of its type (checked before any build:
    a misspelt one would otherwise reach da4ml only in a worker, or be dropped)."""
    if not isinstance(opts, dict):
        raise FxsplitError(f"config da4ml_solver must be a dict of da4ml.cmvm.solve settings, got {opts!r}",
                           hint="e.g. {'search_all_decompose_dc': True}")
    _check_keys(opts, set(_SOLVER_KEYS), "config['da4ml_solver']")
    for k, v in opts.items():
        want = _SOLVER_KEYS[k]
        if type(v) is not want:
            raise FxsplitError(f"config['da4ml_solver'][{k!r}] must be a {want.__name__}, got {v!r}")
        if k in _SOLVER_METHODS and v not in _SOLVER_METHODS[k]:
            raise FxsplitError(f"config['da4ml_solver'][{k!r}] = {v!r} is not a da4ml method",
                               hint=f"one of {', '.join(_SOLVER_METHODS[k])}")


def given_precision(fc: FlowConfig, node: str, hls_class: str, var: str) -> str | None:
    """The type hls4ml gives variable ``var`` (``accum``, ``result``, ...) of layer ``node`` (an fx node name) of
    hls4ml class ``hls_class`` under this config, by hls4ml's own precedence (``HLSConfig.get_precision``):
    LayerName[var], LayerName default, LayerType[var], LayerType default, Model[var], Model default."""
    def pick(prec, allow_default=True):
        if isinstance(prec, dict):
            got = prec.get(var)
            return got if got is not None or not allow_default else prec.get("default")
        return prec if allow_default and prec is not None else None

    got = pick((fc.layer_name.get(node) or {}).get("Precision"))
    if got is None:
        got = pick(_layer_type_precision(fc, hls_class))
    if got is None:
        got = pick(fc.model.get("Precision"))
    return None if got is None else str(got)


def _explicit(fc: FlowConfig, node: str, hls_class: str, var: str) -> bool:
    """Whether the config names ``var`` itself (not through a default) for this layer at any level."""
    def names(prec) -> bool:
        return isinstance(prec, dict) and prec.get(var) is not None
    return (names((fc.layer_name.get(node) or {}).get("Precision")) or
            names(_layer_type_precision(fc, hls_class)) or names(fc.model.get("Precision")))


def _layer_type_precision(fc: FlowConfig, hls_class: str):
    """The LayerType Precision entry of an hls4ml class (hls4ml matches the class name case-insensitively)."""
    entry = next((v for k, v in fc.layer_type.items() if k.lower() == hls_class.lower() and isinstance(v, dict)), None)
    return (entry or {}).get("Precision")


def _exact_accumulators(fc: FlowConfig, graphs) -> None:
    """``exact_accum``: every Linear/Conv whose accumulator the config does not name (an ``accum`` key at the
    LayerName, LayerType or Model level) gets ``accum = 'auto'`` (hls4ml sizes it to hold every sum exactly);
    hls4ml would otherwise cast every product and partial sum into the layer's default precision, wrapping.
    Each changed layer is recorded with the type plain hls4ml would have given it (``fc.accum_changes``)."""
    for g in graphs:
        for n in g.graph.nodes:
            if n.op != "call_module":
                continue
            kind = type(g.get_submodule(n.target)).__name__
            if kind not in _ACCUM_MODULES:
                continue
            hls_class = _HLS4ML_CLASS[kind]
            if _explicit(fc, n.name, hls_class, "accum"):
                continue
            before = given_precision(fc, n.name, hls_class, "accum")
            lc = fc.layer_name.setdefault(n.name, {})
            prec = lc.get("Precision")
            prec = {"default": prec} if isinstance(prec, str) else dict(prec or {})
            prec["accum"] = "auto"
            lc["Precision"] = prec
            fc.accum_changes.setdefault(n.name, before or DEFAULT_PRECISION)


def _settle_split_layers(fc: FlowConfig, pt: Partitioning) -> None:
    """A layer built as pieces (``splits=["fc2@32"]``) is one layer of the uncut model: its pieces take its settings
    (and the pieces of its BatchNorm the BatchNorm's). Settings given to the pieces (a partition override) must
    agree, and then are the layer's; the types of the pieces and their Concatenates are pinned to the layer's own in
    ``lower``."""
    for layer, e in pt.layer_splits.items():
        _settle(fc, pt, layer, e["pieces"], e["module"])
        if e.get("norm"):
            _settle(fc, pt, e["norm"], e["norms"], e["norm_module"])


def _settle(fc: FlowConfig, pt: Partitioning, layer: str, pieces: list[str], module: str) -> None:
    import copy
    base = fc.layer_name.get(layer) or {}

    def merged(c: dict | None) -> dict:
        c = c or {}
        out = {**base, **c}
        pb, pc = base.get("Precision"), c.get("Precision")
        if isinstance(pb, dict) and isinstance(pc, dict):
            out["Precision"] = {**pb, **pc}
        return out

    settings = [merged(fc.layer_name.get(p)) for p in pieces]
    if any(s != settings[0] for s in settings):
        parts = sorted({pp.name for pp in pt.partitions for n in pp.nodes if n in pieces})
        raise FxsplitError(f"layer {module!r} is split across partitions {parts}, and the config gives its "
                           "pieces different settings: the uncut layer cannot have all of them",
                           module=module, hint="give the layer its settings in config['layers'], or the same "
                                               "override to every partition holding a piece")
    if settings[0]:
        fc.layer_name[layer] = settings[0]
    for p in pieces:
        if settings[0]:
            fc.layer_name[p] = copy.deepcopy(settings[0])
        else:
            fc.layer_name.pop(p, None)


def _from_fxsplit_config(fc: FlowConfig, config: dict, pt: Partitioning, alias: dict, part_of: dict) -> None:
    """fxsplit's keys as an hls4ml config: hls4ml's model granularity (what config_from_pytorch_model gives
    by default) plus per-layer entries for the overrides."""
    fc.model = {"Precision": {"default": fc.precision}, "ReuseFactor": fc.reuse_factor, "Strategy": fc.strategy,
                "BramFactor": 1_000_000_000, "TraceOutput": False}
    names = [p.name for p in pt.partitions]
    layers: dict[str, dict] = {}
    for pname, ov in (config.get("partitions") or {}).items():
        if pname not in names:
            raise FxsplitError(f"config names partition {pname!r}, which does not exist", hint=_close(pname, names))
        ov = _check_override(ov, f"config['partitions'][{pname!r}]")
        for node, owner in part_of.items():
            if owner == pname:
                layers.setdefault(node, {}).update(ov)
    for lname, ov in (config.get("layers") or {}).items():
        if lname not in alias:
            raise FxsplitError(f"config names layer {lname!r}, which is not in the model", hint=_close(lname, alias))
        layers.setdefault(alias[lname], {}).update(_check_override(ov, f"config['layers'][{lname!r}]"))
    for node, ov in layers.items():
        lc = fc.layer_name.setdefault(node, {})
        prec = ov.get("precision")
        if prec is not None:
            lc["Precision"] = {"result": prec, "weight": prec, "bias": prec} if isinstance(prec, str) else dict(prec)
        if "reuse_factor" in ov:
            lc["ReuseFactor"] = ov["reuse_factor"]
        if "strategy" in ov:
            lc["Strategy"] = ov["strategy"]
    if fc.input_precision:
        for n in pt.graph.graph.nodes:
            if n.op == "placeholder":
                fc.layer_name.setdefault(n.name, {}).setdefault("Precision", {})["result"] = fc.input_precision


def _from_hls_config(fc: FlowConfig, hls_config: dict, hls_names: dict[str, str], pt: Partitioning) -> None:
    import copy
    if not isinstance(hls_config, dict) or not isinstance(hls_config.get("Model"), dict):
        raise FxsplitError("hls_config must be an hls4ml config dict with a 'Model' section",
                           hint="e.g. hls4ml.utils.config_from_pytorch_model(model, input_shape, granularity='name')")
    for k in hls_config:
        if k not in _HLS_SECTIONS:
            raise FxsplitError(f"hls_config section {k!r} is not one fxsplit applies",
                               hint="keep Model, LayerType and LayerName in hls_config; converter options (io_type, "
                                    "backend, part, clock_period) go in config")
    if "InputShape" in hls_config:
        given = hls_config["InputShape"]
        one = given and all(d is None or isinstance(d, int) for d in given)
        given = [tuple(given)] if one else [tuple(g) for g in given]
        # hls4ml also takes the shape with its batch dimension left open: (None, 4)
        given = [g[1:] if g and g[0] is None else g for g in given]
        if given != [p.torch_shape for p in pt.inputs]:
            raise FxsplitError(f"hls_config InputShape {hls_config['InputShape']!r} differs from the input shape(s) "
                               f"{[p.torch_shape for p in pt.inputs]} given to compile",
                               hint="pass the same input shape to both")
    model = copy.deepcopy(hls_config["Model"])
    conv = model.get("ChannelsLastConversion", "off")        # hls4ml's converter: no key is 'off'
    if conv not in ("full", "internal", "off"):
        raise FxsplitError(f"hls_config Model ChannelsLastConversion={conv!r} is not one hls4ml knows",
                           hint="use 'full' (config_from_pytorch_model's default), 'internal' or 'off'")
    fc.model = model
    fc.from_hls_config = True
    prec = model.get("Precision")
    fc.precision = str(prec.get("default") if isinstance(prec, dict) else prec or DEFAULT_PRECISION)
    fc.layer_type = copy.deepcopy(hls_config.get("LayerType") or {})
    known = sorted(hls_names)
    for lname, lc in (hls_config.get("LayerName") or {}).items():
        if lname not in hls_names:
            raise FxsplitError(f"hls_config LayerName names {lname!r}, which hls4ml does not see in the model",
                               hint=_close(lname, known))
        if not isinstance(lc, dict):
            raise FxsplitError(f"hls_config LayerName[{lname!r}] must be a dict, got {type(lc).__name__}")
        fc.layer_name[hls_names[lname]] = copy.deepcopy(lc)


def hls4ml_layer_names(model, traced=None) -> dict[str, str]:
    """The layer names hls4ml gives ``model`` (its own tracer) -> fxsplit's fx node names.

    The two traces are aligned node by node (fxsplit's markers, invisible to hls4ml, skipped); any
    disagreement raises instead of guessing. ``traced``: fxsplit's trace of the model
    (:func:`fxsplit.frontend.capture.trace`), markers not yet erased; traced here if not given."""
    from hls4ml.utils.torch import CustomFXTracer

    from ..frontend.capture import LeafTracer
    from ..frontend.markers import is_cut_node

    was_training = model.training
    model.eval()
    try:
        ours_gm = traced.graph if traced is not None else LeafTracer().trace(model)
        theirs = [n for n in CustomFXTracer().trace(model).nodes if n.op != "output"]
    finally:
        model.train(was_training)
    ours = [n for n in ours_gm.nodes if n.op != "output" and not is_cut_node(n, model)]
    if len(ours) != len(theirs) or any(a.op != b.op or str(a.target) != str(b.target) for a, b in zip(ours, theirs)):
        raise FxsplitError("hls4ml's trace of the model differs from fxsplit's, so hls_config's layer names cannot be "
                           "matched to the model's layers", module=type(model).__name__,
                           hint="please report this model; meanwhile pass fxsplit's own config instead of hls_config")
    return {b.name: a.name for a, b in zip(ours, theirs)}
