"""brevitas quantization-aware models: read exactly, cut like float models, equal to brevitas bit for bit."""

import numpy as np
import pytest
import torch
from brevitas.inject.enum import FloatToIntImplType
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerTensorFixedPoint,
                            Int16Bias, Uint8ActPerTensorFixedPoint)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.fixed import layout
from fxsplit.zoo import build
from fxsplit.zoo.qat import calibrate



class Int8WeightPerChannelFixedPoint(Int8WeightPerTensorFixedPoint):
    """Power-of-two weight scales, one per output channel."""
    scaling_per_output_channel = True


def hard_inputs(n_features: int, steps: list[float], seed: int = 1) -> torch.Tensor:
    """Random inputs at several scales (far into saturation), plus values exactly on the quantizers' rounding ties
    and the float32 neighbours on either side of them: where a reading of the rounding mode would show."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randn(150, n_features, generator=g) * s for s in (0.2, 1.0, 3.0, 40.0)]
    ties = []
    for step in steps:
        k = torch.randint(-40, 40, (60, n_features), generator=g).to(torch.float32)
        t = (k + 0.5) * step
        ties += [t, torch.nextafter(t, t + 1), torch.nextafter(t, t - 1)]
    return torch.cat(parts + ties)


def test_qat_jet_tagger_csim_equals_brevitas_bit_for_bit(tmp_path):
    model, shape = build("qat_jet_tagger")
    d = fxsplit.compile(model, shape, flow="hls4ml", config=FAST, output_dir=tmp_path / "o", jobs=2,
                        progress=False)
    step = float(model.inp.act_quant.scale())
    x = hard_inputs(16, [step, step / 2])
    r = d.verify(x)
    assert r.bit_exact and r.torch_exact and r.matches_torch and r.torch_mismatches == 0, r.summary()
    assert r.max_abs_error_vs_torch == 0.0
    assert "equals the brevitas model bit for bit" in r.summary()
    assert d.report["verification"]["matches_torch"] is True
    # brevitas' own output, compared here directly too
    with torch.no_grad():
        ref = model(x.to(torch.float32)).numpy()
    np.testing.assert_array_equal(d.predict(x), ref)
    # the inputs reached the quantizers' saturation: the input quantizer and the first ReLU clamp
    ports = d.port_values(x)
    relu1 = ports["relu1"]
    top = (2 ** 5 - 1) * float(model.relu1.act_quant.scale())
    assert relu1.max() == top and (relu1 == top).mean() > 0.01 and (relu1 == 0).mean() > 0.1
    with torch.no_grad():
        q_in = model.inp(x).value
    assert float(q_in.max()) == 31 * step and float(q_in.min()) == -32 * step


@pytest.mark.parametrize("io_type", ["io_parallel"])          # (io_stream: the CNV test below)
def test_qat_residual_cnn_cut_inside_its_block_equals_brevitas(tmp_path, io_type):
    """QuantConv2d layers, a residual sum of QuantTensors (one shared quantizer), max pooling, a Cut inside the
    block: the skip tensor crosses the cut with relu1's exact type."""
    model, shape = build("qat_residual_cnn")
    d = fxsplit.compile(model, shape, flow="hls4ml", config={**FAST, "io_type": io_type}, output_dir=tmp_path / "o",
                        jobs=2, progress=False)
    block = next(p for p in d.partitions if p.name == "block")
    assert {p.name for p in block.inputs} == {"relu1", "relu2"}       # the skip crosses the cut
    skip = next(p for p in block.inputs if p.name == "relu1")
    assert layout(skip.precision) == (False, 4, 2) and "RND_CONV" in skip.precision
    g = torch.Generator().manual_seed(4)
    x = torch.cat([torch.randn(60, *shape, generator=g) * s for s in (0.3, 1.0, 4.0, 40.0)])
    r = d.verify(x)
    assert r.bit_exact and r.matches_torch, r.summary()
    kinds = {q["kind"] for q in d.report["brevitas"]["quantizers"]}
    assert {"QuantConv2d", "QuantLinear", "QuantReLU", "QuantIdentity"} <= kinds
    if io_type == "io_parallel":
        _check_onnx_export(d, tmp_path)


