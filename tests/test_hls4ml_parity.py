"""fxsplit is a drop-in for hls4ml users: with the hls4ml config they already have, the stitched design
gives plain hls4ml's bits (``convert_from_pytorch_model(model, hls_config=cfg)``), bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST


class MLP3(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(12, 24), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(24, 16), nn.ReLU()
        self.fc3 = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


class ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(10, 16), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(16, 16), nn.ReLU()
        self.fc3 = nn.Linear(16, 4)

    def forward(self, x):
        h = self.relu1(self.fc1(x))
        return self.fc3(self.relu2(self.fc2(h)) + h)        # h bypasses fc2


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv1d(3, 6, 3), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv1d(6, 4, 3), nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 12, 5)

    def forward(self, x):
        return self.fc(self.flatten(self.relu2(self.conv2(self.relu1(self.conv1(x))))))


class ViewTail(nn.Module):
    """A reshape as the model's last operation: hls4ml drops it (io_parallel) or keeps it (io_stream)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).view(-1, 24)


def _plain_hls4ml(model, shape, cfg, io_type, out_dir):
    import hls4ml
    hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=str(out_dir),
                                                      backend="Vivado", io_type=io_type)
    hm.compile()
    return hm


def _config(model, shape, granularity, conversion="full"):
    from hls4ml.utils.config import config_from_pytorch_model
    cfg = config_from_pytorch_model(model, shape, granularity=granularity, default_precision="fixed<12,5>",
                                    channels_last_conversion=conversion)
    if granularity == "name":     # a user's per-layer tuning, in hls4ml's own names
        first = next(k for k in cfg["LayerName"] if k.startswith(("fc", "conv")))
        cfg["LayerName"][first]["Precision"] = {"weight": "fixed<8,3>", "bias": "fixed<8,3>",
                                                "result": "fixed<14,6,RND,SAT>", "accum": "fixed<18,8>"}
        cfg["LayerName"][first]["ReuseFactor"] = 2
    if granularity == "type":
        cfg["LayerType"]["Dense"]["Precision"]["weight"] = "fixed<9,3>"
    return cfg


CASES = [
    # model, input shape, splits, granularity, io_type
    (MLP3, (12,), ["fc2", "fc3"], "model", "io_parallel"),
    (MLP3, (12,), ["relu1", "fc3"], "name", "io_parallel"),
    (ResidualMLP, (10,), ["fc2", "fc3"], "name", "io_parallel"),      # h crosses both cuts
    (ResidualMLP, (10,), ["fc2"], "type", "io_parallel"),
    (Conv1dNet, (3, 16), ["conv2", "flatten"], "name", "io_parallel"),
    (Conv1dNet, (3, 16), ["conv2", "flatten"], "model", "io_stream"),
    (MLP3, (12,), ["fc2"], "name", "io_stream"),
    (Conv1dNet, (3, 16), ["fc"], "name", "io_parallel"),        # a partition ending in Flatten (hls4ml drops it)
    (ViewTail, (3, 8), [], "model", "io_parallel"),
    (ViewTail, (3, 8), [], "model", "io_stream"),
    # cuts inside a layer (fxsplit.frontend.layersplit): fc1 carries the user's own types (saturating result, wrapping
    # accumulator) into its three pieces; the model's output is the Concatenate of fc3's pieces
    (MLP3, (12,), ["fc1@8", "fc1@17", "fc3@2"], "name", "io_parallel"),
    (ResidualMLP, (10,), ["fc2@8", "fc3"], "type", "io_parallel"),     # h bypasses both pieces
    (MLP3, (12,), ["fc1@12", "fc2"], "name", "io_stream"),
]


@pytest.mark.parametrize("cls,shape,splits,granularity,io_type", CASES,
                         ids=[f"{c[0].__name__}-{'+'.join(c[2]) or 'uncut'}-{c[3]}-{c[4]}" for c in CASES])
