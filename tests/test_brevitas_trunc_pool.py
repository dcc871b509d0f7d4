"""brevitas' TruncAvgPool2d (QuantResNet18's ``final_pool``): the average of a quantized tensor, its level sum
shifted right and clamped by a truncation quantizer, read as hls4ml's exact average pooling quantized onto the
truncation's grid; a float-scaled input keeps its scale through it (and the QuantLinear after it adds its
Int32Bias on that finer grid)."""

import time

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantLinear, QuantReLU, TruncAvgPool2d
from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int8WeightPerTensorFloat,
                            Int32Bias, RoundTo8bit, TruncTo8bit, Uint8ActPerTensorFloat)
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.zoo import randomize_batchnorm
from fxsplit.zoo.qat import calibrate

PIXELS = {**FAST, "input_precision": "ufixed<8,0,TRN,SAT>"}


class FloatTail(nn.Module):
    """QuantResNet18's tail at 8x8: a conv-BN-ReLU with float scales (4-bit levels), TruncAvgPool2d(4) with
    TruncTo8bit and FLOOR (as QuantResNet18 builds it), the flatten idiom, an 8-bit QuantLinear with Int32Bias."""

    def __init__(self, kernel=4, trunc=TruncTo8bit, rounding="FLOOR"):
        super().__init__()
        self.conv = QuantConv2d(1, 8, 3, padding=1, bias=False, weight_quant=Int8WeightPerTensorFloat,
                                weight_bit_width=4, weight_scaling_per_output_channel=True)
        self.bn, self.relu = nn.BatchNorm2d(8), QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4,
                                                          return_quant_tensor=True)
        self.final_pool = TruncAvgPool2d(kernel_size=kernel, trunc_quant=trunc, float_to_int_impl_type=rounding)
        self.linear = QuantLinear(8 * (8 // kernel) ** 2, 10, bias=True, weight_bit_width=8,
                                  weight_quant=Int8WeightPerTensorFloat, bias_quant=Int32Bias)

    def forward(self, x):
        out = self.final_pool(self.relu(self.bn(self.conv(x))))
        return self.linear(out.view(out.size(0), -1))


class FixedTail(nn.Module):
    """Power-of-two scales: 6-bit signed levels, a 4x4 window (a 10-bit sum) truncated to 8 bits: the sum shifted
    right by 2 with ``rounding``, a signed output."""

    def __init__(self, rounding="ROUND"):
        super().__init__()
        self.conv = QuantConv2d(1, 4, 3, padding=1, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                                weight_bit_width=4)
        self.act = QuantReLU(act_quant=Int8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=True)
        self.pool = TruncAvgPool2d(kernel_size=4, trunc_quant=RoundTo8bit, float_to_int_impl_type=rounding)
        self.fc = QuantLinear(4 * 2 * 2, 3, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                              weight_bit_width=6)

    def forward(self, x):
        out = self.pool(self.act(self.conv(x)))
        return self.fc(torch.flatten(out, 1))


def _model(cls, seed=0, **kw):
    torch.manual_seed(seed)
    model = cls(**kw)
    randomize_batchnorm(model, seed)
    calibrate(model, (1, 8, 8), seed, batches=35)
    return model.eval()


def _pixels(n, seed=3):
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (n, 1, 8, 8), generator=g)
    k[0], k[1] = 0, 255
    return k.to(torch.float32) / 256


def _pool_entry(d, layer):
    return next(q for q in d.report["brevitas"]["quantizers"] if q["layer"] == layer)


