"""The flatten idioms models are written with (``x.view(x.shape[0], -1)``, ``x.view(x.size(0), -1)``,
``x.reshape(...)``, ``torch.flatten(x, 1)``) trace to one flatten: no shape reads reach hls4ml."""

import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.frontend.capture import trace

IDIOMS = {
    "view_shape": lambda x: x.view(x.shape[0], -1),
    "view_size": lambda x: x.view(x.size(0), -1),
    "view_size_item": lambda x: x.view(x.size()[0], -1),
    "reshape_shape": lambda x: x.reshape(x.shape[0], -1),
    "reshape_static_tail": lambda x: x.reshape(x.shape[0], 48),
    "torch_reshape": lambda x: torch.reshape(x, (x.shape[0], -1)),
    "flatten": lambda x: torch.flatten(x, 1),
}


class Net(nn.Module):
    def __init__(self, idiom: str):
        super().__init__()
        self.idiom = idiom
        self.conv = nn.Conv2d(2, 3, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(48, 5)

    def forward(self, x):
        x = IDIOMS[self.idiom](self.relu(self.conv(x)))
        return self.fc(x)


@pytest.mark.parametrize("idiom", sorted(IDIOMS))
def test_the_idiom_traces_to_a_flatten(idiom):
    torch.manual_seed(0)
    model = Net(idiom).eval()
    gm = trace(model, (2, 6, 6))
    ops = [(n.op, n.target) for n in gm.graph.nodes]
    assert ("call_function", torch.flatten) in ops
    assert not any(t in ("size", "view", "reshape", getattr) for _, t in ops), ops
    x = torch.randn(7, 2, 6, 6)                      # another batch size than the trace's: the batch stays free
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_a_reshape_that_keeps_dimensions_reads_its_traced_shape():
    class Rows(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x.reshape(x.shape[0], x.shape[1] * 3, -1))     # (N, 2, 3, 4) -> (N, 6, 4)

    model = Rows().eval()
    gm = trace(model, (2, 3, 4))
    reshape = [n for n in gm.graph.nodes if n.op == "call_method" and n.target == "reshape"]
    assert len(reshape) == 1 and reshape[0].args[1:] == (-1, 6, 4)
    assert not any(n.target in ("size", getattr) for n in gm.graph.nodes)
    x = torch.randn(5, 2, 3, 4)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_view_shape_model_builds_bit_exact_with_a_cut(tmp_path):
    torch.manual_seed(1)
    model = Net("view_shape").eval()
    d = fxsplit.compile(model, (2, 6, 6), splits=["fc"], config=dict(FAST), output_dir=tmp_path / "o", progress=False)
    assert len(d.partitions) == 2
    res = d.verify(d.stress_inputs(16, seed=4))
    assert res.bit_exact, res.summary()
