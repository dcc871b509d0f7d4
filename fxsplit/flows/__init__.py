"""Flows: what each back end adds to the shared frontend (capture, partition, lower) and engine.

Every flow is a package ``fxsplit/flows/<name>/`` exposing one :class:`~fxsplit.flows.base.Flow`
subclass; :func:`get_flow` finds it by name. A new flow touches only its own folder (and this table).
"""

from __future__ import annotations

import importlib

from ..errors import FxsplitError

FLOWS = {"hls4ml": ("hls4ml", "HLS4MLFlow"), "rtl": ("rtl", "RTLFlow"), "vitis": ("vitis", "VitisFlow")}


def get_flow(name: str):
    if name not in FLOWS:
        raise FxsplitError(f"unknown flow {name!r}", hint=f"use one of {tuple(FLOWS)}")
    pkg, cls = FLOWS[name]
    return getattr(importlib.import_module(f".{pkg}", __name__), cls)
