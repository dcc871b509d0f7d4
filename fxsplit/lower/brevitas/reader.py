"""The whole model read: calibration, the plan over the uncut graph, the reading checked against brevitas' own
forward, and each partition frozen with its brevitas layers replaced."""

from __future__ import annotations

import dataclasses
import operator

import torch
import torch.fx

from ...frontend.capture import eval_mode, node_source
from ...errors import FxsplitError
from ...fixed import parse_type
from . import affine, layers, norm
from .grid import (_describe, ACC_SUFFIX, ACTS, FLOAT32_BITS, GRID_MODULES, MAX_WIDTH, Grid, Plan, SAME_GRID_FUNCS,
                   SAME_GRID_MODULES, Scaled, _ADDS, _READ, _WEIGHTED, _err, _fixed, int_grid, uses_brevitas)


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


def plan(gm: torch.fx.GraphModule, input_shapes: list[tuple[int, ...]],
         declared: dict[str, str] | None = None) -> Plan | None:
    """Read every brevitas layer of the uncut graph ``gm`` exactly (see the module doc); None for a model
    without brevitas layers. ``declared``: the model inputs' types the config sets (where it sets one).
    Raises :class:`FxsplitError` naming the layer, its quantizer and what to change."""
    if not uses_brevitas(gm):
        return None
    with eval_mode(gm):
        return _plan(gm, input_shapes, dict(declared or {}))


