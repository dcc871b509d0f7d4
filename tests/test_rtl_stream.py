"""The open RTL flow's stream-stitched top (flows/rtl/stream.py) in real simulation: AXI4-Stream
handshakes between partitions, a FIFO on every edge and deep ones on reconvergent edges, bit-exact
against the C simulation under random input gaps and random output backpressure."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from pathlib import Path
from conftest import FAST, HAVE_ICARUS, random_inputs
from fxsplit.flows.common.dagdesc import edges as dag_edges
from fxsplit.flows.rtl.stream import SHELL_EXTRA, generate_stream_stitched


class SkipMLP(nn.Module):
    """p0 -> a -> b -> head, and p0's output h also goes straight to b (over a): a bypass edge."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.fc4 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.relu = nn.ReLU()
        self.cut_a, self.cut_b, self.cut_head = fxsplit.Cut("a"), fxsplit.Cut("b"), fxsplit.Cut("head")

    def forward(self, x):
        h = self.relu(self.fc1(x))
        t = self.cut_a(h)
        t = self.relu(self.fc2(t))
        t = self.cut_b(t)
        s = self.fc3(t) + h
        return self.fc4(self.cut_head(s))


@pytest.fixture(scope="module")
def skip_design(tmp_path_factory):
    torch.manual_seed(5)
    out = tmp_path_factory.mktemp("stream")
    design = fxsplit.compile(SkipMLP().eval(), (6,), flow="rtl", output_dir=out / "skip", progress=False,
                             config={**FAST, "precision": "fixed<8,3>", "synth": False})
    return design


def _ok(res, n):
    assert res.extra["rtl_vs_csim"] == {"passed": n, "failed": 0}, res.details[:5]
    assert res.bit_exact and res.extra["csim_vs_monolithic_mismatches"] == 0
    assert res.extra["interface"] == "axis"


def test_stream_top_bit_exact_under_gaps_and_backpressure(skip_design, rng):
    d = skip_design
    assert [p.name for p in d.partitions] == ["p0", "a", "b", "head"]
    n = 200
    x = random_inputs(rng, (6,), n=n, scale=16.0)          # fixed<8,3> holds [-4, 4): wrap and saturation
    free = d.verify(x, level="rtl", interface="axis", gaps=0.0, backpressure=0.0)
    _ok(free, n)
    # no pauses: one sample per cycle after the pipeline fills (latency plus two cycles per hop)
    hops = len(d.partitions) + 1
    assert free.extra["cycles"] <= n + d.rtl.latency + SHELL_EXTRA * hops + 4, free.extra["cycles"]
    for gaps, bp, seed in ((0.3, 0.3, 1), (0.7, 0.8, 11)):
        res = d.verify(x, level="rtl", interface="axis", gaps=gaps, backpressure=bp, seed=seed)
        _ok(res, n)
        assert res.extra["cycles"] > free.extra["cycles"] * 1.2      # the pauses really happened
    assert d.rtl.last_sim["interface"] == "axis" and f"{n} passed, 0 failed" in d.rtl.last_sim["log"]
    html = Path(os.path.join(d.output_dir, "report.html")).read_text()
    assert "AXI4-Stream top, random input gaps 0.7, output backpressure 0.8 (seed 11)" in html
    assert f"fxsplit_top_axis: {d.rtl.axis['file']}" in html and d.report["stitched"]["axis_file"] == d.rtl.axis["file"]
    # the pipelined top still verifies the same design
    _ok_pipe = d.verify(x, level="rtl")
    assert _ok_pipe.bit_exact and _ok_pipe.extra["interface"] == "pipeline"


def test_stream_fifos_on_reconvergent_edges(skip_design):
    """The deep FIFO sits on the edge the shared analysis (fxsplit.flows.common.dagdesc, also behind the Vivado
    stitcher) calls reconvergent: p0 -> b, over 'a'; it is as deep as 'a' holds samples."""
    d = skip_design
    edges = d.rtl.axis["edges"]
    flags = dag_edges(d.partitioning.dag())
    assert [(e["producer"], e["consumer"], e["reconvergent"]) for e in edges] == \
        [(f["producer"], f["consumer"], f["reconvergent"]) for f in flags]
    deep = [e for e in edges if e["reconvergent"]]
    assert {(e["producer"], e["consumer"]) for e in deep if e["bypass"]} == {("p0", "b")}
    lat_a = d.rtl.partitions["a"]["latency"]
    byp = next(e for e in deep if e["bypass"])
    assert byp["depth"] == lat_a + SHELL_EXTRA + SHELL_EXTRA
    assert all(e["depth"] == SHELL_EXTRA for e in edges if not e["reconvergent"])
    text = Path(d.rtl.axis["file"]).read_text()
    assert f".DEPTH({byp['depth']})" in text and "module fxs_shell_a" in text


