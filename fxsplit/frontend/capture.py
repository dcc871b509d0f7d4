"""Capture: a leaf-aware torch.fx trace plus shape propagation.

torch.nn / torch.ao.nn / brevitas.nn modules and fxsplit markers stay leaves (one
node each, as hls4ml's own tracer sees them); containers (Sequential, user modules)
are traced through. Tracing failures are re-raised as FxsplitError naming the
module and the source line, with advice.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import traceback
from collections.abc import Sequence

import torch
import torch.fx
from torch import nn
from torch.fx import _symbolic_trace
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import FxsplitError
from .markers import Cut, count_marker_calls, fxsplit_tracing, is_cut_node, outside_tracing

COMPUTE_OPS = ("call_module", "call_function", "call_method")   # the fx node kinds that compute
_LEAF_PREFIXES = ("torch.nn", "torch.ao.nn", "brevitas.nn")
_FXSPLIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the fxsplit package
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_ZOO_DIR = os.path.join(_FXSPLIT_DIR, "zoo") + os.sep     # the model zoo is model source, not fxsplit's machinery


def _internal(path: str) -> bool:
    """Whether a frame's file is fxsplit's or torch's own code (never the model's source line)."""
    path = os.path.abspath(path)
    return path.startswith((_FXSPLIT_DIR, _TORCH_DIR)) and not path.startswith(_ZOO_DIR)


class LeafTracer(torch.fx.Tracer):
    """torch.fx tracer with hls4ml's notion of a leaf, recording source lines and fxsplit markers."""

    fxsplit_markers = True

    def __init__(self):
        super().__init__()
        self.record_stack_traces = True

    def trace(self, root, concrete_args=None):
        with fxsplit_tracing():
            return super().trace(root, concrete_args)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, Cut):
            return True
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return type(m).__module__.startswith(_LEAF_PREFIXES) or _is_tensor_norm(m)


_MISSING = object()      # a traced value without a concrete one (a forward argument no example input feeds)
_VALUE_FIELDS = ("value", "value_")                                     # a QuantTensor's traced tensor
_META_PROPERTIES = ("signed", "training", "saturating", "eps", "scale", "zero_point")


class _ConcreteRunError(Exception):
    """An operation failed on the example inputs while tracing (raised from the model's own call of it)."""


class _TracedValueError(FxsplitError):
    """A value the model inspects while it is traced cannot be traced (reported as it is, with its own line)."""


