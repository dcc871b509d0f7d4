"""brevitas quantization-aware models: every quantizer read exactly, or refused before any build.

A traced model holding ``brevitas.nn`` layers is read once, on the uncut graph, in eval mode (:func:`plan`), into
fxsplit's exact layers (``lower/quant.py``), which hls4ml's PyTorch converter takes through fxsplit's handlers:

- each activation quantizer (QuantIdentity, QuantReLU, QuantHardTanh) becomes an ``FxsQuantAct`` whose hls4ml type
  holds exactly brevitas' grid: ``bit_width`` bits, signedness, ``scale = 2**-frac`` (a power of two, or refused),
  zero point 0, round half to even (``RoundSte``) / floor / toward zero, clamped (``SAT``, ``SAT_SYM`` for a
  narrow signed range);
- each QuantLinear / QuantConv1d / QuantConv2d becomes an ``FxsQuantDense`` / ``FxsQuantConv`` holding the values
  brevitas computes with: its quantized weight (integers times power-of-two scales, per tensor or per output
  channel) and the bias its bias quantizer hands the layer (or the float bias), each in the narrowest fixed-point
  type that holds every value; the sum is exact (hls4ml's ``auto`` accumulator);
- a BatchNorm followed by a quantizer becomes an ``FxsQuantBatchNorm``: a fixed-point scale and bias per channel,
  found so that every input the channel can receive gets brevitas' level (checked exhaustively, else refused);
- ReLU and max pooling of quantized values, reshapes and dropout keep the grid; the sum of two quantized tensors is
  exact; brevitas_examples' TensorNorm is a float affine, computed exactly from 24-bit coefficients and reported;
- a model input read by quantizers gets a type wide enough that every float32 value which can change their
  rounding is held exactly (``fixed<W,I,TRN,SAT>``, 24 fractional bits below the finest quantizer's step).

The reading is checked: every exact layer, fed brevitas' own input from a random batch, must give brevitas' own
output bit for bit wherever brevitas' float32 arithmetic is exact (``Plan.inexact_in_brevitas`` names where it is
not). ``Design.verify`` then compares the design to brevitas itself.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx

from ..capture import eval_mode, node_source
from ..errors import FxsplitError

FLOAT32_BITS = 24                    # significant bits of a float32: a sum that fits is computed exactly
MAX_WIDTH = 64                       # widest weight or bias type fxsplit derives
_ACTS = {"QuantIdentity": "linear", "QuantReLU": "relu", "QuantHardTanh": "linear"}
_ROUNDING = {"RoundSte": "RND_CONV", "FloorSte": "TRN", "RoundToZeroSte": "TRN_ZERO"}
_CLAMPS = {"TensorClamp", "TensorClampSte"}
_SAME_GRID_MODULES = {"Dropout", "Flatten", "Identity"}
_GRID_MODULES = {"ReLU", "MaxPool1d", "MaxPool2d"}
_WEIGHTED = {"QuantLinear", "QuantConv1d", "QuantConv2d"}
_ADDS = {operator.add, torch.add, "add"}
_READ = ("QuantIdentity, QuantReLU, QuantHardTanh, QuantLinear, QuantConv1d/2d, ReLU and max pooling of quantized "
         "values, additions of quantized tensors, Dropout, Flatten and reshapes")
_SAME_GRID_FUNCS = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous"}


def is_brevitas(m) -> bool:
    return type(m).__module__.startswith("brevitas.")


def uses_brevitas(gm: torch.fx.GraphModule) -> bool:
    return any(n.op == "call_module" and is_brevitas(gm.get_submodule(n.target)) for n in gm.graph.nodes)


@dataclass(frozen=True)
class Grid:
    """The exact values a tensor can hold: ``raw * 2**-frac`` in an hls4ml type of ``width`` bits."""
    width: int
    integer: int
    signed: bool

    @property
    def frac(self) -> int:
        return self.width - self.integer


@dataclass
class Plan:
    """What :func:`plan` read: the exact layers by fx node name, the hls4ml types to pin, and the claims."""
    frozen: dict[str, torch.nn.Module] = field(default_factory=dict)
    precisions: dict[str, dict[str, str]] = field(default_factory=dict)    # node -> hls4ml Precision section
    input_precisions: dict[str, str] = field(default_factory=dict)          # model input -> type
    inexact_in_brevitas: list[str] = field(default_factory=list)           # layers brevitas rounds in float32
    quantizers: list[dict] = field(default_factory=list)                    # for the report

    @property
    def torch_exact(self) -> bool:
        """brevitas' own output is exact (every layer's float32 arithmetic exact): the design must equal it."""
        return not self.inexact_in_brevitas

    def freeze(self, module: torch.fx.GraphModule) -> torch.fx.GraphModule:
        """A copy of ``module`` (the uncut graph or a partition) with every brevitas layer replaced by its exact
        fxsplit layer (same node names, same targets)."""
        graph = torch.fx.Graph()
        graph.output(graph.graph_copy(module.graph, {}))            # same node names and meta
        gm = torch.fx.GraphModule(module, graph, type(module).__name__)   # new containers, shared leaves
        for n in gm.graph.nodes:
            if n.op == "call_module" and n.name in self.frozen:
                gm.set_submodule(str(n.target), self.frozen[n.name])
        return gm

    def to_dict(self) -> dict:
        return {"quantizers": self.quantizers, "input_precisions": self.input_precisions,
                "torch_exact": self.torch_exact, "inexact_in_brevitas": self.inexact_in_brevitas}


def _err(msg: str, node: torch.fx.Node, hint: str) -> FxsplitError:
    return FxsplitError(msg, module=str(node.target), source=node_source(node), hint=hint)


def _scalar(t) -> float:
    t = torch.as_tensor(getattr(t, "value", t)).detach()
    if t.numel() != 1:
        raise ValueError("not a scalar")
    return float(t.reshape(()))


def _po2_exponent(scale: float) -> int | None:
    """``e`` with ``scale == 2**e`` exactly, else None."""
    if not math.isfinite(scale) or scale <= 0:
        return None
    m, e = math.frexp(scale)
    return e - 1 if m == 0.5 else None


def exact_type(values: np.ndarray, what: str, node: torch.fx.Node, hint: str) -> Grid:
    """The narrowest signed fixed-point type holding every value of ``values`` (float64, exact) exactly."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise _err(f"{what} holds values that are not finite", node, hint)
    nz = v[v != 0]
    if nz.size == 0:
        return Grid(1, 1, True)
    frac = max(53 - math.frexp(float(x))[1] - _trailing_zero_bits(float(x)) for x in nz)
    raws = [int(x * 2.0 ** frac) if frac >= 0 else int(x / 2.0 ** -frac) for x in nz.tolist()]
    for x, r in zip(nz.tolist(), raws):       # exact by construction; never trust it silently
        if math.ldexp(r, -frac) != x:
            raise FxsplitError(f"internal: {what}: {x!r} is not {r} * 2**-{frac}")
    # shrink frac while every raw stays an integer (frexp-based frac is an upper bound)
    while all(r % 2 == 0 for r in raws) and any(raws):
        raws = [r // 2 for r in raws]
        frac -= 1
    width = max(max(r.bit_length() for r in raws if r > 0) if any(r > 0 for r in raws) else 0,
                max((-r - 1).bit_length() for r in raws if r < 0) if any(r < 0 for r in raws) else 0) + 1
    if width > MAX_WIDTH:
        raise _err(f"{what} needs a {width}-bit fixed-point type to be held exactly (fxsplit allows {MAX_WIDTH})",
                   node, hint)
    return Grid(width, width - frac, True)


def _trailing_zero_bits(x: float) -> int:
    """Trailing zero bits of the 53-bit mantissa of ``x`` (x != 0)."""
    m, _ = math.frexp(abs(x))
    mant = int(m * 2 ** 53)
    return (mant & -mant).bit_length() - 1


def _fixed(g: Grid, modes: str = "") -> str:
    return f"{'' if g.signed else 'u'}fixed<{g.width},{g.integer}{modes}>"


# ---- reading one brevitas layer

def _int_quant(proxy):
    """The IntQuant inside a brevitas quant proxy (None if it has none: binary, float or other quantizers)."""
    for m in proxy.modules():
        if type(m).__name__ == "IntQuant":
            return m
    return None


def _read_act(node: torch.fx.Node, mod) -> tuple[torch.nn.Module, Grid, dict]:
    from .quant import FxsQuantAct
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
    if q is None:
        raise _err(f"{quantizer} is not an integer quantizer (binary, ternary and float quantizers are not read "
                   "exactly yet)", node, "use an integer quantizer with a power-of-two scale, e.g. "
                                         "Int8ActPerTensorFixedPoint with bit_width=2..8")
    act_impl = getattr(getattr(proxy, "fused_activation_quant_proxy", None), "activation_impl", None)
    act_name = type(act_impl).__name__ if act_impl is not None else "Identity"
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



def _read_weighted(node: torch.fx.Node, mod, in_grid: Grid, bias_value) -> tuple[torch.nn.Module, Grid, dict]:
    """QuantLinear / QuantConv1d / QuantConv2d: the quantized weights and the bias the layer adds, exactly."""
    from .quant import FxsQuantConv, FxsQuantDense
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
        raise _err(f"{where}'s weight_quant has scale {bad!r}, not a power of two: its weights times the input do "
                   "not stay on a fixed-point grid", node,
                   "use a power-of-two weight scale: Int8WeightPerTensorFixedPoint (or per channel with "
                   "restrict_scaling_type=RestrictValueType.POWER_OF_TWO)")
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


MAX_DOMAIN = 2 ** 24                 # inputs x channels a BatchNorm's exhaustive check may evaluate
_BN_PRECISIONS = (12, 16, 20, 24, 28, 32, 36, 40)   # fractional bits of the BatchNorm scale tried, in order


def _grid_range(g: Grid) -> tuple[int, int]:
    """Raw integer range of a grid's type."""
    return (-(1 << (g.width - 1)), (1 << (g.width - 1)) - 1) if g.signed else (0, (1 << g.width) - 1)


def _channel_bounds(gm: torch.fx.GraphModule, prod: torch.fx.Node | None, p: Plan, src: Grid, channels: int,
                    grids: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the raw integers (at ``src.frac``) a BatchNorm's input can hold: from the producing layer's
    exact weights and its input's range where the producer is a quantized layer, else the type's whole range."""
    lo, hi = _grid_range(src)
    lo_c, hi_c = np.full(channels, lo, dtype=object), np.full(channels, hi, dtype=object)
    mod = p.frozen.get(prod.name) if prod is not None else None
    if mod is not None and hasattr(mod, "weight"):
        g_in = grids[prod.all_input_nodes[0].name]
        x_lo, x_hi = (math.ldexp(v, -g_in.frac) for v in _grid_range(g_in))
        w = mod.weight.reshape(mod.weight.shape[0], -1).numpy()
        b = np.zeros(w.shape[0]) if mod.bias is None else mod.bias.numpy()
        for c in range(channels):           # exact: every term is a dyadic rational held by a double
            mn = sum(min(float(v) * x_lo, float(v) * x_hi) for v in w[c]) + float(b[c])
            mx = sum(max(float(v) * x_lo, float(v) * x_hi) for v in w[c]) + float(b[c])
            lo_c[c] = max(lo, math.floor(math.ldexp(mn, src.frac)))
            hi_c[c] = min(hi, math.ceil(math.ldexp(mx, src.frac)))
    return lo_c, hi_c


def _read_batchnorm(gm: torch.fx.GraphModule, node: torch.fx.Node, bn, src, p: Plan, grids: dict):
    """A BatchNorm after a quantized layer, read together with the quantizer that follows it: brevitas computes the
    float32 affine map and rounds it onto the quantizer's grid, so each channel is a step function of the integer
    input. fxsplit evaluates brevitas on every input the channel can receive and finds a fixed-point scale and bias
    whose exact affine map, rounded by the quantizer's type, gives the same level for every one of them (hls4ml's
    BatchNormalization with that result type); none found: refused."""
    from .quant import FxsQuantBatchNorm
    cls = type(bn).__name__
    where = f"{cls} {node.target!r}"
    users = list(node.users)
    if not isinstance(src, Grid):
        raise _err(f"{where} normalizes {_describe(src, node.all_input_nodes[0])}: fxsplit reads a BatchNorm only "
                   "after a quantized layer", node, "put the BatchNorm after a QuantLinear / QuantConv")
    act_node = users[0] if len(users) == 1 and users[0].op == "call_module" else None
    act = gm.get_submodule(act_node.target) if act_node is not None else None
    if act is None or type(act).__name__ not in _ACTS:
        raise _err(f"{where} is not followed by a brevitas quantizer: its float output is not on a grid", node,
                   "follow it with a QuantIdentity / QuantReLU / QuantHardTanh (brevitas' usual BatchNorm -> "
                   "quantizer pattern)")
    if not bn.track_running_stats or bn.running_mean is None:
        raise _err(f"{where} has no running statistics", node, "train it with track_running_stats=True")
    frozen_act, g_out, _ = _read_act(act_node, act)
    prod = node.all_input_nodes[0]
    prod = prod if prod.op == "call_module" and prod.name in p.frozen and len(prod.users) == 1 else None
    C = int(bn.num_features)
    lo_c, hi_c = _channel_bounds(gm, prod, p, src, C, grids)
    base = int(min(lo_c))
    span = int(max(hi_c)) - base + 1                                    # every channel's range lies in it
    if span * C > MAX_DOMAIN:
        raise _err(f"{where}: its input can take {span} values per channel, too many to check every one "
                   f"(fxsplit checks up to {MAX_DOMAIN} inputs x channels)", node,
                   "use fewer bits before the BatchNorm, or fold it into the layer's weights while training")
    ks = torch.arange(span, dtype=torch.float64) + base                # raw inputs, shared by every channel
    x = (ks * 2.0 ** -src.frac).to(torch.float32)
    if not torch.equal(x.to(torch.float64), ks * 2.0 ** -src.frac):
        raise _err(f"{where}: its inputs are not all float32 values, so brevitas itself would round them", node,
                   "use fewer bits before the BatchNorm")
    extra = (1,) if cls == "BatchNorm2d" else ()
    levels = []
    with torch.no_grad():
        # two memory layouts: every input value once per channel as a batch (a spatial size of 1: torch's scalar
        # loop), and as one long channel plane (its vectorized loop, as in a real feature map); brevitas' float32
        # levels must not depend on it
        xx = x[:, None].expand(span, C).contiguous()
        y = act(bn(xx.reshape(span, C, *extra, *extra)))
        levels.append(getattr(y, "value", y).reshape(span, C) / frozen_act.step)
        y = act(bn(xx.T.contiguous().reshape(1, C, span, *extra)))
        levels.append(getattr(y, "value", y).reshape(C, span).T / frozen_act.step)
    if not torch.equal(levels[0], levels[1]):
        raise _err(f"{where}: brevitas' float32 BatchNorm gives different results for the same input in two memory "
                   "layouts, so no design can equal it", node, "fold the BatchNorm into the layer while training")
    L = levels[0].to(torch.float64)
    if not torch.equal(L, torch.round(L)):
        raise FxsplitError(f"internal: {where}: the quantizer after it gave values off its grid", module=str(node.target))
    L = L.to(torch.int64).T.numpy()                                    # (C, span)
    valid = np.zeros((C, span), dtype=bool)
    for c in range(C):
        valid[c, int(lo_c[c]) - base:int(hi_c[c]) - base + 1] = True
    if int(valid.sum()) != sum(int(h) - int(lo) + 1 for lo, h in zip(lo_c, hi_c)):
        raise FxsplitError(f"internal: {where}: the checked inputs do not cover every channel's range",
                           module=str(node.target))
    var = bn.running_var.detach().to(torch.float64)
    alpha = (bn.weight.detach().to(torch.float64) if bn.affine else torch.ones(C, dtype=torch.float64)) / \
        torch.sqrt(var + bn.eps)
    beta = (bn.bias.detach().to(torch.float64) if bn.affine else torch.zeros(C, dtype=torch.float64)) - \
        bn.running_mean.detach().to(torch.float64) * alpha
    found = _fit_affine(alpha.numpy(), beta.numpy(), ks.numpy().astype(np.int64), valid, L, src.frac, frozen_act)
    if found is None:
        raise _err(f"{where}: no fixed-point scale and bias up to {_BN_PRECISIONS[-1]} fractional bits reproduce "
                   "brevitas' float32 BatchNorm and its quantizer on every input", node,
                   "fold the BatchNorm into the layer's weights while training (or use a float-free threshold layer)")
    S, B, P = found
    scale = torch.tensor([math.ldexp(int(v), -P) for v in S], dtype=torch.float64)
    bias = torch.tensor([math.ldexp(int(v), -(P + src.frac)) for v in B], dtype=torch.float64)
    hint = "use fewer bits before the BatchNorm"
    sg = exact_type(scale.numpy(), f"{where}'s scale", node, hint)
    bg = exact_type(bias.numpy(), f"{where}'s bias", node, hint)
    frozen = FxsQuantBatchNorm(scale, bias, _fixed(sg), _fixed(bg), frozen_act, f"{cls} {node.target}")
    info = {"layer": str(node.target), "kind": cls, "quantizer": f"with {type(act).__name__} {act_node.target}",
            "type": frozen.precision, "scale": f"{_fixed(sg)} ({P} fractional bits)", "bias": _fixed(bg),
            "checked_inputs": int(valid.sum())}
    return frozen, g_out, info, prod.name if prod is not None else None


AFFINE_BITS = 24                     # significant bits of a float affine's coefficients (float32 holds 24)


def _round_significant(v: float, bits: int) -> float:
    if v == 0:
        return 0.0
    e = math.frexp(v)[1]
    return math.ldexp(round(math.ldexp(v, bits - e)), e - bits)


def _read_tensor_norm(node: torch.fx.Node, mod, src):
    """brevitas_examples' TensorNorm, ``(x - mean) / sqrt(var + eps) * weight + bias`` in float32: the float output
    its models end with. fxsplit computes ``x * a + c`` exactly, with ``a`` and ``c`` rounded to float32's 24
    significant bits, into a type that holds every result: the design differs from brevitas by brevitas' own float32
    rounding and that of the two coefficients, and ``verify`` reports it (no bit-for-bit claim)."""
    from .quant import FxsQuantAct, FxsQuantBatchNorm
    where = f"TensorNorm {node.target!r}"
    if not isinstance(src, Grid):
        raise _err(f"{where} normalizes {_describe(src, node.all_input_nodes[0])}", node,
                   "put it after a quantized layer")
    if mod.training:
        raise _err(f"{where} is in training mode", node, "compile the model in eval mode")
    m, v = float(mod.running_mean.detach().reshape(())), float(mod.running_var.detach().reshape(()))
    w, b = float(mod.weight.detach().reshape(())), float(mod.bias.detach().reshape(()))
    a = _round_significant(w / math.sqrt(v + mod.eps), AFFINE_BITS)
    c = _round_significant(b - m * w / math.sqrt(v + mod.eps), AFFINE_BITS)
    hint = "use fewer bits before the TensorNorm"
    ag = exact_type(np.array([a]), f"{where}'s scale", node, hint)
    cg = exact_type(np.array([c]), f"{where}'s bias", node, hint)
    frac = max(src.frac + ag.frac, cg.frac)
    integer = max(src.integer + ag.integer, cg.integer) + 1
    out = Grid(integer + frac, integer, True)
    n = int(node.meta["tensor_meta"].shape[-1]) if "tensor_meta" in node.meta else 1
    exact = FxsQuantAct("linear", _fixed(out), out.frac, -(2 ** (out.width - 1)), 2 ** (out.width - 1) - 1, "TRN",
                        f"TensorNorm {node.target}")       # a type that holds every result: no rounding, no clamp
    frozen = FxsQuantBatchNorm(torch.full((n,), a, dtype=torch.float64), torch.full((n,), c, dtype=torch.float64),
                               _fixed(ag), _fixed(cg), exact, f"TensorNorm {node.target}")
    info = {"layer": str(node.target), "kind": "TensorNorm", "quantizer": "(float affine)", "type": _fixed(out),
            "scale": f"{a!r} ({_fixed(ag)})", "bias": f"{c!r} ({_fixed(cg)})"}
    return frozen, out, info


def _fit_affine(alpha, beta, ks, valid, L, frac, act):
    """Integers S, B (scale S * 2**-P, bias B * 2**-(P + frac)) per channel, at the fewest P fractional bits, with
    quantize(k * S + B) == L[c, k] for every valid raw input k; None if none is found."""
    shift_base = frac - act.frac
    for P in _BN_PRECISIONS:
        sh = P + shift_base                     # raw (k * S + B) has P + frac fractional bits; the level has act.frac
        if sh < 1 or (np.max(np.abs(ks)) * (np.max(np.abs(alpha)) + 1) + np.max(np.abs(beta)) * 2.0 ** frac
                      ) * 2.0 ** P > 2.0 ** 61:
            continue                            # (int64 arithmetic below: never near overflow)
        S = np.round(alpha * 2.0 ** P).astype(np.int64)
        B = np.round(beta * 2.0 ** (P + frac)).astype(np.int64)
        ok = True
        for c in range(len(alpha)):
            if not _levels_match(ks, S[c], B[c], sh, valid[c], L[c], act):
                fixed = False
                for d in (1, -1, 2, -2, 3, -3):        # a tie brevitas' float32 rounding put on the other side
                    if _levels_match(ks, S[c], B[c] + d, sh, valid[c], L[c], act):
                        B[c] += d
                        fixed = True
                        break
                if not fixed:
                    ok = False
                    break
        if ok:
            return S, B, P
    return None


def _levels_match(ks, S, B, sh, valid, target, act) -> bool:
    acc = ks[valid] * int(S) + int(B)
    return bool(np.array_equal(_round_shift(acc, sh, act.rounding).clip(act.qmin, act.qmax), target[valid]))


def _round_shift(acc: np.ndarray, sh: int, rounding: str) -> np.ndarray:
    """acc / 2**sh (integers) rounded as the hls4ml type rounds: RND_CONV (half to even), TRN (floor), TRN_ZERO."""
    q = acc >> sh                                   # floor
    r = acc - (q << sh)
    if rounding == "TRN":
        return q
    if rounding == "TRN_ZERO":
        return np.where((acc < 0) & (r != 0), q + 1, q)
    half = 1 << (sh - 1)
    up = (r > half) | ((r == half) & (q % 2 == 1))
    return q + up


# ---- the whole model

def _calibrate(gm: torch.fx.GraphModule, examples: list[torch.Tensor]) -> tuple[dict, dict]:
    """brevitas' own values on a random batch: every node's output, and the bias each QuantLinear adds."""
    biases: dict[str, object] = {}
    hooks = []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            if type(m).__name__ in _WEIGHTED and m.bias is not None:
                hooks.append(m.bias_quant.register_forward_hook(
                    lambda _m, _i, out, name=n.name: biases.__setitem__(name, out)))
    values: dict[str, object] = {}

    class Rec(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            values[n.name] = out
            return out
    try:
        with torch.no_grad():
            Rec(gm).run(*examples)           # (plan() holds the model in eval mode)
    finally:
        for h in hooks:
            h.remove()
    return values, biases


def plan(gm: torch.fx.GraphModule, input_shapes: list[tuple[int, ...]]) -> Plan | None:
    """Read every brevitas layer of the uncut graph ``gm`` exactly (see the module doc); None for a model
    without brevitas layers. Raises :class:`FxsplitError` naming the layer, its quantizer and what to change."""
    if not uses_brevitas(gm):
        return None
    with eval_mode(gm):
        return _plan(gm, input_shapes)


def _plan(gm: torch.fx.GraphModule, input_shapes: list[tuple[int, ...]]) -> Plan:
    gen = torch.Generator().manual_seed(0)
    examples = [torch.randn((64, *s), generator=gen) * 4 for s in input_shapes]
    values, biases = _calibrate(gm, examples)
    p = Plan()
    grid: dict[str, Grid | str | None] = {}       # Grid: exact; "input:<name>": a model input, float; None: float
    needs: dict[str, list[tuple[int, int, torch.fx.Node]]] = {}   # model input -> (frac, qmax + 1) of its quantizers
    reshapes: list[tuple[str, str]] = []       # (reshape, its source): its type is the source's (else: the default)

    def type_of(name: str) -> str | None:
        """The exact type string of tensor ``name``: the one pinned for it, else its grid's (an 'auto' sum)."""
        t = p.precisions.get(name, {}).get("result")
        if t is not None and t != "auto":
            return t
        g = grid.get(name)
        if isinstance(g, Grid):
            return _fixed(g)
        if isinstance(g, str):
            return p.input_precisions.get(g[len("input:"):])
        return None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            grid[n.name] = f"input:{n.name}"
            continue
        if n.op == "output":
            continue
        if n.op == "get_attr":
            raise _err("a brevitas model whose graph reads a tensor attribute: fxsplit reads brevitas layers, "
                       "reshapes and dropout only (yet)", n, "compute constants in the layers' quantizers")
        srcs = [a for a in n.all_input_nodes]
        src = grid.get(srcs[0].name) if srcs else None
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            cls = type(m).__name__
            if cls in _ACTS:
                frozen, g, info = _read_act(n, m)
                if cls == "QuantHardTanh" and frozen.activation != "linear":
                    raise _err(f"QuantHardTanh {n.target!r} applies an activation fxsplit cannot read", n,
                               "use QuantIdentity")
                if isinstance(src, str):
                    needs.setdefault(src[len("input:"):], []).append((frozen.frac, frozen.qmax + 1, n))
                p.frozen[n.name] = frozen
                p.precisions[n.name] = {"result": frozen.precision}
                p.quantizers.append(info)
                grid[n.name] = g
                continue
            if cls in _WEIGHTED:
                if not isinstance(src, Grid):
                    raise _err(f"the input of {cls} {n.target!r} is {_describe(src, srcs[0])}: brevitas "
                               "multiplies float values there, which no fixed-point type holds exactly", n,
                               "quantize its input first (a QuantIdentity, or return_quant_tensor=True from a "
                               "quantizer layer before it)")
                frozen, g, info = _read_weighted(n, m, src, biases.get(n.name))
                p.frozen[n.name] = frozen
                prec = {"weight": frozen.weight_precision, "accum": "auto", "result": "auto"}
                if frozen.bias_precision is not None:
                    prec["bias"] = frozen.bias_precision
                p.precisions[n.name] = prec
                p.quantizers.append(info)
                if g.width > FLOAT32_BITS:
                    p.inexact_in_brevitas.append(str(n.target))
                grid[n.name] = g
                continue
            if cls == "TensorNorm":
                frozen, g, info = _read_tensor_norm(n, m, src)
                p.frozen[n.name] = frozen
                p.precisions[n.name] = {"scale": frozen.scale_precision, "bias": frozen.bias_precision,
                                        "result": frozen.precision}
                prod = srcs[0]
                if prod.name in p.frozen and len(prod.users) == 1 and "result" in p.precisions.get(prod.name, {}):
                    p.precisions[prod.name]["result"] = _fixed(src)      # (no BatchNorm fusion: see below)
                p.quantizers.append(info)
                p.inexact_in_brevitas.append(str(n.target))
                grid[n.name] = g
                continue
            if cls in ("BatchNorm1d", "BatchNorm2d"):
                frozen, g, info, prod = _read_batchnorm(gm, n, m, src, p, grid)
                p.frozen[n.name] = frozen
                p.precisions[n.name] = {"scale": frozen.scale_precision, "bias": frozen.bias_precision,
                                        "result": frozen.precision}
                if prod is not None:
                    # an explicit result type: hls4ml's FuseBatchNormalization would otherwise fold this BatchNorm
                    # into the layer's quantized weights (rounding them)
                    p.precisions[prod]["result"] = _fixed(src)
                p.quantizers.append(info)
                grid[n.name] = g
                continue
            if cls in _SAME_GRID_MODULES:
                grid[n.name] = src
                if cls == "Flatten":
                    reshapes.append((n.name, srcs[0].name))
                continue
            if cls in _GRID_MODULES and isinstance(src, Grid):
                # a max (pooling) or a ReLU of values on a grid stays on it: the type is the input's (hls4ml's own
                # would be the default precision)
                p.precisions[n.name] = {"result": type_of(srcs[0].name)}
                grid[n.name] = src
                continue
            raise _err(f"{cls} {n.target!r} in a brevitas model: fxsplit reads {_READ} exactly (BatchNorm, average "
                       "pooling and other float layers: not yet)", n, "keep this layer out of the model you compile, "
                                                                     "or replace it with one of those")
        name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        if name in _SAME_GRID_FUNCS and len(srcs) == 1:
            grid[n.name] = src
            reshapes.append((n.name, srcs[0].name))
            continue
        if n.target in _ADDS and len(srcs) == 2 and len(n.args) == 2 and not n.kwargs:
            a, b = (grid.get(x.name) for x in srcs)
            if isinstance(a, Grid) and isinstance(b, Grid):
                # the exact sum (hls4ml's 'auto' merge type); brevitas adds QuantTensors of one scale, exactly
                frac, integer = max(a.frac, b.frac), max(a.integer, b.integer) + 1
                p.precisions[n.name] = {"result": "auto"}
                grid[n.name] = Grid(integer + frac, integer, True)
                if grid[n.name].width > FLOAT32_BITS:
                    p.inexact_in_brevitas.append(n.name)
                continue
            bad = 0 if not isinstance(a, Grid) else 1
            raise _err(f"the addition {n.name!r} in a brevitas model adds {_describe((a, b)[bad], srcs[bad])}: not on "
                       "a fixed-point grid", n,
                       "quantize both operands (brevitas adds QuantTensors of one scale: pass both through one "
                       "QuantIdentity)")
        if n.target is operator.getitem:
            raise _err(f"indexing ({n.name}) in a brevitas model: not read exactly yet", n,
                       "index outside the compiled model")
        raise _err(f"operation {n.name!r} ({name}) in a brevitas model: fxsplit reads {_READ} exactly", n,
                   "keep this operation out of the model you compile")
    for inp, qs in needs.items():
        frac = max(f for f, _, _ in qs) + FLOAT32_BITS
        integer = max(int(top).bit_length() - f for f, top, _ in qs) + 1
        p.input_precisions[inp] = f"fixed<{integer + frac},{integer},TRN,SAT>"
    for name, src in reshapes:            # (in graph order: a reshape of a reshape finds its source's type set)
        t = type_of(src)
        if t is not None:
            p.precisions[name] = {"result": t}
    _check_reading(gm, p, values)
    return p


def _describe(src, node: torch.fx.Node) -> str:
    if isinstance(src, str):
        return f"the model input {src[len('input:'):]!r} (float)"
    return f"the float output of {node.name!r}"


def _check_reading(gm: torch.fx.GraphModule, p: Plan, values: dict) -> None:
    """Every exact layer, fed brevitas' own input from the calibration batch, must give brevitas' own output bit for
    bit (a QuantLinear only where brevitas' float32 sum is exact). A difference means fxsplit read a quantizer
    wrongly: raise, never build on it."""
    inexact = set(p.inexact_in_brevitas)
    for n in gm.graph.nodes:
        mod = p.frozen.get(n.name)
        if mod is None or str(n.target) in inexact:
            continue
        inp = values[n.all_input_nodes[0].name]
        with torch.no_grad():
            got = mod(getattr(inp, "value", inp).detach())
        out = values[next(iter(n.users)).name] if type(mod).__name__ == "FxsQuantBatchNorm" else values[n.name]
        ref = getattr(out, "value", out).detach().to(torch.float64)        # (a BatchNorm: with its quantizer)
        if ref.shape != got.shape or not torch.equal(ref, got):
            bad = int((ref != got).sum()) if ref.shape == got.shape else -1
            raise FxsplitError(f"internal: fxsplit's exact reading of {mod.source} differs from brevitas' own output "
                               f"on a random batch ({bad} elements): its quantizer holds something fxsplit does not "
                               "read", module=str(n.target), source=node_source(n),
                               hint="please report this model; meanwhile compile without this layer")


def freeze_partitions(pt, p: Plan):
    """Copies of ``pt``'s partitions with their brevitas layers replaced by the exact ones."""
    return [dataclasses.replace(part, module=p.freeze(part.module)) for part in pt.partitions]
