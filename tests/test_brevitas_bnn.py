"""brevitas_examples' bnn_pynq networks (FINN's example models) as their source stands: the input scaling
``2.0 * x - 1.0`` computed exactly on the declared input type, binary (1-bit) activations and weights, cut,
equal to the uncut design and to brevitas bit for bit up to the final TensorNorm."""

import time

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.zoo import randomize_batchnorm

IN_TYPE = "ufixed<8,0,TRN,SAT>"          # pixels k/256 in [0, 1)
CFG = {**FAST, "input_precision": IN_TYPE}
FC_SPLITS = {"TFC": ["features.6", "features.10", "features.15"], "SFC": ["features.6", "features.10", "features.15"],
             "LFC": ["features.6", "features.10", "features.15"]}
CNV_SPLITS = ["conv_features.8", "conv_features.15", "linear_features.0", "linear_features.7"]


def _net(cfg: str, seed: int = 0):
    from brevitas_examples.bnn_pynq.models import model_with_cfg
    torch.manual_seed(seed)
    net, _ = model_with_cfg(cfg, pretrained=False)
    randomize_batchnorm(net, seed)
    return net.eval()


def _inputs(shape, n: int = 40, seed: int = 0) -> torch.Tensor:
    """Values of the input type: random pixels, and whole samples and scattered pixels exactly at the quantizers'
    thresholds: x = 0.5 (2x - 1 = 0: the binary quantizer's tie, +1 in brevitas), 0.25 and 0.75 (2x - 1 = -0.5,
    +0.5: the 2-bit quantizer's rounding ties), the type's extremes 0 and 255/256."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (n, *shape), generator=g)
    ties = torch.tensor([128, 64, 192])
    mask = torch.rand((n, *shape), generator=g) < 0.3
    k = torch.where(mask, ties[torch.randint(0, 3, (n, *shape), generator=g)], k)
    k[0], k[1], k[2], k[3], k[4], k[5] = 128, 64, 192, 0, 255, 127
    return k.to(torch.float32) / 256


def _brevitas_pre_tensornorm(net, x: torch.Tensor) -> np.ndarray:
    """brevitas' own value of the tensor the final TensorNorm reads."""
    with torch.no_grad():
        h = 2.0 * x.reshape(x.shape[0], -1) - 1.0 if hasattr(net, "features") else 2.0 * x - 1.0
        if hasattr(net, "features"):
            for m in net.features[:-1]:
                h = m(h)
        else:
            for m in net.conv_features:
                h = m(h)
            h = h.reshape(h.shape[0], -1)
            for m in net.linear_features[:-1]:
                h = m(h)
    return getattr(h, "value", h).numpy()


def _check(cfg: str, d, net, x, pre_port: str) -> dict:
    t = time.time()
    r = d.verify(x)
    verify_s = time.time() - t
    assert r.bit_exact, r.summary()                                  # stitched == uncut, bit for bit
    pre = _brevitas_pre_tensornorm(net, x)
    np.testing.assert_array_equal(d.port_values(x)[pre_port], pre)   # == brevitas up to the TensorNorm
    # the binary tie: brevitas' first quantizer sends 2x - 1 = 0 (x = 0.5, sample 0) to +scale (a 1-bit one) or 0
    first = net.features[0] if hasattr(net, "features") else net.conv_features[0]
    with torch.no_grad():
        q0 = first(torch.zeros(1, 8))
    q0 = getattr(q0, "value", q0)
    binary = int(first.act_quant.bit_width()) == 1
    assert torch.all(q0 == (float(first.act_quant.scale()) if binary else 0.0))
    bq = d.report["brevitas"]
    assert bq["inexact_in_brevitas"] == ["features.15" if hasattr(net, "features") else "linear_features.7"]
    arith = bq["input_arithmetic"]
    assert len(arith) == 1 and arith[0]["float32_exact"] is True and arith[0]["decisions_moved"] == 0
    assert arith[0]["input_type"] == IN_TYPE and arith[0]["operations"] == ["mul", "sub"]
    # top-1 against brevitas' own forward (its float32 TensorNorm included)
    with torch.no_grad():
        ref = net(x).numpy()
    top1 = float(np.mean(np.argmax(d.predict(x), axis=1) == np.argmax(ref, axis=1)))
    assert top1 >= 0.99, top1
    assert r.max_abs_error_vs_torch <= 1e-4 * max(1.0, float(np.abs(ref).max())), r.summary()
    assert r.reading_mismatches == 0 and r
    # QONNX: every partition (the exact sum before the TensorNorm crossing its cut as a quantizer of its type) and
    # the uncut model, run by qonnx against PyTorch
    t = time.time()
    res = d.export_onnx(samples=4)
    export_s = time.time() - t
    assert len(res["partitions"]) == len(d.partitions) and res["exact"] is False
    for e in [*res["partitions"].values(), res["monolithic"]]:
        assert e["max_abs_error_vs_torch"] <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    assert res["partitions"][d.partitions[-1].name]["quant_nodes"] >= 1      # the sum's type at the TensorNorm
    print(f"{cfg}: bit_exact={r.bit_exact} equal-to-brevitas-before-TensorNorm=True top1={top1:.3f} "
          f"verify={verify_s:.1f}s max|err|={r.max_abs_error_vs_torch:.3g} export_onnx={export_s:.1f}s")
    return {"top1": top1, "verify_s": verify_s}