class ValueTracer(LeafTracer):
    """:class:`LeafTracer` that runs the model on example inputs while it traces it, so that the model's Python
    code can inspect what its leaves return.

    Every traced operation is also executed on two example batches (the first is the one shape propagation uses
    afterwards, the second a different random batch). Where an operation's result is a brevitas QuantTensor, the
    tracer hands the model a proxy of :func:`quant_proxy_class` instead of a plain proxy: it passes ``isinstance(x, QuantTensor)``
    and answers reads of the quantization metadata (``x.scale``, ``x.zero_point``, ``x.bit_width``, ``x.signed``,
    ...) with the concrete values, while ``x.value`` and every operation on ``x`` are traced as usual."""

    def __init__(self, runs: Sequence[Sequence[torch.Tensor]] = ()):
        super().__init__()
        self._runs = [list(r) for r in runs]
        self._values: dict[torch.fx.Node, list] = {}
        self._n_placeholders = 0

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if not isinstance(proxy, torch.fx.Proxy) or proxy.node in self._values:
            return proxy
        node = proxy.node
        if not self._runs:              # (no example inputs: a plain trace)
            return proxy
        if kind == "placeholder":
            i = self._n_placeholders
            self._n_placeholders += 1
            vals = [r[i] if i < len(r) else _MISSING for r in self._runs]
        else:
            vals = [self._run(node, k) for k in range(len(self._runs))]
        self._values[node] = vals
        if not vals or any(v is _MISSING for v in vals) or not _is_quant_tensor(vals[0]):
            return proxy
        return quant_proxy_class()(node, self)

    def _value(self, n: torch.fx.Node, k: int):
        if n not in self._values and n.op == "get_attr":      # a tensor constant torch.fx put on the root
            self._values[n] = [_fetch(self.root, n.target)] * len(self._runs)
        return self._values.get(n, [_MISSING] * len(self._runs))[k]

    def _run(self, node: torch.fx.Node, k: int):
        """``node`` executed on run ``k``'s values of its inputs (as torch.fx.Interpreter executes it)."""
        from torch.fx.node import map_arg
        from .markers import cut
        if any(self._value(a, k) is _MISSING for a in node.all_input_nodes):
            return _MISSING
        args = map_arg(node.args, lambda a: self._value(a, k))
        kwargs = map_arg(node.kwargs, lambda a: self._value(a, k))
        try:
            # torch.fx's patches of nn.Module.__call__ / __getattr__ lifted: a leaf runs as it does in eager mode
            with torch.no_grad(), _symbolic_trace._maybe_revert_all_patches(), outside_tracing():
                if node.op == "get_attr":
                    return _fetch(self.root, node.target)
                if node.op == "call_module":
                    return self.root.get_submodule(node.target)(*args, **kwargs)
                if node.op == "call_function":
                    return args[0] if node.target is cut else node.target(*args, **kwargs)
                if node.op == "call_method":
                    return getattr(args[0], node.target)(*args[1:], **kwargs)
        except Exception as e:  # the model's own operation on a real input: reported with the model's line
            raise _ConcreteRunError(f"{type(e).__name__}: {e}") from e
        return _MISSING

    def quant_metadata(self, proxy: torch.fx.Proxy, name: str):
        """The concrete value of ``proxy``'s QuantTensor field or property ``name``, the same on both example
        batches, else an FxsplitError."""
        node = proxy.node
        vals = [getattr(v, name) for v in self._values[node]]
        if not all(_same(vals[0], v) for v in vals[1:]):
            fr = _user_frame_of_stack()
            raise _TracedValueError(
                f"the model reads {name!r} of the QuantTensor {_describe_producer(node)} returns, and it differs "
                "between two example inputs: a quantizer that computes it from its input at run time (a dynamic "
                "or statistics-collecting quantizer, or a model in training mode) has no constant to trace",
                module=str(node.target) if node.op == "call_module" else node.name,
                source=f"{fr.filename}:{fr.lineno}: {fr.line}" if fr else None,
                hint="give the quantizer a parameter or constant scale (e.g. Int8ActPerTensorFixedPoint) and trace "
                     "the model in eval mode, or do not read the QuantTensor's metadata in forward")
        # the same on two different inputs of a model in eval mode (as fxsplit traces it): a constant of the model
        # (its quantizers' parameters and buffers), so the traced graph may hold it as one
        return vals[0]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    return type(a) is type(b) and a == b