def test_float_scaled_truncated_average_cut_before_the_linear_equals_uncut_and_brevitas(tmp_path):
    """The pooled levels (8 bits, 4 fraction bits: the exact average of 16 four-bit levels) cross the cut; the
    QuantLinear adds its Int32Bias on that grid; the output times its float scale. brevitas' own output agrees up
    to float32's rounding of its products."""
    model = _model(FloatTail)
    t = time.time()
    d = fxsplit.compile(model, (1, 8, 8), splits=["linear"], flow="hls4ml", config=PIXELS,
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    compile_s = time.time() - t
    e = _pool_entry(d, "final_pool")
    assert e["type"] == "ufixed<8,4,TRN,SAT>" and e["accum"] == "ufixed<12,8>" and e["float_scale"]
    port = next(p for p in d.partitioning.ports().values() if p.name not in ("x", "linear"))
    assert port.precision.startswith("ufixed<8,4")
    x = _pixels(150)
    r = d.verify(x)
    assert r.bit_exact and r.mismatches == 0, r.summary()
    with torch.no_grad():
        ref = model(x)
        pooled = model.final_pool(model.relu(model.bn(model.conv(x))))
    ref = getattr(ref, "value", ref).numpy().astype(np.float64)
    y = d.predict(x)
    rel = np.abs(y - ref).max() / np.abs(ref).max()
    top1 = float((y.argmax(1) == ref.argmax(1)).mean())
    print(f"float-scaled tail, TruncAvgPool2d (2 partitions): compile {compile_s:.1f}s, top-1 agreement {top1:.3f}, "
          f"max relative error vs brevitas {rel:.3g}")
    assert rel < 2.0 ** -18 and top1 == 1.0
    # the pooled tensor crossing the cut: brevitas' pooled values over the ReLU's float scale, bit for bit
    got = d._to_torch(d.port_values(x)[port.name], port)
    want = torch.round(pooled.value.to(torch.float64) / pooled.scale.to(torch.float64)).numpy() / 16
    np.testing.assert_array_equal(got, want.reshape(got.shape))
    assert len(np.unique(got)) > 20 and not np.array_equal(got, np.round(got))     # averages, not only integers


@pytest.mark.parametrize("rounding", ["ROUND", "FLOOR"])
def test_power_of_two_truncated_average_shifts_its_sum_and_equals_brevitas_bit_for_bit(tmp_path, rounding):
    """Signed 6-bit levels, a 16-value window: brevitas shifts the 10-bit sum right by 2 (round half to even, or
    floor), on the inputs' fixed-point grid: the design equals brevitas' own output bit for bit (io_stream too)."""
    model = _model(FixedTail, rounding=rounding)
    d = fxsplit.compile(model, (1, 8, 8), splits=["fc"], flow="hls4ml", config={**PIXELS, "io_type": "io_stream"},
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    e = _pool_entry(d, "pool")
    assert e["type"].startswith("fixed<8,") and e["rounding"] == {"ROUND": "RND_CONV", "FLOOR": "TRN"}[rounding]
    assert "shifted right by 2 bits" in e["note"]
    x = _pixels(200)
    r = d.verify(x)
    assert r.bit_exact and r.torch_exact and r.max_abs_error_vs_torch == 0.0, r.summary()
    with torch.no_grad():
        act = model.act(model.conv(x))
    sums = torch.round(torch.nn.functional.avg_pool2d(act.value / act.scale, 4) * 16)    # before the shift
    # ties (half to even / floor decide them); the shift keeps the sum's top bits, so the clamp never bites
    assert int(((sums % 4) == 2).sum()) > 10 and int(((sums % 4) == 3).sum()) > 10
    with torch.no_grad():
        ref = model(x)
    np.testing.assert_array_equal(d.predict(x), getattr(ref, "value", ref).numpy())     # brevitas' own output


class _Window(nn.Module):
    def __init__(self, kernel):
        super().__init__()
        self.act = QuantReLU(act_quant=Int8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True)
        self.pool = TruncAvgPool2d(kernel_size=kernel, trunc_quant=TruncTo8bit)
        self.fc = nn.Flatten()

    def forward(self, x):
        return self.fc(self.pool(self.act(x)))


class _FloatInput(nn.Module):
    """The quantizer before the pool returns a plain tensor: brevitas averages floats, its truncation skipped."""

    def __init__(self):
        super().__init__()
        self.act = QuantReLU(act_quant=Int8ActPerTensorFixedPoint, bit_width=4)
        self.pool = TruncAvgPool2d(kernel_size=2, trunc_quant=TruncTo8bit, return_quant_tensor=False)
        self.out = QuantReLU(act_quant=Int8ActPerTensorFixedPoint, bit_width=4)

    def forward(self, x):
        return self.out(self.pool(self.act(x)))


@pytest.mark.parametrize("model, match", [
    (_Window(3), "averages windows of 9 values"),
    (_FloatInput(), "averages a tensor that is not a QuantTensor"),
])
def test_truncated_averages_fxsplit_cannot_hold_exactly_are_refused_naming_the_layer(tmp_path, model, match):
    out = tmp_path / "o"
    with pytest.raises(fxsplit.FxsplitError, match=match) as e:
        fxsplit.compile(model.eval(), (2, 6, 6), flow="hls4ml", config=FAST, output_dir=out, progress=False)
    assert "module: pool" in str(e.value) and "test_brevitas_trunc_pool.py" in str(e.value) and not out.exists()
