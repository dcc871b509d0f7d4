"""Float arithmetic on a model input before its first quantizer, computed exactly: ``2.0 * x - 1.0``,
``x * 2**k + c``, ``x / 2**k``, the subtraction of a constant tensor.

The chain of such operations is read as one affine map ``y = a * x + c`` (``a`` a signed power of two, ``c`` a
constant per channel) of a model input whose type the config declares (``input_precision``): on that type's values
``y`` lies on a grid derived exactly (the power of two shifts the binary point, the offset widens it as needed) and
is computed by one exact layer, an ``FxsQuantBatchNorm`` (hls4ml's BatchNormalization) holding ``a`` and ``c`` with
a result type that holds every value. brevitas computes the same chain in float32: where every intermediate value
fits in float32's 24 significant bits it is exact, and equal to the design's; where it does not, the quantizer
decisions that brevitas' rounding moves are counted over every value of the input type, and reported.

A scale that is not a power of two (a mean/std normalization) cannot be exact: refused, saying what to change.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch
import torch.fx

from ...errors import FxsplitError
from ...fixed import parse_type
from .grid import FLOAT32_BITS, Grid, _err, _fixed, _po2_exponent, exact_type

MAX_COUNT_DOMAIN = 2 ** 22           # input values over which moved quantizer decisions are counted

_MUL = {operator.mul, torch.mul, "mul", operator.imul}
_DIV = {operator.truediv, torch.div, torch.true_divide, "div", "true_divide", operator.itruediv}
_ADD = {operator.add, torch.add, "add", operator.iadd}
_SUB = {operator.sub, torch.sub, "sub", "subtract", torch.subtract, operator.isub}
_OPS = (_MUL, _DIV, _ADD, _SUB)


@dataclass
class Const:
    """A constant tensor of the graph (``torch.tensor(...)`` or a module attribute), as brevitas computes with it."""
    value: torch.Tensor


class Meta:
    """A tensor's device or dtype (read by ``torch.tensor(..., device=x.device)``): no value."""


@dataclass
class Affine:
    """``a * x + c`` of the model input ``inp``, read from the tensor of node ``start``."""
    inp: str
    start: str
    a: float = 1.0
    c: torch.Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.float64))
    nodes: list[str] = field(default_factory=list)        # the operations, in graph order
    consts: list[str] = field(default_factory=list)       # the nodes that made their constants
    steps: list[tuple[float, torch.Tensor]] = field(default_factory=list)    # (a, c) after each operation
    ops: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # (mul/div/add/sub/rsub, its float32 constant)
    normalizes: bool = False          # scaled by a constant that is not one power of two: folded into the quantizer
    rounded: list[str] = field(default_factory=list)     # operations whose constant brevitas rounds to float32

    def per_channel(self, shape: tuple[int, ...], node: torch.fx.Node) -> tuple[list[Fraction], list[Fraction]]:
        """The chain as exact rationals per channel (dimension 1 of ``shape``): ``y[c] = a[c] * x + c[c]``, each
        operation on the float32 constants brevitas computes with, without its rounding."""
        channels = int(shape[1])
        a = [Fraction(1)] * channels
        c = [Fraction(0)] * channels
        for kind, k in self.ops:
            kc = _per_channel(k, shape, node)
            if kind == "mul":
                a, c = [x * y for x, y in zip(a, kc)], [x * y for x, y in zip(c, kc)]
            elif kind == "div":
                a, c = [x / y for x, y in zip(a, kc)], [x / y for x, y in zip(c, kc)]
            elif kind == "add":
                c = [x + y for x, y in zip(c, kc)]
            elif kind == "sub":
                c = [x - y for x, y in zip(c, kc)]
            else:                                           # rsub: k - (a x + c)
                a, c = [-x for x in a], [y - x for x, y in zip(c, kc)]
        return a, c