def _plan(gm: torch.fx.GraphModule, input_shapes: list[tuple[int, ...]], declared: dict[str, str]) -> Plan:
    gen = torch.Generator().manual_seed(0)
    fixed_inputs = _fixed_inputs(gm, declared)
    examples = [torch.randn((64, *s), generator=gen) * 4 for s in input_shapes]
    for k, ph in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        if ph.name in fixed_inputs and k < len(examples):
            examples[k] = _declared_sample(declared[ph.name], input_shapes[k], 64)
    values, biases = _calibrate(gm, examples)
    p = Plan()
    grid: dict[str, object] = {}     # Grid: exact; "input:<name>": a model input, float; affine.Affine: float
    #                                  arithmetic on a model input; affine.Const / Meta: constants; None: float
    needs: dict[str, list[tuple[int, int, torch.fx.Node]]] = {}   # model input -> (frac, qmax + 1) of its quantizers
    reshapes: list[tuple[str, str]] = []       # (reshape, its source): its type is the source's (else: the default)
    signs: dict[str, int] = {}                 # tensors holding binary values +-2**-frac (a binary quantizer's)
    pending: list[tuple[torch.fx.Node, object, str]] = []   # binary quantizers of a float model input
    nodes = {n.name: n for n in gm.graph.nodes}
    f32_affine: dict[str, tuple] = {}          # affine node -> what counting its moved decisions needs
    folded: dict[str, str] = {}                # BatchNorm fold -> the quantizer it holds (float-scaled tensors)

    def record(node: torch.fx.Node, aff, frozen, info: dict) -> None:
        """The exact layer of the input arithmetic ending at ``node``: its types and its report entry."""
        p.affines[node.name] = (aff, frozen)
        p.precisions[node.name] = {"scale": frozen.scale_precision, "bias": frozen.bias_precision,
                                   "result": frozen.precision}
        p.input_precisions[aff.inp] = declared[aff.inp]
        p.quantizers.append(info)
        p.input_arithmetic.append(info)

    def settle(node: torch.fx.Node, user: torch.fx.Node) -> None:
        """Float arithmetic on a model input read by ``user``: its exact layer (a normalization: folded into
        ``user``, its quantizer)."""
        aff = grid[node.name]
        affine.check_constants(aff, nodes)
        if aff.normalizes:
            act = gm.get_submodule(user.target) if user.op == "call_module" else None
            if act is None or type(act).__name__ not in ACTS:
                raise _err(f"the float arithmetic {', '.join(aff.nodes)} on model input {aff.inp!r} scales it by a "
                           "constant that is not a power of two (a normalization): fxsplit folds that into the "
                           f"quantizer reading it, but {user.name!r} is not a brevitas quantizer", node,
                           "quantize the normalized input first (a QuantIdentity), or scale by a power of two")
            t = affine._declared_type(aff, declared.get(aff.inp), nodes)
            frozen, g, info = norm.fold_normalization(gm, node, aff, t, nodes, user, act)
            info["input_type"] = declared[aff.inp]
            record(node, aff, frozen, info)
            if info["decisions_moved"]:
                p.inexact_in_brevitas.append(node.name)
            folded[node.name] = user.name              # the quantizer holds the fold's levels already
            grid[node.name] = g
            return
        frozen, g, info, f32, g_in, rng = affine.materialize(gm, node, aff, declared.get(aff.inp), nodes)
        _check_affine(gm, aff, nodes, frozen, declared[aff.inp], f32, node)
        record(node, aff, frozen, info)
        if f32:
            info["decisions_moved"] = 0
            info["note"] = ("every value of the input type and every intermediate value fit in float32's 24 "
                            "significant bits: brevitas' float32 arithmetic is exact, no quantizer decision moves")
        else:
            f32_affine[node.name] = (aff, frozen, g_in, rng, info)
        grid[node.name] = g

    def count(node: torch.fx.Node, act_node: torch.fx.Node | None, frozen_act) -> None:
        """The quantizer decisions brevitas' float32 rounding of the input arithmetic at ``node`` moves."""
        if node.name not in f32_affine:
            return
        aff, frozen, g_in, rng, info = f32_affine.pop(node.name)
        moved, total = (None, None) if act_node is None else affine.count_moved(
            gm, aff, nodes, frozen, g_in, rng, gm.get_submodule(act_node.target), frozen_act,
            len(node.meta["tensor_meta"].shape))
        info["decisions_moved"] = moved
        if moved is None:
            info["note"] = ("brevitas rounds this arithmetic in float32 on some inputs of the declared type; the moved "
                            "quantizer decisions are not counted (" + (f"{total} input values" if total else
                                                                         "not read by a quantizer") + ")")
        else:
            info["decisions_checked"] = total
            info["note"] = (f"brevitas rounds this arithmetic in float32 on some inputs of the declared type: "
                            f"{moved} of {total} quantizer decisions (input value x channel) differ from the exact "
                            "ones")
        if moved != 0:
            p.inexact_in_brevitas.append(node.name)

    def type_of(name: str) -> str | None:
        """The exact type string of tensor ``name``: the one pinned for it, else its grid's (an 'auto' sum)."""
        t = p.precisions.get(name, {}).get("result")
        if t is not None and t != "auto":
            return t
        g = grid.get(name)
        if isinstance(g, (Grid, Scaled)):
            return _fixed(int_grid(g))
        if isinstance(g, str):
            return p.input_precisions.get(g[len("input:"):])
        return None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            grid[n.name] = f"input:{n.name}"
            if n.name in fixed_inputs:
                # a model input of a declared fixed-point type read by a quantized layer: the layer multiplies
                # values of that grid (the design's input type; brevitas, fed the same values, computes on them)
                t = parse_type(declared[n.name])
                grid[n.name] = Grid(t.width, t.integer, bool(t.signed))
                p.input_precisions[n.name] = declared[n.name]
            continue
        const = affine.read_const(gm, n, grid)
        if const is not None:
            grid[n.name] = const
            continue
        if n.op == "get_attr":
            raise _err("a brevitas model whose graph reads a non-tensor attribute: fxsplit reads brevitas layers, "
                       "reshapes and dropout only (yet)", n, "compute constants in the layers' quantizers")
        srcs = [a for a in n.all_input_nodes]
        operands = [grid.get(a.name) if isinstance(a, torch.fx.Node) else a for a in n.args]
        if affine.is_op(n) and any(isinstance(o, affine.Affine) or (isinstance(o, str) and o.startswith("input:"))
                                   for o in operands):
            for a in srcs:
                if isinstance(grid.get(a.name), affine.Affine) and len(a.users) != 1:
                    raise _err(f"the float arithmetic on the model input at {a.name!r} is read by {len(a.users)} "
                               "operations: fxsplit computes one chain of operations on a model input", a,
                               "compute the arithmetic once, before its one consumer")
            grid[n.name] = affine.step(n, operands, lambda o, arg: affine.Affine(o[len("input:"):], arg.name))
            if grid[n.name].consts is not None:
                grid[n.name].consts += [a.name for a in srcs if isinstance(grid.get(a.name), affine.Const)]
                grid[n.name].consts += [v.name for a in srcs if isinstance(grid.get(a.name), affine.Const)
                                        for v in a.all_input_nodes if isinstance(grid.get(v.name), affine.Meta)]
            continue
        for a in srcs:
            if isinstance(grid.get(a.name), affine.Affine):
                settle(a, n)
        if n.op == "output":
            for a in srcs:
                count(a, None, None)
                if isinstance(grid.get(a.name), Scaled):
                    _scale_output(a, grid[a.name], p, type_of(a.name))
            continue
        src = grid.get(srcs[0].name) if srcs else None
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            cls = type(m).__name__
            if cls in ACTS:
                frozen, g, info = layers.read_act(n, m)
                if cls == "QuantHardTanh" and frozen.activation != "linear":
                    raise _err(f"QuantHardTanh {n.target!r} applies an activation fxsplit cannot read", n,
                               "use QuantIdentity")
                count(srcs[0], n if frozen.float_scale is None else None, frozen)
                if folded.get(srcs[0].name) == n.name:
                    # the BatchNorm before it gave its levels already (a fold on a float-scaled tensor)
                    p.frozen[n.name] = frozen
                    p.precisions[n.name] = {"result": frozen.precision}
                    p.quantizers.append(info)
                    if frozen.float_scale is not None:
                        p.scaled[n.name] = {"kind": "levels", "act": frozen}
                    grid[n.name] = g
                    continue
                if frozen.float_scale is not None or isinstance(src, Scaled):
                    if frozen.binary or not isinstance(src, (Grid, Scaled)):
                        raise _err(f"{cls} {n.target!r} has a float scale (or reads a float-scaled tensor) and reads "
                                   f"{'a binary value' if frozen.binary else _describe(src, srcs[0])}: fxsplit "
                                   "folds such a quantizer into a fixed-point scale and bias on a fixed-point input "
                                   "only", n,
                                   "quantize the model input with a power-of-two quantizer (Int8ActPerTensorFixedPoint)"
                                   ", or let the first QuantLinear / QuantConv read the model input of a declared "
                                   "type (config input_precision='ufixed<8,0,TRN,SAT>')" if isinstance(src, str) else
                                   "put a quantized layer before it")
                    bnf, g, finfo, prod = norm.fold_act(gm, n, m, src, p, grid, _channels(n))
                    info.update({k: v for k, v in finfo.items() if k not in ("layer", "kind")})
                    p.frozen[n.name] = bnf
                    p.precisions[n.name] = {"scale": bnf.scale_precision, "bias": bnf.bias_precision,
                                            "result": bnf.precision}
                    if prod is not None:     # (no BatchNorm fusion into the layer's weights: an explicit result type)
                        p.precisions[prod]["result"] = _fixed(int_grid(src))
                    p.quantizers.append(info)
                    p.scaled[n.name] = {"kind": "fold", "info": info, "prod": prod, "in": src, "act": act_of(bnf, g)}
                    grid[n.name] = g
                    continue
                if isinstance(src, str):
                    needs.setdefault(src[len("input:"):], []).append((frozen.frac, frozen.qmax + 1, n))
                p.quantizers.append(info)
                grid[n.name] = g
                if frozen.binary:
                    signs[n.name] = frozen.frac
                    if not isinstance(src, (Grid, str)):
                        raise _err(f"the binary quantizer {n.target!r} reads {_describe(src, srcs[0])}: fxsplit "
                                   "computes its sign exactly on a fixed-point grid or a model input only", n,
                                   "put a BatchNorm after a quantized layer before it, or quantize its input first")
                    if isinstance(src, str):
                        pending.append((n, frozen, src[len("input:"):]))
                        continue
                    if isinstance(src, Grid) and signs.get(srcs[0].name) != frozen.frac:
                        # the sign of values that are not binary yet: an exact affine map and a saturating type
                        bnf, binfo = norm.binary_sign(n, frozen, src, _channels(n))
                        info.update(binfo)
                        p.frozen[n.name] = bnf
                        p.precisions[n.name] = {"scale": bnf.scale_precision, "bias": bnf.bias_precision,
                                                "result": bnf.precision}
                        continue
                p.frozen[n.name] = frozen
                p.precisions[n.name] = {"result": frozen.precision}
                continue
            if cls in _WEIGHTED:
                _no_offset(n, src, srcs[0], f"{cls} {n.target!r}")
                if not isinstance(src, (Grid, Scaled)):
                    model_input = isinstance(src, str)
                    raise _err(f"the input of {cls} {n.target!r} is {_describe(src, srcs[0])}: brevitas "
                               "multiplies float values there, which no fixed-point type holds exactly", n,
                               "quantize its input first (a QuantIdentity, or return_quant_tensor=True from a "
                               "quantizer layer before it)" + (
                                   "; or, where the model input already holds fixed-point values (8-bit pixels "
                                   "k/256, say), declare its type: config input_precision='ufixed<8,0,TRN,SAT>'"
                                   if model_input else ""))
                frozen, g, info = layers.read_weighted(n, m, src, biases.get(n.name))
                p.frozen[n.name] = frozen
                prec = {"weight": frozen.weight_precision, "accum": "auto", "result": "auto"}
                if frozen.bias_precision is not None:
                    prec["bias"] = frozen.bias_precision
                p.precisions[n.name] = prec
                p.quantizers.append(info)
                if isinstance(g, Scaled):
                    # an exact integer accumulator; brevitas' float32 products of float scales are rounded
                    prec["result"] = _fixed(g.grid)
                    p.inexact_in_brevitas.append(str(n.target))
                    p.scaled[n.name] = {"kind": "weighted", "in": src, "out": g}
                elif g.width > FLOAT32_BITS:
                    p.inexact_in_brevitas.append(str(n.target))
                grid[n.name] = g
                continue
            if cls == "TensorNorm":
                _no_offset(n, src, srcs[0], f"TensorNorm {n.target!r}")
                if isinstance(src, Scaled):
                    raise _err(f"TensorNorm {n.target!r} normalizes a float-scaled tensor: not read yet", n,
                               "quantize its input with a power-of-two quantizer first")
                frozen, g, info = norm.read_tensor_norm(n, m, src)
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
                frozen, g, info, prod = norm.read_batchnorm(gm, n, m, src, p, grid)
                if info.get("form") == "binary sign":
                    signs[n.name] = frozen.frac
                p.frozen[n.name] = frozen
                p.precisions[n.name] = {"scale": frozen.scale_precision, "bias": frozen.bias_precision,
                                        "result": frozen.precision}
                if prod is not None:
                    # an explicit result type: hls4ml's FuseBatchNormalization would otherwise fold this BatchNorm
                    # into the layer's quantized weights (rounding them)
                    p.precisions[prod]["result"] = _fixed(int_grid(src))
                if "fold_differs" in info:           # a fold on a float-scaled tensor (or quantizer)
                    user = next(iter(n.users))
                    folded[n.name] = user.name
                    p.scaled[n.name] = {"kind": "fold", "info": info, "prod": prod, "in": src,
                                        "act": act_of(frozen, g), "act_node": user.name}
                p.quantizers.append(info)
                grid[n.name] = g
                continue
            if cls == "TruncAvgPool2d":
                _no_offset(n, src, srcs[0], f"{cls} {n.target!r}")
                frozen, g, info = layers.read_trunc_avg_pool(n, m, src, values.get(srcs[0].name), values.get(n.name))
                p.frozen[n.name] = frozen
                p.precisions[n.name] = {"accum": frozen.accum_precision, "result": frozen.precision}
                p.quantizers.append(info)
                p.scaled[n.name] = {"kind": "pool", "in": src, "out": g, "info": info}
                grid[n.name] = g
                continue
            if cls in SAME_GRID_MODULES or cls in GRID_MODULES:
                _no_offset(n, src, srcs[0], f"{cls} {n.target!r}")
            if cls in SAME_GRID_MODULES or cls in ("MaxPool1d", "MaxPool2d"):
                if srcs[0].name in signs:         # (the maximum of binary values is binary)
                    signs[n.name] = signs[srcs[0].name]
            if cls in SAME_GRID_MODULES:
                if cls == "Flatten":
                    _keep_scale(n, src)
                grid[n.name] = src
                if cls == "Flatten":
                    reshapes.append((n.name, srcs[0].name))
                continue
            if cls in GRID_MODULES and isinstance(src, (Grid, Scaled)):
                # a max (pooling) or a ReLU of values on a grid stays on it: the type is the input's (hls4ml's own
                # would be the default precision)
                p.precisions[n.name] = {"result": type_of(srcs[0].name)}
                grid[n.name] = src
                continue
            raise _err(f"{cls} {n.target!r} in a brevitas model: fxsplit reads {_READ} exactly (float layers such "
                       "as nn.AvgPool2d: not yet)", n, "keep this layer out of the model you compile, "
                                                                     "or replace it with one of those")
        name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        if name in SAME_GRID_FUNCS and len(srcs) == 1:
            _no_offset(n, src, srcs[0], f"{name} {n.name!r}")
            if name != "contiguous":
                _keep_scale(n, src)
            if srcs[0].name in signs:
                signs[n.name] = signs[srcs[0].name]
            grid[n.name] = src
            reshapes.append((n.name, srcs[0].name))
            continue
        if n.target in _ADDS and len(srcs) == 2 and len(n.args) == 2 and not n.kwargs:
            a, b = (grid.get(x.name) for x in srcs)
            for x in srcs:
                _no_offset(n, grid.get(x.name), x, f"the addition {n.name!r}")
            if isinstance(a, Scaled) or isinstance(b, Scaled):
                if not (isinstance(a, Scaled) and isinstance(b, Scaled) and a.per_tensor and b.per_tensor and
                        a.scale[0] == b.scale[0]):
                    what = [f"{x.name!r} ({_scale_text(g)})" for x, g in zip(srcs, (a, b))]
                    raise _err(f"the addition {n.name!r} adds {what[0]} and {what[1]}: fxsplit adds float-scaled "
                               "tensors exactly only where both carry the same scale per tensor", n,
                               "pass both operands through one shared quantizer (the same QuantIdentity / QuantReLU "
                               "module), so that they share its scale")
                ga, gb = a.grid, b.grid
                frac, integer = max(ga.frac, gb.frac), max(ga.integer, gb.integer) + 1
                p.precisions[n.name] = {"result": "auto"}
                grid[n.name] = Scaled(Grid(integer + frac, integer, True), a.scale)
                # brevitas adds the float32 products level x scale, each rounded: not the exact sum's value
                p.inexact_in_brevitas.append(n.name)
                continue
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
    for name in list(f32_affine):         # input arithmetic read by no quantizer, where brevitas rounds it
        count(nodes[name], None, None)
    for inp, qs in needs.items():
        frac = max(f for f, _, _ in qs) + FLOAT32_BITS
        integer = max(int(top).bit_length() - f for f, top, _ in qs) + 1
        p.input_precisions[inp] = f"fixed<{integer + frac},{integer},TRN,SAT>"
    for n, frozen, inp in pending:            # a binary quantizer of a float model input, on the input's type
        t = parse_type(p.input_precisions[inp])
        bnf, binfo = norm.binary_sign(n, frozen, Grid(t.width, t.integer, bool(t.signed)), _channels(n))
        next(q for q in p.quantizers if q["layer"] == str(n.target)).update(binfo)
        p.frozen[n.name] = bnf
        p.precisions[n.name] = {"scale": bnf.scale_precision, "bias": bnf.bias_precision, "result": bnf.precision}
    for name, src in reshapes:            # (in graph order: a reshape of a reshape finds its source's type set)
        t = type_of(src)
        if t is not None:
            p.precisions[name] = {"result": t}
    _check_reading(gm, p, values)
    _check_outputs(gm, p, values)
    for name, mod in p.output_scales.items():       # the producer is renamed in the frozen graphs (scale_output)
        p.precisions[name + ACC_SUFFIX] = p.precisions.pop(name)
        p.precisions[name] = {"scale": mod.scale_precision, "bias": mod.bias_precision, "result": mod.precision}
    p.scales = {name: g.scale for name, g in grid.items() if isinstance(g, Scaled) and name not in p.output_scales}
    return p


