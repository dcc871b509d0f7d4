"""brevitas' quantized layers read exactly: activation quantizers and QuantLinear / QuantConv1d / QuantConv2d."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.fx

from ...errors import FxsplitError
from .grid import (Grid, Scaled, exact_product, _BINARY, _CLAMPS, _ROUNDING, _err, _fixed, _int_quant, _po2_exponent, _scalar, exact_type)


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
    if e is None and not (math.isfinite(scale) and scale > 0):
        raise _err(f"{quantizer} has scale {scale!r}", node, "train the quantizer to a positive finite scale")
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
    sat = "SAT_SYM" if signed and narrow else "SAT"
    if e is None:
        # a float scale: the tensor holds the integer levels, the scale travels with it (Scaled); the layer that
        # produces the levels is a fold of the quantizer into a fixed-point scale and bias (norm.fold_act)
        levels = Grid(b, b, signed)
        prec = _fixed(levels, f",{rounding},{sat}")
        info = {"layer": str(node.target), "kind": cls, "quantizer": type(proxy).__name__, "bit_width": b,
                "signed": signed, "narrow_range": narrow, "scale": scale, "float_scale": True,
                "rounding": rounding, "type": f"{prec} (integer levels; scale {scale!r} carried by the reader)"}
        return (FxsQuantAct(activation, prec, 0, qmin, qmax, rounding, f"{cls} {node.target}", float_scale=scale),
                Scaled(levels, (scale,)), info)
    frac = -e
    grid = Grid(b, b - frac, signed)
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


def _exact_layer(node: torch.fx.Node, mod, where: str, w, b, wg: Grid, bg: Grid | None, frac: int,
                 in_integer: int):
    """The exact fxsplit layer of a QuantLinear / QuantConv holding weights ``w`` (type ``wg``) and bias ``b``
    (``bg``; None: no bias), and its sum's grid: ``frac`` fractional bits, an upper bound of every partial sum's
    integer bits (hls4ml's 'auto' accumulator is sized the same way) from the input's ``in_integer``."""
    from ..quant import FxsQuantConv, FxsQuantDense
    cls = type(mod).__name__
    n = int(np.prod(w.shape[1:]))
    log_n = math.ceil(math.log2(n)) if n > 1 else 0
    integer = in_integer + wg.integer + log_n + 1
    if bg is not None:
        frac, integer = max(frac, bg.frac), max(integer, bg.integer + 1) + 1
    out = Grid(integer + frac, integer, True)
    bprec = _fixed(bg) if bg is not None else None
    if cls == "QuantLinear":
        return FxsQuantDense(w, b, _fixed(wg), bprec, f"{cls} {node.target}"), out
    if mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
        raise _err(f"{where} has groups={mod.groups}, padding_mode={mod.padding_mode!r}, padding={mod.padding!r}: "
                   "hls4ml converts groups=1 with numeric zero padding only", node,
                   "use groups=1 and an explicit zero padding")
    return FxsQuantConv(w, b, _fixed(wg), bprec, f"{cls} {node.target}", stride=mod.stride, padding=mod.padding,
                        dilation=mod.dilation), out


def read_weighted(node: torch.fx.Node, mod, in_grid: Grid, bias_value) -> tuple[torch.nn.Module, Grid, dict]:
    """QuantLinear / QuantConv1d / QuantConv2d: the quantized weights and the bias the layer adds, exactly."""
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
    if any(e is None for e in exps) or isinstance(in_grid, Scaled):
        return _read_scaled_weighted(node, mod, qw, in_grid, bias_value)
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
    # (where the sum fits in float32's 24 significant bits, brevitas' own float32 sum is exact too)
    dense, out = _exact_layer(node, mod, where, w, b, wg, bg, in_grid.frac + wg.frac, in_grid.integer)
    info = {"layer": str(node.target), "kind": cls, "quantizer": "weight_quant",
            "weight_scale": [float(s) for s in scale[:4]] + (["..."] if scale.numel() > 4 else []),
            "type": dense.weight_precision, "bias": dense.bias_precision,
            "bias_quant": bool(getattr(mod.bias_quant, "is_quant_enabled", False)), "sum_bits": out.width}
    return dense, out, info




def _read_scaled_weighted(node: torch.fx.Node, mod, qw, src, bias_value) -> tuple[torch.nn.Module, Scaled, dict]:
    """A QuantLinear / QuantConv whose weight scales are floats (per tensor or per output channel), or which reads
    a float-scaled tensor: integer weights ``w / s_w[c]`` (checked), an exact integer accumulator, and the output
    scale ``s_in * s_w[c]`` per channel carried by the reader (``s_in`` the input's per-tensor scale, 1 for a
    power-of-two grid). A quantized bias (``Int32Bias``: an integer times that scale) is added as its integer; a
    float bias cannot be added to the integer accumulator exactly: refused."""
    cls = type(mod).__name__
    where = f"{cls} {node.target!r}"
    if isinstance(src, Scaled):
        if not src.per_tensor:
            raise _err(f"{where} reads a tensor with a float scale per channel ({len(src.scale)} scales): its "
                       "products have no common scale, so no integer accumulator holds their sum", node,
                       "quantize its input with a per-tensor quantizer first (a QuantIdentity / QuantReLU)")
        s_in, g_in = float(src.scale[0]), src.grid
    else:
        s_in, g_in = 1.0, src
    if torch.any(torch.as_tensor(qw.zero_point) != 0):
        raise _err(f"{where}'s weight_quant has a nonzero zero point", node, "use a symmetric weight quantizer")
    value = qw.value.detach()
    C = int(value.shape[0])
    s32 = torch.as_tensor(qw.scale).detach().to(torch.float32)
    sw = s32.to(torch.float64).reshape(-1)
    if sw.numel() not in (1, C) or not torch.all(sw > 0) or not torch.all(torch.isfinite(sw)):
        raise _err(f"{where}'s weight_quant has {sw.numel()} scales for {C} output channels, or one that is not "
                   "positive and finite", node, "use one weight scale per tensor or per output channel")
    shape = (-1,) + (1,) * (value.dim() - 1)
    sw_c = sw.expand(C) if sw.numel() == 1 else sw
    w_int = torch.round(value.to(torch.float64) / sw_c.reshape(shape))
    # brevitas' quantized weight is the integer times the float32 scale, rounded to float32: the integer is exact
    if not torch.equal((w_int.to(torch.float32) * s32.reshape(shape) if s32.numel() > 1 else
                        w_int.to(torch.float32) * s32.reshape(())), value.to(torch.float32)):
        raise _err(f"{where}'s quantized weights are not integers times its weight scale", node,
                   "use an integer weight quantizer (e.g. Int8WeightPerTensorFloat)")
    out_scale = [exact_product(s_in, float(v)) for v in sw_c.tolist()]
    wg = exact_type(w_int.numpy(), f"{where}'s integer weights", node, "quantize the weights with fewer bits")
    b_int, bg = None, None
    bias_scaled = False
    offset = None
    if mod.bias is not None:
        if bias_value is None:
            raise FxsplitError(f"internal: {where}'s bias quantizer did not run on the calibration batch",
                               module=str(node.target), hint="please report this model")
        bscale = getattr(bias_value, "scale", None)
    if mod.bias is not None and (bscale is None or not getattr(mod.bias_quant, "is_quant_enabled", False)):
        # a float bias: not a multiple of the accumulator's scale. It travels with the tensor (Scaled.offset) to a
        # BatchNorm / quantizer right after the layer, which folds it; anything else refuses it (reader)
        offset = tuple(float(v) for v in torch.as_tensor(getattr(bias_value, "value", bias_value)).detach()
                       .to(torch.float32).to(torch.float64).reshape(-1))
    elif mod.bias is not None:
        bv = torch.as_tensor(bias_value.value).detach().reshape(-1)
        bs32 = torch.as_tensor(bscale).detach().to(torch.float32).reshape(-1)
        bs = bs32.to(torch.float64).expand(C) if bs32.numel() == 1 else bs32.to(torch.float64)
        b_int = torch.round(bv.to(torch.float64) / bs)
        # brevitas' bias scale is the float32 product of the input's scale (a float scale, or the power of two of a
        # fixed-point grid) and the weight scale; its bias that integer times it. On the accumulator (the input's
        # values on its grid times the integer weights; a float-scaled input: without its scale) the bias is that
        # integer times the grid's power of two (1 for integer levels)
        acc_scale = torch.tensor(out_scale, dtype=torch.float64)
        unit = 2.0 ** -g_in.frac        # (a Scaled tensor's levels on a finer grid: a truncated average's)
        expect = (acc_scale * unit).to(torch.float32)
        if not torch.equal(bs.to(torch.float32), expect) or \
                not torch.equal(b_int.to(torch.float32) * bs.to(torch.float32), bv.to(torch.float32)):
            raise _err(f"{where}'s quantized bias is not an integer times the input scale times the weight scale",
                       node, "use bias_quant=Int32Bias (the bias scale of the input and weight scales)")
        b_int = b_int * unit                                   # exact: a power of two
        bg = exact_type(b_int.numpy(), f"{where}'s bias on the accumulator", node,
                        "use bias_quant=Int32Bias or Int16Bias")
        bias_scaled = True
    dense, out = _exact_layer(node, mod, where, w_int, b_int, wg, bg, g_in.frac, g_in.integer)
    info = {"layer": str(node.target), "kind": cls, "quantizer": "weight_quant (float scale)",
            "weight_scale": [float(v) for v in sw[:4]] + (["..."] if sw.numel() > 4 else []),
            "type": f"{dense.weight_precision} (integer weights)", "bias": dense.bias_precision,
            "bias_quant": bias_scaled, "sum_bits": out.width,
            "output_scale": ("per tensor " if len(set(out_scale)) == 1 else "per output channel ") +
                            f"{out_scale[0]!r}{', ...' if len(set(out_scale)) > 1 else ''} (input scale x weight "
                            "scale, carried by the reader)"}
    if offset is not None:
        info["bias"] = "float (folded by the consumer)"
    return dense, Scaled(out, tuple(out_scale), offset), info


def read_trunc_avg_pool(node: torch.fx.Node, mod, src, q_in, q_out) -> tuple[torch.nn.Module, object, dict]:
    """brevitas' ``TruncAvgPool2d`` (QuantResNet18's ``final_pool``) on a quantized tensor: brevitas sums the
    window's integer levels (its scale divided by the window's size ``n``), shifts the sum right by ``2**shift``
    (``TruncMsbScaling``: the sum's bit width minus the output's) with its ``float_to_int`` (floor or round) and
    clamps to the output bit width. With ``n = 2**m`` that is hls4ml's exact average (accumulator ``m`` more fraction
    bits than the input) quantized onto a grid ``m - shift`` fraction bits finer than the input's: the output keeps
    the input's float scale (a ``Scaled`` tensor stays one). ``q_in`` / ``q_out``: brevitas' QuantTensors around
    the layer on the calibration batch (their scales and bit widths are the ones brevitas computes with)."""
    from ..quant import FxsTruncAvgPool
    where = f"TruncAvgPool2d {node.target!r}"
    if not isinstance(src, (Grid, Scaled)) or not all(hasattr(q, "bit_width") for q in (q_in, q_out)):
        raise _err(f"{where} averages a tensor that is not a QuantTensor: brevitas then averages float values and "
                   "skips its truncation quantizer, which no fixed-point type reproduces", node,
                   "return a QuantTensor from the quantizer before it (return_quant_tensor=True)")
    pair = (lambda v, d=None: tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else
            (int(v), int(v)) if v is not None else d)
    kernel = pair(mod.kernel_size)
    stride = pair(mod.stride, kernel)
    if any(pair(mod.padding)) or mod.ceil_mode or mod.divisor_override not in (None, kernel[0] * kernel[1]):
        raise _err(f"{where} pads its input, rounds its output size up (ceil_mode) or divides by another count "
                   "(divisor_override): fxsplit reads windows of the input alone", node,
                   "use padding=0, ceil_mode=False and no divisor_override")
    n = kernel[0] * kernel[1]
    m = n.bit_length() - 1
    if n != 2 ** m:
        raise _err(f"{where} averages windows of {n} values: brevitas divides the level sum's scale by {n}, which "
                   "is not a power of two, so no fixed-point average holds its values", node,
                   "use a window of a power-of-two size (2x2, 4x4, 2x4 ...)")
    tq = next((x for x in mod.trunc_quant.modules() if type(x).__name__ == "TruncIntQuant"), None)
    if tq is None or not mod.is_trunc_quant_enabled:
        raise _err(f"{where} has no integer truncation quantizer (trunc_quant)", node,
                   "use brevitas' TruncTo8bit / RoundTo8bit (an integer TruncIntQuant)")
    if type(tq.trunc_scaling_impl).__name__ != "TruncMsbScaling":
        raise _err(f"{where} chooses its shift with {type(tq.trunc_scaling_impl).__name__}: fxsplit reads the "
                   "shift that keeps the most significant bits (TruncMsbScaling) only", node,
                   "use trunc_scaling_impl_type='msb' (brevitas' TruncTo8bit / RoundTo8bit)")
    rounding = _ROUNDING.get(type(tq.float_to_int_impl).__name__)
    if rounding is None or type(tq.tensor_clamp_impl).__name__ not in _CLAMPS:
        raise _err(f"{where} rounds with {type(tq.float_to_int_impl).__name__} and clamps with "
                   f"{type(tq.tensor_clamp_impl).__name__}: no hls4ml type reproduces it", node,
                   "use float_to_int_impl_type FLOOR, ROUND or ROUND_TO_ZERO and brevitas' TensorClamp")
    with torch.no_grad():
        s_in = torch.as_tensor(q_in.scale).detach().to(torch.float64).reshape(-1)
        s_out = torch.as_tensor(q_out.scale).detach().to(torch.float64).reshape(-1)
        zps = [torch.as_tensor(q.zero_point).detach() for q in (q_in, q_out)]
        b_out = _scalar(q_out.bit_width)
    signed = bool(q_in.signed)
    if any(bool(torch.any(z != 0)) for z in zps):
        raise _err(f"{where} reads or gives a nonzero zero point", node, "use symmetric quantizers before it")
    # the input's unit: a grid's power of two, or a Scaled tensor's float scale times its grid's
    unit = (torch.tensor([2.0 ** -src.frac]) if isinstance(src, Grid) else
            torch.tensor(src.scale, dtype=torch.float64) * 2.0 ** -src.grid.frac)
    if s_in.numel() != unit.numel() or not torch.equal(s_in, unit):
        raise FxsplitError(f"internal: {where}'s input scale {s_in[:4].tolist()} is not the one fxsplit read "
                           f"({unit[:4].tolist()})", module=str(node.target), hint="please report this model")
    ratio = s_out / (s_in / n)
    shift = _po2_exponent(float(ratio[0])) if s_out.numel() == s_in.numel() else None
    if shift is None or not torch.equal(ratio, torch.full_like(ratio, 2.0 ** shift)) or b_out != int(b_out):
        raise FxsplitError(f"internal: {where}'s output scale is not its input's over {n} times a power of two",
                           module=str(node.target), hint="please report this model")
    b = int(b_out)
    narrow = bool(tq.narrow_range)
    if not signed and narrow:
        raise _err(f"{where} is unsigned with a narrow range: no hls4ml saturation mode stops there", node,
                   "use narrow_range=False")
    qmin, qmax = (-(2 ** (b - 1)) + int(narrow), 2 ** (b - 1) - 1) if signed else (0, 2 ** b - 1)
    g_in = src.grid if isinstance(src, Scaled) else src
    frac = g_in.frac + m - shift
    out = Grid(b, b - frac, signed)
    acc = Grid(g_in.width + 2 * m, g_in.integer + m, signed)          # the window's exact sum, then its exact average
    prec = _fixed(out, f",{rounding},{'SAT_SYM' if signed and narrow else 'SAT'}")
    frozen = FxsTruncAvgPool(kernel, stride, prec, _fixed(acc), frac, qmin, qmax, rounding,
                             f"TruncAvgPool2d {node.target}")
    g = Scaled(out, src.scale) if isinstance(src, Scaled) else out
    info = {"layer": str(node.target), "kind": "TruncAvgPool2d", "quantizer": type(tq).__name__, "bit_width": b,
            "signed": signed, "rounding": rounding, "type": prec, "accum": _fixed(acc),
            "note": f"the {n}-value window's level sum shifted right by {shift} bits ({rounding}), clamped to {b} bits"}
    if isinstance(src, Scaled):
        info["float_scale"] = True
        info["scale"] = float(src.scale[0]) if src.per_tensor else list(src.scale[:4])
    return frozen, g, info
