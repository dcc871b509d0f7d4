"""brevitas layers with float (not power-of-two) scales, read exactly: a quantizer's integer levels and a layer's
integer accumulator carry the float scale through the reader, the consumer absorbs it (a BatchNorm and quantizer
fold, a quantizer's fold, the exact product at a model output); where brevitas' own float32 arithmetic decides a
quantizer differently, the decisions are counted and reported."""

import time

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int32Bias, Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.zoo import randomize_batchnorm
from fxsplit.zoo.qat import calibrate

PIXELS = {**FAST, "input_precision": "ufixed<8,0,TRN,SAT>"}


def _conv(c_in, c_out, bias=False):
    """brevitas' default float weight quantizer (Int8WeightPerTensorFloat), 4 bits, one float scale per output
    channel; ``bias=True``: brevitas' default float bias (folded into the BatchNorm and quantizer after it)."""
    return QuantConv2d(c_in, c_out, 3, padding=1, bias=bias, weight_quant=Int8WeightPerTensorFloat,
                       weight_bit_width=4, weight_scaling_per_output_channel=True)


def _relu():
    return QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=True)


class FloatCNN(nn.Module):
    """8x8 pixels (the declared input type) -> two conv-BN-ReLU blocks with float scales (the first with a float
    bias) -> max pooling ->
    flatten -> a float-scaled QuantLinear, its bias an integer times the input scale times the weight scale."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = _conv(1, 8, bias=True), nn.BatchNorm2d(8), _relu()
        self.conv2, self.bn2, self.relu2 = _conv(8, 12), nn.BatchNorm2d(12), _relu()
        self.pool = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.fc = QuantLinear(12 * 4 * 4, 10, bias=True, weight_quant=Int8WeightPerTensorFloat, weight_bit_width=6,
                              bias_quant=Int32Bias)

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        return self.fc(self.flat(self.pool(y)))


def _model(cls=FloatCNN, seed=0, shape=(1, 8, 8)):
    torch.manual_seed(seed)
    model = cls()
    randomize_batchnorm(model, seed)
    calibrate(model, shape, seed, batches=35)
    return model.eval()


def _pixels(n, shape=(1, 8, 8), seed=3):
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (n, *shape), generator=g)
    k[0], k[1] = 0, 255                                      # the type's extremes
    return k.to(torch.float32) / 256


def _levels_moved(report) -> dict:
    """The reader's count of quantizer decisions brevitas' float32 forward gives differently, per fold."""
    return {q["layer"]: (q["decisions_differing"], q["decisions_checked"]) for q in report["quantizers"]
            if "decisions_differing" in q}


def test_float_scaled_cnn_cut_in_three_equals_uncut_and_brevitas_within_its_counted_decisions(tmp_path):
    """Per-channel float weight scales, BatchNorm + float-scaled QuantReLU twice, max pooling, flatten, a
    float-scaled QuantLinear as the output (multiplied by its scale exactly): stitched == uncut bit for bit, and
    brevitas' own output agrees within float32's rounding of its products and the decisions the reader counts."""
    model = _model()
    t = time.time()
    d = fxsplit.compile(model, (1, 8, 8), splits=["conv2", "fc"], flow="hls4ml", config=PIXELS,
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    compile_s = time.time() - t
    assert len(d.partitions) == 3
    b = d.report["brevitas"]
    q = {(e["layer"], e["kind"]): e for e in b["quantizers"]}
    # the convolutions hold integer weights; their scales went into the BatchNorm folds, checked on every input
    assert q[("conv1", "QuantConv2d")]["type"].startswith("fixed<4,4>")
    for bn in ("bn1", "bn2"):
        assert q[(bn, "BatchNorm2d")]["type"] == "ufixed<4,4,RND_CONV,SAT>"
        assert q[(bn, "BatchNorm2d")]["checked_inputs"] > 10_000
    assert q[("bn1", "BatchNorm2d")]["folded_float_bias"] and q[("conv1", "QuantConv2d")]["bias"].startswith("float")
    assert q[("fc", "output scale")]["kind"] == "output scale"
    moved = _levels_moved(b)
    print("decisions brevitas' float32 gives differently (calibration batch):", moved)
    assert set(moved) == {"bn1", "bn2"}
    assert all(n <= 0.01 * total for n, total in moved.values())
    # brevitas rounds its float-scaled products in float32: reported, never claimed exact
    assert not b["torch_exact"] and {"conv1", "conv2", "fc"} <= set(b["inexact_in_brevitas"])
    x = _pixels(120)
    t = time.time()
    r = d.verify(x)
    verify_s = time.time() - t
    assert r.bit_exact and r.mismatches == 0 and r.torch_exact is False, r.summary()
    with torch.no_grad():
        ref = model(x)
    ref = getattr(ref, "value", ref).numpy().astype(np.float64)
    y = d.predict(x)
    top1 = float((y.argmax(1) == ref.argmax(1)).mean())
    err = np.abs(y - ref).max(1) / np.abs(ref).max()
    close = float((err < 2.0 ** -18).mean())       # float32's rounding of brevitas' products: every level equal
    print(f"float-scaled CNN (3 partitions): compile {compile_s:.1f}s, verify {verify_s:.1f}s, top-1 agreement "
          f"{top1:.3f}, samples within float32 rounding of brevitas {close:.3f}, max |err| {np.abs(y - ref).max():.3g}")
    assert top1 >= 0.98 and close >= 0.95
    html = (tmp_path / "o" / "report.html").read_text()
    assert "0 of 32768 decisions on the calibration batch differ from brevitas&#x27;" in html
    # QONNX: every partition with its float-scaled input quantizer put back, run by qonnx against PyTorch (brevitas'
    # float32 products are not the design's exact ones: no bit-for-bit claim)
    import onnx
    res = d.export_onnx(tmp_path / "onnx", samples=8)
    assert len(res["partitions"]) == 3 and res["exact"] is False
    for r in [*res["partitions"].values(), res["monolithic"]]:
        assert r["equals_design"] is None and r["quant_nodes"] >= 1
    last = d.partitions[-1].name
    ops = {n.op_type for n in onnx.load(res["partitions"][last]["file"]).graph.node}
    assert "Quant" in ops and res["partitions"][last]["max_abs_error_vs_torch"] <= 1e-5 * 64


class FloatResidual(nn.Module):
    """A residual block whose two branches end in one shared float-scaled quantizer (brevitas_examples' ResNets
    share it the same way): their sum is an integer sum with that scale, requantized by a float-scaled quantizer
    with no BatchNorm before it (a fold on the sum's integers). ``shared=False``: the second branch has a quantizer
    of its own, another scale."""

    def __init__(self, shared: bool = True):
        super().__init__()
        self.conv0, self.bn0, self.q = _conv(1, 6), nn.BatchNorm2d(6), _relu()
        self.conv1, self.bn1 = _conv(6, 6), nn.BatchNorm2d(6)
        # (brevitas refuses a sum of QuantTensors of two scales: the second branch returns its plain values)
        self.q1 = self.q if shared else QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4)
        self.out_q = QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=5, return_quant_tensor=True)
        self.pool = nn.MaxPool2d(2)
        # a float bias at the model output: added exactly after the exact product of its integers and scale
        self.fc = QuantLinear(6 * 4 * 4, 5, bias=True, weight_quant=Int8WeightPerTensorFloat, weight_bit_width=5)

    def forward(self, x):
        a = self.q(self.bn0(self.conv0(x)))
        b = self.q1(self.bn1(self.conv1(a)))
        y = self.pool(self.out_q(a + b))
        return self.fc(y.flatten(1))


def test_residual_sum_of_one_shared_float_scale_is_exact(tmp_path):
    model = _model(FloatResidual)
    assert float(model.q.act_quant.scale()) != 2.0 ** round(np.log2(float(model.q.act_quant.scale())))
    d = fxsplit.compile(model, (1, 8, 8), splits=["conv1", "out_q"], flow="hls4ml", config=PIXELS,
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    b = d.report["brevitas"]
    q = {(e["layer"], e["kind"]): e for e in b["quantizers"]}
    # the quantizer after the sum: folded on the sum's integers, checked on every value of its type fixed<5,5>
    # per channel (the reachable 0..30 among them)
    out_q = q[("out_q", "QuantIdentity")]
    assert out_q["checked_inputs"] == 6 * 2 ** 5 and out_q["type"] == "fixed<5,5,RND_CONV,SAT>"
    assert "add" in " ".join(b["inexact_in_brevitas"])            # brevitas adds float32 products: reported
    assert "the layer's float bias" in q[("fc", "output scale")]["bias"]
    moved = _levels_moved(b)
    print("decisions brevitas' float32 gives differently (calibration batch):", moved)
    assert set(moved) == {"bn0", "bn1", "out_q"} and all(n <= 0.01 * t for n, t in moved.values())
    x = _pixels(60, seed=5)
    r = d.verify(x)
    assert r.bit_exact and r.mismatches == 0, r.summary()
    with torch.no_grad():
        ref = model(x)
    ref = getattr(ref, "value", ref).numpy().astype(np.float64)
    y = d.predict(x)
    top1 = float((y.argmax(1) == ref.argmax(1)).mean())
    print(f"float-scaled residual block: top-1 agreement {top1:.3f}, max |err| {np.abs(y - ref).max():.3g}")
    assert top1 >= 0.95


class SameScaleResidual(nn.Module):
    """Quantizers as brevitas initialises them, uncalibrated: every QuantReLU has the same scale, so the quantizer
    after the sum of two of them folds to scale 1, bias 0 on the sum's integers (0 .. 30), clamped to 4 bits."""

    def __init__(self):
        super().__init__()
        self.conv0, self.bn0, self.q = _conv(1, 6), nn.BatchNorm2d(6), _relu()
        self.conv1, self.bn1 = _conv(6, 6), nn.BatchNorm2d(6)
        self.out_q = _relu()
        self.fc = QuantLinear(6 * 8 * 8, 5, bias=False, weight_quant=Int8WeightPerTensorFloat, weight_bit_width=5)

    def forward(self, x):
        a = self.q(self.bn0(self.conv0(x)))
        y = self.out_q(a + self.q(self.bn1(self.conv1(a))))
        return self.fc(y.flatten(1))


def test_a_fold_of_scale_one_and_bias_zero_keeps_its_clamp(tmp_path):
    """hls4ml removes a BatchNormalization of scale 1 and bias 0, and with it the clamp of its result type: the fold
    becomes a linear activation casting to that type, and the sums past the 4-bit top are clamped as in brevitas."""
    torch.manual_seed(0)
    model = SameScaleResidual()
    randomize_batchnorm(model, 0)
    with torch.no_grad():                                     # (wide enough that the branches' sums pass 15)
        for bn in (model.bn0, model.bn1):
            bn.weight.mul_(8.0)
            bn.bias.add_(3.0)
    model.eval()
    assert float(model.q.act_quant.scale()) == float(model.out_q.act_quant.scale())
    d = fxsplit.compile(model, (1, 8, 8), splits=["fc"], flow="hls4ml", config=PIXELS, output_dir=tmp_path / "o",
                        jobs=2, progress=False)
    q = {(e["layer"], e["kind"]): e for e in d.report["brevitas"]["quantizers"]}
    assert q[("out_q", "QuantReLU")]["scale"].startswith("fixed<2,2>") and q[("out_q", "QuantReLU")]["bias"] == "fixed<1,1>"
    x = _pixels(80, seed=4)
    r = d.verify(x)
    assert r.bit_exact, r.summary()
    with torch.no_grad():
        a = model.q(model.bn0(model.conv0(x)))
        s = a + model.q(model.bn1(model.conv1(a)))
        y = model.out_q(s)
    sums = torch.round(s.value / s.scale)
    assert int((sums > 15).sum()) > 100                        # the clamp decides these
    port = d.partitions[-1].inputs[0]
    got = d._to_torch(d.port_values(x)[port.name], port).reshape(len(x), -1)
    np.testing.assert_array_equal(got, torch.round(y.value / y.scale).reshape(len(x), -1).numpy())
    # verify checks the design against fxsplit's exact reading too: a reading without that clamp (what the design
    # computed before, with hls4ml's nop-BatchNorm removal) fails it, though stitched == uncut still holds
    assert r.reading_mismatches == 0 and "exact reading" in r.summary()
    fold = d.partitioning.exact_graph.get_submodule("out_q")
    fold.qmax = 30
    bad = d.verify(x)
    assert bad.bit_exact and bad.reading_mismatches > 0 and not bad
    assert "differ from fxsplit's exact reading of the brevitas model" in bad.failure()


def _refused(tmp_path, model, match, shape=(1, 8, 8), config=PIXELS):
    out = tmp_path / "refused"
    with pytest.raises(fxsplit.FxsplitError, match=match) as e:
        fxsplit.compile(model, shape, flow="hls4ml", config=config, output_dir=out, progress=False)
    assert not out.exists()                                  # refused before anything is written
    msg = str(e.value)
    assert "what to do:" in msg and "test_brevitas_float_scales.py" in msg
    return msg


def test_sum_of_two_different_float_scales_is_refused_naming_the_add(tmp_path):
    msg = _refused(tmp_path, _model(lambda: FloatResidual(shared=False)), "the addition 'add' adds")
    assert "module: add" in msg and "same scale" in msg and "one shared quantizer" in msg


class _FloatBias(nn.Module):
    """A float bias on a float-scaled accumulator, max pooling before the quantizer: nothing folds it."""

    def __init__(self):
        super().__init__()
        self.conv = QuantConv2d(1, 4, 3, bias=True, weight_quant=Int8WeightPerTensorFloat, weight_bit_width=4)
        self.pool = nn.MaxPool2d(2)
        self.q = _relu()

    def forward(self, x):
        return self.q(self.pool(self.conv(x)))


class _FloatInputQuant(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=8, return_quant_tensor=True)
        self.fc = QuantLinear(16, 4, bias=False, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        return self.fc(self.inp(x))


class _FlattenPerChannel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv(1, 4)
        self.fc = QuantLinear(4 * 8 * 8, 3, bias=False, weight_quant=Int8WeightPerTensorFloat)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_what_float_scales_cannot_hold_exactly_is_refused(tmp_path):
    msg = _refused(tmp_path, _model(_FloatBias), "'conv' adds a float bias to an accumulator")
    assert "module: conv" in msg and "MaxPool2d 'pool' reads it" in msg and "bias_quant=Int32Bias" in msg
    msg = _refused(tmp_path, _model(_FloatInputQuant, shape=(16,)), "QuantIdentity 'inp' has a float scale",
                   shape=(16,), config=FAST)
    assert "module: inp" in msg and "input_precision" in msg
    msg = _refused(tmp_path, _model(_FlattenPerChannel), "a float scale per channel")
    assert "module: flatten" in msg and "quantize the tensor before the reshape" in msg


def _plan(model, shape=(1, 8, 8)):
    from fxsplit.frontend.capture import trace
    from fxsplit.lower.brevitas import plan
    gm = trace(model, shape)
    return gm, plan(gm, [shape], {"x": "ufixed<8,0,TRN,SAT>"})


def test_fold_covers_every_reachable_accumulator_value():
    """The first BatchNorm fold is checked on every integer its channel can receive: 8-bit pixels times the
    convolution's integer weights, computed here independently from brevitas' own weights and scales."""
    model = _model()
    _, p = _plan(model)
    with torch.no_grad():
        qw = model.conv1.quant_weight()            # (its float bias is folded after the sum: k excludes it)
    w = torch.round(qw.value.to(torch.float64) / qw.scale.to(torch.float64)).reshape(8, -1)
    assert w.abs().max() <= 7 and torch.equal((w.to(torch.float32) * qw.scale.reshape(8, 1)),
                                              qw.value.reshape(8, -1))      # 4-bit integers times the float32 scale
    hi = 255 * w.clamp(min=0).sum(1)
    lo = 255 * w.clamp(max=0).sum(1)
    bn1 = next(e for e in p.quantizers if e["layer"] == "bn1")
    assert bn1["checked_inputs"] == int((hi - lo + 1).sum())
    assert bn1["fold_differs"] == 0


def test_a_wrong_fold_is_caught_by_the_exhaustive_check(monkeypatch):
    """The check runs the built layer on every input: a scale one unit off in its last bit, or a fit that does not
    reproduce brevitas' levels, raises instead of building."""
    from fxsplit.errors import FxsplitError
    from fxsplit.lower.brevitas import norm
    model = _model()
    real_check = norm.check_fold

    def perturbed(frozen, *args):
        frozen.scale[0] += frozen.scale[0] * 2.0 ** -10
        return real_check(frozen, *args)
    monkeypatch.setattr(norm, "check_fold", perturbed)
    with pytest.raises(FxsplitError, match="the fold differs from its fixed-point levels"):
        _plan(model)
    monkeypatch.setattr(norm, "check_fold", real_check)
    real_fit = norm._fit_affine

    def wrong_fit(*args):
        S, B, P = real_fit(*args)
        return S, B + (1 << (P - 2)), P                      # a quarter level off: claimed exact, it is not
    monkeypatch.setattr(norm, "_fit_affine", wrong_fit)
    with pytest.raises(FxsplitError, match="the fitted fold differs from brevitas' levels"):
        _plan(model)


def test_without_an_exact_fit_the_nearest_fold_is_taken_and_its_differences_counted(monkeypatch):
    """Where no fixed-point fold reproduces every one of brevitas' float32 levels, the fold nearest the real-number
    map is taken; the inputs where brevitas' level differs from it are counted (one level at most), checked on
    every input, and reported; the layer is then not claimed equal to brevitas."""
    from fxsplit.lower.brevitas import norm
    monkeypatch.setattr(norm, "_fit_affine", lambda *a: None)
    model = _model()
    _, p = _plan(model)
    for bn in ("bn1", "bn2"):
        e = next(q for q in p.quantizers if q["layer"] == bn)
        assert int(e["scale"].split("(")[1].split()[0]) >= 32        # the finest scale exact in a double
        assert 0 <= e["fold_differs"] <= 0.001 * e["checked_inputs"], e
        print(bn, e["fold"], e["scale"])


@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_decisions_differing_from_brevitas_are_counted_one_level_apart_else_refused(monkeypatch, shift):
    """The reading is checked against brevitas' own forward on the calibration batch: a fold whose levels differ
    from brevitas' by one level is counted (the layer then named inexact, never claimed equal); by more, it is a
    misreading and raises. (The fold's bias is moved here after its own exhaustive check, as a stand-in for brevitas'
    float32 arithmetic deciding differently.)"""
    from fxsplit.errors import FxsplitError
    from fxsplit.lower.brevitas import norm
    real = norm.scaled_fold

    def moved(*args):
        frozen, g, info, prod = real(*args)
        if info["layer"] == "bn2":
            frozen.bias[0] += shift                  # channel 0's levels (integers: frac 0) moved by ``shift``
        return frozen, g, info, prod
    monkeypatch.setattr(norm, "scaled_fold", moved)
    model = _model()
    if shift == 2.0:
        with pytest.raises(FxsplitError, match="some by more than one level"):
            _plan(model)
        return
    _, p = _plan(model)
    e = next(q for q in p.quantizers if q["layer"] == "bn2")
    n, total = e["decisions_differing"], e["decisions_checked"]
    print(f"bn2 moved by one level in channel 0: {n} of {total} decisions differ")
    assert 0 < n <= total // 12 and "bn2" in p.inexact_in_brevitas and not p.torch_exact
    assert next(q for q in p.quantizers if q["layer"] == "bn1")["decisions_differing"] == 0


class WideFold(nn.Module):
    """A convolution whose accumulator reaches about 5 * 10**5 values per channel (8-bit pixels times 288 5-bit
    weights), 40 channels: over 2**24 inputs x channels, which the fold evaluates in chunks."""

    def __init__(self, bits=5):
        super().__init__()
        self.conv = QuantConv2d(32, 40, 3, padding=1, bias=False, weight_quant=Int8WeightPerTensorFloat,
                                weight_bit_width=bits, weight_scaling_per_output_channel=True)
        self.bn, self.relu = nn.BatchNorm2d(40), _relu()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def test_a_fold_over_more_than_2_24_inputs_is_checked_on_every_one_in_chunks():
    """The fold's exhaustive check holds beyond 2**24 inputs x channels (QuantResNet18's first BatchNorm reads 8-bit
    pixels times 27 4-bit weights: 3.8 * 10**7): brevitas' levels are evaluated a chunk of inputs at a time, every
    reachable input of every channel counted, and the built layer checked on each one."""
    from fxsplit.lower.brevitas import norm
    model = _model(WideFold, shape=(32, 4, 4))
    t = time.time()
    _, p = _plan(model, (32, 4, 4))
    e = next(q for q in p.quantizers if q["layer"] == "bn")
    with torch.no_grad():
        qw = model.conv.quant_weight()
    w = torch.round(qw.value.to(torch.float64) / qw.scale.to(torch.float64)).reshape(40, -1)
    reach = int((255 * w.clamp(min=0).sum(1) - 255 * w.clamp(max=0).sum(1) + 1).sum())
    print(f"bn: {e['checked_inputs']} inputs checked in {time.time() - t:.1f} s, {e['fold_differs']} differ; "
          f"decisions on the calibration batch: {e.get('decisions_differing')} of {e.get('decisions_checked')}")
    assert norm.MAX_DOMAIN < e["checked_inputs"] == reach <= norm.MAX_SCALED_DOMAIN
    assert e["checked_inputs"] > 4 * norm.CHUNK                  # (several chunks)
    assert 0 <= e["fold_differs"] <= 0.001 * e["checked_inputs"] and e["decisions_checked"] > 0


def test_a_fold_beyond_the_exhaustive_checks_reach_is_refused_before_evaluating_it():
    """8-bit weights instead: about 4.7 * 10**6 values per channel, x 40 channels, over 2**27: refused, naming the
    BatchNorm and what to change (the guard comes before any evaluation)."""
    from fxsplit.errors import FxsplitError
    model = _model(lambda: WideFold(bits=8), shape=(32, 4, 4))
    with pytest.raises(FxsplitError, match=r"BatchNorm2d 'bn': its input can take \d+ values per channel, too many "
                                           r"to check every one \(fxsplit checks up to 134217728") as e:
        _plan(model, (32, 4, 4))
    assert "module: bn" in str(e.value) and "use fewer bits before it" in str(e.value)