def act_of(bnf, g) -> tuple[float, int]:
    """(the value of one level, its frac) of a fold's output: to read brevitas' quantizer values as levels."""
    return (g.scale[0] if isinstance(g, Scaled) else 2.0 ** -bnf.frac), bnf.frac


def _scale_text(g) -> str:
    if isinstance(g, Scaled):
        return f"scale {g.scale[0]!r}" if g.per_tensor else f"a float scale per channel ({len(g.scale)})"
    if isinstance(g, Grid):
        return f"fixed-point, step 2**{-g.frac}"
    return "float"


def _no_offset(n: torch.fx.Node, src, prod: torch.fx.Node, what: str) -> None:
    """A float bias on a float-scaled accumulator is folded only by a BatchNorm / quantizer right after its layer."""
    if isinstance(src, Scaled) and src.offset is not None:
        raise _err(f"{prod.target if prod.op == 'call_module' else prod.name!r} adds a float bias to an accumulator of "
                   "integers times a float scale: it is not a multiple of that scale, so no integer accumulator adds "
                   f"it exactly, and {what} reads it (fxsplit folds such a bias only into a BatchNorm and quantizer, "
                   "or a quantizer, right after the layer)", prod,
                   "quantize the bias to the accumulator's scale: bias_quant=Int32Bias (or Int16Bias), or bias=False")


