"""brevitas' grids: the exact fixed-point type of a quantizer's values, the reading's plan, and the tables of what
keeps a grid (shared with the QONNX export)."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx

from ...frontend.capture import node_source
from ...errors import FxsplitError

FLOAT32_BITS = 24                    # significant bits of a float32: a sum that fits is computed exactly
MAX_WIDTH = 64                       # widest weight or bias type fxsplit derives
ACTS = {"QuantIdentity": "linear", "QuantReLU": "relu", "QuantHardTanh": "linear"}
_ROUNDING = {"RoundSte": "RND_CONV", "FloorSte": "TRN", "RoundToZeroSte": "TRN_ZERO"}
_CLAMPS = {"TensorClamp", "TensorClampSte"}
_BINARY = {"BinaryQuant", "ClampedBinaryQuant"}
SAME_GRID_MODULES = {"Dropout", "Flatten", "Identity"}
GRID_MODULES = {"ReLU", "MaxPool1d", "MaxPool2d"}
_WEIGHTED = {"QuantLinear", "QuantConv1d", "QuantConv2d"}
_ADDS = {operator.add, torch.add, "add"}
_READ = ("QuantIdentity, QuantReLU, QuantHardTanh, QuantLinear, QuantConv1d/2d, ReLU and max pooling of quantized "
         "values, TruncAvgPool2d, additions of quantized tensors, Dropout, Flatten and reshapes")
SAME_GRID_FUNCS = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous"}


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


@dataclass(frozen=True)
class Scaled:
    """Values on ``grid`` times a float scale, per tensor (one value) or per channel: a float-scaled quantizer's
    integer levels, or the integer accumulator of a layer with float weight scales. hls4ml holds the values on
    ``grid`` (integers: ``fixed<W,W>``); the scale (float32 values of brevitas, exact as Python floats) is not in the
    hardware: the reader carries it to the layer that absorbs it (a BatchNorm and quantizer fold, or the exact
    multiplication at a model output)."""
    grid: Grid
    scale: tuple[float, ...]
    offset: tuple[float, ...] | None = None     # a layer's float bias per channel, added after the scale: only a
    #                                             BatchNorm / quantizer fold right after the layer absorbs it

    @property
    def per_tensor(self) -> bool:
        return len(set(self.scale)) == 1

    def channel_scales(self, channels: int) -> np.ndarray:
        """The scale of each of ``channels`` channels (float64, exact)."""
        s = np.asarray(self.scale, dtype=np.float64)
        if s.size == 1:
            return np.full(channels, float(s[0]))
        if s.size != channels:
            raise FxsplitError(f"internal: a scale of {s.size} channels on a tensor of {channels}")
        return s


def int_grid(g) -> Grid:
    """The grid hls4ml holds a tensor on (a Scaled tensor: its values without the scale)."""
    return g.grid if isinstance(g, Scaled) else g


def exact_product(a: float, b: float) -> float:
    """``a * b`` where float64 holds it exactly (two float32 scales always), else raise."""
    from fractions import Fraction
    p = a * b
    if Fraction(p) != Fraction(a) * Fraction(b):
        raise FxsplitError(f"internal: the scale product {a!r} * {b!r} is not a float64 value")
    return p


@dataclass
class Plan:
    """What :func:`plan` read: the exact layers by fx node name, the hls4ml types to pin, and the claims."""
    frozen: dict[str, torch.nn.Module] = field(default_factory=dict)
    precisions: dict[str, dict[str, str]] = field(default_factory=dict)    # node -> hls4ml Precision section
    input_precisions: dict[str, str] = field(default_factory=dict)          # model input -> type
    inexact_in_brevitas: list[str] = field(default_factory=list)           # layers brevitas rounds in float32
    quantizers: list[dict] = field(default_factory=list)                    # for the report
    affines: dict[str, tuple] = field(default_factory=dict)     # last node -> (affine.Affine, its exact layer)
    input_arithmetic: list[dict] = field(default_factory=list)             # for the report
    scaled: dict[str, dict] = field(default_factory=dict)       # node -> how its float-scaled reading is checked
    output_scales: dict[str, torch.nn.Module] = field(default_factory=dict)   # model output node -> its exact
    #                                                             multiplication by its float scale
    scales: dict[str, tuple[float, ...]] = field(default_factory=dict)   # float-scaled tensor -> the scale (per
    #                                                             tensor or channel) its values stand multiplied by

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
        from . import affine
        for last, (aff, mod) in self.affines.items():
            affine.rewrite(gm, last, aff, mod)
        for name, mod in self.output_scales.items():
            scale_output(gm, name, mod)
        return gm

    def to_dict(self) -> dict:
        return {"quantizers": self.quantizers, "input_precisions": self.input_precisions,
                "input_arithmetic": self.input_arithmetic,
                "torch_exact": self.torch_exact, "inexact_in_brevitas": self.inexact_in_brevitas}


ACC_SUFFIX = "__acc"                 # a float-scaled model output's producer, renamed; its node name is the product's


def scale_output(gm: torch.fx.GraphModule, name: str, module) -> None:
    """In ``gm`` (a frozen copy), the model output ``name`` (a float-scaled tensor) multiplied by its scale:
    ``module`` is called on it under the name ``name`` (the output port keeps its name), the producer renamed
    ``name + ACC_SUFFIX``. Nothing where ``gm`` does not return ``name``."""
    nodes = {n.name: n for n in gm.graph.nodes}
    out = next(n for n in gm.graph.nodes if n.op == "output")
    old = nodes.get(name)
    if old is None or old not in out.all_input_nodes:
        return
    if len(old.users) != 1:
        raise FxsplitError(f"internal: the float-scaled model output {name!r} is read inside the model too",
                           module=name)
    target = f"fxs_output_scale_{name}"
    gm.add_submodule(target, module)
    with gm.graph.inserting_after(old):
        new = gm.graph.call_module(target, (old,))
    new.meta = dict(old.meta)
    out.replace_input_with(old, new)
    ns = gm.graph._graph_namespace
    for node, new_name in ((old, name + ACC_SUFFIX), (new, name)):     # (as affine.rewrite: the names are free)
        node.name = new_name
        ns._rename_object(node, new_name)
    if old.name != name + ACC_SUFFIX or new.name != name:
        raise FxsplitError(f"internal: the output {name!r} could not be renamed", module=name)
    gm.recompile()


def _err(msg: str, node: torch.fx.Node, hint: str) -> FxsplitError:
    """A refusal naming the module (an operation: its node), the source line, the reason and what to change."""
    return FxsplitError(msg, module=str(node.target) if node.op == "call_module" else node.name,
                        source=node_source(node), hint=hint)


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
    nz = np.unique(v[v != 0])                  # (a layer's weights take few distinct values)
    if nz.size == 0:
        return Grid(1, 1, True)
    # each value is mant * 2**(e - 53) with a 53-bit integer mantissa; without its trailing zero bits it needs
    # 53 - e - tz fractional bits: the largest over the values is the type's (the fewest that hold every one)
    m, e = np.frexp(nz)
    mant = (np.abs(m) * 2.0 ** 53).astype(np.int64)             # exact: frexp's mantissa has 53 bits
    low = mant & -mant                                         # its lowest set bit, a power of two
    tz = np.frexp(low.astype(np.float64))[1] - 1
    frac = int(np.max(53 - e - tz))
    scaled = np.ldexp(nz, frac)                                 # exact integers (at most 53 significant bits)
    if np.max(np.abs(scaled)) < 2.0 ** 62:
        raws = scaled.astype(np.int64)
        if not np.array_equal(np.ldexp(raws.astype(np.float64), -frac), nz):     # exact by construction; checked
            raise FxsplitError(f"internal: {what}: its values are not integers times 2**-{frac}")
        hi, lo = int(raws.max()), int(raws.min())
    else:                                      # (wider than int64: Python integers, one value at a time)
        raws = [int(x * 2.0 ** frac) if frac >= 0 else int(x / 2.0 ** -frac) for x in nz.tolist()]
        for x, r in zip(nz.tolist(), raws):
            if math.ldexp(r, -frac) != x:
                raise FxsplitError(f"internal: {what}: {x!r} is not {r} * 2**-{frac}")
        hi, lo = max(raws), min(raws)
    width = max(hi.bit_length() if hi > 0 else 0, (-lo - 1).bit_length() if lo < 0 else 0) + 1
    if width > MAX_WIDTH:
        raise _err(f"{what} needs a {width}-bit fixed-point type to be held exactly (fxsplit allows {MAX_WIDTH})",
                   node, hint)
    return Grid(width, width - frac, True)


def _fixed(g: Grid, modes: str = "") -> str:
    return f"{'' if g.signed else 'u'}fixed<{g.width},{g.integer}{modes}>"


# ---- reading one brevitas layer

def _int_quant(proxy):
    """The IntQuant inside a brevitas quant proxy (None if it has none: binary, float or other quantizers)."""
    for m in proxy.modules():
        if type(m).__name__ == "IntQuant":
            return m
    return None

def _describe(src, node: torch.fx.Node) -> str:
    if isinstance(src, str):
        return f"the model input {src[len('input:'):]!r} (float)"
    return f"the float output of {node.name!r}"
