"""Cuts inside a layer (fxsplit.frontend.layersplit): a wide Linear built as several partitions, each a range of its outputs,
bit-exact against the uncut model in C simulation and in the stitched RTL; chosen by splits="auto" where a layer
is the build's bottleneck; refused, before anything is written, where the pieces could not equal the layer.
(Bit-exactness against plain hls4ml with the user's own hls4ml config: tests/test_hls4ml_parity.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.plan.autosplit import plan_auto
from fxsplit.plan.costmodel import CostModel, StepModel, default_models
from fxsplit.frontend.partitioner import strip_markers
from fxsplit.zoo import build

P8 = {**FAST, "precision": "fixed<8,3>"}


def unmarked(name):
    model, shape = build(name)
    return strip_markers(model, shape), shape


def _pieces(design) -> dict[str, list[int]]:
    return {e["module"]: e["bounds"] for e in design.partitioning.layer_splits.values()}


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_layer_split_csim_bit_exact(io_type, tmp_path):
    """fc1 in three pieces (two of them side by side on the model input), fc2 in two; markers kept."""
    model, shape = build("wide_mlp")
    d = fxsplit.compile(model, shape, splits=["fc1@20", "fc1@40", "fc2@32"], config={**P8, "io_type": io_type},
                        output_dir=tmp_path / "o", progress=False, jobs=2)
    assert _pieces(d) == {"fc1": [0, 20, 40, 64], "fc2": [0, 32, 64]}
    names = [p.name for p in d.partitions]
    assert names == ["p0", "p1", "p2", "l2", "p4", "l3", "head"]
    # the first piece of each layer starts the partition the layer started; later pieces get partitions of their own
    assert [p.inputs[0].name for p in d.partitions[:3]] == ["x", "x", "x"]
    pt = d.partitioning
    assert [o.name for o in pt["p0"].outputs] == ["fc1__o0"] and [o.name for o in pt["p1"].outputs] == ["fc1__o20"]
    assert {i.name for i in pt["p2"].inputs} == {"x", "fc1__o0", "fc1__o20"}     # the Concatenates join them
    assert [o.shape for o in pt["l2"].outputs] == [(32,)] and [o.name for o in pt["p4"].outputs] == ["relu2"]
    ports = d.partitioning.ports()
    assert {ports[n].precision for n in ("fc1__o0", "fc1__o20", "fc2__o0")} == {"fixed<8,3,TRN,WRAP,0>"}
    x = np.random.default_rng(5).uniform(-24, 24, size=(300, *shape))       # fixed<8,3> holds +-4: wrap
    res = d.verify(x)
    assert res.bit_exact and res.n_samples == 300, res.details[:3]
    # the PyTorch model is the user's, not the rewritten graph
    y = model(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    assert np.allclose(d.predict_torch(x), y, atol=1e-5)
    rep = d.report["partitions"]
    assert [e["modules"] for e in rep][:2] == [["fc1__o0"], ["fc1__o20"]]


def test_layer_split_rtl_stitched_verilator(tmp_path):
    """The open RTL flow: pieces side by side in the stitched top; fc4 (the model's output) split, so the model's
    output is a Concatenate. The generated testbench checks the stitched RTL against the uncut C simulation."""
    model, shape = build("wide_mlp")
    d = fxsplit.compile(model, shape, flow="rtl", splits=["fc2@32", "fc4@2"], config={**P8, "synth": False},
                        output_dir=tmp_path / "o", progress=False, jobs=2)
    assert _pieces(d) == {"fc2": [0, 32, 64], "fc4": [0, 2, 5]}
    assert d.partitioning.outputs[0].name.startswith("cat")
    x = np.random.default_rng(2).uniform(-24, 24, size=(150, *shape))
    res = d.verify(x, level="rtl")
    assert res.bit_exact and res.extra["rtl_vs_csim"] == {"passed": 150, "failed": 0}
    assert res.extra["csim_vs_monolithic_mismatches"] == 0


def test_cut_between_the_pieces_and_their_join(tmp_path):
    """'fc2@64' (fc2's width): the two pieces side by side on relu1, the join starting the partition of what follows."""
    model, shape = unmarked("wide_mlp")
    d = fxsplit.compile(model, shape, splits=["fc2", "fc2@40", "fc2@64"], config=P8, output_dir=tmp_path / "o",
                        progress=False)
    pt = d.partitioning
    assert [p.name for p in pt.partitions] == ["p0", "p1", "p2", "p3"]
    assert [i.name for i in pt["p1"].inputs] == ["relu1"] and [i.name for i in pt["p2"].inputs] == ["relu1"]
    assert {i.name for i in pt["p3"].inputs} == {"fc2__o0", "fc2__o40"} and pt["p3"].sources == \
        {"fc2__o0": "p1", "fc2__o40": "p2"}
    assert d.report["layer_splits"] == {"fc2": [0, 40, 64]}
    page = (tmp_path / "o" / "report.html").read_text().split("<h2>Cuts inside layers</h2>")
    assert len(page) == 2 and "<code>fc2</code>" in page[1] and "0..39, 40..63" in page[1].split("</table>")[0]
    assert d.verify(np.random.default_rng(4).uniform(-24, 24, size=(200, *shape))).bit_exact
    with pytest.raises(fxsplit.FxsplitError, match="nothing splits that layer into pieces"):
        fxsplit.compile(model, shape, splits=["fc2@64"], config=P8, output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_layer_split_keeps_the_layers_config(tmp_path):
    """A layer's own settings (config['layers']) go to every piece; an exact accumulator stays exact; the uncut
    reference is configured as the user wrote it."""
    model, shape = build("wide_mlp")
    cfg = {**P8, "exact_accum": True, "layers": {"fc2": {"precision": {"result": "fixed<10,4,RND,SAT>",
                                                                      "weight": "fixed<6,2>"}}}}
    d = fxsplit.compile(model, shape, splits=["fc2@16", "fc2@40"], config=cfg, output_dir=tmp_path / "o",
                        progress=False)
    assert _pieces(d) == {"fc2": [0, 16, 40, 64]}
    assert [p.name for p in d.partitions] == ["p0", "l2", "p2", "p3", "l3", "head"]
    for part, port in (("l2", "fc2__o0"), ("p2", "fc2__o16")):
        assert d.partitioning.ports()[port].precision.startswith("fixed<10,4,RND,SAT")
        spec = d.report["partitions"][[p.name for p in d.partitions].index(part)]
        assert spec["outputs"][0]["name"] == port
    x = np.random.default_rng(3).uniform(-24, 24, size=(200, *shape))
    assert d.verify(x).bit_exact


class ConvNet(nn.Module):
    """Conv2d + BatchNorm + ReLU split by output channels, a 1x1 Conv2d without BatchNorm after it, a Conv1d head."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU()
        self.conv2 = nn.Conv2d(10, 6, 1, bias=False)
        self.flat = nn.Flatten(2)
        self.conv3 = nn.Conv1d(6, 5, 3, stride=2)

    def forward(self, x):
        return self.conv3(self.flat(self.conv2(self.relu(self.bn1(self.conv1(x))))))


def _conv_net():
    from fxsplit.zoo import randomize_batchnorm
    torch.manual_seed(3)
    m = ConvNet()
    randomize_batchnorm(m, seed=3)
    return m.eval(), (3, 6, 6)


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_conv_split_by_output_channels_csim_bit_exact(io_type, tmp_path):
    """A convolution's filters in pieces, each with its slice of the BatchNorm that follows, joined over the
    channels: the same bits as the uncut layer, on inputs that wrap; a 1x1 convolution split at its width."""
    model, shape = _conv_net()
    d = fxsplit.compile(model, shape, splits=["conv1@4", "conv1@7", "conv2@3", "conv2@6"],
                        config={**P8, "io_type": io_type}, output_dir=tmp_path / "o", progress=False, jobs=2)
    assert _pieces(d) == {"conv1": [0, 4, 7, 10], "conv2": [0, 3, 6]}
    pt = d.partitioning
    e = pt.layer_splits["conv1"]
    assert e["norm"] == "bn1" and e["norms"] == ["bn1__o0", "bn1__o4", "bn1__o7"]
    assert [o.name for o in pt["p0"].outputs] == ["bn1__o0"] and [o.shape for o in pt["p1"].outputs] == [(6, 6, 3)]
    # the pieces' BatchNorms carry the BatchNorm's types; the join hands on the BatchNorm's result type
    assert {pt.ports()[n].precision for n in ("bn1__o0", "bn1__o4")} == {"fixed<8,3,TRN,WRAP,0>"}
    assert pt.origin("bn1__o4") == "bn1" and pt.origin("conv1__o4") == "conv1" and pt.origin(e["cats"][-1]) == "bn1"
    x = np.random.default_rng(6).uniform(-8, 8, size=(60, *shape))       # fixed<8,3> holds +-4: wrap
    res = d.verify(x)
    assert res.bit_exact and res.n_samples == 60, res.details[:3]
    y = model(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    assert np.allclose(d.predict_torch(x), y, atol=1e-5)


@pytest.mark.slow
def test_conv_split_fully_parallel_rtl_bit_exact(tmp_path):
    """The fully parallel open RTL flow: a convolution's pieces (with their BatchNorm channels) and a 1x1
    convolution's side by side in the stitched top, bit-exact in Verilator against the uncut C simulation."""
    model, shape = _conv_net()
    d = fxsplit.compile(model, shape, flow="rtl", splits=["conv1@4", "conv2@3"], config={**P8, "synth": False},
                        output_dir=tmp_path / "o", progress=False, jobs=2)
    assert _pieces(d) == {"conv1": [0, 4, 10], "conv2": [0, 3, 6]}
    x = np.random.default_rng(6).uniform(-8, 8, size=(100, *shape))
    res = d.verify(x, level="rtl")
    assert res.bit_exact and res.extra["rtl_vs_csim"] == {"passed": 100, "failed": 0}


class GroupConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x):
        return self.conv(x)


class LinBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn = nn.Linear(8, 16), nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.bn(self.fc1(x)))


class FlatHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.flatten, self.fc = nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(18, 6)

    def forward(self, x):
        return self.fc(self.flatten(self.conv(x)))


def test_layer_split_refusals(tmp_path):
    """Each refusal names the layer and what to do, and leaves nothing behind."""
    out = tmp_path / "o"
    wide, wshape = build("wide_mlp")
    cases = [
        (wide, wshape, ["fc2@65"], {}, "has 64 outputs, so a piece can start at 1 .. 63"),
        (wide, wshape, ["fc2@0"], {}, "not 0"),
        (wide, wshape, ["fcc2@3"], {}, "did you mean 'fc2'"),
        (GroupConv().eval(), (4, 6, 6), ["conv@2"], {}, "groups=2"),
        (build("qat_residual_cnn")[0], (3, 8, 8), ["stem.0@2"], {}, "only a plain torch.nn.Linear, Conv1d or Conv2d"),
        (_conv_net()[0], (3, 6, 6), ["conv1@4"], {"layers": {"conv1": {"precision": {"result": "auto"}}}},
         "hls4ml fuses that BatchNorm into the layer"),
        (LinBN().eval(), (8,), ["fc1@8"], {}, "hls4ml fuses it with the BatchNorm1d 'bn'"),
        (FlatHead().eval(), (2, 8), ["fc@3"], {}, "flattened multi-dimensional tensor"),
        (build("qat_jet_tagger")[0], (16,), ["fc1@8"], {}, "only a plain torch.nn.Linear"),
        (build("residual_cnn")[0], (3, 8, 8), ["pool@2"], {}, "only a plain torch.nn.Linear, Conv1d or Conv2d"),
        (wide, wshape, ["fc2@32"], {"layers": {"fc2": {"precision": {"accum": "fixed<14,6,TRN,SAT>"}}}},
         "saturates"),
        (wide, wshape, ["fc2@32"], {"partitions": {"l2": {"precision": "fixed<10,4>"}}},
         "gives its pieces different settings"),
    ]
    for model, shape, splits, cfg, msg in cases:
        if "stem.0" in splits[0]:
            names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
            splits = [f"{names[0]}@2"]
        with pytest.raises(fxsplit.FxsplitError, match=msg.replace(".", r"\.").replace("(", r"\(")) as e:
            fxsplit.compile(model, shape, splits=splits, config={**FAST, **cfg}, output_dir=out, progress=False)
        assert not out.exists()
        if "did you mean" not in msg and "not 0" not in msg:
            assert e.value.module and (e.value.source or "partitions" in cfg or "layers" in cfg), str(e.value)


def test_auto_cuts_inside_a_bottleneck_layer():
    """With a cost model where Yosys time grows superlinearly (what the cache of this machine fits), the one
    bottleneck layer of the unmarked wide MLP is split on 2 workers; split_layers=False keeps cuts between layers;
    the names auto returns rebuild exactly that plan."""
    model, shape = unmarked("wide_mlp")
    steps = default_models()
    steps["synth"] = StepModel(a=7.7, b=0.0, d=0.00628, c=1.25)
    cm = CostModel(steps)
    inside = plan_auto(model, shape, 2, precision="fixed<8,3>", flow="rtl", cost_model=cm, split_layers=True)
    between = plan_auto(model, shape, 2, precision="fixed<8,3>", flow="rtl", cost_model=cm, split_layers=False)
    assert any("@" in s for s in inside.splits) and inside.layer_splits
    assert not any("@" in s for s in between.splits) and not between.layer_splits
    assert inside.predicted_wall < between.predicted_wall
    assert inside.to_dict()["layer_splits"] == inside.layer_splits
    pt = fxsplit.partition(model, shape, inside.splits)
    assert len(pt.partitions) == inside.partitions
    assert {e["module"]: e["bounds"][1:-1] for e in pt.layer_splits.values()} == \
        {k: [b for b in v if b != pt.layer_splits[k.replace(".", "_")]["bounds"][-1]]
         for k, v in inside.layer_splits.items()}
    # a user's cut inside a layer is kept by auto (a constraint, like a marker)
    kept = plan_auto(model, shape, 2, precision="fixed<8,3>", flow="rtl", cost_model=cm, split_layers=False,
                     splits=["fc3@7"])
    assert kept.markers_only["partitions"] == 2 and "fc3@7" not in kept.splits
    assert fxsplit.auto_splits(model, shape, workers=2, config=P8, flow="hls4ml") == \
        plan_auto(model, shape, 2, precision="fixed<8,3>", flow="hls4ml", cost_model=CostModel()).splits


def test_pieces_are_priced_as_the_layer_they_came_from():
    """The pieces the planner offers (and the joins between them) add up to the layer they came from: a plan that
    cuts nowhere is predicted the same with and without them (a run of pieces in one partition is lowered as one
    layer, so its pieces must not count one layer each, nor their joins one more each)."""
    model, shape = unmarked("wide_mlp")
    whole = plan_auto(model, shape, 1, precision="fixed<8,3>", flow="rtl", cost_model=CostModel(), split_layers=False,
                      max_partitions=1)
    pieces = plan_auto(model, shape, 1, precision="fixed<8,3>", flow="rtl", cost_model=CostModel(), split_layers=True,
                       max_partitions=1)
    assert whole.partitions == pieces.partitions == 1 and not pieces.layer_splits
    assert pieces.predicted[0] == pytest.approx(whole.predicted[0], rel=2e-3)


def test_eight_workers_balance_within_a_piece():
    """With the shipped cost model, the wide MLP's plan for 8 workers (its markers kept, cuts inside its layers)
    is predicted within 15 % of its partitions' total / 8 (the balance target; before the finer pieces, their
    pricing and the packing refinement after the dynamic program, 1.27x)."""
    model, shape = build("wide_mlp")
    plan = plan_auto(model, shape, 8, precision="fixed<8,3>", flow="rtl", cost_model=CostModel(), split_layers=True)
    assert plan.layer_splits and plan.partitions >= 8
    assert plan.predicted_wall <= 1.15 * sum(plan.predicted) / 8, plan.to_dict()


def test_split_layers_option_is_checked(tmp_path):
    model, shape = build("jet_tagger")
    with pytest.raises(fxsplit.FxsplitError, match="applies to splits='auto' only"):
        fxsplit.compile(model, shape, split_layers=True, output_dir=tmp_path / "o")
    with pytest.raises(fxsplit.FxsplitError, match="applies to splits='auto' only"):
        fxsplit.compile(model, shape, splits="auto", split_layers="yes", output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


class FlatTwo(nn.Module):
    """A flattened tensor read inside its partition and across a cut (not a layer split: a plain cut)."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.flatten = nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Flatten()
        self.fa, self.fb = nn.Linear(56, 5), nn.Linear(56, 5)

    def forward(self, x):
        h = self.flatten(self.relu(self.conv(x)))
        return self.fa(h) + self.fb(h)


def test_flattened_tensor_across_a_cut_in_channels_last_order_is_refused(tmp_path):
    """hls4ml permutes fa's weights and leaves the flattened tensor channels-last inside the partition; fb, across
    the cut, would read it in another order (measured: every output wrong). Refused at validation; cutting
    before the flatten builds, bit-exact."""
    torch.manual_seed(0)
    model = FlatTwo().eval()
    with pytest.raises(fxsplit.FxsplitError, match="leaves partition 'p0' in hls4ml's channels-last order") as e:
        fxsplit.compile(model, (3, 16), splits=["fb"], config=FAST, output_dir=tmp_path / "bad", progress=False)
    assert "splits=['flatten']" in str(e.value)
    assert not (tmp_path / "bad").exists()
    d = fxsplit.compile(model, (3, 16), splits=["flatten"], config=FAST, output_dir=tmp_path / "ok", progress=False)
    assert d.verify(np.random.default_rng(0).uniform(-8, 8, size=(100, 3, 16))).bit_exact
