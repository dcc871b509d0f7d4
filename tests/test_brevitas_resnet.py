"""brevitas models whose Python code inspects what their quantized layers return (``assert isinstance(out,
QuantTensor)``, branches and arithmetic on ``x.scale`` / ``x.bit_width`` / ``x.signed``), as brevitas_examples'
QuantResNet18 does: traced by running the model on example inputs as it is traced, cut, and equal to brevitas."""

import time

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int16Bias, Uint8ActPerTensorFixedPoint
from brevitas.quant_tensor import QuantTensor
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.fixed import layout
from fxsplit.frontend.capture import quant_proxy_class, trace
from fxsplit.zoo import randomize_batchnorm
from fxsplit.zoo.qat import calibrate


def _conv(c_in, c_out, kernel=3, stride=1):
    """A 4-bit convolution, a power-of-two weight scale per output channel, no bias (QuantResNet18's layout)."""
    return QuantConv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False,
                       weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4,
                       weight_scaling_per_output_channel=True)


def _relu(bits=4):
    return QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=True)


class _Block(nn.Module):
    """QuantResNet18's QuantBasicBlock with power-of-two scales: conv-BN-ReLU twice, a downsampling shortcut where the
    shape changes, the branch's last quantizer shared with the shortcut's, the add asserted to be among
    QuantTensors. The skip is requantized where its scale, read while the model runs, differs from the branch's."""

    def __init__(self, c_in, c_out, stride, shared):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = _conv(c_in, c_out, stride=stride), nn.BatchNorm2d(c_out), _relu()
        self.conv2, self.bn2 = _conv(c_out, c_out), nn.BatchNorm2d(c_out)
        self.downsample = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(_conv(c_in, c_out, kernel=1, stride=stride), nn.BatchNorm2d(c_out),
                                            _relu())
            shared = self.downsample[-1]
        self.relu2 = shared if shared is not None else _relu()
        self.relu_out = _relu()
        self.reads = []

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        if len(self.downsample):
            x = self.downsample(x)
        assert isinstance(out, QuantTensor), "Perform add among QuantTensors"
        assert isinstance(x, QuantTensor), "Perform add among QuantTensors"
        # quantization metadata in Python control flow and arithmetic (constants of the eval-mode model)
        assert not out.signed and int(out.bit_width) + int(x.bit_width) <= 16 and float(out.zero_point) == 0.0
        if not torch.equal(out.scale, x.scale):
            x = self.relu2(x)
        self.reads.append((float(out.scale), float(x.scale), int(out.bit_width), out.signed))
        return self.relu_out(out + x)


class _SmallQuantResNet(nn.Module):
    """3x8x8 -> an 8-bit input quantizer -> conv-BN-ReLU (8 channels) -> a block with the stem's quantizer shared, a
    block without (its skip requantized: the scales differ), a downsampling block (16 channels, 4x4) -> a 6-bit
    linear head, its bias an integer times the input scale times the weight scale. ``full=False``: the second block
    alone. ``quant_input=False``: no input quantizer (QuantResNet18's: the input is taken to be 8-bit already)."""

    def __init__(self, full: bool = True, quant_input: bool = True):
        super().__init__()
        self.full = full
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True) \
            if quant_input else None
        self.conv1, self.bn1, self.relu = _conv(3, 8), nn.BatchNorm2d(8), _relu()
        if full:
            self.layer1 = _Block(8, 8, 1, self.relu)
        self.layer2 = _Block(8, 8, 1, QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=3,
                                                return_quant_tensor=True))
        if full:
            self.layer3 = _Block(8, 16, 2, None)
        self.fc = QuantLinear(16 * 4 * 4 if full else 8 * 8 * 8, 10, bias=True,
                              weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=6, bias_quant=Int16Bias)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x if self.inp is None else self.inp(x))))
        out = self.layer3(self.layer2(self.layer1(out))) if self.full else self.layer2(out)
        return self.fc(out.view(out.size(0), -1))


def _small(seed=0, full=True, quant_input=True):
    torch.manual_seed(seed)
    model = _SmallQuantResNet(full, quant_input)
    randomize_batchnorm(model, seed)
    calibrate(model, (3, 8, 8), seed, batches=35)
    return model.eval()


