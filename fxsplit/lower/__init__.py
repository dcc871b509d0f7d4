"""Lowering, shared by every flow: config validation and one hls4ml ModelGraph per partition
(plus the uncut reference), with boundary types pinned and checked."""

from .config import DEFAULT_PRECISION, FlowConfig, hls4ml_layer_names, normalize_config
from .convert import MONOLITHIC, Lowered, ModelSpec, build_modelgraph, lower, type_width

__all__ = ["DEFAULT_PRECISION", "FlowConfig", "hls4ml_layer_names", "normalize_config", "MONOLITHIC", "Lowered",
           "ModelSpec", "build_modelgraph", "lower", "type_width"]
