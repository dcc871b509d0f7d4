"""Split markers that live in the user's model source.

``Cut`` is an identity ``nn.Module``; ``cut(x)`` is its functional twin. Both are
identities in PyTorch (forward, backward, state_dict, eval) and survive torch.fx
tracing as nodes that :mod:`fxsplit.partitioner` turns into partition boundaries and
then erases.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn


class Cut(nn.Module):
    """Start a new partition at this point of the forward pass.

    ``name`` names the partition that starts here (it becomes the directory name of
    its hls4ml project); unnamed partitions are called ``p0, p1, ...``.
    """

    def __init__(self, name: str | None = None):
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}" if self.name else ""


def cut(x: torch.Tensor, name: str | None = None) -> torch.Tensor:
    """Functional form of :class:`Cut`: returns ``x`` unchanged; a partition starts here."""
    return x


# Keep cut() as one call_function node when traced from this module's namespace;
# fxsplit's tracer also autowraps it wherever a model's forward imported it.
torch.fx.wrap("cut")


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