def test_traced_quant_tensors_pass_isinstance_and_read_the_models_constants():
    model = _small()
    blocks = (model.layer1, model.layer2, model.layer3)
    for blk in blocks:
        blk.reads.clear()                       # (the calibration's eager runs)
    gm = trace(model, (3, 8, 8))
    assert [len(blk.reads) for blk in blocks] == [1, 1, 1]          # one traced run of the Python code
    reads = [blk.reads[0] for blk in blocks]
    for blk, (s_out, s_skip, bits, signed) in zip(blocks, reads):
        assert s_out == float(blk.relu2.act_quant.scale()) and signed is False
        assert bits == int(blk.relu2.act_quant.bit_width()) == (3 if blk is model.layer2 else 4)
        assert s_skip == s_out                  # equal after the requantization where they differed
    # layer2's branch quantizer (3 bits) differs from the stem's: its skip was requantized, in the graph
    assert float(model.layer2.relu2.act_quant.scale()) != float(model.relu.act_quant.scale())
    calls = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    # (layer1.relu2 is the stem's quantizer: one module, called twice, its skip not requantized)
    assert calls.count("layer2.relu2") == 2 and calls.count("layer1.relu2") == 0 and calls.count("relu") == 2
    # three additions of QuantTensors, no metadata read left in the graph
    adds = [n for n in gm.graph.nodes if n.op == "call_function" and n.target.__name__ == "add"]
    assert len(adds) == 3
    assert not [n for n in gm.graph.nodes if n.op == "get_attr" or (n.op == "call_function" and n.target is getattr)]
    assert gm.graph.find_nodes(op="call_method", target="view") == []      # the flatten idiom, static
    # a QuantProxy is a torch.fx proxy and a QuantTensor to the model's code
    assert issubclass(quant_proxy_class(), torch.fx.Proxy) and issubclass(quant_proxy_class(), QuantTensor)


def _compile_and_check(tmp_path, model, splits, ports, x, config=FAST):
    t = time.time()
    d = fxsplit.compile(model, (3, 8, 8), splits=splits, flow="hls4ml", config=config, output_dir=tmp_path / "o",
                        jobs=2, progress=False)
    compile_s = time.time() - t
    assert len(d.partitions) == len(splits) + 1
    t = time.time()
    r = d.verify(x)                                              # stitched == uncut, bit for bit
    assert r.bit_exact and r.torch_exact and r.matches_torch and r.max_abs_error_vs_torch == 0.0, r.summary()
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_array_equal(d.predict(x), ref)              # brevitas' own forward, bit for bit
    # the blocks' outputs cross the cuts with their quantizer's exact type (unsigned, 4 bits, rounded half to even)
    crossing = {p.name: p for p in d.partitioning.ports().values()}
    for name, mod in ports.items():
        lay = layout(crossing[name].precision)
        assert (lay.signed, lay.width) == (False, 4) and 2.0 ** -lay.frac == float(mod.act_quant.scale())
    print(f"small QuantResNet ({len(d.partitions)} partitions): compile {compile_s:.1f}s, verify "
          f"{time.time() - t:.1f}s, bit_exact={r.bit_exact}, torch_exact={r.torch_exact}")


def test_quant_resnet_block_inspecting_quant_tensors_cut_equals_brevitas(tmp_path):
    """One block (its skip requantized after a read of both scales), cut before it: the stem's QuantTensor
    crosses the cut to both of the block's branches. No input quantizer: the stem's QuantConv2d multiplies the
    declared input type's values (8-bit pixels k/256)."""
    model = _small(full=False, quant_input=False)
    g = torch.Generator().manual_seed(3)
    k = torch.randint(0, 256, (90, 3, 8, 8), generator=g)
    k[0], k[1] = 0, 255                                           # the type's extremes
    _compile_and_check(tmp_path, model, ["layer2"], {"relu": model.relu}, k.to(torch.float32) / 256,
                       config={**FAST, "input_precision": "ufixed<8,0,TRN,SAT>"})


@pytest.mark.slow
def test_small_quant_resnet_inspecting_quant_tensors_cut_equals_brevitas(tmp_path):
    """Three blocks (a shared quantizer, a requantized skip, a downsampling shortcut), cut between each."""
    model = _small()
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(30, 3, 8, 8, generator=g) * s for s in (0.5, 2.0, 8.0)])
    _compile_and_check(tmp_path, model, ["layer2", "layer3", "fc"],
                       {"layer1_relu_out": model.layer1.relu_out, "layer2_relu_out": model.layer2.relu_out,
                        "flatten": model.layer3.relu_out}, x)


