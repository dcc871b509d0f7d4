"""Split markers that live in the user's model source.

``Cut`` is an identity ``nn.Module``; ``cut(x)`` is its functional twin. Both are
identities in PyTorch (forward, backward, state_dict, eval) and survive torch.fx
tracing as nodes that :mod:`fxsplit.frontend.partitioner` turns into partition boundaries and
then erases.

``cut`` records itself in the traced graph *by looking at its argument*: when it receives
a ``torch.fx.Proxy`` it creates its own ``call_function`` node. So every spelling reaches
the graph: ``fxsplit.cut``, ``from fxsplit import cut``, aliases, imports inside
``forward``, helpers in other modules, before and after eager forwards and training steps.
Only fxsplit's tracer records markers; under any other tracer (hls4ml's own, for instance) ``cut``
is an identity, so the user's model still converts in plain hls4ml.
(Name-based wrapping, ``torch.fx.wrap``, only sees the global names it patched, and lost
markers reached any other way.) A ``cut`` called during tracing with anything but a traced
tensor raises instead of silently vanishing, and :func:`fxsplit.frontend.capture.trace` counts the
markers that run on real tensors to catch markers hidden inside leaf modules.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.fx
from torch import nn

from ..errors import FxsplitError

_COUNT = threading.local()


@contextlib.contextmanager
def count_marker_calls():
    """Count ``Cut``/``cut`` executions on real tensors in this thread (yields a one-element list)."""
    saved = getattr(_COUNT, "box", None)
    box = [0]
    _COUNT.box = box
    try:
        yield box
    finally:
        _COUNT.box = saved


def _counted() -> None:
    box = getattr(_COUNT, "box", None)
    if box is not None:
        box[0] += 1


@contextlib.contextmanager
def _tracing(flag: bool):
    saved = getattr(_COUNT, "tracing", False)
    _COUNT.tracing = flag
    try:
        yield
    finally:
        _COUNT.tracing = saved


def fxsplit_tracing():
    """Mark this thread as tracing with fxsplit's tracer (markers become nodes only then)."""
    return _tracing(True)


def outside_tracing():
    """Mark this thread as not tracing (fxsplit's tracer running the model's operations on real tensors)."""
    return _tracing(False)


class Cut(nn.Module):
    """Start a new partition at this point of the forward pass.

    ``name`` names the partition that starts here (it becomes the directory name of
    its hls4ml project); unnamed partitions are called ``p0, p1, ...``.
    """

    def __init__(self, name: str | None = None):
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _counted()
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}" if self.name else ""


def cut(x: torch.Tensor, name: str | None = None) -> torch.Tensor:
    """Functional form of :class:`Cut`: returns ``x`` unchanged; a partition starts here."""
    if isinstance(x, torch.fx.Proxy):
        if not getattr(x.tracer, "fxsplit_markers", False):
            return x       # another tracer (e.g. hls4ml's own): the marker is an identity there
        kwargs = {} if name is None else {"name": name}
        return x.tracer.create_proxy("call_function", cut, (x,), kwargs)
    if getattr(_COUNT, "tracing", False):
        raise FxsplitError(
            f"fxsplit.cut() was called while tracing with a {type(x).__name__}, not a traced tensor: "
            "the marker cannot be placed",
            hint="call cut() on one tensor that flows through the model (e.g. x = cut(x, 'name')), not on a "
                 "constant, a tuple or a shape")
    _counted()
    return x


def is_cut_node(node: torch.fx.Node, root: nn.Module) -> bool:
    if node.op == "call_function" and node.target is cut:
        return True
    if node.op == "call_module":
        try:
            return isinstance(root.get_submodule(node.target), Cut)
        except AttributeError:
            return False
    return False


def cut_name(node: torch.fx.Node, root: nn.Module) -> str | None:
    if node.op == "call_function":
        name = node.kwargs.get("name")
        if name is None and len(node.args) > 1:
            name = node.args[1]
        return name
    return root.get_submodule(node.target).name
