"""The hls4ml flow: one hls4ml project and bit-accurate C simulation per partition (any machine).

It is the base :class:`~fxsplit.flows.base.Flow`; the build step lives in :mod:`.csim`.
"""

from ..base import Flow


class HLS4MLFlow(Flow):
    name = "hls4ml"


__all__ = ["HLS4MLFlow"]
