"""Config: the user's settings validated, and per-partition settings expanded to per-layer ones
(so the uncut reference model is configured exactly like the partitions)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import FxsplitError
from ..ir import Partitioning

DEFAULT_PRECISION = "fixed<16,6>"

_CONFIG_KEYS = {"precision", "input_precision", "reuse_factor", "strategy", "io_type", "backend", "part",
                "clock_period", "partitions", "layers", "latency_cutoff", "csim_opt", "synth", "exact_accum"}
_OVERRIDE_KEYS = {"precision", "reuse_factor", "strategy"}



@dataclass
class FlowConfig:
    """Normalised user config. Per-partition settings are expanded into per-layer ones,
    so that the uncut reference model is configured exactly like the partitions."""
    precision: str = DEFAULT_PRECISION
    input_precision: str | None = None
    reuse_factor: int = 1
    strategy: str = "Latency"
    io_type: str = "io_parallel"
    backend: str = "Vivado"
    part: str | None = None
    clock_period: float = 5.0
    latency_cutoff: float | None = None
    synth: bool = True                # rtl flow: run Yosys on every partition
    exact_accum: bool = True          # accum_t 'auto' (exact sums) for Dense/Conv unless a layer sets it
    csim_opt: str = "-O3"             # g++ optimisation of the C-simulation library (numerics do not depend on it)
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)   # fx node name -> overrides

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, default=str)


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


def normalize_config(config: dict | None, pt: Partitioning) -> FlowConfig:
    config = dict(config or {})
    _check_keys(config, _CONFIG_KEYS, "config")
    fc = FlowConfig(**{k: v for k, v in config.items() if k not in ("partitions", "layers")})
    if fc.csim_opt not in ("-O0", "-O1", "-O2", "-O3"):
        raise FxsplitError(f"config csim_opt must be one of -O0..-O3, got {fc.csim_opt!r}")
    if fc.io_type not in ("io_parallel", "io_stream"):
        raise FxsplitError(f"config io_type must be 'io_parallel' or 'io_stream', got {fc.io_type!r}")
    # qualified module name (layer2.0.conv1) or node name (layer2_0_conv1) -> node name
    alias: dict[str, str] = {}
    part_of: dict[str, str] = {}
    for p in pt.partitions:
        for n in p.module.graph.nodes:
            if n.op in ("call_module", "call_function", "call_method"):
                alias[n.name] = n.name
                part_of[n.name] = p.name
    for n in pt.graph.graph.nodes:
        if n.op == "call_module":
            alias[str(n.target)] = n.name
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
    fc.layers = layers
    return fc