class _ReadsDynamicScale(nn.Module):
    """A quantizer computing its scale from each input (brevitas_examples' dynamic activation quantizer), its scale
    read in forward: no constant to trace."""

    def __init__(self):
        super().__init__()
        from brevitas_examples.common.generative.quantizers import Int8DynamicActPerTensorFloat
        self.q = QuantIdentity(act_quant=Int8DynamicActPerTensorFloat, return_quant_tensor=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.q(x)
        if float(y.scale) > 1.0:
            return self.fc(y.value)
        return self.fc(-y.value)


def test_reading_an_input_dependent_scale_is_refused():
    with pytest.raises(fxsplit.FxsplitError, match="differs between two example inputs") as e:
        fxsplit.partition(_ReadsDynamicScale().eval(), (4,))
    msg = str(e.value)
    assert "'scale'" in msg and "module: q" in msg and "test_brevitas_resnet.py" in msg
    assert "if float(y.scale) > 1.0" in msg and "eval mode" in msg


def _quant_resnet18():
    from brevitas_examples.bnn_pynq.models import model_with_cfg
    torch.manual_seed(0)
    net, _ = model_with_cfg("RESNET18_4W4A", pretrained=False)
    randomize_batchnorm(net, 0)
    return net.eval()


def test_quant_resnet18_traces_and_cuts():
    net = _quant_resnet18()
    t = time.time()
    pt = fxsplit.partition(net, (3, 32, 32), splits=["layer2", "layer3", "layer4", "linear"])
    print(f"QuantResNet18: traced and cut in {time.time() - t:.1f}s")
    assert len(pt.partitions) == 5
    g = pt.graph.graph
    adds = [n for n in g.nodes if n.op == "call_function" and n.target.__name__ == "add"]
    assert len(adds) == 8                                              # one residual sum per basic block
    convs = [n for n in g.nodes if n.op == "call_module" and type(pt.graph.get_submodule(n.target)).__name__ ==
             "QuantConv2d"]
    assert len(convs) == 1 + 8 * 2 + 3                                 # the stem, two per block, three shortcuts
    assert tuple(pt.partitions[-1].inputs[0].torch_shape) == (512,)   # TruncAvgPool2d's output, flattened


def test_quant_resnet18_first_refusal_names_the_layer_and_the_change(tmp_path):
    """Without a declared input type, conv1 refuses the float pixels (with one: the slow test below)."""
    net = _quant_resnet18()
    out = tmp_path / "o"
    with pytest.raises(fxsplit.FxsplitError, match="the model input 'x'") as e:
        fxsplit.compile(net, (3, 32, 32), splits=["layer2"], flow="hls4ml", config=FAST, output_dir=out,
                        progress=False)
    msg = str(e.value)
    assert "module: conv1" in msg and "resnet.py:213: out = self.relu(self.bn1(self.conv1(x)))" in msg
    assert "input_precision='ufixed<8,0,TRN,SAT>'" in msg
    assert not out.exists()


@pytest.mark.slow
def test_quant_resnet18_as_written_cut_in_four_equals_uncut_and_its_exact_reading(tmp_path):
    """brevitas_examples' QuantResNet18 unmodified (random init, randomised BatchNorm), 8-bit pixels declared, in
    io_stream, cut before layer2, layer3 and layer4: the stem, the four stages (per-channel float weight
    scales, every BatchNorm and float-scaled ReLU folded and checked on every reachable accumulator value, up to
    2.4 * 10**5 per channel in layer4; the residual sums of one shared quantizer), the TruncAvgPool2d (the exact
    average of 16 four-bit levels, floored to 8 bits: no shift) and the 8-bit QuantLinear adding its Int32Bias on
    the pooled grid, the output times its float scale exactly. Stitched == uncut == fxsplit's exact reading, bit
    for bit; brevitas' own float32 forward within its rounding (top-1 equal)."""
    net = _quant_resnet18()
    t = time.time()
    d = fxsplit.compile(net, (3, 32, 32), splits=["layer2", "layer3", "layer4"], flow="hls4ml",
                        config={"csim_opt": "-O2", "io_type": "io_stream", "input_precision": "ufixed<8,0,TRN,SAT>"},
                        output_dir=tmp_path / "o", jobs=2, progress=False)
    compile_s = time.time() - t
    assert len(d.partitions) == 4
    q = {(e["layer"], e["kind"]): e for e in d.report["brevitas"]["quantizers"]}
    pool = q[("final_pool", "TruncAvgPool2d")]
    assert pool["type"] == "ufixed<8,4,TRN,SAT>" and pool["float_scale"] and "shifted right by 0 bits" in pool["note"]
    assert q[("linear", "QuantLinear")]["bias_quant"] and q[("linear", "QuantLinear")]["type"].startswith("fixed<8,8>")
    assert ("linear", "output scale") in q
    folds = [e for e in q.values() if e.get("checked_inputs")]
    assert len(folds) >= 20 and all(e["decisions_differing"] <= 0.01 * e["decisions_checked"] for e in folds
                                    if "decisions_differing" in e)
    g = torch.Generator().manual_seed(3)
    k = torch.randint(0, 256, (6, 3, 32, 32), generator=g)
    k[0], k[1] = 0, 255
    x = k.to(torch.float32) / 256
    t = time.time()
    r = d.verify(x)
    verify_s = time.time() - t
    assert r.bit_exact and r.reading_mismatches == 0 and r, r.summary()
    with torch.no_grad():
        ref = net(x)
    ref = getattr(ref, "value", ref).numpy().astype(np.float64)
    y = d.predict(x)
    top1 = float((y.argmax(1) == ref.argmax(1)).mean())
    rel = float(np.abs(y - ref).max() / np.abs(ref).max())
    assert top1 == 1.0 and rel < 0.05
    # QONNX: the crossing tensors are float-scaled quantizers' levels (times their scale at the files' inputs)
    t = time.time()
    res = d.export_onnx(samples=2)
    export_s = time.time() - t
    assert len(res["partitions"]) == 4 and res["exact"] is False
    for e in [*res["partitions"].values(), res["monolithic"]]:
        assert e["max_abs_error_vs_torch"] <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    print(f"QuantResNet18 (4 partitions): compile {compile_s:.0f} s, verify {verify_s:.0f} s (6 samples), top-1 "
          f"agreement {top1:.3f}, max relative error vs brevitas {rel:.3g}, export_onnx {export_s:.0f} s")
