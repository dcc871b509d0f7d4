"""``torch.cat(xs, 1)`` as models write it (the dimension positional): traced to ``dim=1``, which hls4ml's PyTorch
parser reads (a positional one it takes for the batch dimension, and fails)."""

import torch
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.frontend.capture import trace


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 1)
        self.b = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(5 * 4 * 4, 4)

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), self.b(x)], 1)
        return self.fc(torch.flatten(y, 1))


def test_positional_dim_traces_to_the_keyword():
    gm = trace(Branches().eval(), (2, 4, 4))
    (cat,) = [n for n in gm.graph.nodes if n.target is torch.cat]
    assert cat.kwargs == {"dim": 1} and len(cat.args) == 1
    torch.manual_seed(0)
    model, x = Branches().eval(), torch.randn(3, 2, 4, 4)
    assert torch.equal(trace(model, (2, 4, 4))(x), model(x))


def test_positional_dim_model_builds_bit_exact_with_a_cut(tmp_path):
    torch.manual_seed(2)
    model = Branches().eval()
    d = fxsplit.compile(model, (2, 4, 4), splits=["fc"], config=dict(FAST), output_dir=tmp_path / "o",
                        progress=False)
    res = d.verify(d.stress_inputs(16, seed=5))
    assert res.bit_exact, res.summary()
