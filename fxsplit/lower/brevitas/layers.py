"""brevitas' quantized layers read exactly: activation quantizers and QuantLinear / QuantConv1d / QuantConv2d."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.fx

from ...errors import FxsplitError
from .grid import (Grid, _BINARY, _CLAMPS, _ROUNDING, _err, _fixed, _int_quant, _po2_exponent, _scalar, exact_type)


def read_act(node: torch.fx.Node, mod) -> tuple[torch.nn.Module, Grid, dict]:
    from ..quant import FxsQuantAct
    cls = type(mod).__name__
    where = f"{cls} {node.target!r}"
    proxy = getattr(mod, "act_quant", None)
    if getattr(mod, "input_quant", None) is not None and mod.input_quant.is_quant_enabled:
        raise _err(f"{where} quantizes its input too (input_quant): fxsplit reads one quantizer per layer", node,
                   "put a QuantIdentity before the layer instead of input_quant")
    if proxy is None or not proxy.is_quant_enabled:
        raise _err(f"{where} has no activation quantizer (act_quant=None): brevitas computes it in float, which no "
                   "fixed-point type reproduces", node, "give it an act_quant, e.g. Uint8ActPerTensorFixedPoint "
                                                        "(QuantReLU) or Int8ActPerTensorFixedPoint")
    q = _int_quant(proxy)
    quantizer = f"{where}'s act_quant"
    act_impl = getattr(getattr(proxy, "fused_activation_quant_proxy", None), "activation_impl", None)
    act_name = type(act_impl).__name__ if act_impl is not None else "Identity"
    if q is None and _binary_quant(proxy) is not None:
        return _read_binary_act(node, mod, proxy, act_name)
    if q is None:
        raise _err(f"{quantizer} is neither an integer nor a binary quantizer (ternary and float quantizers are not "
                   "read exactly yet)", node, "use an integer quantizer with a power-of-two scale, e.g. "
                                              "Int8ActPerTensorFixedPoint with bit_width=2..8, or a binary one "
                                              "(bit_width=1) with a power-of-two scale")
    if act_name not in ("Identity", "ReLU"):
        raise _err(f"{where} applies {act_name} before quantizing: fxsplit reads Identity and ReLU only", node,
                   "use QuantIdentity / QuantReLU, or QuantHardTanh with an integer quantizer that clamps")
    activation = "relu" if act_name == "ReLU" else "linear"
    rounding = _ROUNDING.get(type(q.float_to_int_impl).__name__)
    if rounding is None:
        raise _err(f"{quantizer} rounds with {type(q.float_to_int_impl).__name__}, which no hls4ml rounding mode "
                   "reproduces", node, "use float_to_int_impl_type ROUND (half to even), FLOOR or ROUND_TO_ZERO")
    if type(q.tensor_clamp_impl).__name__ not in _CLAMPS:
        raise _err(f"{quantizer} clamps with {type(q.tensor_clamp_impl).__name__}", node,
                   "use brevitas' TensorClamp (the default of its integer quantizers)")
    with torch.no_grad():
        try:
            scale, zp, bits = _scalar(proxy.scale()), _scalar(proxy.zero_point()), _scalar(proxy.bit_width())
        except ValueError:
            raise _err(f"{quantizer} has a scale per channel: hls4ml's types are one per layer", node,
                       "use a per-tensor activation quantizer (scaling_per_output_channel=False)") from None
    signed, narrow = bool(proxy.is_signed), bool(proxy.is_narrow_range)
    e = _po2_exponent(scale)
    if e is None:
        raise _err(f"{quantizer} has scale {scale!r}, not a power of two: no fixed-point type holds its values",
                   node, "use a power-of-two scale: a *FixedPoint quantizer (e.g. Int8ActPerTensorFixedPoint, "
                         "Uint8ActPerTensorFixedPoint) or restrict_scaling_type=RestrictValueType.POWER_OF_TWO")
    if zp != 0:
        raise _err(f"{quantizer} has zero point {zp!r}: fxsplit reads symmetric quantizers only", node,
                   "use a quantizer with zero_point 0 (the *FixedPoint quantizers)")
    if bits != int(bits) or bits < 1:
        raise _err(f"{quantizer} has bit width {bits!r}", node, "use a whole bit width")
    b = int(bits)
    if not signed and narrow:
        raise _err(f"{quantizer} is unsigned with a narrow range (max 2**{b} - 2): no hls4ml saturation mode "
                   "stops there", node, "use narrow_range=False for an unsigned quantizer")
    qmin, qmax = (-(2 ** (b - 1)) + int(narrow), 2 ** (b - 1) - 1) if signed else (0, 2 ** b - 1)
    frac = -e
    grid = Grid(b, b - frac, signed)
    sat = "SAT_SYM" if signed and narrow else "SAT"
    prec = _fixed(grid, f",{rounding},{sat}")
    info = {"layer": str(node.target), "kind": cls, "quantizer": type(proxy).__name__, "bit_width": b,
            "signed": signed, "narrow_range": narrow, "scale": scale, "rounding": rounding, "type": prec}
    return FxsQuantAct(activation, prec, frac, qmin, qmax, rounding, f"{cls} {node.target}"), grid, info



def _binary_quant(proxy):
    """The BinaryQuant / ClampedBinaryQuant inside a brevitas quant proxy, else None."""
    for m in proxy.modules():
        if type(m).__name__ in _BINARY:
            return m
    return None


def _read_binary_act(node: torch.fx.Node, mod, proxy, act_name: str) -> tuple[torch.nn.Module, Grid, dict]:
    """brevitas' binary activation quantizer (bit_width=1: ``BinaryQuant``, ``ClampedBinaryQuant``):
    ``binary_sign(x) * scale``, +scale where ``x >= 0`` (0 included) and -scale below; the clamp of
    ClampedBinaryQuant to [-scale, scale] keeps the sign. Read as ``FxsQuantAct(binary=True)`` on
    ``fixed<2,2+e,TRN,SAT_SYM>`` (``scale = 2**e``)."""
    from ..quant import FxsQuantAct
    cls = type(mod).__name__
    where = f"{cls} {node.target!r}"
    quantizer = f"{where}'s act_quant"
    if act_name != "Identity":
        raise _err(f"{where} applies {act_name} before its binary quantizer: fxsplit reads a binary quantizer on its "
                   "input as it is", node, "use QuantIdentity with the binary quantizer")
    with torch.no_grad():
        try:
            scale, zp = _scalar(proxy.scale()), _scalar(proxy.zero_point())
        except ValueError:
            raise _err(f"{quantizer} has a scale per channel: hls4ml's types are one per layer", node,
                       "use a per-tensor binary quantizer (scaling_per_output_channel=False)") from None
    e = _po2_exponent(scale)
    if e is None:
        raise _err(f"{quantizer} is binary with scale {scale!r}, not a power of two: no fixed-point type holds "
                   "+-scale", node, "give the binary quantizer a power-of-two scale (scaling_const, or min_val / "
                                    "max_val of +-2**k with ScalingImplType.CONST)")
    if zp != 0:
        raise _err(f"{quantizer} has zero point {zp!r}", node, "use a binary quantizer with zero point 0")
    grid = Grid(2, 2 + e, True)
    prec = _fixed(grid, ",TRN,SAT_SYM")
    info = {"layer": str(node.target), "kind": cls, "quantizer": type(proxy).__name__, "bit_width": 1,
            "signed": True, "binary": True, "scale": scale, "rounding": "sign (x >= 0: +scale)", "type": prec}
    return FxsQuantAct("linear", prec, -e, -1, 1, "TRN", f"{cls} {node.target}", binary=True), grid, info


def read_weighted(node: torch.fx.Node, mod, in_grid: Grid, bias_value) -> tuple[torch.nn.Module, Grid, dict]:
    """QuantLinear / QuantConv1d / QuantConv2d: the quantized weights and the bias the layer adds, exactly."""
    from ..quant import FxsQuantConv, FxsQuantDense
    cls = type(mod).__name__
    where = f"{cls} {node.target!r}"
    for attr in ("input_quant", "output_quant"):
        proxy = getattr(mod, attr, None)
        if proxy is not None and proxy.is_quant_enabled:
            raise _err(f"{where} has {attr} enabled: fxsplit reads the weight and bias quantizers of a layer, its "
                       "activations come from separate quantizer layers", node,
                       f"drop {attr} and put a QuantIdentity {'before' if attr == 'input_quant' else 'after'} it")
    if not mod.weight_quant.is_quant_enabled:
        raise _err(f"{where} has no weight quantizer: its float weights are not on a fixed-point grid", node,
                   "give it weight_quant, e.g. Int8WeightPerTensorFixedPoint with weight_bit_width=2..8")
    with torch.no_grad():
        qw = mod.quant_weight()
    scale = torch.as_tensor(qw.scale).detach().reshape(-1)
    exps = [_po2_exponent(float(s)) for s in scale]
    if any(e is None for e in exps):
        bad = next(float(s) for s, e in zip(scale, exps) if e is None)
        per_channel = scale.numel() > 1
        kind = (f"a float scale per output channel ({sum(e is None for e in exps)} of {scale.numel()} not a power of "
                f"two, the first {bad!r})" if per_channel else f"scale {bad!r}, not a power of two")
        raise _err(f"{where}'s weight_quant has {kind}: its weights times the input do not stay on a fixed-point "
                   "grid", node,
                   "use a power-of-two weight scale: " + (
                       "keep one per output channel with a power-of-two restriction (the layer's "
                       "weight_restrict_scaling_type=RestrictValueType.POWER_OF_TWO, or weight_quant="
                       "Int8WeightPerTensorFixedPoint with weight_scaling_per_output_channel=True)"
                       if per_channel else
                       "Int8WeightPerTensorFixedPoint (or per channel with "
                       "restrict_scaling_type=RestrictValueType.POWER_OF_TWO)"))
    if torch.any(torch.as_tensor(qw.zero_point) != 0):
        raise _err(f"{where}'s weight_quant has a nonzero zero point", node, "use a symmetric weight quantizer")
    w = qw.value.detach().to(torch.float64)
    hint = "quantize it with fewer bits or a coarser power-of-two scale"
    wg = exact_type(w.numpy(), f"{where}'s quantized weight", node, hint)
    b = None
    bg = None
    if mod.bias is not None:
        if bias_value is None:
            raise FxsplitError(f"internal: {where}'s bias quantizer did not run on the calibration batch",
                               module=str(node.target), hint="please report this model")
        b = torch.as_tensor(getattr(bias_value, "value", bias_value)).detach().to(torch.float64).reshape(-1)
        bg = exact_type(b.numpy(), f"{where}'s bias", node,
                        "quantize the bias (bias_quant=Int16Bias or Int32Bias: an integer times the input scale "
                        "times the weight scale)")
    # an upper bound of every partial sum's bits (hls4ml's 'auto' accumulator is sized the same way): where it fits
    # in float32's 24 significant bits, brevitas' own float32 sum is exact too
    n = int(np.prod(w.shape[1:]))
    log_n = math.ceil(math.log2(n)) if n > 1 else 0
    frac = in_grid.frac + wg.frac
    integer = in_grid.integer + wg.integer + log_n + 1
    if bg is not None:
        frac, integer = max(frac, bg.frac), max(integer, bg.integer + 1) + 1
    out = Grid(integer + frac, integer, True)
    bprec = _fixed(bg) if bg is not None else None
    if cls == "QuantLinear":
        dense = FxsQuantDense(w, b, _fixed(wg), bprec, f"{cls} {node.target}")
    else:
        if mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            raise _err(f"{where} has groups={mod.groups}, padding_mode={mod.padding_mode!r}, padding={mod.padding!r}: "
                       "hls4ml converts groups=1 with numeric zero padding only", node,
                       "use groups=1 and an explicit zero padding")
        dense = FxsQuantConv(w, b, _fixed(wg), bprec, f"{cls} {node.target}", stride=mod.stride, padding=mod.padding,
                             dilation=mod.dilation)
    info = {"layer": str(node.target), "kind": cls, "quantizer": "weight_quant",
            "weight_scale": [float(s) for s in scale[:4]] + (["..."] if scale.numel() > 4 else []),
            "type": dense.weight_precision, "bias": dense.bias_precision,
            "bias_quant": bool(getattr(mod.bias_quant, "is_quant_enabled", False)), "sum_bits": out.width}
    return dense, out, info