def _check_onnx_export(d, tmp_path):
    """Every partition and the uncut model as QONNX, each run by qonnx's executor and equal to the design."""
    import onnx
    res = d.export_onnx(tmp_path / "onnx", samples=8)
    assert set(res["partitions"]) == {p.name for p in d.partitions} and res["exact"]
    for r in [*res["partitions"].values(), res["monolithic"]]:
        assert r["equals_design"] is True and r["max_abs_error_vs_torch"] == 0.0 and r["quant_nodes"] > 0
        m = onnx.load(r["file"])
        assert "Quant" in {n.op_type for n in m.graph.node}          # brevitas' quantizers as QONNX Quant nodes
    assert (tmp_path / "onnx" / "onnx.json").exists() and d.report["onnx"]["dir"] == res["dir"]
    assert not any(p.name.startswith(".export-") for p in (tmp_path / "onnx").iterdir())


def test_quantized_tensors_cross_cuts_with_the_producers_exact_type(tmp_path):
    model, shape = build("qat_jet_tagger")
    pt = fxsplit.partition(model, shape)
    assert [p.name for p in pt.partitions] == ["p0", "hidden", "head"]
    model.train()          # a model left in training mode is read as traced, in eval mode, and left as it was
    d = fxsplit.compile(model, shape, flow="hls4ml", config=FAST, output_dir=tmp_path / "o", jobs=2,
                        progress=False)
    assert model.training and all(m.training for m in model.modules())
    r = d.verify(hard_inputs(16, [float(model.inp.act_quant.scale())]))
    assert r.matches_torch and model.training, r.summary()
    ports = {p.name: p for p in d.partitioning.ports().values()}
    # relu1 leaves p0 as QuantReLU's grid: 5 unsigned bits, scale 2**-3 -> ufixed<5,2>, rounded half to even
    for name, mod, bits in (("relu1", model.relu1, 5), ("relu3", model.relu3, 4)):
        lay = layout(ports[name].precision)
        assert (lay.signed, lay.width) == (False, bits)
        assert 2.0 ** -lay.frac == float(mod.act_quant.scale())
        assert "RND_CONV" in ports[name].precision and "SAT" in ports[name].precision
    # the model input holds every float32 value that can change the input quantizer's rounding
    lay = layout(d.partitioning.inputs[0].precision)
    assert lay.frac == -int(np.log2(float(model.inp.act_quant.scale()))) + 24
    report = d.report
    _check_onnx_export(d, tmp_path)
    assert report["brevitas"]["torch_exact"] is True
    assert {q["layer"] for q in report["brevitas"]["quantizers"]} >= {"inp", "fc1", "relu1", "fc4"}


class _MLP(nn.Module):
    def __init__(self, act=None, weight=None, bias_quant=Int16Bias, in_bits=6, w_bits=4, a_bits=4, rounding=None,
                 narrow=False, hidden=8):
        super().__init__()
        kw = {} if rounding is None else {"float_to_int_impl_type": rounding}
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint if act is None else act, bit_width=in_bits,
                                 return_quant_tensor=True, narrow_range=narrow, **kw)
        self.fc1 = QuantLinear(12, hidden, bias=True, weight_quant=Int8WeightPerTensorFixedPoint if weight is None else weight,
                               weight_bit_width=w_bits, bias_quant=bias_quant, return_quant_tensor=True)
        self.relu = QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=a_bits, return_quant_tensor=True,
                              **kw)
        self.cut = fxsplit.Cut("tail")
        self.fc2 = QuantLinear(hidden, 3, bias=True, weight_quant=Int8WeightPerTensorFixedPoint if weight is None else weight,
                               weight_bit_width=w_bits, bias_quant=bias_quant, return_quant_tensor=False)

    def forward(self, x):
        return self.fc2(self.cut(self.relu(self.fc1(self.inp(x)))))