def test_stream_one_entry_fifos_still_complete_but_slower(skip_design, rng, tmp_path):
    """A whole sample per beat: no FIFO depth can deadlock the design; depth buys throughput."""
    d = skip_design
    n = 60
    x = random_inputs(rng, (6,), n=n, scale=16.0)
    deep = d.verify(x, level="rtl", interface="axis", gaps=0.0, backpressure=0.0)
    _ok(deep, n)
    text, _edges = generate_stream_stitched(d.rtl.axis["top"], d.partitioning.dag(), d.rtl.partitions,
                                            depth_override=1)
    f = tmp_path / "shallow.v"
    f.write_text(text)
    saved = d.rtl.axis
    try:
        d.rtl.axis = dict(saved, file=str(f), files=[*saved["files"][:-1], str(f)])
        shallow = d.verify(x, level="rtl", interface="axis", gaps=0.0, backpressure=0.0)
    finally:
        d.rtl.axis = saved
    _ok(shallow, n)
    assert shallow.extra["cycles"] > deep.extra["cycles"] + n // 2, (shallow.extra["cycles"], deep.extra["cycles"])


def _read_hex(path, precision, shape):
    """A testbench data file back as raw element values, (n, size)."""
    from fxsplit.flows.rtl.lower import parse_precision
    w, size = parse_precision(precision)[1], int(np.prod(shape))
    words = [int(h, 16) for h in Path(path).read_text().split()]
    return np.array([[(v >> (w * e)) & ((1 << w) - 1) for e in range(size)] for v in words], dtype=object)


def test_stream_testbench_catches_a_wrong_beat(skip_design, rng, tmp_path):
    """The stream testbench compares: one flipped expected bit is one failed sample, named."""
    from fxsplit.flows.rtl.lower import verilog_name
    from fxsplit.flows.rtl.testbench import simulate
    d = skip_design
    n = 40
    res = d.verify(random_inputs(rng, (6,), n=n, scale=16.0), level="rtl", interface="axis")
    _ok(res, n)
    wd = res.extra["testbench_dir"]
    ins, outs = d.partitioning.inputs, d.partitioning.outputs
    in_raw = [_read_hex(os.path.join(wd, f"in_{verilog_name(p.name)}.hex"), p.precision, p.shape) for p in ins]
    exp_raw = [_read_hex(os.path.join(wd, f"exp_{verilog_name(p.name)}.hex"), p.precision, p.shape) for p in outs]
    exp_raw[0][7, 1] ^= 1

    def ports(ps):
        return [{"name": p.name, "precision": p.precision, "shape": list(p.shape)} for p in ps]

    sim = simulate("verilator", d.rtl.axis["files"], d.rtl.axis["top"], ports(ins), ports(outs), in_raw, exp_raw,
                   d.rtl.latency, str(tmp_path / "tb"), stream={"gaps": 0.3, "backpressure": 0.3, "seed": 2})
    assert (sim.passed, sim.failed) == (n - 1, 1)
    assert [(m.sample, m.index) for m in sim.mismatches] == [(7, 1)]


@pytest.mark.skipif(not HAVE_ICARUS, reason="Icarus Verilog (iverilog) is not installed: apt-get install iverilog")
def test_stream_icarus_sees_the_same_schedule(skip_design, rng):
    """The testbench's random pauses come from its own xorshift: Icarus and Verilator run the same
    schedule, cycle for cycle."""
    d = skip_design
    n = 50
    x = random_inputs(rng, (6,), n=n, scale=16.0)
    v = d.verify(x, level="rtl", interface="axis", simulator="verilator", gaps=0.4, backpressure=0.5, seed=9)
    i = d.verify(x, level="rtl", interface="axis", simulator="icarus", gaps=0.4, backpressure=0.5, seed=9)
    _ok(v, n)
    _ok(i, n)
    assert v.extra["cycles"] == i.extra["cycles"]