def _keep_scale(n: torch.fx.Node, src) -> None:
    """A reshape keeps a float scale per tensor; one per channel would become one per feature: refused."""
    if isinstance(src, Scaled) and not src.per_tensor:
        raise _err(f"{n.name!r} reshapes a tensor with a float scale per channel ({len(src.scale)} scales): fxsplit "
                   "carries a scale per tensor or per channel, not per feature", n,
                   "quantize the tensor before the reshape (a QuantReLU / QuantIdentity: one scale per tensor)")


def _scale_output(node: torch.fx.Node, g: Scaled, p: Plan, producer_type: str | None) -> None:
    """A float-scaled model output: its integers times the scale, computed exactly in fixed point (an
    ``FxsQuantBatchNorm`` holding the float32 scales exactly, bias 0, a result type holding every product)."""
    from ..quant import FxsQuantAct, FxsQuantBatchNorm
    import numpy as np
    from .grid import exact_type
    if len(node.users) != 1:
        raise _err(f"{node.name!r} is a model output with a float scale and is read inside the model too: fxsplit "
                   "multiplies a float-scaled model output by its scale at the output only", node,
                   "return a quantized copy (a QuantIdentity after it), or compute the output once")
    C = _channels(node)
    sc = g.channel_scales(C)
    hint = "use fewer bits before the output"
    sg = exact_type(sc, f"the scale of model output {node.name!r}", node, hint)
    frac, integer = g.grid.frac + sg.frac, g.grid.integer + sg.integer
    off = np.zeros(C) if g.offset is None else np.asarray(g.offset, dtype=np.float64)   # a float bias: float32 values
    bg = exact_type(off, f"the float bias of model output {node.name!r}", node, hint)
    if g.offset is not None:
        frac, integer = max(frac, bg.frac), max(integer, bg.integer) + 1
    out = Grid(integer + frac, integer, True)
    if out.width > 2 * MAX_WIDTH:
        raise _err(f"model output {node.name!r} times its float scale needs a {out.width}-bit type to be exact "
                   f"(fxsplit allows {2 * MAX_WIDTH})", node, hint)
    where = f"model output {node.name} times its float scale"
    exact = FxsQuantAct("linear", _fixed(out), out.frac, -(2 ** (out.width - 1)), 2 ** (out.width - 1) - 1, "TRN",
                        where)                        # a type that holds every product: no rounding, no clamp
    mod = FxsQuantBatchNorm(torch.tensor(sc, dtype=torch.float64), torch.tensor(off, dtype=torch.float64), _fixed(sg),
                            _fixed(bg), exact, where)
    p.output_scales[node.name] = mod
    p.scaled[node.name + ":output"] = {"kind": "output", "node": node.name, "module": mod, "in": g}
    p.inexact_in_brevitas.append(f"{node.name} (output x scale)")
    p.quantizers.append({"layer": node.name, "kind": "output scale", "quantizer": "(exact product)",
                         "type": _fixed(out), "scale": _fixed(sg), "input_type": producer_type,
                         **({"bias": f"{_fixed(bg)} (the layer's float bias)"} if g.offset is not None else {}),
                         "note": "the model output is its integers times the float scale, exactly; brevitas rounds "
                                 "the product to float32"})




