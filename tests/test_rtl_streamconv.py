"""A streaming (io_stream) Conv2d of the open RTL flow (flows/rtl/streamconv.py) in real simulation: line buffer,
window, per-pixel da4ml kernel and a credit-guarded output FIFO, bit-exact against hls4ml's io_stream C simulation
over several frames back to back, under random input gaps and output backpressure."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST, needs_icarus
from fxsplit.flows.rtl.program import extract_program
from fxsplit.flows.rtl.streamconv import FIFO_EXTRA, emit_conv_stream, pixel_program, simulate_conv_stream
from fxsplit.fixed import raw_to_float
from fxsplit.lower import lower, normalize_config

FRAMES = 4

# name: channels in/out, filter, stride, input (H, W), weight range, result type, exact accumulators
CASES = {
    "3x3_s1": dict(cin=3, cout=4, k=3, stride=1, hw=(8, 8), wmax=1.5, result="fixed<8,3>", exact_accum=False),
    "3x3_s2": dict(cin=3, cout=4, k=3, stride=2, hw=(7, 9), wmax=1.5, result="fixed<8,3,RND,SAT>", exact_accum=True),
    "1x1": dict(cin=3, cout=4, k=1, stride=1, hw=(8, 8), wmax=0.4, result="fixed<8,2,RND_CONV,SAT>",
                exact_accum=True),
}


class OneConv(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride)

    def forward(self, x):
        return self.conv(x)


def _int_bits(values) -> int:
    """Integer bits (sign included) of the narrowest signed fixed type whose range spans ``values``."""
    m = float(np.max(np.abs(values)))
    return math.ceil(math.log2(m)) + 1 if m > 0 else 1


def _conv_numerics(hm) -> dict:
    """What decides a conv's bits in an hls4ml ModelGraph: layer classes, every variable's type, the conv's
    weights, bias, their types, the accumulator and its geometry."""
    out = {"classes": [layer.class_name for layer in hm.get_layers()]}
    for layer in hm.get_layers():
        out[f"{layer.name}.result"] = str(layer.get_output_variable().type.precision)
        if layer.class_name.startswith("Conv"):
            for w in ("weight", "bias"):
                out[f"{layer.name}.{w}"] = np.asarray(layer.weights[w].data).tolist()
                out[f"{layer.name}.{w}_t"] = str(layer.weights[w].type.precision)
            out[f"{layer.name}.accum_t"] = str(layer.get_attr("accum_t").precision)
            for a in ("in_height", "in_width", "n_chan", "n_filt", "filt_height", "filt_width", "stride_height",
                      "stride_width", "pad_top", "pad_bottom", "pad_left", "pad_right", "strategy"):
                out[f"{layer.name}.{a}"] = str(layer.get_attr(a))
    return out


@pytest.fixture(scope="module", params=list(CASES))
def conv(request, tmp_path_factory):
    c = CASES[request.param]
    torch.manual_seed(3)
    model = OneConv(c["cin"], c["cout"], c["k"], c["stride"]).eval()
    with torch.no_grad():
        model.conv.weight.uniform_(-c["wmax"], c["wmax"])
        model.conv.bias.uniform_(-c["wmax"], c["wmax"])
    wi = _int_bits(np.concatenate([p.detach().numpy().ravel() for p in (model.conv.weight, model.conv.bias)]))
    shape = (c["cin"], *c["hw"])
    config = {**FAST, "precision": "fixed<8,3>", "exact_accum": c["exact_accum"],
              "layers": {"conv": {"precision": {"weight": f"fixed<8,{wi}>", "bias": f"fixed<8,{wi}>",
                                                "result": c["result"]}}}}
    root = tmp_path_factory.mktemp(f"streamconv_{request.param}")
    # the RTL entry comes from the io_parallel lowering of the same model and config: same types and weights
    pt = fxsplit.partition(model, shape)
    graphs = {io: lower(pt, normalize_config({**config, "io_type": io}, pt), str(root / io)).mono
              for io in ("io_parallel", "io_stream")}
    prog = extract_program(graphs["io_parallel"])
    (entry,) = prog["layers"]
    x_t = prog["inputs"][0]["type"]
    meta = emit_conv_stream(entry, x_t, str(root / "rtl"), "conv_stream")
    design = fxsplit.compile(model, shape, flow="hls4ml", config={**config, "io_type": "io_stream"},
                             output_dir=root / "design", progress=False)
    x = design.stress_inputs(FRAMES)
    raw = design.port_raw(x)
    (pin,), (pout,) = design.partitioning.inputs, design.partitioning.outputs
    H, W = c["hw"]
    OH, OW = entry["out_hw"]
    return SimpleNamespace(name=request.param, case=c, model=model, x=x, design=design, graphs=graphs, entry=entry,
                           x_t=x_t, meta=meta, root=root, pin=pin, pout=pout, H=H, W=W, OH=OH, OW=OW,
                           in_raw=raw[pin.name].reshape(FRAMES * H * W, c["cin"]),
                           exp_raw=raw[pout.name].reshape(FRAMES * OH * OW, c["cout"]))


def test_io_parallel_entry_matches_io_stream_graph(conv):
    """The io_parallel and io_stream ModelGraphs of one model and config agree on everything the bits depend on,
    and the io_stream one is the conv alone (no padding layer, no repacking; a 1x1 filter is hls4ml's
    PointwiseConv2D)."""
    par, st = (_conv_numerics(conv.graphs[io]) for io in ("io_parallel", "io_stream"))
    assert par == st
    e, c = conv.entry, conv.case
    assert st["classes"] == ["Input", "PointwiseConv2D" if c["k"] == 1 else "Conv2D"]
    assert (e["n_chan"], e["n_filt"], e["filt"], e["stride"], e["pad"]) == \
        (c["cin"], c["cout"], (c["k"], c["k"]), (c["stride"], c["stride"]), (0, 0))
    assert e["w_t"][1] == 8 and conv.x_t[1] == 8 and e["res_t"][1] == 8
    # the weights reach the type's limits: 8-bit weights whose integer bits just span them
    w = np.abs(e["weight"])
    assert w.max() >= 2.0 ** (e["w_t"][2] - 2)
    prog = pixel_program(e, conv.x_t)
    assert prog["inputs"][0]["shape"] == (c["k"] * c["k"] * c["cin"],) and prog["outputs"][0]["shape"] == (c["cout"],)


def test_reference_is_the_io_stream_csim(conv):
    """The expected beats are the io_stream C simulation's raw integers (stitched == uncut here), and the stress
    inputs reach both ends of the input type."""
    ref = conv.design.predict_monolithic(conv.x)
    got = raw_to_float(conv.exp_raw.reshape(FRAMES, -1), conv.pout.precision)
    ref_cl = np.moveaxis(np.asarray(ref), 1, -1).reshape(FRAMES, -1)
    assert np.array_equal(got, ref_cl)
    lo, hi = int(conv.in_raw.min()), int(conv.in_raw.max())
    assert (lo, hi) == (-128, 127)


def _src_beats(conv) -> list[int]:
    """For every output beat, the input beat that completes its window."""
    fh = fw = conv.case["k"]
    s = conv.case["stride"]
    return [f * conv.H * conv.W + (oy * s + fh - 1) * conv.W + ox * s + fw - 1
            for f in range(FRAMES) for oy in range(conv.OH) for ox in range(conv.OW)]


@pytest.mark.parametrize("gaps,backpressure,seed", [(0.3, 0.3, 7), (0.1, 0.8, 3)])
def test_bit_exact_under_gaps_and_backpressure(conv, tmp_path, gaps, backpressure, seed):
    n_out = FRAMES * conv.OH * conv.OW
    r = simulate_conv_stream(conv.meta, str(tmp_path / "sim"), conv.in_raw, conv.exp_raw, gaps=gaps,
                             backpressure=backpressure, seed=seed)
    res = r["result"]
    assert (res.passed, res.failed) == (n_out, 0), res.mismatches[:5]
    assert not res.timeout and r["extra"] == 0
    assert len(r["in_cycles"]) == FRAMES * conv.H * conv.W and len(r["out_cycles"]) == n_out
    # the pauses happened: slower than free running; where outputs are as many as inputs, heavy backpressure
    # fills the output FIFO and the input is held back
    assert res.cycles > len(r["in_cycles"]) + conv.meta["latency"] + 2 + 10
    if backpressure > 0.5 and n_out == len(r["in_cycles"]):
        assert r["stalls"] > 0
    # causality: no output before the input beat that completes its window
    src = _src_beats(conv)
    assert all(o > r["in_cycles"][s] for o, s in zip(r["out_cycles"], src))
    print(f"\n[{conv.name}] gaps {gaps} / backpressure {backpressure}: {n_out} beats ({FRAMES} frames) bit-exact, "
          f"{res.cycles} cycles, {r['stalls']} input stalls, verilator build {r['build_seconds']} s, "
          f"run {r['sim_seconds']} s")


def test_full_rate_without_pauses(conv, tmp_path):
    """No input gaps, no backpressure: an input beat every cycle, and every output beat a fixed latency after the
    beat that completes its window (so outputs come every cycle within a row at stride 1, every ``stride`` cycles
    at stride 2)."""
    n_in, n_out = FRAMES * conv.H * conv.W, FRAMES * conv.OH * conv.OW
    r = simulate_conv_stream(conv.meta, str(tmp_path / "sim"), conv.in_raw, conv.exp_raw, gaps=0.0, backpressure=0.0)
    res = r["result"]
    assert (res.passed, res.failed) == (n_out, 0), res.mismatches[:5]
    assert r["stalls"] == 0 and r["extra"] == 0
    ic, oc = r["in_cycles"], r["out_cycles"]
    assert ic == list(range(ic[0], ic[0] + n_in))                     # one input beat per cycle
    lat = {o - ic[s] for o, s in zip(oc, _src_beats(conv))}
    L = conv.meta["latency"]
    assert lat == {L + 2}, lat                                         # window register, kernel, FIFO
    in_row = {oc[j] - oc[j - 1] for j in range(1, n_out) if j % conv.OW}
    assert in_row == {conv.case["stride"]}
    print(f"\n[{conv.name}] no pauses: {n_in} input beats in {n_in} cycles, kernel latency {L}, input-to-output "
          f"latency {L + 2} cycles, output interval {conv.case['stride']} cycle(s) within a row, "
          f"FIFO depth {conv.meta['fifo_depth']}, {res.cycles} cycles in all, run {r['sim_seconds']} s")


def test_reset_with_pixels_in_flight(conv, tmp_path):
    """``rst_n`` pulled low for one cycle right after a beat that completes a window (its pixel still in the kernel,
    others in the FIFO under backpressure), one frame and a few rows into a stream: what was in flight is dropped,
    and the frames streamed after the reset come out exact, none missing, none extra."""
    k, n_out = conv.case["k"], FRAMES * conv.OH * conv.OW
    n_pre = conv.H * conv.W + (k - 1) * conv.W + k                # the last prefix beat completes a window
    prefix = np.random.default_rng(5).integers(-128, 128, size=(n_pre, conv.case["cin"]))
    r = simulate_conv_stream(conv.meta, str(tmp_path / "sim"), np.concatenate([prefix, conv.in_raw]), conv.exp_raw,
                             gaps=0.2, backpressure=0.6, seed=4, reset_after=n_pre)
    res = r["result"]
    assert (res.passed, res.failed) == (n_out, 0), res.mismatches[:5]
    assert not res.timeout and r["extra"] == 0
    assert r["dropped"] <= conv.OH * conv.OW                   # the prefix's last pixel never came out
    assert len(r["in_cycles"]) == n_pre + FRAMES * conv.H * conv.W
    print(f"\n[{conv.name}] reset after {n_pre} beats: {r['dropped']} of {conv.OH * conv.OW + 1} prefix pixels came "
          f"out before it, the {n_out} beats after it exact")


@needs_icarus
def test_icarus_same_schedule_and_a_wrong_beat_is_caught(conv, tmp_path):
    """Icarus runs the same random schedule cycle for cycle, and one flipped expected bit is one failed beat."""
    n_out = FRAMES * conv.OH * conv.OW
    kw = dict(gaps=0.4, backpressure=0.5, seed=9)
    v = simulate_conv_stream(conv.meta, str(tmp_path / "v"), conv.in_raw, conv.exp_raw, **kw)
    exp = conv.exp_raw.copy()
    exp[5, 2] ^= 1
    i = simulate_conv_stream(conv.meta, str(tmp_path / "i"), conv.in_raw, exp, simulator="icarus", **kw)
    assert (v["result"].passed, v["result"].failed) == (n_out, 0)
    assert (i["result"].passed, i["result"].failed) == (n_out - 1, 1)
    assert [(m.sample, m.index) for m in i["result"].mismatches] == [(5, 2)]
    assert v["out_cycles"] == i["out_cycles"] and v["in_cycles"] == i["in_cycles"]


def test_rtl_files_and_fifo_depth(conv):
    m = conv.meta
    assert m["fifo_depth"] == m["latency"] + FIFO_EXTRA and m["latency"] >= 1
    assert m["in_bits"] == conv.case["cin"] * 8 and m["out_bits"] == conv.case["cout"] * 8
    text = open(os.path.join(m["workdir"], m["files"][-1])).read()
    for pin in ("input clk", "input rst_n", "in_TDATA", "in_TVALID", "output in_TREADY", "out_TDATA",
                "output out_TVALID", "input out_TREADY"):
        assert pin in text


def test_wrapper_synthesizes(conv, tmp_path):
    """Yosys (synth_xilinx) takes the wrapper, the kernel as a black box: line buffer, window, counters and FIFO."""
    from fxsplit.flows.rtl.synth import synthesize
    m = conv.meta
    files = [os.path.join(m["workdir"], f) for f in m["files"]]
    syn = synthesize(str(tmp_path / "syn"), [files[-1]], m["top"], netlist=False,
                     blackboxes=[os.path.join(m["workdir"], f"src/{m['kernel']['top']}.v")])
    assert syn["blackbox_cells"] == {m["kernel"]["top"]: 1}
    assert syn["ff"] + syn["srl"] > 0 and syn["lut"] > 0 and syn["dsp"] == 0
    print(f"\n[{conv.name}] wrapper (kernel as a black box): {syn['lut']} LUT, {syn['ff']} FF, {syn['srl']} SRL, "
          f"{syn['carry']} CARRY, {syn['seconds']} s")