@pytest.mark.parametrize("cfg", [
    "TFC_1W1A", "TFC_1W2A", "TFC_2W2A", "SFC_1W1A", "SFC_1W2A", "SFC_2W2A",
    pytest.param("LFC_1W1A", marks=pytest.mark.slow), pytest.param("LFC_1W2A", marks=pytest.mark.slow)])
def test_bnn_pynq_fc_as_written(tmp_path, cfg):
    net = _net(cfg)
    t = time.time()
    d = fxsplit.compile(net, (784,), splits=FC_SPLITS[cfg[:3]], flow="hls4ml", config=CFG, output_dir=tmp_path / "o",
                        jobs=2, progress=False)
    print(f"{cfg}: compile {time.time() - t:.1f}s")
    assert len(d.partitions) == 4
    x = _inputs((784,))
    _check(cfg, d, net, x, "features_14")
    kinds = [q for q in d.report["brevitas"]["quantizers"] if q.get("binary")]
    if cfg.endswith("1A"):
        assert len(kinds) == 1 + len(FC_SPLITS[cfg[:3]])       # the input quantizer and every hidden one
        bns = [q for q in d.report["brevitas"]["quantizers"]
               if q.get("form") == "binary sign" and "checked_inputs" in q]
        assert len(bns) == 3 and all(q["checked_inputs"] > 1000 for q in bns)