def _fixed_inputs(gm: torch.fx.GraphModule, declared: dict[str, str]) -> set[str]:
    """The model inputs of a declared type that a QuantLinear / QuantConv reads directly."""
    out = set()
    for n in gm.graph.nodes:
        if n.op == "placeholder" and n.name in declared and any(
                u.op == "call_module" and type(gm.get_submodule(u.target)).__name__ in _WEIGHTED for u in n.users):
            out.add(n.name)
    return out


def _declared_sample(declared: str, shape, n: int) -> torch.Tensor:
    """``n`` random samples of the declared type (the first all at its minimum, the second at its maximum), as the
    float32 values brevitas is fed (refused where the type has more significant bits than float32 holds)."""
    t = parse_type(declared)
    if t.width > FLOAT32_BITS:
        raise FxsplitError(f"the declared input type {declared} has {t.width} bits: brevitas, fed float32 values, "
                           "would not see them exactly", hint=f"declare an input type of at most {FLOAT32_BITS} bits")
    lo, hi = t.raw_range()
    gen = torch.Generator().manual_seed(2)
    raw = torch.randint(lo, hi + 1, (n, *shape), generator=gen, dtype=torch.int64)
    raw[0], raw[1] = lo, hi
    return (raw.to(torch.float64) * 2.0 ** -t.frac).to(torch.float32)


