"""Flows: what each back end adds to the shared frontend (capture, partition, lower) and engine.

Every flow is a package ``fxsplit/flows/<name>/`` exposing one :class:`~fxsplit.flows.base.Flow` subclass, which
declares its steps (:class:`~fxsplit.flows.base.Step`). Built-in flows are the lines of :data:`FLOWS` (imported
when first asked for); :func:`register_flow` adds another one at run time. A new flow touches its own folder and
one line here.
"""

from __future__ import annotations

import importlib

from ..errors import FxsplitError

# name -> (module, class) of the built-in flows
FLOWS = {"hls4ml": ("fxsplit.flows.hls4ml", "HLS4MLFlow"),
         "rtl": ("fxsplit.flows.rtl", "RTLFlow"),
         "vitis": ("fxsplit.flows.vitis", "VitisFlow")}
_registered: dict[str, type] = {}


def register_flow(cls: type) -> type:
    """Register a :class:`~fxsplit.flows.base.Flow` subclass under its ``name`` (usable as a class decorator):
    ``compile(flow=name)``, the automatic split, the cost model and the report then know it and its steps."""
    from .base import Flow
    if not (isinstance(cls, type) and issubclass(cls, Flow)) or not isinstance(getattr(cls, "name", None), str):
        raise FxsplitError(f"register_flow takes a Flow subclass with a name, got {cls!r}")
    if cls.name in FLOWS and get_flow(cls.name) is not cls:
        raise FxsplitError(f"flow {cls.name!r} is built in", hint="give the new flow another name")
    _check_steps(cls, [c for n, c in _all_flows().items() if n != cls.name])
    _registered[cls.name] = cls
    return cls


def unregister_flow(name: str) -> None:
    """Forget a flow added by :func:`register_flow` (built-in flows stay)."""
    _registered.pop(name, None)


def flow_names() -> tuple[str, ...]:
    return (*FLOWS, *(n for n in _registered if n not in FLOWS))


def get_flow(name: str):
    if name in _registered:
        return _registered[name]
    if name not in FLOWS:
        raise FxsplitError(f"unknown flow {name!r}", hint=f"use one of {flow_names()}")
    module, cls = FLOWS[name]
    return getattr(importlib.import_module(module), cls)


def _all_flows() -> dict[str, type]:
    return {n: get_flow(n) for n in flow_names()}


def _check_steps(cls: type, others: list[type]) -> None:
    """Two declarations of one cost model must be the same step (a shared step is inherited, not redeclared)."""
    seen = {s.model: s for c in others for s in c.steps}
    for s in cls.steps:
        if s.model in seen and seen[s.model] != s:
            raise FxsplitError(f"flow {cls.name!r} declares the step model {s.model!r} differently from another flow",
                               hint="give the step another name (or model=...), or reuse that flow's declaration")


def declared_steps() -> dict:
    """Every step model any flow declares: ``{Step.model: Step}`` (the cost model's defaults)."""
    out = {}
    for cls in _all_flows().values():
        for s in cls.steps:
            out.setdefault(s.model, s)
    return out


__all__ = ["FLOWS", "get_flow", "register_flow", "unregister_flow", "flow_names", "declared_steps"]
