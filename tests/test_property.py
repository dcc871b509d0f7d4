"""Property: for random small DAG models and random cut sets, partitioned == uncut, bit for bit (float models, and
brevitas models with random bit widths, which must also equal brevitas itself)."""

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

import fxsplit
from conftest import FAST

WIDTH = 6


class RandomDAG(nn.Module):
    """A straight-line program over a growing list of tensors: each op reads earlier tensors
    (so skip connections appear naturally) and Cut markers sit between ops."""

    def __init__(self, program, cuts):
        super().__init__()
        self.program = program
        self.layers = nn.ModuleList()
        self.cuts = nn.ModuleDict({f"c{i}": fxsplit.Cut(f"cut{i}") for i in cuts})
        for op, _args in program:
            if op == "linear":
                self.layers.append(nn.Linear(WIDTH, WIDTH))
            elif op == "cat_linear":
                self.layers.append(nn.Linear(2 * WIDTH, WIDTH))
            elif op == "relu":
                self.layers.append(nn.ReLU())
            elif op == "bn":
                bn = nn.BatchNorm1d(WIDTH)
                with torch.no_grad():
                    bn.running_mean.uniform_(-1, 1)
                    bn.running_var.uniform_(0.5, 2)
                    bn.weight.uniform_(0.5, 1.5)
                    bn.bias.uniform_(-0.5, 0.5)
                self.layers.append(bn)
            elif op in ("sigmoid", "tanh"):
                self.layers.append(nn.Sigmoid() if op == "sigmoid" else nn.Tanh())
            else:
                self.layers.append(nn.LeakyReLU(0.125) if op == "leaky" else nn.Identity())
        # no dead values: every tensor nobody reads is added into the output
        used = {a for _op, args in program for a in args}
        self.unused = [i for i in range(1, len(program)) if i not in used]
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, x):
        ts = [x]
        for i, ((op, args), layer) in enumerate(zip(self.program, self.layers)):
            if f"c{i}" in self.cuts:
                ts[-1] = self.cuts[f"c{i}"](ts[-1])
            if op == "add":
                y = ts[args[0]] + ts[args[1]]
            elif op == "sub":
                y = ts[args[0]] - ts[args[1]]
            elif op == "mul":
                y = ts[args[0]] * ts[args[1]]
            elif op == "cat_linear":
                y = layer(torch.cat([ts[args[0]], ts[args[1]]], dim=1))
            else:
                y = layer(ts[args[0]])
            ts.append(y)
        y = ts[-1]
        for i in self.unused:
            y = y + ts[i]
        return self.head(y)


@st.composite
def dag_and_cuts(draw):
    n = draw(st.integers(3, 7))
    program = [("linear", (0,))]
    for i in range(1, n):
        k = i + 1  # tensors available: 0..i
        op = draw(st.sampled_from(["linear", "relu", "leaky", "add", "cat_linear"]))
        if op in ("add", "cat_linear"):
            a = draw(st.integers(1, k - 1))
            b = draw(st.integers(0, k - 1).filter(lambda v: v != a))   # x + x: refused (hls4ml limitation)
            program.append((op, (a, b)))
        else:
            program.append((op, (draw(st.integers(max(1, k - 3), k - 1)),)))
    cuts = draw(st.sets(st.integers(1, len(program) - 1), min_size=1, max_size=3))
    return program, sorted(cuts)


# every example compiles real hls4ml C simulations (several g++ runs): few examples, and no shrinking
# (a failing example is printed in full; shrinking would recompile for many minutes)
@settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=dag_and_cuts(), seed=st.integers(0, 2 ** 16))
def test_random_dag_partitioned_equals_uncut(case, seed, tmp_path_factory):
    program, cuts = case
    torch.manual_seed(seed)
    model = RandomDAG(program, cuts).eval()
    out = tmp_path_factory.mktemp("dag")
    try:
        # as a user would: bound the Dense result types (hls4ml's 'auto' keeps every bit and grows without end)
        layers = {f"layers.{i}": {"precision": {"result": "fixed<20,8>"}}
                  for i, (op, _a) in enumerate(program) if op in ("linear", "cat_linear")}
        design = fxsplit.compile(model, (WIDTH,), config={**FAST, "precision": "fixed<14,5>", "layers": layers},
                                 output_dir=out, progress=False,
                                 cache_dir=tmp_path_factory.getbasetemp() / "shared-cache")
    except fxsplit.FxsplitError as e:
        # every op is supported and no value is dead, so no partition can be empty: any refusal is a bug
        raise AssertionError(f"compile refused a valid model: {e}") from e
    assert len(design.partitions) == len(cuts) + 1
    x = np.random.default_rng(seed).uniform(-8, 8, size=(200, WIDTH))
    res = design.verify(x)
    assert res.bit_exact, (program, cuts, res.details[:3])