def _check_reading(gm: torch.fx.GraphModule, p: Plan, values: dict) -> None:
    """Every exact layer, fed brevitas' own input from the calibration batch, must give brevitas' own output bit for
    bit (a QuantLinear only where brevitas' float32 sum is exact). A difference means fxsplit read a quantizer
    wrongly: raise, never build on it."""
    inexact = set(p.inexact_in_brevitas)
    for n in gm.graph.nodes:
        mod = p.frozen.get(n.name)
        if mod is not None and n.name in p.scaled:
            _check_scaled(gm, n, mod, p, values)
            continue
        if mod is None or str(n.target) in inexact:
            continue
        inp = values[n.all_input_nodes[0].name]
        own = values
        with_act = type(gm.get_submodule(n.target)).__name__ in ("BatchNorm1d", "BatchNorm2d")
        if n.all_input_nodes[0].name in p.affines:
            # the calibration batch is float; the design reads the input arithmetic's exact values: brevitas' layer
            # fed those (the declared input type's random values through the exact arithmetic, float32-exact ones)
            aff, am = p.affines[n.all_input_nodes[0].name]
            y = am(_grid_sample(p.input_precisions[aff.inp], n.all_input_nodes[0], aff))
            y = y[(y.to(torch.float32).to(torch.float64) == y).reshape(y.shape[0], -1).all(1)]
            with torch.no_grad():
                own = {**values, n.name: gm.get_submodule(n.target)(y.to(torch.float32))}
                if with_act:
                    user = next(iter(n.users))
                    own[user.name] = gm.get_submodule(user.target)(own[n.name])
            inp = y
        with torch.no_grad():
            got = mod(getattr(inp, "value", inp).detach())
        out = own[next(iter(n.users)).name] if with_act else own[n.name]
        ref = getattr(out, "value", out).detach().to(torch.float64)        # (a BatchNorm: with its quantizer)
        if ref.shape != got.shape or not torch.equal(ref, got):
            bad = int((ref != got).sum()) if ref.shape == got.shape else -1
            raise FxsplitError(f"internal: fxsplit's exact reading of {mod.source} differs from brevitas' own output "
                               f"on a random batch ({bad} elements): its quantizer holds something fxsplit does not "
                               "read", module=str(n.target), source=node_source(n),
                               hint="please report this model; meanwhile compile without this layer")


