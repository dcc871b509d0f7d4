"""fxsplit: cut a PyTorch network into hls4ml / RTL partitions, build them in parallel, stitch them bit-exactly.

Public API: ``Cut``, ``cut``, ``partition``, ``compile``, ``auto_splits``, ``Design``, ``FxsplitError``.
Names are imported lazily, so that build workers importing ``fxsplit.engine`` do not load torch.
"""

from __future__ import annotations

import importlib

from .errors import FxsplitError

__all__ = ["Cut", "cut", "partition", "compile", "auto_splits", "Design", "VerifyResult", "FxsplitError"]
__version__ = "0.1.0"

_LAZY = {
    "Cut": ".frontend.markers", "cut": ".frontend.markers", "partition": ".frontend.partitioner",
    "compile": ".compiler", "Design": ".design", "VerifyResult": ".design", "auto_splits": ".plan.autosplit",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fxsplit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__ + ["__version__"])