def _per_channel(k: torch.Tensor, shape: tuple[int, ...], node: torch.fx.Node) -> list[Fraction]:
    """A constant broadcast over a tensor of ``shape``, one exact value per channel; raises where it varies inside a
    channel (hls4ml's BatchNormalization holds one scale and one bias per channel)."""
    if k.dim() > len(shape) - 1 and not (k.dim() == len(shape) and k.shape[0] == 1):
        raise _err(f"the constant of {node.name!r} has shape {tuple(k.shape)}, wider than the tensor", node,
                   "use one value per channel")
    full = torch.broadcast_to(k.reshape(k.shape[1:]) if k.dim() == len(shape) else k, shape[1:])
    ch = full.reshape(int(shape[1]), -1)
    if not torch.equal(ch, ch[:, :1].expand_as(ch)):
        raise _err(f"the constant of {node.name!r} varies inside a channel: hls4ml's BatchNormalization holds one "
                   "scale and one offset per channel", node, "use one value per channel")
    return [Fraction(float(v)) for v in ch[:, 0].tolist()]


def is_op(n: torch.fx.Node) -> bool:
    if n.op not in ("call_function", "call_method"):
        return False
    return any(n.target in ops for ops in _OPS)


def read_const(gm: torch.fx.GraphModule, n: torch.fx.Node, grid: dict):
    """The value of a constant-producing node (Const / Meta), or None if ``n`` is not one."""
    if n.op == "get_attr":
        v = gm
        for part in str(n.target).split("."):
            v = getattr(v, part)
        return Const(torch.as_tensor(v).detach()) if isinstance(v, torch.Tensor) else None
    if n.op == "call_function" and n.target is getattr and len(n.args) == 2 and n.args[1] in ("device", "dtype"):
        return Meta()
    if n.op == "call_function" and n.target in (torch.tensor, torch.as_tensor):
        if any(isinstance(a, torch.fx.Node) for a in n.args) or \
                any(isinstance(v, torch.fx.Node) and not isinstance(grid.get(v.name), Meta) for v in n.kwargs.values()):
            return None
        kw = {k: v for k, v in n.kwargs.items() if k == "dtype" and not isinstance(v, torch.fx.Node)}
        return Const(torch.tensor(*n.args, **kw))
    return None


def _constant(v, n: torch.fx.Node) -> tuple[torch.Tensor, bool]:
    """A constant operand as the float32 value brevitas computes with (torch rounds a Python number or a float64
    constant to the float32 tensor's type), and whether that rounded it."""
    t = v.value if isinstance(v, Const) else torch.tensor(float(v), dtype=torch.float64)
    t64 = t.detach().to(torch.float64)
    if t.dtype == torch.float64 and t.dim() >= 1:
        return t64, False          # torch promotes the float32 input to float64: the constant is used as it is
    t32 = t64.to(torch.float32).to(torch.float64)
    return t32, not torch.equal(t32, t64)


def check_constants(aff: Affine, nodes: dict) -> None:
    """An exact chain (one power-of-two scale) must compute with the constants as written: raises where brevitas
    rounds one to float32. A normalization is folded from the float32 constants brevitas computes with."""
    if aff.rounded and not aff.normalizes:
        n = nodes[aff.rounded[0]]
        raise _err(f"the operation {n.name!r} on the model input uses a constant that is not a float32 value: "
                   "brevitas rounds it", n, "use constants that float32 holds exactly (e.g. 1.0, 0.5)")


