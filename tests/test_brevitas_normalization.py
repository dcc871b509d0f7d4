"""A normalization of the model input before its first quantizer, ``(x - mean) / std`` with constants that are not
powers of two (per channel, as registered buffers), folded into that quantizer: checked on every value of the
declared input type against the exact rational arithmetic, the decisions brevitas' float32 moves counted and
reported, never followed."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.zoo import randomize_batchnorm

IN_TYPE = "ufixed<8,0,TRN,SAT>"          # pixels k/256 in [0, 1)


class _Scaled(nn.Module):
    """A float arithmetic on the input, then bnn_pynq's quantizer (3 bits, scale 1)."""

    def __init__(self, fn, bits: int = 3):
        super().__init__()
        from brevitas.nn import QuantIdentity
        from brevitas_examples.bnn_pynq.models.common import CommonActQuant
        self.fn = fn
        m = 2 ** (bits - 1) - 1
        self.q = QuantIdentity(act_quant=CommonActQuant, bit_width=bits, min_val=-float(m), max_val=float(m))

    def forward(self, x):
        return self.q(self.fn(x))


def _levels(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        y = model(x)
    return getattr(y, "value", y).numpy()


def _half_even(v: Fraction) -> int:
    f = math.floor(v)
    r = v - f
    return f + (1 if r > Fraction(1, 2) or (r == Fraction(1, 2) and f % 2) else 0)


def test_a_normalization_with_exact_ties_is_folded_into_the_quantizer(tmp_path):
    """(x - 0.5) / 0.375 on k/256: (k - 128) / 96, exactly half-way between levels at k = 80 and 176 (rounded half
    to even, to 0). A fold whose scale is the nearest fixed-point value of 8/3 rounds one of the two the wrong way:
    the fold is fitted on every value of the input type, ties included, and equals the exact levels."""
    model = _Scaled(lambda x: (x - 0.5) / 0.375).eval()
    d = fxsplit.compile(model, (4,), flow="hls4ml", config={**FAST, "input_precision": IN_TYPE},
                        output_dir=tmp_path / "o", jobs=1, progress=False)
    (arith,) = d.report["brevitas"]["input_arithmetic"]
    assert arith["kind"] == "input normalization" and arith["operations"] == ["sub", "truediv"]
    assert arith["checked_inputs"] == 256 * 4 and arith["decisions_moved"] == 0
    k = torch.arange(256)
    x = (k.to(torch.float32) / 256).reshape(-1, 1).expand(256, 4).contiguous()
    exact = np.array([max(-3, min(3, _half_even(Fraction(int(v) - 128, 96)))) for v in k], dtype=np.float64)
    assert exact[80] == 0 and exact[176] == 0 and exact[79] == -1 and exact[177] == 1
    r = d.verify(x)
    assert r.bit_exact and r.reading_mismatches == 0, r.summary()
    np.testing.assert_array_equal(d.predict(x)[:, 0], exact)
    np.testing.assert_array_equal(d.predict(x), _levels(model, x))       # brevitas' float32 is exact here


def test_python_constants_are_the_float32_values_brevitas_computes_with(tmp_path):
    """``(x - 0.485) / 0.229`` with Python numbers: torch computes with float32(0.485) and float32(0.229); the fold is
    exact on those, and the report says they were rounded."""
    model = _Scaled(lambda x: (x - 0.485) / 0.229, bits=4).eval()
    d = fxsplit.compile(model, (2,), flow="hls4ml", config={**FAST, "input_precision": IN_TYPE},
                        output_dir=tmp_path / "o", jobs=1, progress=False)
    (arith,) = d.report["brevitas"]["input_arithmetic"]
    assert arith["constants_rounded_to_float32"] == ["sub", "truediv"]
    m, s = (Fraction(float(torch.tensor(v, dtype=torch.float32))) for v in (0.485, 0.229))
    k = torch.arange(256)
    x = (k.to(torch.float32) / 256).reshape(-1, 1).expand(256, 2).contiguous()
    exact = np.array([max(-7, min(7, _half_even((Fraction(int(v), 256) - m) / s))) for v in k], dtype=np.float64)
    np.testing.assert_array_equal(d.predict(x)[:, 1], exact)
    assert int((_levels(model, x)[:, 0] != exact).sum()) * 2 == arith["decisions_moved"]
    assert d.verify(x).bit_exact


def test_float64_constant_tensors_are_used_as_they_are(tmp_path):
    """A float64 tensor of one or more dimensions promotes the float32 input to float64 (torch's type promotion):
    the fold is exact on the constant as written, nothing is rounded."""
    mean = torch.tensor([0.485], dtype=torch.float64)
    std = torch.tensor([0.229], dtype=torch.float64)
    model = _Scaled(lambda x: (x - mean) / std, bits=4).eval()
    d = fxsplit.compile(model, (2,), flow="hls4ml", config={**FAST, "input_precision": IN_TYPE},
                        output_dir=tmp_path / "o", jobs=1, progress=False)
    (arith,) = d.report["brevitas"]["input_arithmetic"]
    assert "constants_rounded_to_float32" not in arith
    m, s = Fraction(0.485), Fraction(0.229)
    k = torch.arange(256)
    x = (k.to(torch.float32) / 256).reshape(-1, 1).expand(256, 2).contiguous()
    exact = np.array([max(-7, min(7, _half_even((Fraction(int(v), 256) - m) / s))) for v in k], dtype=np.float64)
    np.testing.assert_array_equal(d.predict(x)[:, 0], exact)
    assert d.verify(x).bit_exact


def test_brevitas_float32_moving_a_normalized_decision_is_counted_not_followed(tmp_path):
    """(x + 1.5) * 40000 - 60000 on fixed<16,-8> (24 fractional bits): brevitas rounds 1.5 + x to float32's 23
    bits and the product to 8 fractional bits, so values near a level boundary move to the neighbouring level.
    The design computes the exact levels; every moved decision (value x channel) is counted in the report, and
    verify counts the outputs that differ from brevitas."""
    model = _Scaled(lambda x: (x + 1.5) * 40000.0 - 60000.0, bits=8).eval()
    d = fxsplit.compile(model, (2,), flow="hls4ml", config={**FAST, "input_precision": "fixed<16,-8,TRN,SAT>"},
                        output_dir=tmp_path / "o", jobs=1, progress=False)
    raw = torch.arange(-2 ** 15, 2 ** 15)
    x = (raw.to(torch.float64) * 2.0 ** -24).to(torch.float32).reshape(-1, 1).expand(len(raw), 2).contiguous()
    exact = np.array([max(-127, min(127, _half_even(Fraction(40000 * int(v), 2 ** 24)))) for v in raw],
                     dtype=np.float64)
    theirs = _levels(model, x)[:, 0]
    moved = int((theirs != exact).sum())
    assert moved > 20 and np.abs(theirs - exact).max() == 1   # the test reaches brevitas' float32 rounding
    (arith,) = d.report["brevitas"]["input_arithmetic"]
    assert arith["kind"] == "input normalization" and arith["operations"] == ["add", "mul", "sub"]
    assert arith["decisions_moved"] == 2 * moved and arith["decisions_checked"] == 2 * len(raw)
    assert d.report["brevitas"]["torch_exact"] is False and d.report["brevitas"]["inexact_in_brevitas"] == ["sub"]
    np.testing.assert_array_equal(d.predict(x)[:, 0], exact)
    r = d.verify(x)
    assert r.bit_exact and r.reading_mismatches == 0 and r.torch_mismatches == 2 * moved, r.summary()


class _Normalized(nn.Module):
    """ImageNet's normalization as registered buffers, a float-scaled 8-bit input quantizer, two float-scaled conv
    blocks with BatchNorm, a linear head."""

    def __init__(self):
        super().__init__()
        from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
        from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(3, 1, 1))
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFloat, scaling_impl_type="const", min_val=-2.64,
                                 max_val=2.64, return_quant_tensor=True)
        conv = dict(weight_quant=Int8WeightPerChannelFloat, weight_bit_width=4, bias=False, return_quant_tensor=True)
        relu = dict(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=True)
        self.conv1, self.bn1, self.relu1 = QuantConv2d(3, 8, 3, **conv), nn.BatchNorm2d(8), QuantReLU(**relu)
        self.conv2, self.bn2, self.relu2 = QuantConv2d(8, 8, 3, **conv), nn.BatchNorm2d(8), QuantReLU(**relu)
        self.fc = QuantLinear(8 * 4 * 4, 10, bias=False, weight_bit_width=4)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = self.relu1(self.bn1(self.conv1(self.inp(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def normalized():
    torch.manual_seed(0)
    net = _Normalized()
    randomize_batchnorm(net, 0)
    return net.eval()


def test_imagenet_normalization_per_channel_cut_in_io_stream(tmp_path, normalized):
    """Per-channel mean and std (registered buffers, each partition's own constants), a float-scaled quantizer:
    the fold equals the exact levels on all 256 x 3 pixel values; stitched == uncut == the exact reading, top-1 as
    brevitas; the QONNX files of every partition run as PyTorch."""
    net = normalized
    d = fxsplit.compile(net, (3, 8, 8), splits=["conv1", "conv2"], flow="hls4ml",
                        config={**FAST, "input_precision": IN_TYPE, "io_type": "io_stream"},
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    assert [p.inputs[0].name for p in d.partitions][0] == "x" and len(d.partitions) == 3
    (arith,) = d.report["brevitas"]["input_arithmetic"]
    assert arith["kind"] == "input normalization" and arith["checked_inputs"] == 256 * 3
    assert arith["quantizer"] == "folded into QuantIdentity inp" and arith["input_type"] == IN_TYPE
    # brevitas' levels of the first quantizer against the exact ones, counted here from the constants
    mean, std = net.mean.flatten().tolist(), net.std.flatten().tolist()
    scale = Fraction(float(net.inp.act_quant.scale()))
    k = torch.arange(256)
    px = (k.to(torch.float32) / 256).reshape(-1, 1, 1, 1).expand(256, 3, 1, 1).contiguous()
    with torch.no_grad():
        theirs = (net.inp((px - net.mean) / net.std).value / net.inp.act_quant.scale()).round().reshape(256, 3)
    moved = 0
    for c in range(3):
        for i in range(256):
            v = (Fraction(i, 256) - Fraction(mean[c])) / Fraction(std[c]) / scale
            moved += int(max(-128, min(127, _half_even(v))) != int(theirs[i, c]))
    assert arith["decisions_moved"] == moved
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (12, 3, 8, 8), generator=g).float() / 256
    x[0] = 0.0
    x[1] = 255 / 256
    r = d.verify(x)
    assert r.bit_exact and r.reading_mismatches == 0, r.summary()
    with torch.no_grad():
        ref = net(x)
    ref = getattr(ref, "value", ref).numpy()
    assert np.array_equal(np.argmax(d.predict(x), axis=1), np.argmax(ref, axis=1))
    res = d.export_onnx(tmp_path / "onnx", samples=4)
    for e in [*res["partitions"].values(), res["monolithic"]]:
        assert e["max_abs_error_vs_torch"] <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_a_normalization_not_read_by_a_quantizer_or_cut_before_it_is_refused(tmp_path, normalized):
    out = tmp_path / "refused"
    cfg = {**FAST, "input_precision": IN_TYPE}
    with pytest.raises(fxsplit.FxsplitError, match="right after the float arithmetic sub, truediv") as e:
        fxsplit.compile(normalized, (3, 8, 8), splits=["inp"], flow="hls4ml", config=cfg, output_dir=out,
                        progress=False)
    assert "cut after the first quantizer" in str(e.value) and not out.exists()

    class _Unquantized(nn.Module):
        def __init__(self):
            super().__init__()
            from brevitas.nn import QuantLinear
            self.fc = QuantLinear(4, 2, bias=False, weight_bit_width=4)

        def forward(self, x):
            return self.fc((x - 0.5) / 0.3)
    with pytest.raises(fxsplit.FxsplitError, match="not a power of two \\(a normalization\\)") as e:
        fxsplit.compile(_Unquantized().eval(), (4,), flow="hls4ml", config=cfg, output_dir=out, progress=False)
    assert "QuantIdentity" in str(e.value) and "test_brevitas_normalization.py" in str(e.value) and not out.exists()
    with pytest.raises(fxsplit.FxsplitError, match="'sub' on the model input uses a constant that is not a float32"):
        fxsplit.compile(_Scaled(lambda x: 2.0 * x - 0.3).eval(), (4,), flow="hls4ml", config=cfg, output_dir=out,
                        progress=False)                 # an exact chain computes with its constants as written
    with pytest.raises(fxsplit.FxsplitError, match="declare the input type"):
        fxsplit.compile(_Scaled(lambda x: (x - 0.5) / 0.3).eval(), (4,), flow="hls4ml", config=FAST, output_dir=out,
                        progress=False)
    assert not out.exists()