def _compiled(tmp_path, model, **kw):
    calibrate(model, (12,))
    return fxsplit.compile(model, (12,), flow="hls4ml", config=FAST, output_dir=tmp_path / "o", jobs=2,
                           progress=False, **kw)


@pytest.mark.parametrize("variant", ["floor_narrow", "per_channel"])
def test_quantizer_variants_are_read_exactly(tmp_path, variant):
    if variant == "floor_narrow":
        model = _MLP(rounding=FloatToIntImplType.FLOOR, narrow=True)
    else:
        model = _MLP(weight=Int8WeightPerChannelFixedPoint, w_bits=5)
        with torch.no_grad():          # rows of different magnitudes: different power-of-two scales
            model.fc1.weight.mul_(torch.tensor([2.0 ** (k % 4) for k in range(8)])[:, None])
    d = _compiled(tmp_path, model)
    step = float(model.inp.act_quant.scale())
    r = d.verify(hard_inputs(12, [step, step / 2], seed=3))
    assert r.bit_exact and r.matches_torch, r.summary()
    types = {q["layer"]: q for q in d.report["brevitas"]["quantizers"]}
    if variant == "floor_narrow":
        assert "TRN" in types["inp"]["type"] and "SAT_SYM" in types["inp"]["type"]
        with torch.no_grad():
            q = model.inp(torch.tensor([[-1e6] * 12])).value
        assert float(q.min()) == -(2 ** 5 - 1) * step       # narrow: -31, not -32
    else:
        scales = model.fc1.quant_weight().scale.reshape(-1)
        assert len(set(scales.tolist())) > 1          # the channels really have different scales


def test_float_bias_is_held_exactly_and_brevitas_rounding_is_reported(tmp_path):
    """A float bias (bias_quant=None) is held exactly by a wide type; brevitas then rounds the sum in float32,
    so the design (exact) is compared with an error bound, and the report says why."""
    model = _MLP(bias_quant=None, in_bits=8, w_bits=8)
    d = _compiled(tmp_path, model)
    x = hard_inputs(12, [float(model.inp.act_quant.scale())], seed=5)
    r = d.verify(x)
    assert r.bit_exact                                   # partitioned == uncut, always
    assert r.torch_exact is False and r.matches_torch is None
    assert "brevitas rounds in float32" in r.summary()
    assert set(d.report["brevitas"]["inexact_in_brevitas"]) >= {"fc2"}
    y = d.predict(x)
    with torch.no_grad():
        ref = model(x).numpy()
    # float32 rounding of brevitas' sums: a few ulps of the output (and a rare flip of a ReLU quantizer step)
    err = np.abs(y - ref)
    assert err.max() == r.max_abs_error_vs_torch
    assert np.quantile(err, 0.99) <= 4 * np.spacing(np.abs(ref).max().astype(np.float32))


def _refusal(tmp_path, model, match, shape=(12,), **kw):
    out = tmp_path / "refused"
    calibrate(model, shape)
    with pytest.raises(fxsplit.FxsplitError, match=match) as e:
        fxsplit.compile(model, shape, flow="hls4ml", config=kw.pop("config", FAST), output_dir=out, progress=False,
                        **kw)
    assert not out.exists()                              # refused before anything is written
    return str(e.value)


def test_float_scales_are_read_and_a_float_scaled_input_quantizer_refused(tmp_path):
    """Float weight scales are read (integer weights, the scale folded into the next quantizer; at the output, the
    exact product: tests/test_brevitas_float_scales.py); a float-scaled quantizer on a float model input has no
    fixed-point input to fold onto: refused, saying what to change."""
    msg = _refusal(tmp_path, _MLP(act=Int8ActPerTensorFloat), "QuantIdentity 'inp' has a float scale")
    assert "module: inp" in msg and "Int8ActPerTensorFixedPoint" in msg and "input_precision" in msg
    from brevitas.quant import Int8WeightPerTensorFloat
    from fxsplit.lower.brevitas import plan
    model = calibrate(_MLP(weight=Int8WeightPerTensorFloat), (12,))
    p = plan(fxsplit.partition(model, (12,)).graph, [(12,)])
    q = {(e["layer"], e["kind"]): e for e in p.quantizers}
    assert q[("fc1", "QuantLinear")]["type"] == "fixed<4,4> (integer weights)"
    assert q[("relu", "QuantReLU")]["checked_inputs"] > 0 and "decisions_differing" in q[("relu", "QuantReLU")]
    assert ("fc2", "output scale") in q and not p.torch_exact