def step(n: torch.fx.Node, operands: list, start_of) -> Affine:
    """The affine after operation ``n``; ``operands``: each argument's grid entry (Affine, Const, a number, or the
    'input:<name>' of a float model input, which ``start_of`` turns into an identity Affine)."""
    ops = [start_of(o, a) if isinstance(o, str) and o.startswith("input:") else o
           for o, a in zip(operands, n.args)]
    if n.kwargs or len(ops) != 2:
        raise _err(f"the operation {n.name!r} on the model input has arguments fxsplit does not read "
                   f"({len(n.args)} arguments, keywords {sorted(n.kwargs)})", n,
                   "write it as 'x * k + c', 'x / k' or 'x - c' with constants k (a power of two) and c")
    tensors = [i for i, o in enumerate(ops) if isinstance(o, Affine)]
    if len(tensors) != 1 or not all(isinstance(o, (Affine, Const, int, float)) for o in ops):
        raise _err(f"the operation {n.name!r} combines the model input with another tensor: fxsplit computes an "
                   "affine map of a model input by constants exactly, nothing else before the first quantizer", n,
                   "compute it outside the model, or quantize the operands first")
    i = tensors[0]
    x, (k, rounded) = ops[i], _constant(ops[1 - i], n)
    a, c, normalizes = x.a, x.c, x.normalizes
    if n.target in _MUL or (n.target in _DIV and i == 0):
        kind = "div" if n.target in _DIV else "mul"
        e = _po2_exponent(abs(float(k.reshape(())))) if k.numel() == 1 else None
        if e is None or float(k.reshape(())) == 0.0:
            # a normalization ((x - mean) / std, per channel): no fixed-point type holds it exactly; it is folded
            # into the quantizer that reads it (fold_normalization), from the operations' exact rationals
            if torch.any(k == 0):
                raise _err(f"the operation {n.name!r} scales the model input by zero", n, "remove it")
            normalizes = True
        elif n.target in _DIV:
            a, c = a / float(k.reshape(())), c / float(k.reshape(()))     # exact: a power of two
        else:
            a, c = a * float(k.reshape(())), c * float(k.reshape(()))
    elif n.target in _DIV:
        raise _err(f"the operation {n.name!r} divides a constant by the model input: not an affine map", n,
                   "compute it outside the model")
    elif n.target in _ADD:
        kind = "add"
        if not normalizes:                          # (a normalization is read from ``ops`` alone)
            c = _exact_sum(c, k, n)
    else:                                           # subtraction: x - k, or k - x
        kind = "sub" if i == 0 else "rsub"
        if not normalizes:
            a, c = (a, _exact_sum(c, -k, n)) if i == 0 else (-a, _exact_sum(-c, k, n))
    return Affine(x.inp, x.start, a, c, [*x.nodes, n.name], list(x.consts), [*x.steps, (a, c)],
                  [*x.ops, (kind, k)], normalizes, [*x.rounded, *([n.name] if rounded else [])])


def _exact_sum(c: torch.Tensor, k: torch.Tensor, n: torch.fx.Node) -> torch.Tensor:
    s = c + k
    if not torch.equal(s - k, c.expand_as(s)) or not torch.equal(s - c, k.expand_as(s)):
        raise _err(f"the offsets of the operations up to {n.name!r} have no exact sum in float64", n,
                   "use offsets of similar magnitude")
    return s


def _grid_of(a: float, c: np.ndarray, t: Grid, lo: int, hi: int, node) -> tuple[Grid, int]:
    """The grid of ``a * x + c`` over x = raw * 2**-t.frac, raw in [lo, hi]; and its largest raw magnitude."""
    cg = exact_type(c, f"the offset of {node.name!r}", node, "use a shorter offset") if np.any(c != 0) else \
        Grid(1, 1, True)
    s = -_po2_exponent(abs(a))                        # a = +-2**-s
    frac = max(t.frac + s, cg.frac)
    craw = [int(round(math.ldexp(float(v), frac))) for v in c.ravel()]
    sign = 1 if a > 0 else -1
    ends = [sign * r << (frac - t.frac - s) for r in (lo, hi)]
    ys = [e + cr for cr in craw for e in ends]
    ymin, ymax = min(ys), max(ys)
    width = max(ymax.bit_length(), (-ymin - 1).bit_length() if ymin < 0 else 0) + 1
    return Grid(width, width - frac, True), max(abs(ymin), abs(ymax))


