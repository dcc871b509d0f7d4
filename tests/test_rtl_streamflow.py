"""The streaming open RTL flow through ``fxsplit.compile(flow="rtl", config={"io_type": "io_stream"})``: every
partition a streaming network built as engine jobs, the stitched top joined stream to stream, verified in Verilator
against the C simulation over frames back to back (under gaps and backpressure, then free running for the latency
and interval), synthesized by Yosys partition by partition with the top's FIFOs counted beside them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.errors import FxsplitError
from fxsplit.flows.rtl import RTLFlow
from fxsplit.flows.rtl.streamflow import frame_timing
from fxsplit.zoo import build, spanning_config
from test_rtl_streamnet import _randomize

SPLITS = ["stage1.1.conv2", "stage2.2", "stage3.0.conv1@6"]


@pytest.fixture(scope="module")
def resnet_design(tmp_path_factory):
    """Reduced-width ResNet20 (3/6/12 channels, 8-bit weight types spanning each layer) cut inside two residual
    blocks, so that a block's skip crosses each cut beside its first conv's activation, and inside the stride-2
    convolution of stage 3: its filters 0..5 (with their BatchNorm channels) a partition of their own."""
    model, shape = build("resnet20_small")
    cfg = spanning_config(model, shape, io_type="io_stream", synth=False, **FAST)
    design = fxsplit.compile(model, shape, flow="rtl", splits=SPLITS, config=cfg,
                             output_dir=tmp_path_factory.mktemp("streamflow") / "out", progress=False)
    return design


def test_resnet20_small_cut_streams_bit_exact_in_verilator(resnet_design):
    """Four frames back to back, no reset between them: bit-exact under gaps and backpressure and free running;
    the report gives the stitched latency and interval, and every partition's."""
    d = resnet_design
    ids = {j["id"] for j in d.report["jobs"]}
    assert {f"{p.name}/stream" for p in d.partitions} | {"stitched/stream"} <= ids
    assert not any(i.endswith("/rtl") or i.endswith("synth") for i in ids)   # no fully parallel job, synthesis off
    x = d.stress_inputs(4, seed=7)
    r = d.verify(x, level="rtl")
    assert r.bit_exact and r.mismatches == 0, r.details[:5]
    ex = r.extra
    assert ex["rtl_vs_csim"] == {"passed": 4, "failed": 0} and ex["interface"] == "axis"
    # the padded 16x16 stages set the rate: 18 x 18 beats a frame
    assert ex["interval_cycles"] == 18 * 18 and 18 * 18 < ex["latency_cycles"] < 4 * 18 * 18
    timing = ex["partition_timing"]
    assert set(timing) == {p.name for p in d.partitions}
    assert all(t["interval"] == 18 * 18 and 0 < t["latency"] < ex["latency_cycles"] for t in timing.values())
    # the convolution's two pieces read the same stream; the join starts the next partition
    assert d.report["layer_splits"] == {"stage3.0.conv1": [0, 6, 12]}
    first, second = (next(p for p in d.partitions if f"stage3_0_conv1__o{k}" in p.nodes) for k in (0, 6))
    assert "stage3_0_bn1__o0" in {o.name for o in first.outputs} and "stage3_0_relu2" not in first.nodes
    assert "stage3_0_bn1__o6" in second.nodes and "stage3_0_bn1__o0" in {i.name for i in second.inputs}
    st = d.report["stitched"]
    assert st["latency"] == ex["latency_cycles"] and st["simulation"]["passed"] == 4
    # the skip into the partition after the first cut waits a conv behind the activation: its edge holds beats
    fifo = {f["stream"]: f for f in st["fifos"]}
    assert fifo["stage1_0_relu2"]["min_depths"][0] > 2 * 16
    part = {p["name"]: p for p in d.report["partitions"]}
    assert all(part[n]["latency"] == timing[n]["latency"] for n in timing)
    assert all(p["nonzero_weights"] > 0 for p in d.report["partitions"] if p["params"])
    html = open(f"{d.output_dir}/report.html").read()
    assert "fifo_stage1_0_relu2" in html and "interval" in html


def test_verify_refuses_the_pipelined_interface(resnet_design):
    with pytest.raises(FxsplitError, match="one interface, AXI4-Stream"):
        resnet_design.verify(resnet_design.stress_inputs(1), level="rtl", interface="pipeline")


