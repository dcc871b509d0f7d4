"""The model zoo through fxsplit.compile (hls4ml flow): stitched C simulation == uncut, bit for bit."""

import numpy as np
import pytest
import torch

import fxsplit
from conftest import FAST, random_inputs
from fxsplit.zoo import build

CASES = [
    # (zoo model, extra splits, config)
    ("jet_tagger", None, {}),
    # the split before fc2 coincides with the Cut marker there (merged); relu3 adds a partition
    ("jet_tagger", ["fc2", "relu3"], {"precision": "fixed<12,4>", "partitions": {"head": {"reuse_factor": 2}}}),
    ("wide_mlp", None, {}),
    ("residual_cnn", None, {}),
    ("residual_cnn", None, {"io_type": "io_stream"}),
    ("branchy_cnn", None, {}),
    ("branchy_cnn", ["relu_b"], {"layers": {"mix": {"precision": {"result": "fixed<18,8>"}}}}),
]


@pytest.mark.parametrize("name,splits,config", CASES, ids=lambda v: str(v) if not isinstance(v, dict) else None)
def test_zoo_bit_exact(name, splits, config, tmp_path, rng):
    model, shape = build(name)
    design = fxsplit.compile(model, shape, splits=splits, config={**FAST, **config},
                             output_dir=tmp_path / name, progress=False)
    assert len(design.partitions) >= 3
    x = random_inputs(rng, shape, n=300)
    res = design.verify(x)
    assert res.bit_exact, res.details[:5]
    assert res.mismatches == 0 and res.n_samples == 300
    # the check can fail: the stitched outputs really are the partitions chained
    y = design.predict(x)
    assert np.array_equal(y, design.predict_monolithic(x))
    assert np.isfinite(res.max_abs_error_vs_torch) and res.max_abs_error_vs_torch > 0
    assert res.max_abs_error_vs_torch < 2.0, "fixed-point design strays far from PyTorch float"
    # every partition is its own hls4ml project on disk
    for p in design.partitions:
        assert (tmp_path / name / p.name / "hls4ml" / "firmware" / f"{p.name}.cpp").exists()
    # boundary types equal on both sides of every cut
    ports = {}
    for p in design.partitions:
        for port in p.outputs:
            ports[port.name] = port.precision
    for p in design.partitions:
        for port in p.inputs:
            if port.name in ports:
                assert port.precision == ports[port.name]


def test_verify_detects_a_difference(tmp_path, rng):
    """verify() is not a tautology: perturb one partition's library input and it reports mismatches."""
    model, shape = build("jet_tagger")
    design = fxsplit.compile(model, shape, config=FAST, output_dir=tmp_path / "jt", progress=False)
    x = random_inputs(rng, shape, n=50)
    assert design.verify(x).bit_exact
    orig = design._csims["head"]

    class OffByOneLSB:                      # the head's input, one LSB up on one element
        def quantize(self, k, a):
            return orig.quantize(k, a)

        def run(self, xs):
            xs = [a.copy() for a in xs]
            xs[0][:, 0] += np.uint64(1)
            return orig.run(xs)

    design._csims["head"] = OffByOneLSB()
    res = design.verify(x)
    assert not res.bit_exact and res.mismatches > 0 and res.details[0].output == "fc4"


def test_resnet20_bit_exact(tmp_path, rng):
    """ResNet20 (3 stages x 3 blocks, projection shortcuts), 4 partitions, io_stream (io_parallel C simulation of
    32x32 convolutions takes g++ > 15 min); -O1 because -O0 libraries are slow to *run* at this size."""
    model, shape = build("resnet20")
    design = fxsplit.compile(model, shape, config={"csim_opt": "-O1", "io_type": "io_stream"},
                             output_dir=tmp_path / "r20", progress=False)
    assert [p.name for p in design.partitions] == ["p0", "stage2", "stage3", "head"]
    x = random_inputs(rng, shape, n=8, scale=2.0)
    res = design.verify(x)
    assert res.bit_exact, res.details[:5]


def test_wrap_and_saturation_at_O3(tmp_path, rng):
    """The product default -O3, with inputs far outside the input type (they wrap) and a saturating
    output type that the outputs actually reach."""
    model, shape = build("jet_tagger")
    with torch.no_grad():
        model.fc4.weight.mul_(40.0)                              # outputs well beyond the output type
    cfg = {"input_precision": "fixed<10,3>",                     # range [-4, 4): inputs of +-16 wrap
           "layers": {"fc4": {"precision": {"result": "fixed<8,2,TRN,SAT>"}},      # range [-2, 2)
                      "relu2": {"precision": {"result": "ufixed<6,2,RND,SAT>"}}}}
    design = fxsplit.compile(model, shape, config=cfg, output_dir=tmp_path / "sat", progress=False)
    for name in ["monolithic"] + [p.name for p in design.partitions]:      # the product default, -O3
        assert 'CFLAGS="-O3 ' in (tmp_path / "sat" / name / "hls4ml" / "build_lib.sh").read_text()
    x = rng.uniform(-16, 16, size=(400, *shape))
    assert np.mean(np.abs(x) >= 4) > 0.5                        # most inputs are out of range: they wrap
    res = design.verify(x)
    assert res.bit_exact, res.details[:5]
    y = design.predict(x)
    assert np.mean((y == 2 - 2 ** -5) | (y == -2.0)) > 0.1      # the saturating output type is reached


def test_resnet20_small_spanning_weights_io_stream(tmp_path):
    """ResNet20's topology at 3/6/12 channels, 8-bit weight types spanning each layer's folded weights, io_stream,
    cut inside residual blocks (the skip tensor crosses the cuts): stitched == uncut on inputs that reach the limits,
    and the weights keep their significant bits (the largest folded weight of every layer uses its type's top)."""
    from fxsplit.zoo import folded_weights, integer_bits, spanning_config
    model, shape = build("resnet20_small")
    cfg = spanning_config(model, shape, io_type="io_stream", **FAST)
    types = {name: e["precision"]["weight"] for name, e in cfg["layers"].items()}
    assert len(types) == 22 and all(t.startswith("fixed<8,") for t in types.values())
    for name, w in folded_weights(model, shape).items():
        m = float(w.abs().max())
        i = integer_bits(m)
        assert types[name] == f"fixed<8,{i}>" and 2.0 ** (i - 2) <= m < 2.0 ** (i - 1)
    design = fxsplit.compile(model, shape, splits=["stage1.1.conv2", "stage2.2"], config=cfg,
                             output_dir=tmp_path / "rs", progress=False)
    crossing = {p.name for p in design.partitioning["p1"].inputs}
    assert len(crossing) == 2                       # the block's input (the skip) and conv1's activation
    res = design.verify(design.stress_inputs(48, seed=2))
    assert res.bit_exact, res.summary()
    # the report counts the weights that are not zero in their types: the partitions hold the uncut model's, and
    # the spanning types keep almost all of them
    nz = design.report["nonzero_weights"]
    weights = sum(w.numel() for w in folded_weights(model, shape).values())
    assert nz["partitions"] == nz["uncut"] == sum(p["nonzero_weights"] for p in design.report["partitions"])
    assert 0.9 * weights <= nz["uncut"] <= weights
