"""Streaming networks of the open RTL flow (flows/rtl/streamnet.py) in real simulation: hls4ml io_stream models
unit by unit (windows, joins, zero padding, forks with computed FIFO depths, repacks) and reduced-width ResNet20
whole, bit-exact against hls4ml's io_stream C simulation over frames back to back under random input gaps and
output backpressure."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST, needs_icarus
from fxsplit.errors import FxsplitError
from fxsplit.flows.rtl.streamnet import FORK_SLACK, emit_stream_net, simulate_stream_net, stream_graph
from fxsplit.lower import lower, normalize_config
from fxsplit.zoo import build, spanning_config


class PoolDense(nn.Module):
    """Conv + BatchNorm + ReLU (one kernel), max pooling, a strided conv, PyTorch's channels-first flatten (hls4ml's
    reordering transpose) and a Dense reading the whole vector."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv1(x))))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


class Joins(nn.Module):
    """A per-pixel layer on the input (a 1x1 window with no kernel before it), its fork into a pointwise and a
    padded 3x3 branch, subtract and add joins, concatenation on the channels, BatchNorm fused into the
    concatenation's kernel, average pooling; the output a feature map."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)
        self.b = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        x = torch.relu(x)
        a, b = self.a(x), self.b(x)
        y = self.bn(torch.cat([a - b, a + b], dim=1))
        return self.pool(y)


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.c2 = nn.Conv1d(4, 3, 3)

    def forward(self, x):
        return self.c2(self.pool(torch.relu(self.c1(x))))


MODELS = {"pool_dense": (PoolDense, (3, 10, 10)), "joins": (Joins, (3, 8, 8)), "conv1d": (Conv1dNet, (2, 16))}
FRAMES = 4


def _randomize(model: nn.Module) -> None:
    torch.manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def _setup(model, shape, root, frames, cfg=None):
    model.eval()
    cfg = cfg or spanning_config(model, shape, io_type="io_stream", **FAST)
    pt = fxsplit.partition(model, shape)
    hm = lower(pt, normalize_config(cfg, pt), str(root / "lower")).mono
    net = stream_graph(hm, "uncut")
    meta = emit_stream_net(net, str(root / "rtl"), "net_top")
    design = fxsplit.compile(model, shape, flow="hls4ml", config=cfg, output_dir=root / "design", progress=False)
    x = design.stress_inputs(frames, seed=3)
    raw = design.port_raw(x)
    (pin,), (pout,) = design.partitioning.inputs, design.partitioning.outputs
    pi, po = meta["ports"]["inputs"][0], meta["ports"]["outputs"][0]
    return SimpleNamespace(net=net, meta=meta, design=design, x=x, hm=hm, frames=frames,
                           in_raw=raw[pin.name].reshape(frames * pi["beats"], pi["beat"]),
                           exp_raw=raw[pout.name].reshape(frames * po["beats"], po["beat"]))


@pytest.fixture(scope="module", params=list(MODELS))
def small(request, tmp_path_factory):
    cls, shape = MODELS[request.param]
    model = cls()
    _randomize(model)
    s = _setup(model, shape, tmp_path_factory.mktemp(f"streamnet_{request.param}"), FRAMES)
    s.name = request.param
    return s


def test_units_of_each_model(small):
    """The graph has the units the model needs, the per-pixel layers fused into the kernel before them."""
    ops = [(u["op"], u["name"], tuple(u.get("fused", ()))) for u in small.net["units"]]
    kinds = {op for op, _, _ in ops}
    if small.name == "pool_dense":
        assert ("window", "conv1", ("bn", "relu")) in ops or any(
            op == "window" and name == "conv1" and len(f) == 2 for op, name, f in ops), ops
        repacks = [u for u in small.net["units"] if u["op"] == "repack"]
        assert len(repacks) == 1 and repacks[0]["order"] is not None      # the reordering flatten, gathered once
        assert kinds == {"zeropad", "window", "repack"}
    elif small.name == "joins":
        assert kinds == {"window", "fork", "zeropad", "join"}
        (fork,) = [u for u in small.net["units"] if u["op"] == "fork" and u["ins"] == ["x"]] or \
            [u for u in small.net["units"] if u["op"] == "fork"][:1]
        # the pointwise branch waits for the padded 3x3 branch: one row and two pixels of the 8x8 input
        assert max(fork["depths"]) >= 8 + 2
    else:
        assert kinds == {"zeropad", "window"}


def test_small_models_bit_exact_under_gaps_and_backpressure(small, tmp_path):
    """One build, two runs: even pauses on both sides, then rare input gaps against heavy backpressure."""
    runs = [dict(gaps=0.3, backpressure=0.3, seed=11), dict(gaps=0.05, backpressure=0.7, seed=4)]
    n = small.exp_raw.shape[0]
    for run, r in zip(runs, simulate_stream_net(small.meta, str(tmp_path / "sim"), small.in_raw, small.exp_raw,
                                                runs=runs)):
        res = r["result"]
        assert (res.passed, res.failed, res.timeout, *r["extra"].values()) == (n, 0, False, 0), (run, res.mismatches[:5])
        (ins,) = r["in_cycles"].values()
        assert len(ins) == small.in_raw.shape[0]
    # the expected beats are not trivial: they take many values
    assert len(np.unique(small.exp_raw)) >= min(8, small.exp_raw.size // 2)


def test_fork_too_shallow_is_a_reported_deadlock(tmp_path):
    """A fork FIFO shallower than its path needs stops the network: the testbench ends at its timeout and says how
    many beats never came out; it does not hang and does not pass."""
    model = Joins()
    _randomize(model)
    s = _setup(model, (3, 8, 8), tmp_path / "ok", 2)
    for u in s.net["units"]:
        if u["op"] == "fork":
            u["depths"] = [1 for _ in u["depths"]]
    meta = emit_stream_net(s.net, str(tmp_path / "shallow"), "net_top", depths="given")
    r = simulate_stream_net(meta, str(tmp_path / "sim"), s.in_raw, s.exp_raw, gaps=0.0, backpressure=0.0)
    res = r["result"]
    assert res.timeout and res.passed < s.exp_raw.shape[0]
    assert "never came out" in res.log


def test_refused_before_any_build(tmp_path):
    """What the streaming flow cannot reproduce is refused while the graph is read, naming the layer."""
    class Strided(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(3, stride=2)

        def forward(self, x):
            return self.pool(x)

    model, shape = Strided().eval(), (2, 9, 9)
    cfg = {"precision": "fixed<8,3>", "io_type": "io_stream", **FAST}
    pt = fxsplit.partition(model, shape)
    hm = lower(pt, normalize_config(cfg, pt), str(tmp_path / "l")).mono
    with pytest.raises(FxsplitError, match=r"layer 'pool'.*stride equal to the pool"):
        stream_graph(hm, "p0")
    par = lower(pt, normalize_config({**cfg, "io_type": "io_parallel"}, pt), str(tmp_path / "p")).mono
    with pytest.raises(FxsplitError, match="not io_stream"):
        stream_graph(par, "p0")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    model, shape = build("resnet20_small")
    return _setup(model, shape, tmp_path_factory.mktemp("streamnet_resnet"), 6)


@pytest.mark.slow
def test_resnet20_small_streams_bit_exact(resnet, tmp_path):
    """ResNet20's topology at 3/6/12 channels with 8-bit weight types spanning each layer, whole, as one streaming
    network: every output of 6 frames back to back equals hls4ml's io_stream C simulation under gaps and
    backpressure; every residual block's skip FIFO is sized from its branch (two padded 3x3 convolutions). (In the
    default run the same model streams cut in three through compile: tests/test_rtl_streamflow.py.)"""
    units = resnet.net["units"]
    assert sum(u["op"] == "join" for u in units) == 9 and sum(u["op"] == "fork" for u in units) == 9
    assert not any(u["op"] == "repack" for u in units)          # pool -> transpose -> flatten -> fc: all wires
    first = next(u for u in units if u["op"] == "fork")
    # each 3x3 conv padded by 1 over 16x16 makes pixel (y, x) once input (y+1, x+1) is in: 17 beats behind
    assert first["min_depths"] == [FORK_SLACK, 2 * 17 + FORK_SLACK]
    assert first["min_depths"][1] < first["depths"][1] < 256
    # one build: under gaps and backpressure, then free running (frames back to back, inputs offered every cycle)
    r, r2 = simulate_stream_net(resnet.meta, str(tmp_path / "sim"), resnet.in_raw, resnet.exp_raw,
                                runs=[dict(gaps=0.3, backpressure=0.3, seed=5), dict(gaps=0.0, backpressure=0.0)])
    res = r["result"]
    assert (res.passed, res.failed, res.timeout, *r["extra"].values()) == (6, 0, False, 0), res.mismatches[:5]
    assert r2["result"].passed == 6
    (ins,), (outs,) = r2["in_cycles"].values(), r2["out_cycles"].values()
    interval = np.diff(outs)
    # the rate of the padded 16x16 stages: 18 x 18 beats a frame, one a cycle
    assert (interval == 18 * 18).all(), interval
    print(f"\nresnet20_small streaming: latency {outs[0] - ins[0]} cycles, interval {interval[0]} cycles, "
          f"verilator build {r['build_seconds']} s")


@needs_icarus
def test_small_model_in_icarus(tmp_path):
    model = Joins()
    _randomize(model)
    s = _setup(model, (3, 8, 8), tmp_path / "s", 2)
    r = simulate_stream_net(s.meta, str(tmp_path / "sim"), s.in_raw, s.exp_raw, simulator="icarus", gaps=0.2,
                            backpressure=0.2, seed=2)
    res = r["result"]
    assert (res.passed, res.failed, res.timeout) == (s.exp_raw.shape[0], 0, False)


@pytest.fixture(scope="module")
def cut_resnet(tmp_path_factory):
    """Reduced-width ResNet20 cut inside two residual blocks (the block's input, its skip, crosses each cut beside
    the first conv's activation): one streaming network per partition, their ports named by the crossing tensors."""
    root = tmp_path_factory.mktemp("streamnet_cut")
    model, shape = build("resnet20_small")
    splits = ["stage1.1.conv2", "stage2.2"]
    cfg = spanning_config(model, shape, io_type="io_stream", **FAST)
    pt = fxsplit.partition(model, shape, splits=splits)
    lowered = lower(pt, normalize_config(cfg, pt), str(root / "lower"))
    parts = []
    for part in lowered.partitioning.partitions:
        hm = lowered.graphs[part.name]
        inv = {v: k for k, v in lowered.specs[part.name].name_map.items()}
        net = stream_graph(hm, part.name, input_names=[inv.get(v, v) for v in hm.inputs],
                           output_names=[q.name for q in part.outputs])
        meta = emit_stream_net(net, str(root / part.name), f"{part.name}_top")
        parts.append({"name": part.name, "net": net, "meta": meta, "part": part})
    design = fxsplit.compile(model, shape, splits=splits, flow="hls4ml", config=cfg, output_dir=root / "design",
                             progress=False)
    frames = 4
    x = design.stress_inputs(frames, seed=7)
    raw = design.port_raw(x)
    ports = design.partitioning.ports()
    beats = {name: r.reshape(-1, ports[name].shape[-1] if ports[name].shape else 1) for name, r in raw.items()}
    return SimpleNamespace(parts=parts, design=design, beats=beats, frames=frames, root=root,
                           inputs=[q.name for q in design.partitioning.inputs],
                           outputs=[q.name for q in design.partitioning.outputs])


@pytest.mark.slow
def test_each_partition_streams_its_ports_bit_exact(cut_resnet, tmp_path):
    """The partition that two streams enter, alone, each input driven with its own gaps and the output refused at
    random: every beat of every port equals the C simulation's value of that port."""
    from fxsplit.flows.rtl.names import verilog_name
    crossing = [p["name"] for p in cut_resnet.parts if len(p["meta"]["ports"]["inputs"]) == 2]
    assert crossing == ["p1"]                       # the skip and conv1's activation cross the first cut
    for p in (p for p in cut_resnet.parts if p["name"] in crossing):
        ins = {e["port"]: cut_resnet.beats[e["port"]] for e in p["net"]["inputs"]}
        outs = {e["port"]: cut_resnet.beats[e["port"]] for e in p["net"]["outputs"]}
        r = simulate_stream_net(p["meta"], str(tmp_path / p["name"]), {verilog_name(k): v for k, v in ins.items()},
                                {verilog_name(k): v for k, v in outs.items()}, gaps=0.25, backpressure=0.25, seed=3)
        res = r["result"]
        n = sum(v.shape[0] for v in outs.values())
        assert (res.passed, res.failed, res.timeout) == (n, 0, False), (p["name"], res.mismatches[:5])


def test_stitched_streaming_top_edge_fifos_and_deadlock_without_them(cut_resnet, tmp_path):
    """The partitions joined stream to stream: the skip that crosses a cut leaves its partition a beat at a time
    while the other path is a conv behind, so its edge gets a FIFO sized from the partitions' need maps; without
    the edge FIFOs the design stops, and says so. (The stitched design with its FIFOs, bit-exact under gaps and
    backpressure and at the uncut network's rate: tests/test_rtl_streamflow.py, through compile; here as a slow
    test.)"""
    from fxsplit.flows.rtl.streamnet import stitch_stream_nets
    parts = [{k: p[k] for k in ("name", "net", "meta")} for p in cut_resnet.parts]
    meta = stitch_stream_nets(parts, cut_resnet.inputs, cut_resnet.outputs, str(tmp_path / "top"), "stitched_top")
    fifos = [f for f in meta["forks"] if f["name"].startswith("fifo_")]
    # the skip into p1: p0 sends it a conv ahead of the activation, and p1 needs it a conv later still
    depth = {f["port"]: f["min_depths"][0] for f in fifos}
    assert depth["stage1_0_relu2"] > 2 * 16 and all(d < 16 * 16 for d in depth.values()), meta["forks"]
    (xin,), (yout,) = cut_resnet.inputs, cut_resnet.outputs
    # without the edge FIFOs (the partitions' own FIFOs only) the design stops: reported, not hung
    bare = stitch_stream_nets(parts, cut_resnet.inputs, cut_resnet.outputs, str(tmp_path / "top3"), "bare_top",
                              depths="given")
    assert not bare["forks"]
    r4 = simulate_stream_net(bare, str(tmp_path / "sim4"), cut_resnet.beats[xin], cut_resnet.beats[yout],
                             gaps=0.0, backpressure=0.0)
    assert r4["result"].timeout and r4["result"].passed < cut_resnet.frames and "never came out" in r4["result"].log


@pytest.mark.slow
def test_stitched_streaming_top_bit_exact_with_skip_fifos(cut_resnet, tmp_path):
    """The stitched design with its edge FIFOs, bit-exact over 4 frames under gaps and backpressure; free running
    it keeps the uncut network's rate."""
    from fxsplit.flows.rtl.streamnet import stitch_stream_nets
    parts = [{k: p[k] for k in ("name", "net", "meta")} for p in cut_resnet.parts]
    meta = stitch_stream_nets(parts, cut_resnet.inputs, cut_resnet.outputs, str(tmp_path / "top"), "stitched_top")
    (xin,), (yout,) = cut_resnet.inputs, cut_resnet.outputs
    r, r2 = simulate_stream_net(meta, str(tmp_path / "sim"), cut_resnet.beats[xin], cut_resnet.beats[yout],
                                runs=[dict(gaps=0.3, backpressure=0.3, seed=9), dict(gaps=0.0, backpressure=0.0)])
    res = r["result"]
    assert (res.passed, res.failed, res.timeout) == (cut_resnet.frames, 0, False), res.mismatches[:5]
    (outs,) = r2["out_cycles"].values()
    assert r2["result"].passed == cut_resnet.frames and (np.diff(outs) == 18 * 18).all(), np.diff(outs)


@pytest.mark.slow
def test_streaming_network_synthesizes_with_yosys(tmp_path):
    """Yosys maps a streaming network (kernels, line buffers, fork FIFOs) with no latch, and keeps its kernels: at
    least half the LUTs da4ml estimates for them (a network whose outputs were not driven would lose them)."""
    import os

    from fxsplit.flows.rtl.synth import synthesize
    model = Joins()
    _randomize(model)
    s = _setup(model, (3, 8, 8), tmp_path / "s", 1)
    files = [os.path.join(s.meta["workdir"], f) for f in s.meta["files"]]
    r = synthesize(str(tmp_path / "synth"), files, s.meta["top"])
    estimate = sum(float(u["cost"]) for u in s.meta["units"] if u.get("cost") is not None)
    assert estimate > 0 and r["lut"] >= 0.5 * estimate and r["ff"] > 0, (r, estimate)
    log = (tmp_path / "synth" / r["log"]).read_text()
    assert "Latch inferred" not in log
    print(f"\nstreaming network: {r['lut']} LUT, {r['ff']} FF, {r['srl']} SRL, {r['bram']} BRAM "
          f"(da4ml kernel estimate {estimate:.0f} LUT), Yosys {r['seconds']} s")
