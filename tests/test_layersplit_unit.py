"""fxsplit.frontend.layersplit on traced graphs: parsing "<layer>@<output>", which layers can be split and why not,
resolving split entries, and the rewrite of a Linear into pieces joined by torch.cat (no lowering, no builds).
The end-to-end builds of split layers are in tests/test_layersplit.py."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from fxsplit.errors import FxsplitError
from fxsplit.frontend import layersplit
from fxsplit.frontend.capture import trace


class MLP(nn.Module):
    """8 -> fc1 (16) -> relu -> fc2 (6), with small integer weights: every sum is exact in float32."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 6)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in (self.fc1, self.fc2):
                m.weight.copy_(torch.randint(-3, 4, m.weight.shape, generator=g).float())
                m.bias.copy_(torch.randint(-3, 4, m.bias.shape, generator=g).float())

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(8, 6), nn.ReLU())

    def forward(self, x):
        return self.block(x)


class PerPosition(nn.Module):
    """A Linear over the last dimension of a (3, 8) sample."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x)


class FlattenThenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.flat(x))


class LinearThenBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.fc(x)) + torch.relu(x[:, :4])


class Clash(MLP):
    """Holds (and calls) a module named like fc1's first piece."""

    def __init__(self):
        super().__init__()
        self.fc1__o0 = nn.Identity()

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.fc1__o0(x))))


def _node(gm: torch.fx.GraphModule, name: str) -> torch.fx.Node:
    return next(n for n in gm.graph.nodes if n.name == name)


