"""Lowering: one hls4ml ModelGraph (the single numerics source) per partition, shared by every flow.

Main process (fast, before any build): convert every partition through hls4ml's
PyTorch converter with explicit outputs and with each input layer pinned to the
type its producer emits, so the type on both sides of a cut is identical; convert
the uncut model the same way and check that every port exists there with the same
type. Worker processes rebuild the same ModelGraph from the picklable ``ModelSpec``.
"""

from __future__ import annotations

import io
import os
from typing import Any, NamedTuple


from ..frontend.capture import COMPUTE_OPS, node_source
from ..errors import FxsplitError
from ..ir import MONOLITHIC, Partitioning
from .brevitas import freeze_partitions
from .checks import _check_boundaries, _check_graph, _check_sizes, _holds_nothing, check_layers
from .config import FlowConfig
from .spec import (ModelSpec, _convert, _is_noop, _layer_type, build_modelgraph, channels_last_conversion,
                   hls4ml_source, make_spec, module_settings, output_precisions, reference_config, type_width,
                   write_project)

__all__ = ["MONOLITHIC", "Lowered", "ModelSpec", "lower", "accumulator_changes", "nonzero_weights", "build_modelgraph",
           "channels_last_conversion", "hls4ml_source", "make_spec", "module_settings", "output_precisions",
           "reference_config", "type_width", "write_project"]


class Lowered(NamedTuple):
    """What lowering hands every flow."""
    specs: dict[str, "ModelSpec"]     # by partition name, in partition order
    graphs: dict[str, Any]            # hls4ml ModelGraphs by partition name
    mono_spec: "ModelSpec"            # the uncut reference
    mono: Any                         # its ModelGraph
    logs: dict[str, str] = {}         # what hls4ml printed and warned while converting, by project name
    brevitas: Any = None              # lower.brevitas.Plan: how the brevitas layers were read (None: no brevitas)
    partitioning: Any = None          # the partitioning as built: every port typed and laid out (a copy: the
                                      # frontend's partitioning is left as it was)

    def port_types(self) -> dict[str, str]:
        """Every port's hls4ml type (the type on the wire, the same on both sides of a cut)."""
        return self.partitioning.port_types()

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
    """Convert every partition and the uncut model; return them with the typed partitioning.

    A tensor that crosses a cut gets the type its producer emits, pinned on the consumer's input layer.
    A model input gets the type hls4ml gives it from the user's config (read back from the graphs, and
    checked equal in every partition that reads it and in the uncut model). ``Lowered.partitioning`` is a copy of
    ``pt`` with every port's type and layout (``pt`` itself is not changed)."""
    pt = pt.copy()
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
        if all(_is_noop(n, part.module) for n in part.module.graph.nodes if n.op in COMPUTE_OPS):
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
    return Lowered(specs, graphs, mono_spec, mono, {k: v.getvalue() for k, v in logs.items()}, bq, pt)


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


SPLITTABLE = ("Dense", "Conv1D", "Conv2D", "PointwiseConv1D", "PointwiseConv2D")


def _pin_split_layers(pt: Partitioning, fc: FlowConfig, mono, nmap: dict[str, str]) -> None:
    """Every piece of a split layer gets the weight, bias and result types hls4ml gives the whole layer in the
    uncut model (and its accumulator type, unless that is exact: 'auto'), every piece of its BatchNorm the
    BatchNorm's scale, bias and result types, every Concatenate joining them the result type of what it replaces:
    each output is then the same sum in the same types (see fxsplit.frontend.layersplit)."""
    for layer, e in pt.layer_splits.items():
        node = next(n for n in pt.uncut.graph.nodes if n.name == layer)
        hl = mono.graph.get(nmap.get(layer, ""))
        if hl is None or hl.class_name not in SPLITTABLE:
            raise FxsplitError(f"layer {e['module']!r} is split by outputs, but hls4ml does not build it as one "
                               "Dense or convolution layer in the uncut model, so its pieces could not match it",
                               module=e["module"], source=node_source(node),
                               hint="cut before or after this layer instead")
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
        _pin(fc, e["pieces"], types)
        joined = types["result"]
        if e.get("norm"):
            bn = mono.graph.get(nmap.get(e["norm"], ""))
            if bn is None or bn.class_name != "BatchNormalization":
                raise FxsplitError(f"layer {e['module']!r} is split by outputs with its BatchNorm "
                                   f"{e['norm_module']!r}, but hls4ml fuses that BatchNorm into the layer in the uncut "
                                   "model (the layer's result type is not set), so the pieces could not match it",
                                   module=e["module"], source=node_source(node),
                                   hint=f"give {e['module']!r} a result precision in the config (hls4ml then keeps "
                                        "the BatchNorm apart), or cut before or after this layer instead")
            norm = {"result": str(bn.get_output_variable().type.precision),
                    "scale": str(bn.weights["scale"].type.precision), "bias": str(bn.weights["bias"].type.precision)}
            _pin(fc, e["norms"], norm)
            joined = norm["result"]
        for cat in e["cats"]:
            fc.layer_name[cat] = {"Precision": {"result": joined}}


def _pin(fc: FlowConfig, names: list[str], types: dict[str, str]) -> None:
    for piece in names:
        lc = fc.layer_name.setdefault(piece, {})
        prec = lc.get("Precision")
        lc["Precision"] = {**(prec if isinstance(prec, dict) else {}), **types}


def _brevitas_plan(pt: Partitioning, fc: FlowConfig):
    """brevitas layers read exactly (``lower/brevitas/``), their types pinned in the config; None without."""
    from . import brevitas
    declared = {}
    for p in pt.inputs:                       # a model input's type the config sets (input_precision, layers)
        prec = (fc.layer_name.get(p.name) or {}).get("Precision")
        prec = prec.get("result") if isinstance(prec, dict) else prec
        if prec is not None and str(prec) != "auto":
            declared[p.name] = str(prec)
    bq = brevitas.plan(pt.graph, [p.torch_shape for p in pt.inputs], declared)
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
    pt.float_scales = dict(bq.scales)
    pt.exact_graph = bq.freeze(pt.graph)
    return bq


def nonzero_weights(lowered: Lowered) -> dict[str, int]:
    """Per partition and for the uncut model (``MONOLITHIC``): the weights that are not zero in their layer's weight
    type, read from the hls4ml graphs as lowering leaves them (before a flow writes its projects, which replaces the
    weights' data): what the design multiplies by. A weight type fxsplit cannot read (float) counts the nonzero
    values."""
    import numpy as np

    from ..fixed import quantize_raw
    out = {}
    for name, hm in {**lowered.graphs, MONOLITHIC: lowered.mono}.items():
        n = 0
        for layer in hm.get_layers():
            w = (getattr(layer, "weights", None) or {}).get("weight")
            if w is None:
                continue
            try:
                raw = quantize_raw(np.asarray(w.data, dtype=np.float64), w.type.precision)
            except ValueError:
                raw = np.asarray(w.data)
            n += int(np.count_nonzero(raw))
        out[name] = n
    return out