class _Variants(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=True)
        out_q = Int8ActPerTensorFixedPoint if kind == "output_quant" else None
        self.fc = QuantLinear(12, 4, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4,
                              bias_quant=None, output_quant=out_q, return_quant_tensor=kind != "float_input")
        if kind == "no_act_quant":
            self.act = QuantReLU(act_quant=None)
        elif kind == "narrow_unsigned":
            self.act = QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, narrow_range=True)
        elif kind == "float_layer":
            self.act = nn.Sigmoid()
        elif kind == "batchnorm":
            self.act = nn.BatchNorm1d(4)
        else:
            self.act = QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4)
        self.conv = QuantConv2d(4, 4, 1, groups=2, weight_quant=Int8WeightPerTensorFixedPoint, bias=False) \
            if kind == "conv" else None

    def forward(self, x):
        if self.kind == "float_input":
            return self.act(self.fc(x))
        y = self.act(self.fc(self.inp(x)))
        if self.conv is not None:
            y = self.conv(y.reshape(-1, 4, 1, 1))
        return y


@pytest.mark.parametrize("kind,match,module", [
    ("float_input", "the input of QuantLinear 'fc' is the model input", "fc"),
    ("no_act_quant", "no activation quantizer", "act"),
    ("narrow_unsigned", "unsigned with a narrow range", "act"),
    ("output_quant", "has output_quant enabled", "fc"),
    ("float_layer", "Sigmoid 'act' in a brevitas model", "act"),
    ("batchnorm", "BatchNorm1d 'act' is not followed by a brevitas quantizer", "act"),
    ("conv", "groups=2", "conv"),
])
def test_refusals_name_the_layer_and_what_to_change(tmp_path, kind, match, module):
    msg = _refusal(tmp_path, _Variants(kind), match)
    assert f"module: {module}" in msg and "what to do:" in msg and "test_brevitas.py" in msg


def test_config_cannot_override_a_quantizers_type(tmp_path):
    msg = _refusal(tmp_path, _MLP(), "whose exact types fxsplit derives from its quantizers",
                   config={**FAST, "layers": {"relu": {"precision": "ufixed<8,3>"}}})
    assert "module: relu" in msg


def test_a_misread_quantizer_is_caught_before_any_build(tmp_path, monkeypatch):
    """The reading is checked against brevitas' own forward: a wrong scale (here: one step off) must raise."""
    from fxsplit.lower.brevitas import layers as fb
    real = fb.read_act

    def off_by_one(node, mod):
        frozen, grid, info = real(node, mod)
        if node.name == "relu":
            frozen.frac += 1
        return frozen, grid, info
    monkeypatch.setattr(fb, "read_act", off_by_one)
    _refusal(tmp_path, _MLP(), "exact reading of QuantReLU relu differs from brevitas' own output")