def test_stream_steps_are_declared_and_chosen_by_io_type():
    """The auto split and the cost model price the streaming jobs, not the fully parallel ones, for io_stream."""
    stream = SimpleFC("io_stream")
    par = SimpleFC("io_parallel")
    on = {s.model for s in RTLFlow.active_steps(RTLFlow.run_options(stream))}
    assert {"stream", "stream_synth", "stitch_stream", "stitch_stream_synth"} <= on and "rtl" not in on
    on = {s.model for s in RTLFlow.active_steps(RTLFlow.run_options(par))}
    assert {"rtl", "synth"} <= on and not any("stream" in m for m in on)
    off = {s.model for s in RTLFlow.active_steps({**RTLFlow.run_options(stream), "synth": False})}
    assert "stream" in off and "stream_synth" not in off


class SimpleFC:
    def __init__(self, io_type):
        self.io_type, self.synth = io_type, True


def test_auto_split_plans_streaming_jobs(tmp_path):
    """splits='auto' for a streaming CNN: the plan's jobs are the streaming steps, priced by the kernel size."""
    from fxsplit.plan.autosplit import plan_auto
    model, shape = build("resnet20_small")
    opts = RTLFlow.run_options(SimpleFC("io_stream"))
    plan = plan_auto(model, shape, 2, precision="fixed<8,3>", flow="rtl", options=opts)
    assert plan.partitions >= 2 and plan.predicted_wall < plan.uncut["predicted_wall"]


def test_auto_split_cuts_inside_the_convolutions_that_bound_the_build():
    """At half width, planned for 8 workers, each of stage 3's 32-channel convolutions is predicted above half a
    worker's share: the automatic cuts go inside them (by default in the streaming open RTL flow), which brings the
    largest partition's predicted Yosys time down; on 2 workers no layer is that large and none is split, unless a
    memory budget asks for it."""
    from fxsplit.lower import normalize_config
    from fxsplit.plan.autosplit import auto_splits, plan_auto
    from fxsplit.plan.costmodel import CostModel, weight_types
    model, shape = build("resnet20_half")
    cfg = spanning_config(model, shape, io_type="io_stream")
    types = weight_types(normalize_config(cfg, fxsplit.partition(model, shape)).layer_name)
    opts = RTLFlow.run_options(SimpleFC("io_stream"))
    plans = {(w, sl): plan_auto(model, shape, w, precision=cfg["precision"], flow="rtl", options=opts,
                                cost_model=CostModel(), types=types, split_layers=sl)
             for w in (2, 8) for sl in (False, True)}
    inside = plans[8, True].layer_splits
    assert inside and set(inside) <= {f"stage3.{b}.conv{c}" for b in range(3) for c in (1, 2)}, inside
    assert all(v == [16] for v in inside.values())                    # two pieces of 16 channels each
    assert max(plans[8, True].predicted) < 0.8 * max(plans[8, False].predicted)
    assert not plans[2, True].layer_splits and plans[2, True].splits == plans[2, False].splits
    # a memory budget below a whole convolution's prediction cuts inside it, however few the workers
    budget = 4 * 2 ** 30
    tight = plan_auto(model, shape, 2, precision=cfg["precision"], flow="rtl", options=opts, cost_model=CostModel(),
                      types=types, split_layers=True, max_job_memory=budget)
    assert tight.layer_splits and max(tight.predicted_rss) <= budget < max(plans[2, True].predicted_rss)
    with pytest.raises(FxsplitError, match=r"alone is predicted to need") as e:
        plan_auto(model, shape, 2, precision=cfg["precision"], flow="rtl", options=opts, cost_model=CostModel(),
                  types=types, split_layers=False, max_job_memory=budget)
    assert "split_layers=True" in e.value.hint
    names = auto_splits(model, shape, 8, config=cfg, flow="rtl")
    assert names == plans[8, True].splits and any("@" in n for n in names)
    # the pieces are built in the layer's own weight type: priced as the layer they came from, and each holds its
    # own line buffer (a few per cent more)
    from fxsplit.frontend.partitioner import strip_markers
    bare = strip_markers(model, shape)
    one = {sl: plan_auto(bare, shape, 8, precision=cfg["precision"], flow="rtl", options=opts,
                         cost_model=CostModel(), types=types, split_layers=sl, max_partitions=1) for sl in (0, 1)}
    assert one[0].partitions == one[1].partitions == 1
    assert one[0].predicted[0] < one[1].predicted[0] < 1.1 * one[0].predicted[0]


