"""Types as a user's quantized network has them: every weight type as wide as asked and spanning the layer's own
weights, so that its kernels are as large as a trained 8-bit network's (a fixed type such as ``fixed<8,3>`` would
leave small initial weights one or two significant bits)."""

from __future__ import annotations

import math

import torch
from torch import nn


def integer_bits(max_abs: float, signed: bool = True) -> int:
    """The fewest integer bits (hls4ml's I, the sign bit included when signed) of a type holding ``max_abs``:
    ``fixed<W,I>`` reaches ``2**(I-1) - 2**(I-W)``, so the largest weight rounds to at most the top of the range.
    May be negative (``fixed<8,-2>`` holds values below 1/8 with 8 significant bits)."""
    if max_abs <= 0:
        return 1
    e = math.frexp(max_abs)[1]          # max_abs < 2**e
    return e + (1 if signed else 0)


def folded_weights(model: nn.Module, input_shape) -> dict[str, torch.Tensor]:
    """Every Linear/Conv's weights as hls4ml builds them: times the scale of a BatchNorm that is its only user
    (hls4ml folds that BatchNorm into the layer). Keyed by module name."""
    from ..frontend.partitioner import strip_markers
    gm = strip_markers(model, input_shape)
    out = {}
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        m = gm.get_submodule(n.target)
        if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            continue
        w = m.weight.detach().to(torch.float64)
        users = list(n.users)
        if len(users) == 1 and users[0].op == "call_module":
            bn = gm.get_submodule(users[0].target)
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                scale = (bn.weight.detach().to(torch.float64) if bn.affine else 1.0) / torch.sqrt(
                    bn.running_var.detach().to(torch.float64) + bn.eps)
                w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
        out[str(n.target)] = w
    return out


def spanning_config(model: nn.Module, input_shape, bits: int = 8, activations: str = "fixed<8,3>",
                    **config) -> dict:
    """An fxsplit config with ``activations`` as the default type and every Linear/Conv's weight type
    ``fixed<bits,I>``, I spanning its largest folded weight (:func:`integer_bits`); ``config``: other keys."""
    layers = {}
    for name, w in folded_weights(model, input_shape).items():
        layers[name] = {"precision": {"weight": f"fixed<{bits},{integer_bits(float(w.abs().max()))}>"}}
    return {"precision": activations, **config, "layers": {**layers, **config.get("layers", {})}}


__all__ = ["integer_bits", "folded_weights", "spanning_config"]
