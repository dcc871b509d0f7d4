"""fxsplit: cut a PyTorch network into hls4ml / RTL partitions, build them in parallel, stitch them bit-exactly.

Public API: ``Cut``, ``cut``, ``partition``, ``compile``, ``Design``, ``FxsplitError``.
"""

from .compiler import compile
from .design import Design, VerifyResult
from .errors import FxsplitError
from .markers import Cut, cut
from .partition import partition

__all__ = ["Cut", "cut", "partition", "compile", "Design", "VerifyResult", "FxsplitError"]
__version__ = "0.1.0"