def test_tfc_1w1a_exports_qonnx(tmp_path):
    """Cut after quantizers (where QONNX carries the crossing types): brevitas' exporter writes the binary
    quantizers as BipolarQuant nodes and the input arithmetic as Mul/Sub; qonnx's execution of every file equals the
    module in PyTorch."""
    import onnx
    net = _net("TFC_1W1A")
    d = fxsplit.compile(net, (784,), splits=["features.6", "features.10"], flow="hls4ml", config=CFG,
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    x = _inputs((784,), n=12, seed=5)
    assert d.verify(x).bit_exact
    res = d.export_onnx(tmp_path / "onnx", samples=8)
    assert set(res["partitions"]) == {p.name for p in d.partitions} and len(res["partitions"]) == 3
    for r in [*res["partitions"].values(), res["monolithic"]]:
        assert r["max_abs_error_vs_torch"] <= 1e-5 * 64
    ops = {n.op_type for n in onnx.load(res["monolithic"]["file"]).graph.node}
    assert "BipolarQuant" in ops and "Mul" in ops


@pytest.mark.slow
@pytest.mark.parametrize("cfg", ["CNV_1W1A", "CNV_1W2A", "CNV_2W2A"])
def test_bnn_pynq_cnv_as_written(tmp_path, cfg):
    net = _net(cfg)
    t = time.time()
    d = fxsplit.compile(net, (3, 32, 32), splits=CNV_SPLITS, flow="hls4ml",
                        config={"csim_opt": "-O2", "io_type": "io_stream", "input_precision": IN_TYPE},
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    print(f"{cfg}: compile {time.time() - t:.1f}s")
    assert len(d.partitions) == 5
    _check(cfg, d, net, _inputs((3, 32, 32), n=6), "linear_features_6")


@pytest.mark.parametrize("bits", [(1, 1), (1, 2)])
def test_small_bnn_pynq_fc_open_rtl_flow_equals_brevitas(tmp_path, bits):
    """bnn_pynq's FC source at a small size (4x4 inputs, two hidden layers of 16): the input arithmetic, binary
    weights, binary or 2-bit activations after BatchNorms, through da4ml's Verilog and the stitched Verilator
    testbench, equal to the C simulation and to brevitas up to the TensorNorm."""
    from brevitas_examples.bnn_pynq.models.FC import FC
    w, a = bits
    torch.manual_seed(1)
    net = FC(num_classes=4, weight_bit_width=w, act_bit_width=a, in_bit_width=a, in_channels=1, out_features=[16, 16],
             in_features=(4, 4))
    randomize_batchnorm(net, 1)
    net.eval()
    d = fxsplit.compile(net, (16,), splits=["features.6", "features.11"], flow="rtl", config={**CFG, "synth": False},
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    x = _inputs((16,), n=64, seed=2)
    r = d.verify(x, level="rtl")
    assert r.bit_exact, r.summary()
    with torch.no_grad():
        h = 2.0 * x - 1.0
        for m in net.features[:-1]:
            h = m(h)
    got = d.port_values(x)["features_10"]        # the last QuantLinear, read by the TensorNorm's partition
    np.testing.assert_array_equal(got, getattr(h, "value", h).numpy())
    assert any(q.get("binary") for q in d.report["brevitas"]["quantizers"]) == (a == 1)


@pytest.mark.slow
def test_tfc_1w1a_open_rtl_flow_equals_brevitas(tmp_path):
    """TFC_1W1A as written through da4ml's Verilog and the stitched Verilator testbench (minutes: da4ml's
    optimisation of the 784 x 64 binary layer)."""
    net = _net("TFC_1W1A")
    d = fxsplit.compile(net, (784,), splits=FC_SPLITS["TFC"], flow="rtl", config={**CFG, "synth": False},
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    x = _inputs((784,), n=24, seed=3)
    r = d.verify(x, level="rtl")
    assert r.bit_exact, r.summary()
    np.testing.assert_array_equal(d.port_values(x)["features_14"], _brevitas_pre_tensornorm(net, x))


def _refused(tmp_path, model, shape, match, config=None):
    out = tmp_path / "refused"
    with pytest.raises(fxsplit.FxsplitError, match=match) as e:
        fxsplit.compile(model, shape, flow="hls4ml", config=config or CFG, output_dir=out, progress=False)
    assert not out.exists()
    return str(e.value)


def test_input_arithmetic_needs_a_declared_input_type(tmp_path):
    msg = _refused(tmp_path, _net("TFC_1W1A"), (784,), "goes through float arithmetic", config=FAST)
    assert "module: mul" in msg and "FC.py" in msg and "input_precision" in msg


class _Scaled(nn.Module):
    """A float scaling of the input, then bnn_pynq's quantizer (3 bits, scale 1)."""

    def __init__(self, fn):
        super().__init__()
        from brevitas.nn import QuantIdentity
        from brevitas_examples.bnn_pynq.models.common import CommonActQuant
        self.fn = fn
        self.q = QuantIdentity(act_quant=CommonActQuant, bit_width=3, min_val=-3.0, max_val=3.0)

    def forward(self, x):
        return self.q(self.fn(x))


def test_brevitas_float32_rounding_of_the_input_arithmetic_is_counted(tmp_path):
    """x / 256 + 1.5 on fixed<12,-8> (values below 2**-9): 28 fractional bits, past float32's 24, so brevitas
    rounds 1.5 + d to 1.5 for |d| <= 2**-24, where the quantizer's tie (round half to even: 2) then differs from
    the exact decision (1) for the 16 negative d: counted per channel, and reported, not hidden."""
    model = _Scaled(lambda x: x / 256 + 1.5).eval()
    d = fxsplit.compile(model, (4,), flow="hls4ml", config={**FAST, "input_precision": "fixed<12,-8,TRN,SAT>"},
                        output_dir=tmp_path / "o", jobs=1, progress=False)
    arith = d.report["brevitas"]["input_arithmetic"]
    assert arith[0]["float32_exact"] is False and arith[0]["decisions_moved"] == 16 * 4
    assert arith[0]["decisions_checked"] == 4096 * 4
    assert d.report["brevitas"]["torch_exact"] is False and "add" in d.report["brevitas"]["inexact_in_brevitas"]
    raw = torch.arange(-2048, 2048, dtype=torch.float32)
    x = (raw * 2.0 ** -20).reshape(-1, 4)
    r = d.verify(x)
    assert r.bit_exact and r.torch_exact is False
    y = d.predict(x)
    exact = np.where(raw.numpy().reshape(-1, 4) >= 0, 2.0, 1.0)          # round half to even of 1.5 + d
    np.testing.assert_array_equal(y, exact)
    assert r.torch_mismatches == 16


def test_a_misread_input_arithmetic_or_binary_sign_is_caught_before_any_build(tmp_path, monkeypatch):
    """The readings are checked against the model's own operations and brevitas' quantizers: an offset one step
    off, or a sign form sending 0 to -1, must raise."""
    from fxsplit.lower.brevitas import affine, norm
    net = _net("TFC_1W1A")
    real = affine.materialize

    def off_by_one(*a, **k):
        frozen, out, info, f32, g_in, rng = real(*a, **k)
        frozen.bias += 2.0 ** -7                  # one step of 2x - 1 on ufixed<8,0>
        return frozen, out, info, f32, g_in, rng
    monkeypatch.setattr(affine, "materialize", off_by_one)
    _refused(tmp_path, net, (784,), "exact reading of the input arithmetic mul, sub differs")
    monkeypatch.undo()
    real_sign = norm._sign_form

    def zero_to_minus_one(S, B, *a, **k):
        frozen, info = real_sign(S, B, *a, **k)
        frozen.bias -= 2.0 * frozen.bias.abs().min()        # (2B + 1) 2**e -> (2B - 1) 2**e: a tie goes to -1
        return frozen, info
    monkeypatch.setattr(norm, "_sign_form", zero_to_minus_one)
    _refused(tmp_path, net, (784,), "differs from brevitas' own output")
