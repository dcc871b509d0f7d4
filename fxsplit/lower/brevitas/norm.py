"""A BatchNorm before a quantizer, and brevitas_examples' TensorNorm, folded into fixed-point scales and biases
checked on every input a channel can receive."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.fx

from ...errors import FxsplitError
from ...fixed import layout
from . import layers
from .grid import (_describe, ACTS, Grid, Plan, Scaled, _err, _fixed, exact_type, int_grid)


MAX_DOMAIN = 2 ** 24                 # inputs x channels a BatchNorm's exhaustive check may evaluate
MAX_SCALED_DOMAIN = 2 ** 27          # the same for a fold on a float-scaled tensor (evaluated in chunks, levels kept
#                                      as 32-bit integers: about 1.2 GB at the limit)
CHUNK = 2 ** 22                      # inputs x channels evaluated at once
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
        g_in = int_grid(grids[prod.all_input_nodes[0].name])
        x_lo, x_hi = (math.ldexp(v, -g_in.frac) for v in _grid_range(g_in))
        w = mod.weight.reshape(mod.weight.shape[0], -1).numpy().astype(np.float64)
        b = np.zeros(w.shape[0]) if mod.bias is None else mod.bias.numpy().astype(np.float64)
        a, z = w * x_lo, w * x_hi                      # exact: products of dyadic rationals held by doubles
        small, large = np.minimum(a, z), np.maximum(a, z)
        # every term a multiple of 2**-q (the weights' type times the input's step, the bias' type): while the sum
        # of their magnitudes stays under 2**(53 - q), every partial sum is a double exactly, in any order
        q = max(layout(mod.weight_precision).frac + g_in.frac,
                layout(mod.bias_precision).frac if mod.bias is not None else 0)
        if float((np.abs(a) + np.abs(z)).sum(axis=1).max() + np.abs(b).max()) * 2.0 ** q < 2.0 ** 52:
            mins, maxs = small.sum(axis=1) + b, large.sum(axis=1) + b
        else:                                          # (exactly rounded sums, one channel at a time)
            mins = np.array([math.fsum([*small[c], b[c]]) for c in range(channels)])
            maxs = np.array([math.fsum([*large[c], b[c]]) for c in range(channels)])
        for c in range(channels):
            lo_c[c] = max(lo, math.floor(math.ldexp(float(mins[c]), src.frac)))
            hi_c[c] = min(hi, math.ceil(math.ldexp(float(maxs[c]), src.frac)))
    return lo_c, hi_c


def read_batchnorm(gm: torch.fx.GraphModule, node: torch.fx.Node, bn, src, p: Plan, grids: dict):
    """A BatchNorm after a quantized layer, read together with the quantizer that follows it: brevitas computes the
    float32 affine map and rounds it onto the quantizer's grid, so each channel is a step function of the integer
    input. fxsplit evaluates brevitas on every input the channel can receive and finds a fixed-point scale and bias
    whose exact affine map, rounded by the quantizer's type, gives the same level for every one of them (hls4ml's
    BatchNormalization with that result type); none found: refused."""
    cls = type(bn).__name__
    where = f"{cls} {node.target!r}"
    users = list(node.users)
    if not isinstance(src, (Grid, Scaled)):
        raise _err(f"{where} normalizes {_describe(src, node.all_input_nodes[0])}: fxsplit reads a BatchNorm only "
                   "after a quantized layer", node, "put the BatchNorm after a QuantLinear / QuantConv")
    act_node = users[0] if len(users) == 1 and users[0].op == "call_module" else None
    act = gm.get_submodule(act_node.target) if act_node is not None else None
    if act is None or type(act).__name__ not in ACTS:
        raise _err(f"{where} is not followed by a brevitas quantizer: its float output is not on a grid", node,
                   "follow it with a QuantIdentity / QuantReLU / QuantHardTanh (brevitas' usual BatchNorm -> "
                   "quantizer pattern)")
    if not bn.track_running_stats or bn.running_mean is None:
        raise _err(f"{where} has no running statistics", node, "train it with track_running_stats=True")
    frozen_act, g_out, _ = layers.read_act(act_node, act)
    prod = node.all_input_nodes[0]
    prod = prod if prod.op == "call_module" and prod.name in p.frozen and len(prod.users) == 1 else None
    C = int(bn.num_features)
    if isinstance(src, Scaled) or frozen_act.float_scale is not None:
        return scaled_fold(gm, node, where, act_node, act, bn, src, p, grids, frozen_act, g_out, C, prod)
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
    if frozen_act.binary:
        return _binary_batchnorm(node, bn, act, act_node, frozen_act, alpha.numpy(), beta.numpy(),
                                 ks.numpy().astype(np.int64), valid, L, src, prod)
    found = _fit_affine(alpha.numpy(), beta.numpy(), ks.numpy().astype(np.int64), valid, L, src.frac, frozen_act)
    if found is None:
        raise _err(f"{where}: no fixed-point scale and bias up to {_BN_PRECISIONS[-1]} fractional bits reproduce "
                   "brevitas' float32 BatchNorm and its quantizer on every input", node,
                   "fold the BatchNorm into the layer's weights while training (or use a float-free threshold layer)")
    S, B, P = found
    frozen, sg, bg = _fold_layer(S, B, P, src.frac, frozen_act, (f"{where}'s scale", f"{where}'s bias"), node,
                                 "use fewer bits before the BatchNorm", f"{cls} {node.target}")
    info = {"layer": str(node.target), "kind": cls, "quantizer": f"with {type(act).__name__} {act_node.target}",
            "type": frozen.precision, "scale": f"{_fixed(sg)} ({P} fractional bits)", "bias": _fixed(bg),
            "checked_inputs": int(valid.sum())}
    return frozen, g_out, info, prod.name if prod is not None else None


def scaled_fold(gm, node, where: str, act_node, act, bn, src, p: Plan, grids: dict, frozen_act, g_out, channels: int,
                prod):
    """A quantizer (after a BatchNorm ``bn``, or directly: ``bn`` None) whose input or output carries a float scale:
    the input holds integers ``k`` (values on ``int_grid(src)``) standing for ``k * scale[c]``, the output the
    quantizer's levels (its float scale, or ``2**-frac``). brevitas evaluates ``act(bn(x))`` in float32 on
    ``x = float32(k * scale[c])``, the value it sees, for every ``k`` the channel can receive; fxsplit fits a
    fixed-point scale and bias per channel acting on ``k`` (hls4ml's BatchNormalization with the quantizer's type)
    that gives every one of those levels. Where none does (brevitas' float32 moved a threshold by one input), the
    fold nearest the real-number map is taken and the inputs where brevitas' level differs from it, by one level
    at most, counted (``info["fold_differs"]``; more than one level: refused). The result is checked on every input."""
    C = channels
    if frozen_act.binary:
        raise _err(f"{where}: a binary quantizer on a float-scaled tensor is not read yet", node,
                   "use a power-of-two weight scale before a binary quantizer")
    g = int_grid(src)
    sc = src.channel_scales(C) if isinstance(src, Scaled) else np.ones(C)
    lo_c, hi_c = _channel_bounds(gm, prod, p, g, C, grids)
    base = int(min(lo_c))
    span = int(max(hi_c)) - base + 1
    if span * C > MAX_SCALED_DOMAIN:
        raise _err(f"{where}: its input can take {span} values per channel, too many to check every one "
                   f"(fxsplit checks up to {MAX_SCALED_DOMAIN} inputs x channels)", node,
                   "use fewer bits before it (weights or activations)")
    ks = np.arange(span, dtype=np.int64) + base
    off = np.asarray(src.offset, dtype=np.float64) if isinstance(src, Scaled) and src.offset is not None else \
        np.zeros(C)                                          # the layer's float bias, folded here
    shape = node.meta["tensor_meta"].shape if "tensor_meta" in node.meta else None
    ndim = len(shape) if shape is not None else (4 if type(bn).__name__ == "BatchNorm2d" else 2)
    f = act if bn is None else (lambda t: act(bn(t)))
    L = np.empty((C, span), dtype=np.int32)                  # brevitas' level of every input k, per channel
    rows = max(1, CHUNK // C)
    for i in range(0, span, rows):                           # (every channel at once: the BatchNorm reads them all)
        kk = ks[i:i + rows]
        n = len(kk)
        x32 = torch.from_numpy(np.ldexp(kk.astype(np.float64), -g.frac)[:, None] * sc[None, :] +
                               off[None, :]).to(torch.float32)          # what brevitas sees
        levels = []
        with torch.no_grad():
            y = f(x32.reshape(n, C, *([1] * (ndim - 2))))
            levels.append(getattr(y, "value", y).reshape(n, C).to(torch.float64) / frozen_act.step)
            y = f(x32.T.contiguous().reshape(1, C, n, *([1] * max(ndim - 3, 0))))
            levels.append(getattr(y, "value", y).reshape(C, n).T.to(torch.float64) / frozen_act.step)
        if not torch.equal(levels[0], levels[1]):
            raise _err(f"{where}: brevitas' float32 arithmetic gives different results for the same input in two "
                       "memory layouts, so no design can equal it", node,
                       "fold the BatchNorm into the layer while training")
        r = torch.round(levels[0])
        if float((levels[0] - r).abs().max()) > 2.0 ** -10:
            raise FxsplitError(f"internal: {where}: the quantizer after it gave values off its grid",
                               module=str(node.target))
        L[:, i:i + n] = r.to(torch.int64).T.numpy()
    valid = np.zeros((C, span), dtype=bool)
    for c in range(C):
        valid[c, int(lo_c[c]) - base:int(hi_c[c]) - base + 1] = True
    if bn is not None:
        var = bn.running_var.detach().to(torch.float64)
        alpha = ((bn.weight.detach().to(torch.float64) if bn.affine else torch.ones(C, dtype=torch.float64)) /
                 torch.sqrt(var + bn.eps)).numpy()
        beta = ((bn.bias.detach().to(torch.float64) if bn.affine else torch.zeros(C, dtype=torch.float64)).numpy() -
                bn.running_mean.detach().to(torch.float64).numpy() * alpha)
    else:
        alpha, beta = np.ones(C), np.zeros(C)
    act_scale = frozen_act.float_scale if frozen_act.float_scale is not None else 1.0
    alpha_k, beta_k = alpha * sc / act_scale, (beta + alpha * off) / act_scale   # on k * 2**-frac, in levels
    found = _fit_affine(alpha_k, beta_k, ks, valid, L, g.frac, frozen_act)
    if found is not None:
        S, B, P = found
    else:
        S = None
        for P in reversed(_BN_PRECISIONS):
            if P + g.frac - frozen_act.frac >= 1 and (np.max(np.abs(ks)) * (np.max(np.abs(alpha_k)) + 1) +
                                                       np.max(np.abs(beta_k)) * 2.0 ** g.frac) * 2.0 ** P < 2.0 ** 52:
                S = np.round(alpha_k * 2.0 ** P).astype(np.int64)
                B = np.round(beta_k * 2.0 ** (P + g.frac)).astype(np.int64)
                break
        if S is None:
            raise _err(f"{where}: its scale and bias need more than {_BN_PRECISIONS[0]} fractional bits on inputs "
                       "this wide", node, "use fewer bits before it")
    sh = P + g.frac - frozen_act.frac
    expected = np.empty((C, span), dtype=np.int32)
    for c in range(C):
        expected[c] = _round_shift(ks * int(S[c]) + int(B[c]), sh, frozen_act.rounding).clip(
            frozen_act.qmin, frozen_act.qmax)
    differs = int(((expected != L) & valid).sum())
    if found is not None and differs:
        raise FxsplitError(f"internal: {where}: the fitted fold differs from brevitas' levels on {differs} inputs",
                           module=str(node.target), hint="please report this model")
    if np.any(np.abs(expected - L)[valid] > 1):
        raise _err(f"{where}: no fixed-point scale and bias up to {_BN_PRECISIONS[-1]} fractional bits reproduce "
                   "brevitas' float32 arithmetic and its quantizer within one level on every input", node,
                   "fold the BatchNorm into the layer's weights while training")
    source = f"{type(bn).__name__} {node.target}" if bn is not None else f"{type(act).__name__} {node.target}"
    frozen, sg, bg = _fold_layer(S, B, P, g.frac, frozen_act, (f"{where}'s scale", f"{where}'s bias"), node,
                                 "use fewer bits before it", source)
    check_fold(frozen, ks, valid, g.frac, expected, L, differs, where, node)
    checked = int(valid.sum())
    info = {"layer": str(node.target), "kind": type(bn).__name__ if bn is not None else type(act).__name__,
            "quantizer": (f"with {type(act).__name__} {act_node.target}" if bn is not None else
                          f"{type(act).__name__} on a float-scaled tensor") + (
                              f" (scale {frozen_act.float_scale!r})" if frozen_act.float_scale is not None else ""),
            "type": frozen.precision, "scale": f"{_fixed(sg)} ({P} fractional bits)", "bias": _fixed(bg),
            "checked_inputs": checked, "input_scale": "per channel" if len(set(sc.tolist())) > 1 else float(sc[0]),
            **({"folded_float_bias": True} if np.any(off != 0) else {}),
            "fold_differs": differs,
            "fold": ("brevitas' float32 levels reproduced on every input" if differs == 0 else
                     f"brevitas' float32 levels differ from the fixed-point fold on {differs} of {checked} inputs "
                     "(one level each)")}
    return frozen, g_out, info, prod.name if prod is not None else None


def _fold_layer(S, B, P: int, frac: int, act, labels: tuple[str, str], node, hint: str, source: str):
    """The fold's layer from integers ``S``, ``B`` per channel (scale ``S * 2**-P``, bias ``B * 2**-(P + frac)`` on
    inputs with ``frac`` fractional bits) and its quantizer ``act``: ``(FxsQuantBatchNorm, scale grid, bias grid)``."""
    from ..quant import FxsQuantBatchNorm
    scale = torch.tensor([math.ldexp(int(v), -P) for v in S], dtype=torch.float64)
    bias = torch.tensor([math.ldexp(int(v), -(P + frac)) for v in B], dtype=torch.float64)
    sg = exact_type(scale.numpy(), labels[0], node, hint)
    bg = exact_type(bias.numpy(), labels[1], node, hint)
    return FxsQuantBatchNorm(scale, bias, _fixed(sg), _fixed(bg), act, source), sg, bg


def fold_act(gm, node: torch.fx.Node, act, src, p: Plan, grids: dict, channels: int):
    """A quantizer reading a float-scaled tensor, or a float-scaled quantizer reading a fixed-point grid, with no
    BatchNorm before it: the fold of :func:`scaled_fold` with the identity in the BatchNorm's place."""
    frozen_act, g_out, _ = layers.read_act(node, act)
    prod = node.all_input_nodes[0]
    prod = prod if prod.op == "call_module" and prod.name in p.frozen and len(prod.users) == 1 else None
    where = f"{type(act).__name__} {node.target!r}"
    return scaled_fold(gm, node, where, node, act, None, src, p, grids, frozen_act, g_out, channels, prod)