def test_same_bits_as_plain_hls4ml(cls, shape, splits, granularity, io_type, tmp_path):
    torch.manual_seed(3)
    model = cls().eval()
    conversion = "internal" if io_type == "io_stream" else "full"     # hls4ml: 'full' is io_parallel only
    cfg = _config(model, shape, granularity, conversion)
    plain = _plain_hls4ml(model, shape, cfg, io_type, tmp_path / "plain")
    design = fxsplit.compile(model, shape, splits=splits, hls_config=cfg, config={**FAST, "io_type": io_type},
                             output_dir=tmp_path / "fx", progress=False)
    assert len(design.partitions) == len(splits) + 1
    inside = [s for s in splits if "@" in s]
    assert sorted(f"{e['module']}@{b}" for e in design.partitioning.layer_splits.values()
                  for b in e["bounds"][1:-1]) == sorted(inside)
    rng = np.random.default_rng(0)
    x = rng.uniform(-40, 40, size=(200, *shape))          # far beyond fixed<12,5>: wrap and saturation
    ours = np.asarray(design.predict(x)).reshape(200, -1)
    xin = x if conversion == "full" or len(shape) == 1 else np.ascontiguousarray(np.moveaxis(x, 1, -1))
    theirs = np.asarray(plain.predict(np.ascontiguousarray(xin))).reshape(200, -1)
    assert np.array_equal(ours, theirs), f"{np.sum(ours != theirs)} of {ours.size} outputs differ from plain hls4ml"
    res = design.verify(x)
    assert res.bit_exact, res.details[:5]


def test_hls_config_layer_names_are_checked(tmp_path):
    model = MLP3().eval()
    cfg = _config(model, (12,), "name")
    cfg["LayerName"]["fc_2"] = {"Precision": {"result": "fixed<8,3>"}}
    with pytest.raises(fxsplit.FxsplitError, match="'fc_2'.*does not see") as e:
        fxsplit.compile(model, (12,), hls_config=cfg, output_dir=tmp_path / "o")
    assert "fc2" in str(e.value)                         # suggests the real name
    assert not (tmp_path / "o").exists()


def test_hls_config_and_numeric_config_keys_conflict(tmp_path):
    model = MLP3().eval()
    with pytest.raises(fxsplit.FxsplitError, match="hls_config is given"):
        fxsplit.compile(model, (12,), hls_config=_config(model, (12,), "model"), config={"precision": "fixed<8,3>"},
                        output_dir=tmp_path / "o")


def test_hls_config_sections_fxsplit_does_not_apply_are_refused(tmp_path):
    model = MLP3().eval()
    cfg = _config(model, (12,), "model")
    with pytest.raises(fxsplit.FxsplitError, match="InputShape"):
        fxsplit.compile(model, (12,), hls_config={**cfg, "InputShape": (13,)}, output_dir=tmp_path / "o")
    with pytest.raises(fxsplit.FxsplitError, match="'IOType' is not one fxsplit applies"):
        fxsplit.compile(model, (12,), hls_config={**cfg, "IOType": "io_stream"}, output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


class _OneLSB:
    """A partition's C simulation with the lowest bit of one output element flipped."""

    def __init__(self, csim):
        self.csim = csim

    def quantize(self, k, x):
        return self.csim.quantize(k, x)

    def run(self, xs):
        ys = self.csim.run(xs)
        ys[0][:, 0] ^= np.uint64(1)
        return ys


def test_wide_cut_tensors_cross_exactly(tmp_path):
    """hls4ml's exact ('auto') Dense sums grow by ~20 bits a layer: the cut tensors here are 56, 76 and 96
    bits wide (wider than a double's 53 and than one 64-bit word), their values carry more significant bits than a
    double holds, and they cross the cuts bit for bit."""
    from hls4ml.utils.config import config_from_pytorch_model
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), fxsplit.Cut("mid"), nn.Linear(8, 8), fxsplit.Cut("tail"),
                          nn.Linear(8, 2)).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(16.0)             # values with more significant bits than a double holds
    cfg = config_from_pytorch_model(model, (8,), granularity="name")
    for name in ("_0", "_1", "_3", "_5"):
        cfg["LayerName"][name]["Precision"]["accum"] = "auto"      # exact sums (the default wraps at fixed<16,6>)
    design = fxsplit.compile(model, (8,), hls_config=cfg, config=FAST, output_dir=tmp_path / "fx", progress=False)
    widths = [int(p.outputs[0].precision.split("<")[1].split(",")[0]) for p in design.partitions]
    assert widths[0] > 53 and widths[1] > 64 and widths[2] > 64, widths
    x = np.random.default_rng(0).uniform(-40, 40, size=(100, 8))
    plain = _plain_hls4ml(model, (8,), cfg, "io_parallel", tmp_path / "plain")
    assert np.array_equal(np.asarray(design.predict(x)), plain.predict(x))
    assert design.verify(x).bit_exact
    raw = design.port_raw(x)["_3"]                          # 76 bits: Python ints, exact
    assert raw.dtype == object and max(abs(int(v)) for v in raw.ravel()) > 2 ** 53
    # one LSB of a 76-bit tensor, invisible through a double, is a mismatch
    design._csims["mid"] = _OneLSB(design._csims["mid"])
    res = design.verify(x)
    assert not res.bit_exact and res.mismatches > 0


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_channels_last_conversion_off(io_type, tmp_path):
    """ChannelsLastConversion='off' passes through: hls4ml keeps PyTorch's layout, and so do the ports."""
    torch.manual_seed(5)
    model = ResidualMLP().eval()
    cfg = _config(model, (10,), "name", conversion="off")
    plain = _plain_hls4ml(model, (10,), cfg, io_type, tmp_path / "plain")
    design = fxsplit.compile(model, (10,), splits=["fc2", "fc3"], hls_config=cfg,
                             config={**FAST, "io_type": io_type}, output_dir=tmp_path / "fx", progress=False)
    assert not design.partitioning.channels_last
    assert all(p.shape == p.torch_shape for p in design.partitioning.ports().values())
    x = np.random.default_rng(1).uniform(-40, 40, size=(100, 10))
    assert np.array_equal(np.asarray(design.predict(x)).reshape(100, -1), plain.predict(x).reshape(100, -1))
    assert design.verify(x).bit_exact