def _ints(shape, seed=1) -> torch.Tensor:
    return torch.randint(-4, 5, shape, generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("entry, parsed", [
    ("fc2@32", ("fc2", 32)), ("layer2.0.fc@1", ("layer2.0.fc", 1)), ("fc@-1", ("fc", -1)),
    ("fc2", None), ("fc2@", None), ("@3", None), ("fc 2@3", None), ("fc@3@4", None), ("fc@x", None),
    (32, None), (None, None),
])
def test_parse(entry, parsed):
    assert layersplit.parse(entry) == parsed


def test_why_not_accepts_a_plain_linear_on_one_vector():
    gm = trace(MLP(), (8,))
    assert layersplit.why_not(gm, _node(gm, "fc1")) is None
    assert layersplit.why_not(gm, _node(gm, "fc2")) is None


def test_why_not_names_what_is_refused():
    gm = trace(MLP(), (8,))
    assert layersplit.why_not(gm, _node(gm, "relu")) == ("it is a ReLU; only a plain torch.nn.Linear, Conv1d or "
                                                         "Conv2d is split by outputs")
    assert layersplit.why_not(gm, _node(gm, "x")) == "it is not a module call"
    gm = trace(PerPosition(), (3, 8))
    assert layersplit.why_not(gm, _node(gm, "fc")) == (
        "its input has shape (3, 8) per sample; only a Linear on one feature vector per sample is split (hls4ml "
        "builds a Linear over more dimensions differently)")
    gm = trace(FlattenThenLinear(), (2, 4))
    assert layersplit.why_not(gm, _node(gm, "fc")).startswith(
        "its input is 'flat', a flattened multi-dimensional tensor: hls4ml reads it in its own channels-last order")
    gm = trace(LinearThenBatchNorm(), (8,))
    assert layersplit.why_not(gm, _node(gm, "fc")) == ("hls4ml fuses it with the BatchNorm1d 'bn' that follows; the "
                                                       "pieces would not be fused the same way")
    assert layersplit.why_not(gm, _node(gm, "relu")) == "it is not a module call"     # torch.relu


def test_resolve_sorts_bounds_drops_repeats_and_the_width():
    gm = trace(MLP(), (8,))
    entries = [("fc1", 8, "fc1@8"), ("fc1", 4, "fc1@4"), ("fc1", 8, "fc1@8"), ("fc2", 6, "fc2@6"), ("fc2", 3, "fc2@3")]
    assert layersplit.resolve(gm, entries) == {"fc1": [4, 8], "fc2": [3]}
    assert layersplit.resolve(gm, []) == {}
    assert [n.name for n in gm.graph.nodes] == ["x", "fc1", "relu", "fc2", "output"]     # nothing rewritten


def test_resolve_finds_a_nested_layer_by_qualified_name():
    gm = trace(Nested(), (8,))
    assert layersplit.resolve(gm, [("block.0", 2, "block.0@2")]) == {"block_0": [2]}


def test_resolve_refuses_an_unknown_layer_with_close_names():
    gm = trace(MLP(), (8,))
    with pytest.raises(FxsplitError, match="splits entry 'fc9@3' names layer 'fc9', which is not a module the model "
                                           "calls") as ei:
        layersplit.resolve(gm, [("fc9", 3, "fc9@3")])
    assert ei.value.hint == "did you mean 'fc2', 'fc1'?"
    with pytest.raises(FxsplitError, match="names layer 'zzz'") as ei:
        layersplit.resolve(gm, [("zzz", 3, "zzz@3")])
    assert ei.value.hint == ("write '<Linear or Conv module>@<first output of the second piece>', "
                             "e.g. 'fc2@32'")


def test_resolve_refuses_a_layer_that_cannot_be_split_naming_its_source_line():
    gm = trace(MLP(), (8,))
    with pytest.raises(FxsplitError, match="splits entry 'relu@3': layer 'relu' cannot be split by outputs: it is a "
                                           "ReLU") as ei:
        layersplit.resolve(gm, [("relu", 3, "relu@3")])
    assert ei.value.module == "relu"
    assert "test_layersplit_unit.py" in ei.value.source and "self.fc2(self.relu(self.fc1(x)))" in ei.value.source
    assert ei.value.hint == "cut before or after this layer instead (splits=['<module>'])"


@pytest.mark.parametrize("at", [0, 7, -2])
def test_resolve_refuses_a_bound_outside_the_layer(at):
    gm = trace(MLP(), (8,))
    with pytest.raises(FxsplitError, match=rf"splits entry 'fc2@{at}': 'fc2' has 6 outputs, so a piece can start at "
                                           rf"1 \.\. 5 \(6: between the pieces and the Concatenates joining them\), "
                                           rf"not {at}") as ei:
        layersplit.resolve(gm, [("fc2", at, f"fc2@{at}")])
    assert ei.value.hint == "e.g. 'fc2@3' builds it as two partitions"


def test_resolve_refuses_a_join_cut_without_pieces():
    gm = trace(MLP(), (8,))
    with pytest.raises(FxsplitError, match="splits entry 'fc2@6' cuts between the pieces of 'fc2' and their join, but "
                                           "nothing splits that layer into pieces") as ei:
        layersplit.resolve(gm, [("fc2", 6, "fc2@6")])
    assert ei.value.hint == "add a cut inside it too, e.g. 'fc2@3'"


def test_apply_builds_the_pieces_and_their_join():
    model = MLP()
    gm = trace(model, (8,))
    info = layersplit.apply(gm, {"fc1": [4, 8]})
    assert info == {"fc1": {"module": "fc1", "bounds": [0, 4, 8, 16], "pieces": ["fc1__o0", "fc1__o4", "fc1__o8"],
                            "norm": None, "norm_module": None, "norms": [],
                            "starts": {0: "fc1__o0", 4: "fc1__o4", 8: "fc1__o8", 16: "cat"}, "cats": ["cat", "cat_1"]}}
    assert [n.name for n in gm.graph.nodes] == ["x", "fc1__o0", "fc1__o4", "fc1__o8", "cat", "cat_1", "relu", "fc2",
                                                "output"]
    # the cats join two at a time, along the feature dimension, and feed what the layer fed
    cat, cat_1 = _node(gm, "cat"), _node(gm, "cat_1")
    assert cat.target is torch.cat and cat.args == ((_node(gm, "fc1__o0"), _node(gm, "fc1__o4")),)
    assert cat.kwargs == {"dim": 1} and cat_1.args == ((cat, _node(gm, "fc1__o8")),)
    assert _node(gm, "relu").args == (cat_1,)
    # each piece holds its rows of the layer; the layer itself is gone
    modules = dict(gm.named_modules())
    assert "fc1" not in modules
    for name, (a, b) in {"fc1__o0": (0, 4), "fc1__o4": (4, 8), "fc1__o8": (8, 16)}.items():
        piece = modules[name]
        assert type(piece) is nn.Linear and (piece.in_features, piece.out_features) == (8, b - a)
        assert torch.equal(piece.weight, model.fc1.weight[a:b]) and torch.equal(piece.bias, model.fc1.bias[a:b])
    # shapes carried over for the pieces and the partial joins
    assert [tuple(_node(gm, n).meta["tensor_meta"].shape[1:]) for n in ("fc1__o0", "fc1__o8", "cat", "cat_1")] == [
        (4,), (8,), (8,), (16,)]
    x = _ints((5, 8))
    assert torch.equal(gm(x), model(x))


def test_apply_keeps_a_nested_layer_in_its_parent_and_bias_free_layers_bias_free():
    model = Nested()
    model.block[0] = nn.Linear(8, 6, bias=False)
    with torch.no_grad():                 # small integer weights: every sum exact in float32, in any order
        model.block[0].weight.copy_(torch.randint(-3, 4, (6, 8), generator=torch.Generator().manual_seed(1)).float())
    gm = trace(model, (8,))
    info = layersplit.apply(gm, {"block_0": [2]})
    assert info["block_0"]["pieces"] == ["block_0__o0", "block_0__o2"] and info["block_0"]["module"] == "block.0"
    pieces = [gm.get_submodule("block.0__o0"), gm.get_submodule("block.0__o2")]
    assert [p.out_features for p in pieces] == [2, 4] and all(p.bias is None for p in pieces)
    x = _ints((3, 8))
    assert torch.equal(gm(x), model(x))


def test_apply_refuses_a_piece_name_the_model_already_has():
    gm = trace(Clash(), (8,))
    with pytest.raises(FxsplitError, match="cannot split 'fc1': the model already has a module 'fc1__o0'") as ei:
        layersplit.apply(gm, {"fc1": [4]})
    assert ei.value.hint == "rename that module"


def test_origins_and_piece_separator():
    gm = trace(MLP(), (8,))
    info = layersplit.apply(gm, {"fc1": [4, 8], "fc2": [3]})
    assert layersplit.PIECE_SEP == "__o"
    assert layersplit.origins(info) == {"fc1__o0": "fc1", "fc1__o4": "fc1", "fc1__o8": "fc1", "cat": "fc1",
                                        "cat_1": "fc1", "fc2__o0": "fc2", "fc2__o3": "fc2", "cat_2": "fc2"}
    assert layersplit.origins({}) == {}


def test_copy_graph_is_independent_of_the_rewrite():
    model = MLP()
    gm = trace(model, (8,))
    uncut = layersplit.copy_graph(gm)
    layersplit.apply(gm, {"fc2": [3]})
    assert [n.name for n in uncut.graph.nodes] == ["x", "fc1", "relu", "fc2", "output"]
    assert uncut.fc2 is not model.fc2 and torch.equal(uncut.fc2.weight, model.fc2.weight)
    assert _node(uncut, "fc2").meta["tensor_meta"].shape[1:] == torch.Size([6])
    x = _ints((4, 8))
    assert torch.equal(uncut(x), model(x)) and torch.equal(gm(x), model(x))
    with torch.no_grad():
        uncut.fc1.weight.zero_()
    assert not torch.equal(model.fc1.weight, uncut.fc1.weight)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv1d(8, 4, 2)

    def forward(self, x):
        return self.head(self.block(x).flatten(2))


def test_apply_splits_a_convolution_with_its_batchnorm():
    """A convolution's filters in pieces, each followed by its channels of the BatchNorm (statistics included),
    joined over the channels where the BatchNorm's output went; the rewritten graph computes what the model does."""
    torch.manual_seed(1)
    model = ConvBN().eval()
    with torch.no_grad():
        bn = model.block[1]
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
    gm = trace(model, (3, 6, 6))
    assert layersplit.why_not(gm, _node(gm, "block_0")) is None
    assert layersplit.norm_of(gm, _node(gm, "block_0")).name == "block_1"
    info = layersplit.apply(gm, layersplit.resolve(gm, [("block.0", 3, "block.0@3"), ("head", 2, "head@2")]))
    e = info["block_0"]
    assert e["pieces"] == ["block_0__o0", "block_0__o3"] and e["norms"] == ["block_1__o0", "block_1__o3"]
    assert e["norm"] == "block_1" and e["norm_module"] == "block.1" and info["head"]["norms"] == []
    names = [n.name for n in gm.graph.nodes]
    assert names.index("block_0__o3") == names.index("block_1__o0") + 1 and "block_1" not in names
    assert _node(gm, "block_2").args == (_node(gm, e["cats"][0]),)
    assert tuple(_node(gm, "block_1__o3").meta["tensor_meta"].shape)[1:] == (5, 3, 3)
    modules = dict(gm.named_modules())
    piece, norm = modules["block.0__o3"], modules["block.1__o3"]
    assert (piece.out_channels, piece.stride, piece.padding) == (5, (2, 2), (1, 1))
    assert torch.equal(piece.weight, model.block[0].weight[3:]) and torch.equal(norm.running_var, bn.running_var[3:])
    assert layersplit.origins(info)["block_1__o3"] == "block_1" and layersplit.origins(info)["block_0__o3"] == \
        "block_0"
    x = torch.randn(4, 3, 6, 6)
    assert torch.allclose(gm(x), model(x), atol=1e-6)
    grouped = trace(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)).eval(), (4, 5, 5))
    assert "groups=2" in layersplit.why_not(grouped, _node(grouped, "_0"))