@settings(max_examples=4, deadline=None, phases=[Phase.generate], derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(in_bits=st.integers(2, 8), w_bits=st.integers(2, 8), a_bits=st.integers(2, 8), hidden=st.integers(3, 9),
       seed=st.integers(0, 2 ** 16))
def test_property_random_bit_widths_equal_brevitas(tmp_path_factory, in_bits, w_bits, a_bits, hidden, seed):
    torch.manual_seed(seed)
    model = _MLP(in_bits=in_bits, w_bits=w_bits, a_bits=a_bits, hidden=hidden)
    d = _compiled(tmp_path_factory.mktemp("prop"), model)
    step = float(model.inp.act_quant.scale())
    r = d.verify(hard_inputs(12, [step], seed=seed))
    assert r.bit_exact, r.summary()
    # brevitas is exact unless a sum outgrows float32's 24 bits; then it rounds and only the error is claimed
    assert r.matches_torch if r.torch_exact else d.report["brevitas"]["inexact_in_brevitas"], \
        (in_bits, w_bits, a_bits, hidden, r.summary())


def test_qat_jet_tagger_open_rtl_flow_equals_brevitas_bit_for_bit(tmp_path):
    """Through da4ml's Verilog and the stitched Verilator testbench: RND_CONV (brevitas' round half to even) and
    SAT_SYM built from da4ml's TRN/SAT, equal to the C simulation and to brevitas on every sample."""
    model, shape = build("qat_jet_tagger")
    d = fxsplit.compile(model, shape, flow="rtl", config={"synth": False}, output_dir=tmp_path / "o", jobs=2,
                        progress=False)
    step = float(model.inp.act_quant.scale())
    x = hard_inputs(16, [step, step / 2])
    # the hidden sums land on relu1's rounding ties: the half-to-even rule is exercised, not just present
    with torch.no_grad():
        pre = model.fc1(model.inp(x)).value.to(torch.float64) / float(model.relu1.act_quant.scale())
    ties = (pre - torch.floor(pre) == 0.5) & (pre > 0) & (pre < 31)
    assert ties.sum() > 100
    r = d.verify(x, level="rtl")
    assert r.bit_exact and r.matches_torch, r.summary()
    assert d.report["verification"]["level"] == "rtl"


class _Requant(nn.Module):
    """A QuantLinear followed by a QuantIdentity: hls4ml merges that quantizer into the layer's result type."""

    def __init__(self):
        super().__init__()
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=True)
        self.fc1 = QuantLinear(12, 16, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4,
                               bias_quant=Int16Bias, return_quant_tensor=True)
        self.q = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=5, return_quant_tensor=True)
        self.fc2 = QuantLinear(16, 16, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4,
                               bias_quant=Int16Bias, return_quant_tensor=True)
        self.relu = QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True)
        self.fc3 = QuantLinear(16, 3, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4,
                               bias_quant=Int16Bias, return_quant_tensor=False)

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.q(self.fc1(self.inp(x))))))


def test_a_cut_inside_a_merged_quantizer_is_refused_and_auto_split_avoids_it(tmp_path):
    model = calibrate(_Requant(), (12,))
    msg = _refusal(tmp_path, model, "merges", splits=["q"])
    assert "instead" in msg                                  # names the nearest legal cuts
    for w in (2, 3, 6):
        assert "q" not in fxsplit.auto_splits(model, (12,), workers=w)
    d = fxsplit.compile(model, (12,), flow="hls4ml", splits=["fc2", "fc3"], config=FAST, output_dir=tmp_path / "o",
                        jobs=2, progress=False)
    step = float(model.inp.act_quant.scale())
    r = d.verify(hard_inputs(12, [step], seed=11))
    assert r.bit_exact and r.matches_torch, r.summary()
    assert len(d.partitions) == 3


class _BNMLP(nn.Module):
    """QuantLinear -> BatchNorm -> quantizer, twice (a signed QuantIdentity, then a QuantReLU), a Cut between."""

    def __init__(self):
        super().__init__()
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True)
        self.fc1 = QuantLinear(12, 16, bias=False, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=3)
        self.bn1 = nn.BatchNorm1d(16)
        self.q1 = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=3, return_quant_tensor=True)
        self.cut = fxsplit.Cut("b")
        self.fc2 = QuantLinear(16, 8, bias=False, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=3)
        self.bn2 = nn.BatchNorm1d(8)
        self.r2 = QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=3, return_quant_tensor=True)
        self.fc3 = QuantLinear(8, 4, bias=False, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4)

    def forward(self, x):
        x = self.cut(self.q1(self.bn1(self.fc1(self.inp(x)))))
        return self.fc3(self.r2(self.bn2(self.fc2(x))))