def check_fold(frozen, ks: np.ndarray, valid: np.ndarray, frac: int, expected: np.ndarray, L: np.ndarray,
               differs: int, where: str, node) -> None:
    """The fold as built (``frozen``'s own arithmetic) on every input ``k`` of every channel: it must give the
    fixed-point levels ``expected``, which differ from brevitas' ``L`` on exactly ``differs`` inputs. Else raise."""
    C = expected.shape[0]
    bad = moved = 0
    rows = max(1, CHUNK // C)
    for i in range(0, len(ks), rows):
        kk = ks[i:i + rows]
        x = torch.from_numpy(np.ldexp(kk.astype(np.float64), -frac))[:, None].expand(len(kk), C)
        with torch.no_grad():
            got = frozen(x.contiguous()) * 2.0 ** frozen.frac
        got = torch.round(got).to(torch.int64).T.numpy()
        v = valid[:, i:i + rows]
        bad += int(((got != expected[:, i:i + rows]) & v).sum())
        moved += int(((got != L[:, i:i + rows]) & v).sum())
    if bad or moved != differs:
        raise FxsplitError(f"internal: {where}: the fold differs from its fixed-point levels on {bad} inputs and from "
                           f"brevitas' on {moved} (expected {differs})", module=str(node.target),
                           hint="please report this model")


def _sign_form(S, B, src_frac: int, act, channels: int, where: str, node, source: str, extra: dict):
    """The binary quantizer of ``k * S + B`` (integers; k the raw input at ``src_frac``): +scale where it is >= 0.
    hls4ml computes ``x * scale' + bias'`` with ``scale' = 2 S 2**(e + src_frac)``, ``bias' = (2 B + 1) 2**e``, i.e.
    ``(2 (k S + B) + 1) 2**e``, an odd multiple of ``2**e`` whatever ``k``: its type ``fixed<2,2+e,TRN,SAT_SYM>``
    (truncation exact, saturation at +-2**e) gives +2**e exactly where ``k S + B >= 0``, -2**e elsewhere."""
    from ..quant import FxsQuantBatchNorm
    e = -act.frac
    S = [int(v) for v in np.broadcast_to(np.asarray(S, dtype=object), (channels,))]
    B = [int(v) for v in np.broadcast_to(np.asarray(B, dtype=object), (channels,))]
    for c in range(channels):               # the narrowest equivalent integers: the sign of k S + B is kept
        g = math.gcd(S[c], B[c])
        if g > 1:
            S[c], B[c] = S[c] // g, B[c] // g
    scale = torch.tensor([math.ldexp(2 * v, e + src_frac) for v in S], dtype=torch.float64)
    bias = torch.tensor([math.ldexp(2 * v + 1, e) for v in B], dtype=torch.float64)
    if any(math.ldexp(float(a), -(e + src_frac) - 1) != b for a, b in zip(scale.tolist(), S)) or \
            any(math.ldexp(float(a), -e) != 2 * b + 1 for a, b in zip(bias.tolist(), B)):
        raise FxsplitError(f"internal: {where}: the sign form's coefficients are not exact", module=str(node.target))
    hint = "use fewer bits before the binary quantizer"
    sg = exact_type(scale.numpy(), f"{where}'s scale", node, hint)
    bg = exact_type(bias.numpy(), f"{where}'s bias", node, hint)
    frozen = FxsQuantBatchNorm(scale, bias, _fixed(sg), _fixed(bg), act, source)
    info = {"type": frozen.precision, "scale": _fixed(sg), "bias": _fixed(bg), "form": "binary sign", **extra}
    return frozen, info


def binary_sign(node: torch.fx.Node, act, src: Grid, channels: int):
    """A binary quantizer on values of grid ``src`` (raw ``k`` at ``src.frac``): the sign of ``k``, as
    :func:`_sign_form` with ``S = 1, B = 0`` (one channel value repeated: hls4ml's BatchNormalization)."""
    return _sign_form(1, 0, src.frac, act, channels, f"{act.source}", node, act.source, {})


def _binary_batchnorm(node, bn, act, act_node, frozen_act, alpha, beta, ks, valid, L, src, prod):
    """A BatchNorm before a binary quantizer: integers S, B per channel with ``k S + B >= 0`` exactly where brevitas'
    float32 BatchNorm gives a value >= 0 (its sign: +scale), on every input ``k`` the channel can receive."""
    cls = type(bn).__name__
    where = f"{cls} {node.target!r}"
    found = None
    for P in _BN_PRECISIONS:
        if (np.max(np.abs(ks)) * (np.max(np.abs(alpha)) + 1) + np.max(np.abs(beta)) * 2.0 ** src.frac
                ) * 2.0 ** P > 2.0 ** 61:
            continue                            # (int64 arithmetic below: never near overflow)
        S = np.round(alpha * 2.0 ** P).astype(np.int64)
        B = np.round(beta * 2.0 ** (P + src.frac)).astype(np.int64)
        ok = True
        for c in range(len(alpha)):
            if _signs_match(ks, S[c], B[c], valid[c], L[c]):
                continue
            for d in (1, -1, 2, -2, 3, -3):       # brevitas' float32 rounding put a value near 0 on the other side
                if _signs_match(ks, S[c], B[c] + d, valid[c], L[c]):
                    B[c] += d
                    break
            else:
                ok = False
                break
        if ok:
            found = S, B, P
            break
    if found is None:
        raise _err(f"{where}: no fixed-point scale and bias up to {_BN_PRECISIONS[-1]} fractional bits reproduce the "
                   "sign brevitas' float32 BatchNorm gives its binary quantizer on every input", node,
                   "fold the BatchNorm into the layer's weights while training (or use a float-free threshold layer)")
    S, B, P = found
    frozen, info = _sign_form(S, B, src.frac, frozen_act, len(alpha), where, node, f"{cls} {node.target}",
                              {"layer": str(node.target), "kind": cls,
                               "quantizer": f"with {type(act).__name__} {act_node.target} (binary)",
                               "checked_inputs": int(valid.sum()), "threshold_bits": P})
    info = {k: info[k] for k in ("layer", "kind", "quantizer", "type", "scale", "bias", "form", "checked_inputs",
                                 "threshold_bits")}
    g_out = Grid(2, 2 - frozen_act.frac, True)
    return frozen, g_out, info, prod.name if prod is not None else None


def _signs_match(ks, S, B, valid, target) -> bool:
    acc = ks[valid] * int(S) + int(B)
    return bool(np.array_equal(np.where(acc >= 0, 1, -1), target[valid]))


AFFINE_BITS = 24                     # significant bits of a float affine's coefficients (float32 holds 24)


def _round_significant(v: float, bits: int) -> float:
    if v == 0:
        return 0.0
    e = math.frexp(v)[1]
    return math.ldexp(round(math.ldexp(v, bits - e)), e - bits)


def read_tensor_norm(node: torch.fx.Node, mod, src):
    """brevitas_examples' TensorNorm, ``(x - mean) / sqrt(var + eps) * weight + bias`` in float32: the float output
    its models end with. fxsplit computes ``x * a + c`` exactly, with ``a`` and ``c`` rounded to float32's 24
    significant bits, into a type that holds every result: the design differs from brevitas by brevitas' own float32
    rounding and that of the two coefficients, and ``verify`` reports it (no bit-for-bit claim)."""
    from ..quant import FxsQuantAct, FxsQuantBatchNorm
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



# ---- a normalization of a model input, folded into its first quantizer

MAX_NORMALIZATION_DOMAIN = 2 ** 22   # values of the input type x channels a normalization fold is checked on


def _exact_levels(a: list, c: list, frac: int, ks: np.ndarray, act) -> np.ndarray:
    """Per channel, the level the quantizer ``act`` gives ``a[c] * k * 2**-frac + c[c]`` in exact arithmetic
    (``a``, ``c``: Fractions), for every raw input ``k``: (channels, len(ks)) integers."""
    from fractions import Fraction
    unit = Fraction(2) ** act.frac / (Fraction(act.float_scale) if act.float_scale is not None else 1)
    out = np.empty((len(a), len(ks)), dtype=np.int64)
    kk = ks.astype(object)
    for ch, (ac, cc) in enumerate(zip(a, c)):
        # v(k) = (A k + C) / D exactly, in levels: integers A, C, D (D > 0)
        A, C = ac * unit / Fraction(2) ** frac, cc * unit
        D = math.lcm(A.denominator, C.denominator)
        num = kk * (A.numerator * (D // A.denominator)) + C.numerator * (D // C.denominator)
        if act.activation == "relu":
            num = np.maximum(num, 0)
        q = num // D                                   # floor
        r = num - q * D
        if act.rounding == "TRN":
            lv = q
        elif act.rounding == "TRN_ZERO":
            lv = np.where((num < 0) & (r != 0), q + 1, q)
        else:                                          # RND_CONV: half to even (brevitas' torch.round)
            lv = q + ((2 * r > D) | ((2 * r == D) & (q % 2 == 1)))
        out[ch] = np.clip(lv.astype(np.int64), act.qmin, act.qmax)
    return out


def _level_bounds(lv: np.ndarray, sh: int, act) -> tuple[np.ndarray, np.ndarray]:
    """For each level, the integers ``acc`` that ``_round_shift(acc, sh)`` clipped to the quantizer's range sends
    to it: ``[lo, hi]`` (the clipped ends unbounded, as +-2**62)."""
    one, big = np.int64(1) << sh, np.int64(1) << 62
    if act.rounding == "TRN":
        lo, hi = lv * one, (lv + 1) * one - 1
    elif act.rounding == "TRN_ZERO":
        lo = np.where(lv > 0, lv * one, np.where(lv < 0, (lv - 1) * one + 1, -one + 1))
        hi = np.where(lv < 0, lv * one, np.where(lv > 0, (lv + 1) * one - 1, one - 1))
    else:                                               # RND_CONV: the half-way point goes to the even level
        half, odd = one >> 1, (lv % 2 != 0).astype(np.int64)
        lo, hi = lv * one - half + odd, lv * one + half - odd
    lo = np.where(lv <= act.qmin, -big, lo)
    hi = np.where(lv >= act.qmax, big, hi)
    return lo, hi


def _fit_intervals(alpha, beta, ks: np.ndarray, L: np.ndarray, frac: int, act):
    """Integers S, B per channel (as :func:`_fit_affine`) with quantize(k * S + B) == L[c, k] for every k, at the
    fewest fractional bits P: for each S near ``alpha * 2**P`` the B that fit form an interval, computed exactly
    (exact rounding ties of the target need S on the right side of ``alpha``, which rounding alpha alone misses).
    None if none is found."""
    for P in _BN_PRECISIONS:
        sh = P + frac - act.frac
        if sh < 1 or (np.max(np.abs(ks)) * (np.max(np.abs(alpha)) + 1) + np.max(np.abs(beta)) * 2.0 ** frac
                      ) * 2.0 ** P > 2.0 ** 60:
            continue
        S0 = np.round(alpha * 2.0 ** P).astype(np.int64)
        B0 = np.round(beta * 2.0 ** (P + frac)).astype(np.int64)
        S, B = S0.copy(), B0.copy()
        for c in range(len(alpha)):
            lo, hi = _level_bounds(L[c].astype(np.int64), sh, act)
            for d in sorted(range(-8, 9), key=lambda v: (abs(v), v)):
                kS = ks * (S0[c] + d)
                bmin, bmax = int(np.max(lo - kS)), int(np.min(hi - kS))
                if bmin <= bmax:
                    S[c], B[c] = S0[c] + d, min(max(int(B0[c]), bmin), bmax)
                    break
            else:
                break
        else:
            if all(_levels_match(ks, S[c], B[c], sh, np.ones(len(ks), dtype=bool), L[c], act)
                   for c in range(len(alpha))):
                return S, B, P
            raise FxsplitError("internal: a fold fitted by intervals does not give its levels")
    return None


def fold_normalization(gm: torch.fx.GraphModule, last: torch.fx.Node, aff, t, nodes: dict, act_node: torch.fx.Node,
                       act):
    """Float arithmetic on a model input whose scale is not a power of two (``(x - mean) / std``, per channel),
    read by the quantizer ``act``: folded into it. On every value ``k`` of the input's declared type ``t``, the
    quantizer's level of the chain's exact value (its operations on brevitas' float32 constants, in rational
    arithmetic: ``affine.Affine.per_channel``) is found; a fixed-point scale and bias per channel that give every one
    of those levels make an hls4ml BatchNormalization with the quantizer's type. brevitas computes the chain in
    float32: the decisions its rounding moves are counted over the same values and reported, never followed.
    Returns ``(fold, its output grid, report info)``; raises where no fold reproduces the exact levels."""
    from . import affine
    frozen_act, g_out, _ = layers.read_act(act_node, act)
    ops = ", ".join(aff.nodes)
    where = f"the normalization {ops} of model input {aff.inp!r}, folded into {type(act).__name__} {act_node.target!r}"
    if frozen_act.binary:
        raise _err(f"{where}: a binary quantizer after a normalization is not read", last,
                   "quantize the normalized input with a multi-bit quantizer first (a QuantIdentity)")
    shape = tuple(last.meta["tensor_meta"].shape) if "tensor_meta" in last.meta else None
    if shape is None or len(shape) < 2:
        raise _err(f"the operation {last.name!r} on the model input has no recorded shape", last,
                   "give the model a batch dimension")
    C = int(shape[1])
    lo, hi = t.raw_range()
    span = hi - lo + 1
    if span * C > MAX_NORMALIZATION_DOMAIN:
        raise _err(f"{where}: the input type {t} has {span} values per channel, too many to check every one "
                   f"(fxsplit checks up to {MAX_NORMALIZATION_DOMAIN} values x channels)", last,
                   "declare a narrower input type (config input_precision)")
    a, c = aff.per_channel(shape, last)
    ks = np.arange(lo, hi + 1, dtype=np.int64)
    L = _exact_levels(a, c, t.frac, ks, frozen_act)                       # what the design computes
    # brevitas' own levels: the chain in float32 and the quantizer, on every value of the type in every channel
    x = torch.from_numpy(np.ldexp(ks.astype(np.float64), -t.frac)).reshape(span, *([1] * (len(shape) - 1)))
    x = x.expand(span, C, *([1] * (len(shape) - 2))).to(torch.float32).contiguous()
    with torch.no_grad():
        y = act(affine.replay(gm, aff, nodes, x))
    lb = getattr(y, "value", y).to(torch.float64).reshape(span, C).T / frozen_act.step
    Lb = torch.round(lb)
    if float((lb - Lb).abs().max()) > 2.0 ** -10:
        raise FxsplitError(f"internal: {where}: the quantizer gave values off its grid", module=str(act_node.target))
    Lb = Lb.to(torch.int64).numpy()
    valid = np.ones((C, span), dtype=bool)
    act_scale = frozen_act.float_scale if frozen_act.float_scale is not None else 1.0
    alpha = np.array([float(v) for v in a]) / act_scale
    beta = np.array([float(v) for v in c]) / act_scale
    found = _fit_intervals(alpha, beta, ks, L, t.frac, frozen_act)
    if found is None:
        raise _err(f"{where}: no fixed-point scale and bias up to {_BN_PRECISIONS[-1]} fractional bits give the "
                   "quantizer's exact level on every value of the input type", last,
                   "declare a narrower input type (config input_precision), or normalize in the data pipeline")
    S, B, P = found
    moved = int((L != Lb).sum())
    frozen, sg, bg = _fold_layer(S, B, P, t.frac, frozen_act, (f"{where}: its scale", f"{where}: its bias"), last,
                                 "declare a narrower input type (config input_precision)",
                                 f"input normalization {ops}")
    check_fold(frozen, ks, valid, t.frac, L, Lb, moved, where, last)
    total = C * span
    info = {"layer": last.name, "kind": "input normalization",
            "quantizer": f"folded into {type(act).__name__} {act_node.target}", "operations": list(aff.nodes),
            "type": frozen.precision, "scale": f"{_fixed(sg)} ({P} fractional bits)", "bias": _fixed(bg),
            "checked_inputs": total, "decisions_moved": moved, "decisions_checked": total,
            **({"constants_rounded_to_float32": list(aff.rounded)} if aff.rounded else {}),
            "note": (f"brevitas rounds this arithmetic in float32: {moved} of {total} quantizer decisions (input value "
                     "x channel) differ from the exact ones, which the design computes" if moved else
                     f"brevitas' float32 arithmetic gives the exact quantizer decision on all {total} input values x "
                     "channels")}
    return frozen, g_out, info