def _check_outputs(gm: torch.fx.GraphModule, p: Plan, values: dict) -> None:
    """Each float-scaled model output's exact product against brevitas' float32 output (its rounding apart)."""
    for e in p.scaled.values():
        if e["kind"] != "output":
            continue
        n = next(x for x in gm.graph.nodes if x.name == e["node"])
        with torch.no_grad():
            # (brevitas' float32 sum, rounded to the nearest integers: the product is compared up to its rounding)
            got = e["module"](_units(values[n.name], e["in"], n.name, n, strict=False))
        ref = torch.as_tensor(getattr(values[n.name], "value", values[n.name])).detach().to(torch.float64)
        if got.shape != ref.shape or float((got - ref).abs().max()) > 2.0 ** -12 * max(float(ref.abs().max()), 1e-30):
            raise FxsplitError(f"internal: the exact product of model output {n.name!r} and its float scale differs "
                               "from brevitas' output", module=n.name, source=node_source(n),
                               hint="please report this model")


def _units(v, g, what: str, node: torch.fx.Node, strict: bool = True) -> torch.Tensor:
    """brevitas' values of a tensor as the design holds them: a Grid's values as they are; a Scaled tensor's
    values divided by its scale, which must lie on its grid (brevitas rounds level x scale to float32: the nearest
    point of the grid is the level)."""
    v = torch.as_tensor(getattr(v, "value", v)).detach().to(torch.float64)
    if not isinstance(g, Scaled):
        return v
    shape = (1, -1) + (1,) * (v.dim() - 2)
    sc = torch.from_numpy(g.channel_scales(v.shape[1])).reshape(shape)
    if g.offset is not None:                        # (a float bias of the layer: brevitas added it in float32)
        v = v - torch.tensor(g.offset, dtype=torch.float64).reshape(shape)
    u = v / sc * 2.0 ** g.grid.frac
    r = torch.round(u)
    if strict and float((u - r).abs().max()) > 2.0 ** -6:
        raise FxsplitError(f"internal: brevitas' values of {what} are not integers times its float scale",
                           module=node.name, source=node_source(node), hint="please report this model")
    return r * 2.0 ** -g.grid.frac