def _bn_mlp():
    from fxsplit.zoo import randomize_batchnorm
    torch.manual_seed(0)
    m = _BNMLP()
    randomize_batchnorm(m, 3)
    with torch.no_grad():                        # statistics far from the identity
        for bn in (m.bn1, m.bn2):
            bn.weight.mul_(3)
            bn.running_mean.mul_(10)
    return calibrate(m, (12,))


@pytest.mark.parametrize("flow", ["hls4ml", "rtl"])
def test_batchnorm_before_a_quantizer_is_exact_on_every_input(tmp_path, flow):
    """BatchNorm + quantizer: a fixed-point affine map found so that every input the channel can receive gets
    brevitas' level (checked exhaustively before building), through the C simulation and the RTL."""
    model = _bn_mlp()
    d = fxsplit.compile(model, (12,), flow=flow, config={**FAST, "synth": False} if flow == "rtl" else FAST,
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    bns = {q["layer"]: q for q in d.report["brevitas"]["quantizers"] if q["kind"] == "BatchNorm1d"}
    assert set(bns) == {"bn1", "bn2"} and all(q["checked_inputs"] > 1000 for q in bns.values())
    x = hard_inputs(12, [float(model.inp.act_quant.scale())])
    r = d.verify(x, **({"level": "rtl"} if flow == "rtl" else {}))
    assert r.bit_exact and r.matches_torch, r.summary()


class _Features(nn.Module):
    """brevitas_examples' bnn_pynq networks without their input scaling (``2 * x - 1``, done by the caller: brevitas
    rounds it in float32, outside the quantized network)."""

    def __init__(self, net):
        super().__init__()
        self.features = net.features

    def forward(self, x):
        for m in self.features:
            x = m(x)
        return x


def test_brevitas_examples_tfc_w2a2_with_splits(tmp_path):
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    from fxsplit.zoo import randomize_batchnorm
    torch.manual_seed(0)
    net, _ = model_with_cfg("TFC_2W2A", pretrained=False)
    randomize_batchnorm(net, 0)
    model = _Features(net).eval()
    d = fxsplit.compile(model, (784,), splits=["features.6", "features.10", "features.15"], flow="hls4ml",
                        config=FAST, output_dir=tmp_path / "o", jobs=2, progress=False)
    assert len(d.partitions) == 4
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(60, 784, generator=g) * 2 - 1, torch.randn(60, 784, generator=g) * 3,
                   torch.randint(-3, 3, (60, 784), generator=g) + 0.5])          # the 2-bit quantizer's ties
    r = d.verify(x)
    assert r.bit_exact, r.summary()                      # stitched == uncut, bit for bit
    # everything up to the final float TensorNorm equals brevitas bit for bit
    with torch.no_grad():
        h = x
        for m in net.features[:15]:
            h = m(h)
        ref = model(x).numpy()
    pre = getattr(h, "value", h).numpy()
    np.testing.assert_array_equal(d.port_values(x)["features_14"], pre)
    # the TensorNorm: a float affine; the design is within float32 rounding of brevitas' own output
    assert r.torch_exact is False and d.report["brevitas"]["inexact_in_brevitas"] == ["features.15"]
    y = d.predict(x)
    tn = net.features[15]
    a = float(tn.weight.detach()) / float(torch.sqrt(tn.running_var + tn.eps))
    bound = 4 * float(np.spacing(np.float32(np.abs(ref).max()))) + np.abs(pre).max() * abs(a) * 2.0 ** -23
    assert np.abs(y - ref).max() <= bound and r.max_abs_error_vs_torch <= bound, (np.abs(y - ref).max(), bound)