def _declared_type(aff: Affine, declared: str | None, nodes: dict):
    """The fixed-point type the config declares for the chain's model input; raises where there is none."""
    first = nodes[aff.nodes[0]]
    if declared is None:
        raise _err(f"the model input {aff.inp!r} goes through float arithmetic ({', '.join(aff.nodes)}) before its "
                   "first quantizer: fxsplit computes it exactly on the input's fixed-point type, which a float input "
                   "does not have", first,
                   "declare the input type: config input_precision, e.g. 'ufixed<8,0,TRN,SAT>' for pixels k/256 in "
                   "[0, 1) or 'ufixed<9,1,TRN,SAT>' for [0, 1] (values are converted into it)")
    try:
        return parse_type(declared)
    except ValueError:
        raise _err(f"the model input {aff.inp!r} has type {declared!r}, not a fixed-point type: the float arithmetic "
                   f"on it ({', '.join(aff.nodes)}) is not exact", first,
                   "declare a fixed-point input type (config input_precision, e.g. 'ufixed<8,0,TRN,SAT>')") from None


def materialize(gm: torch.fx.GraphModule, last: torch.fx.Node, aff: Affine, declared: str | None, nodes: dict):
    """The exact layer of an affine chain ending at ``last``: ``(FxsQuantBatchNorm, its Grid, report info,
    float32-exact flag)``. Raises where the model input's type is not declared."""
    from ..quant import FxsQuantAct, FxsQuantBatchNorm
    t = _declared_type(aff, declared, nodes)
    if aff.a == 1.0 and not torch.any(aff.c != 0):
        raise _err(f"the operations {', '.join(aff.nodes)} on the model input compute nothing (x * 1 + 0)", last,
                   "remove them")
    g_in = Grid(t.width, t.integer, bool(t.signed))
    lo, hi = t.raw_range()
    shape = tuple(last.meta["tensor_meta"].shape) if "tensor_meta" in last.meta else None
    if shape is None or len(shape) < 2:
        raise _err(f"the operation {last.name!r} on the model input has no recorded shape", last,
                   "give the model a batch dimension")
    channels = int(shape[1])
    c_full = torch.broadcast_to(aff.c, shape[1:]) if aff.c.dim() <= len(shape) - 1 else None
    if c_full is None:
        raise _err(f"the offset of {last.name!r} has shape {tuple(aff.c.shape)}, wider than the tensor", last,
                   "use one offset per channel")
    c_ch = c_full.reshape(channels, -1)
    if not torch.equal(c_ch, c_ch[:, :1].expand_as(c_ch)):
        raise _err(f"the offset of {last.name!r} varies inside a channel: hls4ml's BatchNormalization holds one "
                   "offset per channel", last, "use one offset per channel")
    c_vec = c_ch[:, 0].contiguous()
    where = f"the float arithmetic {', '.join(aff.nodes)} on model input {aff.inp!r}"
    hint = "declare a narrower input type (config input_precision)"
    out, _ = _grid_of(aff.a, c_vec.numpy(), g_in, lo, hi, last)
    if out.width > 64:
        raise _err(f"{where} needs a {out.width}-bit type to be held exactly", last, hint)
    # brevitas computes each operation in float32: exact where the input and every intermediate value fit in 24 bits
    f32 = max(abs(lo), abs(hi)) < 2 ** FLOAT32_BITS
    for a, c in aff.steps:
        cc = torch.broadcast_to(c, shape[1:]).reshape(channels, -1)[:, 0].numpy()
        _, top = _grid_of(a, cc, g_in, lo, hi, last)
        f32 = f32 and top < 2 ** FLOAT32_BITS
    sg = exact_type(np.array([aff.a]), f"{where}: its scale", last, hint)
    bg = exact_type(c_vec.numpy(), f"{where}: its offset", last, hint)
    exact = FxsQuantAct("linear", _fixed(out), out.frac, -(2 ** (out.width - 1)), 2 ** (out.width - 1) - 1, "TRN",
                        where)           # a type that holds every result: no rounding, no clamp
    frozen = FxsQuantBatchNorm(torch.full((channels,), aff.a, dtype=torch.float64), c_vec, _fixed(sg), _fixed(bg),
                               exact, f"input arithmetic {', '.join(aff.nodes)}")
    info = {"layer": last.name, "kind": "input affine", "quantizer": f"{aff.a!r} * {aff.inp} + offset",
            "operations": list(aff.nodes), "input_type": declared, "type": _fixed(out), "scale": _fixed(sg),
            "bias": _fixed(bg), "float32_exact": bool(f32)}
    return frozen, out, info, bool(f32), g_in, (lo, hi)