def test_channels_last_conversion_off_where_hls4ml_fails(tmp_path):
    """A convolution with ChannelsLastConversion='off' fails in plain hls4ml 1.3 (io_parallel): fxsplit says so
    before anything is built."""
    model = Conv1dNet().eval()
    cfg = _config(model, (3, 16), "model", conversion="off")
    with pytest.raises(Exception) as plain:
        _plain_hls4ml(model, (3, 16), cfg, "io_parallel", tmp_path / "plain")
    assert not isinstance(plain.value, fxsplit.FxsplitError)
    with pytest.raises(fxsplit.FxsplitError, match="hls4ml could not convert"):
        fxsplit.compile(model, (3, 16), splits=["conv2"], hls_config=cfg, config=FAST, output_dir=tmp_path / "fx",
                        progress=False)
    assert not (tmp_path / "fx").exists()


class ConvOut(nn.Module):
    """A feature map as the model's output: its layout depends on hls4ml's TransposeOutputs."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv1d(3, 5, 3), nn.ReLU()
        self.conv2 = nn.Conv1d(5, 4, 3)

    def forward(self, x):
        return self.conv2(self.relu1(self.conv1(x)))


@pytest.mark.parametrize("transpose_outputs", [False, True])
def test_transpose_outputs_passes_through(transpose_outputs, tmp_path):
    """predict returns what plain hls4ml's predict returns: channels-last outputs (its default), or PyTorch's
    layout with transpose_outputs=True, element for element."""
    from hls4ml.utils.config import config_from_pytorch_model
    torch.manual_seed(7)
    model = ConvOut().eval()
    cfg = config_from_pytorch_model(model, (3, 16), default_precision="fixed<12,5>", transpose_outputs=transpose_outputs)
    plain = _plain_hls4ml(model, (3, 16), cfg, "io_parallel", tmp_path / "plain")
    design = fxsplit.compile(model, (3, 16), splits=["conv2"], hls_config=cfg, config=FAST,
                             output_dir=tmp_path / "fx", progress=False)
    x = np.random.default_rng(2).uniform(-20, 20, size=(50, 3, 16))
    ours = np.asarray(design.predict(x))
    assert ours.shape == ((50, 4, 12) if transpose_outputs else (50, 12, 4))
    assert np.array_equal(ours.reshape(50, -1), plain.predict(x).reshape(50, -1))
    assert design.verify(x).bit_exact