class RandomQuantDAG(nn.Module):
    """The same straight-line programs in brevitas: a QuantIdentity input quantizer, quantized linear layers each
    followed by a quantizer (QuantReLU or a signed QuantIdentity) with drawn bit widths, residual sums of two
    earlier tensors (both requantized by one shared quantizer, as brevitas adds QuantTensors of one scale), Cut
    markers between ops."""

    def __init__(self, program, cuts, in_bits):
        from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
        from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int16Bias,
                                    Uint8ActPerTensorFixedPoint)
        super().__init__()
        self.program = program
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=in_bits, return_quant_tensor=True)
        self.join = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=True)
        self.cuts = nn.ModuleDict({f"c{i}": fxsplit.Cut(f"cut{i}") for i in cuts})
        self.layers = nn.ModuleList()
        for op, _args, w_bits, a_bits in program:
            if op == "add":
                self.layers.append(nn.Identity())
                continue
            act = (QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=a_bits, return_quant_tensor=True)
                   if op == "qlinear_relu" else
                   QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=a_bits, return_quant_tensor=True))
            self.layers.append(nn.Sequential(
                QuantLinear(WIDTH, WIDTH, bias=True, weight_quant=Int8WeightPerTensorFixedPoint,
                            weight_bit_width=w_bits, bias_quant=Int16Bias, return_quant_tensor=True), act))
        self.head = QuantLinear(WIDTH, 3, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=6,
                                bias_quant=Int16Bias, return_quant_tensor=False)

    def forward(self, x):
        ts = [self.inp(x)]
        for i, ((op, args, _w, _a), layer) in enumerate(zip(self.program, self.layers)):
            if f"c{i}" in self.cuts:
                ts[-1] = self.cuts[f"c{i}"](ts[-1])
            ts.append(self.join(ts[args[0]]) + self.join(ts[args[1]]) if op == "add" else layer(ts[args[0]]))
        return self.head(ts[-1])


@st.composite
def quant_dag_and_cuts(draw):
    n = draw(st.integers(2, 5))
    bits = st.integers(2, 8)
    program = [("qlinear_relu", (0,), draw(bits), draw(bits))]
    for i in range(1, n):
        op = draw(st.sampled_from(["qlinear_relu", "qlinear_id", "add"]))
        # every op reads the latest tensor (no dead values, so no marker can fall away); a sum adds an earlier one
        if op == "add":
            program.append((op, (i, draw(st.integers(0, i - 1))), 0, 0))
        else:
            program.append((op, (i,), draw(bits), draw(bits)))
    cuts = draw(st.sets(st.integers(1, len(program) - 1), min_size=1, max_size=2))
    return program, sorted(cuts), draw(bits)


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=quant_dag_and_cuts(), seed=st.integers(0, 2 ** 16))
def test_random_brevitas_dag_equals_uncut_and_brevitas(case, seed, tmp_path_factory):
    """Random brevitas DAGs with random bit widths (2-8) and cuts: partitioned == uncut, and == brevitas' own output
    bit for bit wherever brevitas' float32 arithmetic is exact (else its error is reported and the layers named)."""
    from fxsplit.zoo.qat import calibrate
    program, cuts, in_bits = case
    torch.manual_seed(seed)
    model = calibrate(RandomQuantDAG(program, cuts, in_bits), (WIDTH,), seed=seed)
    out = tmp_path_factory.mktemp("qdag")
    try:
        design = fxsplit.compile(model, (WIDTH,), config=FAST, output_dir=out, progress=False,
                                 cache_dir=tmp_path_factory.getbasetemp() / "shared-qcache")
    except fxsplit.FxsplitError as e:
        # cuts sit between whole layers (never between a QuantLinear and its quantizer): any refusal is a bug
        raise AssertionError(f"compile refused a valid brevitas model: {e}") from e
    assert len(design.partitions) == len(cuts) + 1
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(100, WIDTH, generator=g) * s for s in (0.5, 2.0, 20.0)])
    res = design.verify(x)
    assert res.bit_exact, (program, cuts, res.details[:3])
    assert res.matches_torch if res.torch_exact else design.report["brevitas"]["inexact_in_brevitas"], \
        (program, cuts, in_bits, res.summary())