def test_onnx_export_of_a_cut_on_an_exact_sum_and_its_check_can_fail(tmp_path):
    """The exact sum of fc1 crosses the cut: the partition reading it gets a quantizer of its fixed-point type (the
    identity on its values), so its file carries the type, and equals the design bit for bit."""
    import onnx
    from onnx import numpy_helper

    from fxsplit.fixed import layout
    from fxsplit.lower.brevitas import qonnx as onnx_export
    model = calibrate(_MLP(), (12,))
    d = fxsplit.compile(model, (12,), splits=["relu"], flow="hls4ml", config=FAST, output_dir=tmp_path / "o", jobs=2,
                        progress=False)
    res = d.export_onnx(tmp_path / "onnx", samples=8)
    second = d.partitions[1]
    assert res["exact"] and res["partitions"][second.name]["equals_design"] is True
    lay = layout(second.inputs[0].precision)
    g = onnx.load(res["partitions"][second.name]["file"]).graph
    first = next(n for n in g.node if n.op_type == "Quant" and n.input[0] == g.input[0].name)
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    assert float(consts[first.input[1]]) == 2.0 ** -lay.frac and int(consts[first.input[3]]) == lay.width
    # the comparison with the design is a real one: a design value off by one step fails the export
    xs = [torch.randn(4, 12)]
    right = d.predict(xs[0])                     # the design's output equals brevitas' here (exact arithmetic)
    wrong = [right.copy()]
    wrong[0][0, 0] += 1.0
    with pytest.raises(fxsplit.FxsplitError, match="differs from the design in 1 elements"):
        onnx_export._export_and_check(d.partitioning.graph, xs, wrong, tmp_path / "m.onnx", "the uncut model")
    assert onnx_export._export_and_check(d.partitioning.graph, xs, [right], tmp_path / "m.onnx",
                                         "the uncut model")["equals_design"] is True


class _CNVFeatures(nn.Module):
    """brevitas_examples' CNV without its input scaling (as :class:`_Features`)."""

    def __init__(self, net):
        super().__init__()
        self.conv_features, self.linear_features = net.conv_features, net.linear_features

    def forward(self, x):
        for m in self.conv_features:
            x = m(x)
        x = x.flatten(1)
        for m in self.linear_features:
            x = m(x)
        return x


def test_brevitas_examples_cnv_w2a2_with_splits(tmp_path):
    """CNV w2a2 (six 2-bit convolutions with BatchNorm, max pooling, three linear layers, TensorNorm), cut at its
    poolings and before the classifier, through the C simulation (io_stream)."""
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    from fxsplit.zoo import randomize_batchnorm
    torch.manual_seed(0)
    net, _ = model_with_cfg("CNV_2W2A", pretrained=False)
    randomize_batchnorm(net, 0)
    model = _CNVFeatures(net).eval()
    d = fxsplit.compile(model, (3, 32, 32), splits=["conv_features.8", "conv_features.15", "linear_features.0",
                                                    "linear_features.7"], flow="hls4ml",
                        config={"csim_opt": "-O2", "io_type": "io_stream"}, output_dir=tmp_path / "o", jobs=2,
                        progress=False)
    assert len(d.partitions) == 5
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(3, 3, 32, 32, generator=g) * 2 - 1, torch.randn(3, 3, 32, 32, generator=g) * 3])
    r = d.verify(x)
    assert r.bit_exact, r.summary()
    with torch.no_grad():
        h = x
        for m in net.conv_features:
            h = m(h)
        h = h.flatten(1)
        for m in net.linear_features[:7]:
            h = m(h)
        ref = model(x).numpy()
    pre = getattr(h, "value", h).numpy()
    np.testing.assert_array_equal(d.port_values(x)["linear_features_6"], pre)     # bit for bit up to TensorNorm
    bns = [q for q in d.report["brevitas"]["quantizers"] if q["kind"].startswith("BatchNorm")]
    assert len(bns) == 8 and all(q["checked_inputs"] > 0 for q in bns)
    tn = net.linear_features[7]
    a = float(tn.weight.detach()) / float(torch.sqrt(tn.running_var + tn.eps))
    bound = 4 * float(np.spacing(np.float32(np.abs(ref).max()))) + np.abs(pre).max() * abs(a) * 2.0 ** -23
    assert r.max_abs_error_vs_torch <= bound, (r.max_abs_error_vs_torch, bound)