def replay(gm: torch.fx.GraphModule, aff: Affine, nodes: dict, x: torch.Tensor) -> torch.Tensor:
    """brevitas' own float32 computation of the chain on ``x`` (the value of the chain's start node): the graph's
    operations run one by one, as the model's forward runs them."""
    env = {aff.start: x}

    def val(a):
        if isinstance(a, torch.fx.Node):
            return env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(val(v) for v in a)
        return a
    order = [n for n in gm.graph.nodes if n.name in set(aff.consts) | set(aff.nodes)]
    for n in order:
        if n.op == "get_attr":
            v = gm
            for part in str(n.target).split("."):
                v = getattr(v, part)
            env[n.name] = v
        elif n.op == "call_method":
            self_, *rest = val(n.args)
            env[n.name] = getattr(self_, n.target)(*rest, **val(dict(n.kwargs)))
        else:
            env[n.name] = n.target(*val(n.args), **{k: val(v) for k, v in n.kwargs.items()})
    return env[order[-1].name]


def count_moved(gm, aff: Affine, nodes: dict, frozen, g_in: Grid, rng: tuple[int, int], act_mod, frozen_act,
                ndim: int) -> tuple[int | None, int]:
    """Over every value of the input type: how many quantizer decisions brevitas' float32 chain gives differently
    from the exact one (per channel). ``(None, n)`` where the type has more than MAX_COUNT_DOMAIN values."""
    lo, hi = rng
    n = hi - lo + 1
    if n > MAX_COUNT_DOMAIN or max(abs(lo), abs(hi)) >= 2 ** FLOAT32_BITS:
        return None, n
    raw = torch.arange(lo, hi + 1, dtype=torch.float64)
    x64 = (raw * 2.0 ** -g_in.frac).reshape(n, *([1] * (ndim - 1)))
    with torch.no_grad():
        y32 = replay(gm, aff, nodes, x64.to(torch.float32))
        q32 = act_mod(y32)
        q32 = getattr(q32, "value", q32).to(torch.float64)
        q64 = frozen_act(frozen(x64))
    q32, q64 = torch.broadcast_tensors(q32, q64)
    return int((q32 != q64).sum()), int(q64.numel())


def rewrite(gm: torch.fx.GraphModule, last: str, aff: Affine, module) -> None:
    """In ``gm`` (a frozen copy: the uncut graph or a partition), the chain's operations replaced by one call of
    ``module`` under the last operation's node name (its hls4ml config and ports are keyed by it)."""
    names = {n.name: n for n in gm.graph.nodes}
    chain = [*aff.nodes]
    present = [c for c in chain if c in names]
    if not present:
        return
    if len(present) != len(chain) or (aff.start not in names) or names[last].op == "placeholder":
        raise FxsplitError(f"a cut falls inside or right after the float arithmetic {', '.join(chain)} on model input "
                           f"{aff.inp!r}: fxsplit computes it as one layer with the quantizer reading it",
                           module=last, hint="cut after the first quantizer instead")
    old = names[last]
    target = f"fxs_input_affine_{last}"
    gm.add_submodule(target, module)
    with gm.graph.inserting_before(old):
        new = gm.graph.call_module(target, (names[aff.start],))
    new.meta = dict(old.meta)
    old.replace_all_uses_with(new)
    dead = {*chain, *aff.consts}
    for node in reversed(list(gm.graph.nodes)):            # users before what they read
        if node.name in dead and node is not new and not node.users:
            gm.graph.erase_node(node)
    left = [n.name for n in gm.graph.nodes if n.name in dead and n is not new]
    if left:
        raise FxsplitError(f"internal: the float arithmetic on model input {aff.inp!r} is read elsewhere too "
                           f"({', '.join(left)})", module=last, hint="please report this model")
    new.name = last
    gm.recompile()