def _fetch(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _describe_producer(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return f"the module {node.target!r}"
    return f"the operation {node.name!r}"


def _user_frame_of_stack() -> traceback.FrameSummary | None:
    """The innermost frame of the model's own code on the current stack (the line reading a traced value)."""
    for fr in reversed(traceback.extract_stack()):
        if not _internal(fr.filename) and "<eval_with_key>" not in fr.filename:
            return fr
    return None


class _QuantProxyBase(torch.fx.Proxy):
    """A traced brevitas QuantTensor (made by :class:`ValueTracer`): ``isinstance(x, QuantTensor)`` holds; reads of
    its metadata give the tracer's concrete values; ``x.value`` and everything else is traced as on any proxy."""

    def __getattr__(self, name):
        if not name.startswith("__") and "node" in self.__dict__ and "tracer" in self.__dict__:
            concrete = self.tracer._values[self.node][0]
            meta = set(getattr(type(concrete), "_fields", ())) - set(_VALUE_FIELDS)
            meta |= {p for p in _META_PROPERTIES if isinstance(getattr(type(concrete), p, None), property)}
            if name in meta:
                return self.tracer.quant_metadata(self, name)
        return super().__getattr__(name)


def _traced_attr(name: str) -> property:
    return property(lambda self: torch.fx.Proxy.__getattr__(self, name))


@functools.cache
def quant_proxy_class() -> type:
    """The class of a traced brevitas QuantTensor: a torch.fx Proxy and a subclass of brevitas' ``QuantTensor``
    (made when the first QuantTensor is traced: brevitas is imported then). ``isinstance(x, IntQuantTensor)`` does
    not hold (brevitas' concrete QuantTensors are NamedTuples, which a proxy cannot be)."""
    from brevitas.quant_tensor import QuantTensor
    # QuantTensor's own helpers (shape, size, dim, detach, to, ...) read ``self.value``: traced as a proxy's
    # attribute instead, so the graph holds the same nodes as for a plain proxy
    shadow = {n: _traced_attr(n) for n in vars(QuantTensor) if not n.startswith("__") and n != "is_zero_zero_point"}
    shadow["__doc__"] = _QuantProxyBase.__doc__
    shadow["__module__"] = __name__
    return type("QuantProxy", (_QuantProxyBase, QuantTensor), shadow)


class _ShapeProp(ShapeProp):
    """ShapeProp that reads a brevitas QuantTensor (a NamedTuple torch.fx would take apart and fail to rebuild)
    by its value tensor."""

    def run_node(self, n):
        from torch.fx.node import map_aggregate
        from torch.fx.passes.shape_prop import _extract_tensor_metadata
        result = torch.fx.Interpreter.run_node(self, n)
        plain = result.value if _is_quant_tensor(result) else result
        found = False

        def meta(obj):
            nonlocal found
            if isinstance(obj, torch.Tensor):
                found = True
                return _extract_tensor_metadata(obj)
            return obj
        m = map_aggregate(plain, meta)
        if found:
            n.meta["tensor_meta"] = m
        n.meta["type"] = type(result)
        return result


def _is_quant_tensor(x) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields") and "value" in x._fields and "scale" in x._fields


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """``module`` in eval mode (as fxsplit traces it: brevitas' quantizers use runtime statistics in training mode),
    every submodule's own training flag restored afterwards."""
    was = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, t in was.items():
            m.train(t)


def output_arrays(y) -> list:
    """A module's output (a tensor, a brevitas QuantTensor, or a tuple/list of them) as float64 numpy arrays."""
    import numpy as np
    ys = list(y) if isinstance(y, (tuple, list)) and not _is_quant_tensor(y) else [y]
    return [(t.value if _is_quant_tensor(t) else t).detach().numpy().astype(np.float64) for t in ys]


def _is_tensor_norm(m: nn.Module) -> bool:
    """brevitas_examples' TensorNorm (the float affine its bnn_pynq models end with): one leaf, read by
    ``lower/brevitas/`` as a whole."""
    return type(m).__name__ == "TensorNorm" and type(m).__module__.startswith("brevitas_examples.")


def normalize_shapes(input_shape) -> list[tuple[int, ...]]:
    """``(C, H, W)`` -> ``[(C, H, W)]``; a list of shapes stays a list (several inputs)."""
    if isinstance(input_shape, (list, tuple)) and input_shape and all(isinstance(d, int) for d in input_shape):
        return [tuple(input_shape)]
    if isinstance(input_shape, (list, tuple)) and input_shape and all(
            isinstance(s, (list, tuple)) and s and all(isinstance(d, int) for d in s) for s in input_shape):
        return [tuple(s) for s in input_shape]
    raise FxsplitError(f"input_shape must be a tuple of ints (one input) or a list of such tuples, got {input_shape!r}",
                       hint="pass the shape of one sample without the batch dimension, e.g. (3, 32, 32)")


def _user_frame(tb) -> traceback.FrameSummary | None:
    frames = traceback.extract_tb(tb)
    for fr in reversed(frames):
        if not _internal(fr.filename) and "<eval_with_key>" not in fr.filename:
            return fr
    return None


def _module_of_frame(root: nn.Module, tb) -> str | None:
    """Qualified name of the innermost module whose forward raised."""
    names = {id(m): n for n, m in root.named_modules()}
    found = None
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if isinstance(obj, nn.Module) and id(obj) in names:
            found = names[id(obj)] or type(root).__name__
        tb = tb.tb_next
    return found


def _keep_origin(old: torch.fx.Graph, new: torch.fx.Graph) -> None:
    """Tracing a GraphModule (``strip_markers``' result, or one the user traced) runs its generated code:
    every node would seem to come from that code, with no enclosing modules. Give each node of the new
    graph the module path and source line of its twin in the GraphModule's own graph (same name, op and
    target), so that container names (``splits=['layer2']``) and error messages still refer to the user's
    model."""
    twins = {n.name: n for n in old.nodes}
    for n in new.nodes:
        o = twins.get(n.name)
        if o is None or o.op != n.op or o.target != n.target:
            continue
        if o.meta.get("nn_module_stack"):
            n.meta["nn_module_stack"] = dict(o.meta["nn_module_stack"])
        st = o.stack_trace or o.meta.get("stack_trace")
        if st:
            n.stack_trace = st


def trace(model: nn.Module, input_shape) -> torch.fx.GraphModule:
    """Trace ``model`` into a GraphModule whose nodes carry ``tensor_meta`` shapes (with :class:`ValueTracer`:
    the model runs on example inputs as it is traced)."""
    shapes = normalize_shapes(input_shape)
    examples = [torch.rand((2, *s)) for s in shapes]
    gen = torch.Generator().manual_seed(1)
    second = [torch.rand((2, *s), generator=gen) * 4 - 2 for s in shapes]
    tracer = ValueTracer([examples, second])
    try:
        graph = tracer.trace(model)
    except _TracedValueError:
        raise
    except _ConcreteRunError as e:
        _raise_run_failed(e, examples)
    except Exception as e:  # tracing user code: any failure is the user's model
        fr = _user_frame(e.__traceback__)
        src = f"{fr.filename}:{fr.lineno}: {fr.line}" if fr else None
        raise FxsplitError(
            f"torch.fx could not trace the model: {type(e).__name__}: {e}",
            module=_module_of_frame(model, e.__traceback__), source=src,
            hint="data-dependent control flow (if/for on tensor values or shapes) cannot be traced; make it "
                 "static (decide it in __init__), or move it into a torch.nn leaf module") from e
    if isinstance(model, torch.fx.GraphModule):
        _keep_origin(model.graph, graph)
    gm = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
    n_placeholders = sum(1 for n in gm.graph.nodes if n.op == "placeholder")
    if n_placeholders != len(shapes):
        raise FxsplitError(f"the model's forward takes {n_placeholders} tensor input(s) but input_shape gives "
                           f"{len(shapes)} shape(s)", hint="pass one shape per forward argument")
    _check_unused_markers(model, gm)
    try:
        with torch.no_grad(), count_marker_calls() as ran:
            _ShapeProp(gm).propagate(*examples)
    except Exception as e:
        _raise_run_failed(e, examples)
    in_graph = sum(1 for n in gm.graph.nodes if is_cut_node(n, gm))
    if ran[0] != in_graph:
        raise FxsplitError(
            f"{ran[0]} cut marker(s) ran on the example input but the traced graph holds {in_graph}: a Cut or cut() "
            "inside a module that torch.fx keeps as a leaf (torch.nn / brevitas.nn subclasses) is invisible to the "
            "trace and would be lost", module=type(model).__name__,
            hint="place markers in the forward of your own modules (not inside a torch.nn or brevitas layer "
                 "subclass), or use splits=['<module name>'] to cut before that layer")
    _static_reshapes(gm)
    _keyword_dims(gm)
    return gm


def _raise_run_failed(e: Exception, examples: list[torch.Tensor]):
    fr = _user_frame(e.__traceback__)
    raise FxsplitError(
        f"running the traced model on a random input of shape {[tuple(x.shape) for x in examples]} failed: "
        + (str(e) if isinstance(e, _ConcreteRunError) else f"{type(e).__name__}: {e}"),
        source=f"{fr.filename}:{fr.lineno}: {fr.line}" if fr else None,
        hint="check input_shape (it excludes the batch dimension)") from e


_CONCATS = (torch.cat, torch.concat, torch.concatenate)


def _keyword_dims(gm: torch.fx.GraphModule) -> None:
    """``torch.cat(xs, 1)`` becomes ``torch.cat(xs, dim=1)``: hls4ml's PyTorch parser reads the dimension from the
    keyword only (a positional one it takes for 0, the batch, and fails)."""
    changed = False
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in _CONCATS and len(n.args) == 2 and "dim" not in n.kwargs:
            n.args, n.kwargs = (n.args[0],), {**n.kwargs, "dim": n.args[1]}
            changed = True
    if changed:
        gm.recompile()


_RESHAPES = {("call_method", "view"), ("call_method", "reshape"), ("call_function", torch.reshape)}


def _shape_read(n: torch.fx.Node) -> bool:
    """``x.shape``, ``x.size()``, ``x.shape[k]``, ``x.size(k)``, ``x.size()[k]`` (a read of a traced tensor's shape),
    or arithmetic on such reads and constants."""
    import operator
    if n.op == "call_method" and n.target == "size":
        return True
    if n.op == "call_function" and n.target is getattr and len(n.args) == 2 and n.args[1] == "shape":
        return True
    if n.op == "call_function" and n.target is operator.getitem and isinstance(n.args[0], torch.fx.Node):
        return _shape_read(n.args[0])
    # arithmetic on shape reads and constants (x.shape[1] * 3)
    return (n.op == "call_function" and getattr(n.target, "__module__", None) == "_operator"
            and any(isinstance(a, torch.fx.Node) for a in n.args)
            and all(_shape_read(a) for a in n.args if isinstance(a, torch.fx.Node)))


def _static_reshapes(gm: torch.fx.GraphModule) -> None:
    """A reshape whose target shape reads a tensor's shape (``x.view(x.shape[0], -1)``, ``x.view(x.size(0), -1)``,
    ``x.reshape(x.size()[0], ...)``: the flatten idioms of many models) gets the shape it had when traced, the batch
    left free: ``torch.flatten(x, 1)`` where it flattens every dimension after the batch, else
    ``reshape(x, -1, d1, ...)``. The shape reads, then unused, leave the graph (hls4ml has no layer for them)."""
    changed = False
    for n in list(gm.graph.nodes):
        if (n.op, n.target) not in _RESHAPES or "tensor_meta" not in n.meta:
            continue
        src, *dims = n.args
        dims = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        if not any(isinstance(d, torch.fx.Node) and _shape_read(d) for d in dims):
            continue
        out = tuple(int(d) for d in n.meta["tensor_meta"].shape)
        with gm.graph.inserting_before(n):
            if len(out) == 2:
                new = gm.graph.call_function(torch.flatten, (src, 1))
            else:
                new = gm.graph.call_method("reshape", (src, -1, *out[1:]))
        new.meta = dict(n.meta)
        n.replace_all_uses_with(new)
        gm.graph.erase_node(n)
        changed = True
    if changed:
        gm.graph.eliminate_dead_code()
        gm.recompile()


def _check_unused_markers(model: nn.Module, gm: torch.fx.GraphModule) -> None:
    """A Cut module the model holds but the traced forward never calls is a marker that would be lost."""
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    for qual, m in model.named_modules():
        if isinstance(m, Cut) and qual not in called:
            raise FxsplitError(
                f"the Cut marker {qual!r} ({m.name or 'unnamed'}) is part of the model but its forward never calls "
                "it, so it cuts nothing", module=qual,
                hint="call it in forward (x = self.<cut>(x)); if it is called only under a condition, trace-time "
                     "conditions must be static; remove it if it is not meant to cut")


_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)')


def node_source(node: torch.fx.Node) -> str | None:
    """``file:line: code`` of the user statement that created ``node`` (if recorded)."""
    st = node.stack_trace or node.meta.get("stack_trace")
    if not st:
        return None
    hits = [m for m in _FRAME_RE.finditer(st) if not _internal(m.group(1))]
    if not hits:
        return None
    m = hits[-1]
    return f"{m.group(1)}:{m.group(2)}: {m.group(3).strip()}"


def node_shape(node: torch.fx.Node) -> tuple[int, ...]:
    """Per-sample (batch removed) PyTorch shape of a node's tensor."""
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise FxsplitError(f"node {node.name!r} does not produce a single tensor; fxsplit can only cut through tensors",
                           source=node_source(node), hint="move the cut to a point where one tensor flows")
    return tuple(int(d) for d in meta.shape[1:])


def shape_or_none(node: torch.fx.Node) -> tuple[int, ...] | None:
    """:func:`node_shape`, or None where the node produces no single tensor."""
    try:
        return node_shape(node)
    except FxsplitError:
        return None


def reshapes(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """``node`` changes only the shape of its input (Flatten, Unflatten, view, reshape, flatten)."""
    if not node.all_input_nodes:
        return False
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), (nn.Flatten, nn.Unflatten))
    if node.op == "call_method":
        return node.target in ("view", "reshape", "flatten")
    return node.op == "call_function" and node.target in (torch.flatten, torch.reshape)


def channels_last(shape: Sequence[int]) -> tuple[int, ...]:
    """PyTorch per-sample shape -> hls4ml (channels-last) shape: (C, *S) -> (*S, C)."""
    shape = tuple(shape)
    return shape[1:] + shape[:1] if len(shape) >= 2 else shape


def to_channels_last(x, ndim_sample: int):
    """numpy (N, C, *S) -> (N, *S, C)."""
    import numpy as np
    if ndim_sample < 2:
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def to_channels_first(x, ndim_sample: int):
    import numpy as np
    if ndim_sample < 2:
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def node_macs(node: torch.fx.Node, module: nn.Module | None) -> int:
    """Multiply-accumulates per sample of one traced node (Linear, Conv; 0 for the rest)."""
    try:
        out = node_shape(node)
    except Exception:                               # noqa: BLE001  (a tuple-producing op: no size)
        return 0
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features * (math.prod(out[:-1]) if len(out) > 1 else 1)
    if isinstance(module, nn.modules.conv._ConvNd):
        per_out = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return per_out * math.prod(out)
    return 0