def _check_scaled(gm: torch.fx.GraphModule, n: torch.fx.Node, mod, p: Plan, values: dict) -> None:
    """A layer read on a float-scaled tensor, fed brevitas' own input from the calibration batch. A layer with float
    weight scales: its exact integers times the scale must equal brevitas' float32 sum up to float32's rounding. A
    fold (quantizer, or BatchNorm and quantizer): the exact reading of the accumulator (from brevitas' input
    levels through the layer's integer weights) and the fold gives levels that differ from brevitas' own only where
    brevitas' float32 arithmetic moved a decision, by one level: counted into the layer's report entry
    (``decisions_differing``), the layer then named in ``Plan.inexact_in_brevitas``. Anything else: raise."""
    e = p.scaled[n.name]
    kind = e["kind"]
    src = n.all_input_nodes[0]

    def fail(what: str):
        raise FxsplitError(f"internal: fxsplit's exact reading of {mod.source} differs from brevitas' own output on a "
                           f"random batch ({what}): its quantizer holds something fxsplit does not read",
                           module=str(n.target), source=node_source(n),
                           hint="please report this model; meanwhile compile without this layer")
    with torch.no_grad():
        if kind == "weighted":
            got = mod(_units(values[src.name], e["in"], src.name, n))
            ref = torch.as_tensor(getattr(values[n.name], "value", values[n.name])).detach().to(torch.float64)
            sc = torch.from_numpy(e["out"].channel_scales(got.shape[1])).reshape((1, -1) + (1,) * (got.dim() - 2))
            tol = 2.0 ** -12 * max(float(ref.abs().max()), 1e-30)
            off = e["out"].offset
            val = got * sc + (0.0 if off is None else torch.tensor(off, dtype=torch.float64).reshape(sc.shape))
            if got.shape != ref.shape or float((val - ref).abs().max()) > tol:
                fail("its exact sum times the scale is not brevitas' float32 sum")
            return
        if kind == "pool":
            # brevitas' output levels, from its own input levels: exact (its float32 sums of a few levels are)
            got = mod(_units(values[src.name], e["in"], src.name, n))
            ref = _units(values[n.name], e["out"], n.name, n)
            if got.shape != ref.shape or not torch.equal(got, ref):
                fail(f"{int((got != ref).sum()) if got.shape == ref.shape else -1} elements")
            e["info"].update(decisions_differing=0, decisions_checked=int(ref.numel()))
            return
        if kind == "levels":
            step = mod.step
            out = values[n.name]
            ref = torch.as_tensor(getattr(out, "value", out)).detach().to(torch.float64) / step
            lv = torch.round(ref)
            if float((ref - lv).abs().max()) > 2.0 ** -6 or not torch.equal(mod(lv), lv):
                fail("its levels")
            return
        # a fold: the accumulator from brevitas' input levels, exactly
        prod = e["prod"]
        if prod is not None:
            pn = next(x for x in gm.graph.nodes if x.name == prod)
            pin = pn.all_input_nodes[0]
            k = p.frozen[prod](_units(values[pin.name], p.scaled[prod]["in"], pin.name, pn))
        else:       # (brevitas' float32 values of an accumulator or a sum: the nearest integers)
            k = _units(values[src.name], e["in"], src.name, n, strict=False)
        level, frac = e["act"]
        got = torch.round(mod(k) * 2.0 ** frac)
        out = values[e.get("act_node", n.name)]
        ref = torch.as_tensor(getattr(out, "value", out)).detach().to(torch.float64) / level
        lv = torch.round(ref)
        if float((ref - lv).abs().max()) > 2.0 ** -6:
            fail("brevitas' levels are off its grid")
        if got.shape != lv.shape or (got.numel() and float((got - lv).abs().max()) > 1):
            fail(f"{int((got != lv).sum()) if got.shape == lv.shape else -1} elements, some by more than one level")
    differing = int((got != lv).sum())
    e["info"]["decisions_differing"] = differing
    e["info"]["decisions_checked"] = int(lv.numel())
    e["info"]["note"] = (f"brevitas' float32 arithmetic gives {differing} of {lv.numel()} quantizer decisions on the "
                         "calibration batch differently from the exact reading (one level each)" if differing else
                         f"all {lv.numel()} quantizer decisions on the calibration batch equal brevitas'")
    if differing and str(n.target) not in p.inexact_in_brevitas:
        p.inexact_in_brevitas.append(str(n.target))


def _channels(n: torch.fx.Node) -> int:
    """The channels of a node's tensor (its features for a vector): hls4ml's BatchNormalization's scale length."""
    shape = n.meta["tensor_meta"].shape if "tensor_meta" in n.meta else None
    if shape is None or len(shape) < 2:
        raise _err(f"{n.target!r} has no recorded shape", n, "give the model a batch dimension")
    return int(shape[1])


def _grid_sample(declared: str, node: torch.fx.Node, aff) -> torch.Tensor:
    """32 random samples of the declared input type, shaped as the input arithmetic reads them (the first all at
    the type's minimum, the second at its maximum)."""
    t = parse_type(declared)
    lo, hi = t.raw_range()
    start = next(a for a in node.graph.nodes if a.name == aff.start)
    shape = tuple(start.meta["tensor_meta"].shape)[1:]
    gen = torch.Generator().manual_seed(1)
    raw = torch.randint(lo, hi + 1, (32, *shape), generator=gen, dtype=torch.int64)
    raw[0], raw[1] = lo, hi
    return raw.to(torch.float64) * 2.0 ** -t.frac


def _check_affine(gm, aff, nodes, frozen, declared: str, f32: bool, node) -> None:
    """The exact layer of the input arithmetic against the graph's own operations, on random values of the
    declared input type (where brevitas' float32 is exact: bit for bit). A difference: raise, never build on it."""
    x = _grid_sample(declared, node, aff)
    with torch.no_grad():
        ref = affine.replay(gm, aff, nodes, x.to(torch.float32)).to(torch.float64)
        got = frozen(x)
    if ref.shape != got.shape or (f32 and not torch.equal(ref, got)) or \
            not torch.allclose(ref, got, rtol=2.0 ** -20, atol=2.0 ** -20 * float(ref.abs().max())):
        raise FxsplitError(f"internal: fxsplit's exact reading of the input arithmetic {', '.join(aff.nodes)} "
                           "differs from the model's own operations", module=node.name, source=node_source(node),
                           hint="please report this model; meanwhile compute the arithmetic outside the model")


def freeze_partitions(pt, p: Plan):
    """Copies of ``pt``'s partitions with their brevitas layers replaced by the exact ones."""
    return [dataclasses.replace(part, module=p.freeze(part.module)) for part in pt.partitions]

