"""The whole model read: calibration, the plan over the uncut graph, the reading checked against brevitas' own
forward, and each partition frozen with its brevitas layers replaced."""

from __future__ import annotations

import dataclasses
import operator

import torch
import torch.fx

from ...frontend.capture import eval_mode, node_source
from ...errors import FxsplitError
from . import layers, norm
from .grid import (_describe, ACTS, FLOAT32_BITS, GRID_MODULES, Grid, Plan, SAME_GRID_FUNCS, SAME_GRID_MODULES, _ADDS, _READ,
                   _WEIGHTED, _err, _fixed, uses_brevitas)


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
            if cls in ACTS:
                frozen, g, info = layers.read_act(n, m)
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
                frozen, g, info = layers.read_weighted(n, m, src, biases.get(n.name))
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
            if cls in SAME_GRID_MODULES:
                grid[n.name] = src
                if cls == "Flatten":
                    reshapes.append((n.name, srcs[0].name))
                continue
            if cls in GRID_MODULES and isinstance(src, Grid):
                # a max (pooling) or a ReLU of values on a grid stays on it: the type is the input's (hls4ml's own
                # would be the default precision)
                p.precisions[n.name] = {"result": type_of(srcs[0].name)}
                grid[n.name] = src
                continue
            raise _err(f"{cls} {n.target!r} in a brevitas model: fxsplit reads {_READ} exactly (BatchNorm, average "
                       "pooling and other float layers: not yet)", n, "keep this layer out of the model you compile, "
                                                                     "or replace it with one of those")
        name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        if name in SAME_GRID_FUNCS and len(srcs) == 1:
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