def test_unstreamable_layer_refused_before_any_build(tmp_path):
    class Strided(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3)
            self.pool = nn.MaxPool2d(3, stride=2)

        def forward(self, x):
            return self.pool(self.conv(x))

    out = tmp_path / "out"
    with pytest.raises(FxsplitError, match=r"layer 'pool'.*stride equal to the pool") as e:
        fxsplit.compile(Strided().eval(), (2, 11, 11), flow="rtl", splits=["pool"], output_dir=out, progress=False,
                        config={"precision": "fixed<8,3>", "io_type": "io_stream", **FAST})
    assert "p1" in str(e.value) or "pool" in str(e.value)
    assert not out.exists()


class TinyJoin(nn.Module):
    """A fork into a pointwise and a padded 3x3 branch, joined by an add: cut before the 3x3 conv, both the
    input and the pointwise branch cross the cut."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 2, 1)
        self.b = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        x = torch.relu(x)
        return self.a(x) + self.b(x)


def test_streaming_partitions_synthesize_in_parallel_with_yosys(tmp_path):
    """Yosys synthesizes each partition as its own job and the stitched top with the partitions as black boxes;
    the stitched total adds the top's FIFOs to the partitions'; the uncut network beside it
    (compare_monolithic); the stitched design is bit-exact in simulation."""
    model = TinyJoin()
    _randomize(model)
    cfg = spanning_config(model, (2, 6, 6), io_type="io_stream", **FAST)
    d = fxsplit.compile(model, (2, 6, 6), flow="rtl", splits=["b"], config=cfg, output_dir=tmp_path / "out",
                        progress=False, compare_monolithic=True)
    parts = {p["name"]: p for p in d.report["partitions"]}
    assert len(parts) == 2 and all(p["resources"]["LUT"] > 0 for p in parts.values())
    st = d.report["stitched"]
    top = st["resources_top"]
    assert top["LUT"] + top["FF"] + top["SRL"] > 0          # the fork of the cut's crossing streams
    assert st["resources_total"]["LUT"] == top["LUT"] + sum(p["resources"]["LUT"] for p in parts.values())
    cmp = d.report["compare_monolithic"]
    assert cmp["uncut"]["resources"]["LUT"] > 0 and cmp["uncut"]["jobs"] == 2 and cmp["stitched"]["jobs"] == 6
    # the kernels are kept (a network whose outputs were not driven would lose them): at least half the LUTs
    # da4ml estimates for them; no latch anywhere
    estimate = sum(float(u["cost"]) for m in d.rtl.partitions.values() for u in m["units"] if u.get("cost"))
    assert estimate > 0 and sum(p["resources"]["LUT"] for p in parts.values()) >= 0.5 * estimate
    for log in [d.rtl.top_synth["log"], *(s["log"] for s in d.rtl.synth.values())]:
        assert "Latch inferred" not in open(log).read()
    r = d.verify(d.stress_inputs(3, seed=2), level="rtl")
    assert r.bit_exact, r.details[:5]


def test_frame_timing():
    ins = [([10, 11, 12, 13, 20, 21, 22, 23], 4)]
    outs = [([30, 31, 40, 41], 2)]
    assert frame_timing(ins, outs, 2) == {"latency": 21, "interval": 10}
    assert frame_timing(ins, [([30], 2)], 2) == {"latency": None, "interval": None}


def test_cost_features_count_each_layers_own_weight_type():
    """A config that gives each layer its own weight type (8 bits spanning its weights) sizes the kernels in that
    type, not in the default precision; auto_splits reads the types and the streaming steps from the config."""
    from types import SimpleNamespace

    from fxsplit.lower import normalize_config
    from fxsplit.plan.autosplit import plan_auto
    from fxsplit.plan.costmodel import partition_features, weight_types
    model, shape = build("resnet20_small")
    cfg = spanning_config(model, shape, io_type="io_stream")
    pt = fxsplit.partition(model, shape)
    types = weight_types(normalize_config(cfg, pt).layer_name)
    assert types["stage1_0_conv1"].startswith("fixed<8,") and len(types) == 22     # 21 convs and the fc
    coarse, fine = partition_features(pt, "fixed<8,3>")["*"], partition_features(pt, "fixed<8,3>", types=types)["*"]
    assert fine["digits"] > coarse["digits"] and fine["kernels"] > coarse["kernels"]
    opts = RTLFlow.run_options(SimpleNamespace(io_type="io_stream", synth=True))
    assert fxsplit.auto_splits(model, shape, workers=4, config=cfg, flow="rtl") == \
        plan_auto(model, shape, 4, precision=cfg["precision"], flow="rtl", options=opts, types=types).splits
