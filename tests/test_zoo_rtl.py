"""The open RTL flow on the zoo: stitched RTL simulation == stitched C simulation == uncut C simulation."""

import os
import re

import pytest
import torch
from torch import nn

import fxsplit
from pathlib import Path
from conftest import FAST, HAVE_ICARUS, needs_icarus, random_inputs
from fxsplit.zoo import build



def _compile(name, tmp_path, **config):
    model, shape = build(name)
    cfg = {**FAST, "precision": "fixed<8,3>", **config}
    return fxsplit.compile(model, shape, flow="rtl", config=cfg, output_dir=tmp_path / name, progress=False), shape


def _check_three_way(design, res, n):
    assert res.level == "rtl" and res.n_samples == n
    assert res.extra["rtl_vs_csim"] == {"passed": n, "failed": 0}, res.details[:5]
    assert res.extra["csim_vs_monolithic_mismatches"] == 0
    assert res.bit_exact and res.mismatches == 0
    assert res.max_abs_error_vs_torch > 0


def test_mlp_rtl_synth_compare_monolithic_verilator_and_icarus(tmp_path, rng):
    """An MLP of the jet tagger's kind (16-32-24-5, 8-bit) through the whole open RTL flow in ONE build (one
    build serves every check): every partition emitted and synthesized as its own job, the stitched top
    synthesized, and with compare_monolithic the uncut design emitted and synthesized beside it; then the stitched
    RTL simulated by Verilator and Icarus against the C simulations. (The jet tagger itself runs the same way in
    the main job, scripts/main_job.sh.)"""
    from fxsplit.report import format_text
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 5)).eval()
    shape = (16,)
    cfg = {**FAST, "precision": "fixed<8,3>"}
    out = tmp_path / "mlp"
    design = fxsplit.compile(model, shape, flow="rtl", splits=["2", "4"], config={**cfg, "synth": True},
                             output_dir=out, compare_monolithic=True, progress=False, jobs=2)
    assert len(design.partitions) == 3
    steps = {(r.partition, r.step) for r in design.build}
    for p in design.partitions:
        assert {(p.name, "rtl"), (p.name, "synth")} <= steps
    rep = design.report
    for part in rep["partitions"]:
        assert part["latency"] >= 1
        assert part["resources"]["LUT"] > 0 and part["resources"]["FF"] > 0
    st = rep["stitched"]
    assert st["latency"] == sum(p["latency"] for p in rep["partitions"])   # a chain: latencies add up
    # totals = every partition + the stitched top's own logic (its valid line: a chain has no bypass)
    for k in ("LUT", "FF", "SRL"):
        assert st["resources_total"][k] == st["resources_top"][k] + sum(p["resources"][k] for p in rep["partitions"])
    assert st["resources_top"]["FF"] + st["resources_top"]["SRL"] >= 1
    # each partition's synthesis log and netlist sit next to its RTL; so do the top's
    for part in rep["partitions"]:
        assert os.path.dirname(part["synth_log"]) == str(out / part["name"] / "rtl" / "synth")
        assert "Time spent" in Path(part["synth_log"]).read_text() and "module fxs_" in Path(part["netlist"]).read_text()
    assert os.path.exists(st["top_synth_log"])
    assert os.path.exists(st["file"]) and all(f"fxs_{p.name}" in Path(st["file"]).read_text()
                                              for p in design.partitions)

    # compare_monolithic: the uncut design was emitted and synthesized in the same build, and the report puts it
    # beside the stitched one: wall on the build's workers, CPU, peak memory, resources, latency
    ids = {r.id for r in design.build}
    assert {"monolithic/csim", "monolithic/rtl", "monolithic/synth"} <= ids
    cmp = rep["compare_monolithic"]
    u, s = cmp["uncut"], cmp["stitched"]
    assert u["jobs"] == 2 and s["jobs"] == 2 * len(design.partitions) + 2 and cmp["workers"] == 2
    for side in (u, s):
        assert side["wall_seconds"] > 0 and side["cpu_seconds"] > 0 and side["peak_rss_max"] > 0
        assert side["resources"]["LUT"] > 0 and side["resources"]["FF"] > 0 and side["latency"] >= 1
    # the uncut wall is its chain (da4ml then Yosys); the stitched one is never more than the sum of its jobs
    assert u["wall_seconds"] == pytest.approx(u["job_seconds"], rel=1e-3)
    assert s["wall_seconds"] <= s["job_seconds"] + 1e-6
    assert s["latency"] == st["latency"] and "Time spent" in Path(u["synth_log"]).read_text()
    assert os.path.dirname(u["synth_log"]) == str(out / "monolithic" / "rtl" / "synth")
    html = (out / "report.html").read_text()
    assert "<h2>Uncut vs stitched</h2>" in html
    assert f"LUT {u['resources']['LUT']:,} vs {s['resources']['LUT']:,}" in format_text(rep)

    n = 300
    x = random_inputs(rng, shape, n=n, scale=16.0)      # fixed<8,3> holds [-4, 4): most inputs wrap
    _check_three_way(design, design.verify(x, level="rtl", simulator="verilator"), n)
    if not HAVE_ICARUS:
        pytest.skip("Verilator passed; Icarus Verilog (iverilog) is not installed: apt-get install iverilog")
    _check_three_way(design, design.verify(x, level="rtl", simulator="icarus"), n)
    # the testbench really compares: its own last line
    assert f"{n} passed, 0 failed" in design.rtl.last_sim["log"]


def test_compare_monolithic_refused_where_nothing_is_synthesized(tmp_path):
    """Flows that synthesize nothing refuse compare_monolithic before any build, and write nothing."""
    model, shape = build("jet_tagger")
    with pytest.raises(fxsplit.FxsplitError, match="synthesizes nothing here"):
        fxsplit.compile(model, shape, config=FAST, output_dir=tmp_path / "h", compare_monolithic=True)
    with pytest.raises(fxsplit.FxsplitError, match="synthesis is off"):
        fxsplit.compile(model, shape, flow="rtl", config={**FAST, "precision": "fixed<8,3>", "synth": False},
                        output_dir=tmp_path / "n", compare_monolithic=True)
    assert not (tmp_path / "h").exists() and not (tmp_path / "n").exists()


@needs_icarus
def test_wide_mlp_rtl(tmp_path, rng):
    design, shape = _compile("wide_mlp", tmp_path, synth=False)
    assert [p.name for p in design.partitions] == ["p0", "l2", "l3", "head"]
    n = 300
    _check_three_way(design, design.verify(random_inputs(rng, shape, n=n), level="rtl", simulator="icarus"), n)


@pytest.mark.parametrize("name", ["residual_cnn", "branchy_cnn"])
def test_small_cnn_rtl(name, tmp_path, rng):
    """8x8 CNNs: conv, (fused) BatchNorm, pooling, add, concat; skip tensors crossing and bypassing cuts
    get delay lines in the stitched top. Verilator (62 s): Icarus had not finished elaborating these netlists after 13 minutes."""
    design, shape = _compile(name, tmp_path, synth=False)
    n = 200
    _check_three_way(design, design.verify(random_inputs(rng, shape, n=n, scale=2.0), level="rtl",
                                           simulator="verilator"), n)
    if name == "branchy_cnn":
        # 'relu' goes from p0 straight to 'mix', bypassing 'branches': a delay line as deep as 'branches'
        # is long, as wide as the tensor, in the stitched top
        lat = {p["name"]: p["latency"] for p in design.report["partitions"]}
        relu = next(p for p in design.report["partitions"][0]["outputs"] if p["name"] == "relu")
        width = int(re.match(r"u?fixed<(\d+)", relu["precision"]).group(1)) * relu["shape"][0] * relu["shape"][1] \
            * relu["shape"][2]
        text = Path(design.report["stitched"]["file"]).read_text()
        regs = {int(d): int(w) + 1 for w, d in re.findall(r"reg \[(\d+):0\] fxs_t_relu_d(\d+);", text)}
        assert lat["branches"] > 0 and regs == {d: width for d in range(1, lat["branches"] + 1)}


def test_rtl_refuses_unsupported_layer_before_build(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), fxsplit.Cut("act"), nn.Sigmoid(), nn.Linear(8, 2))
    out = tmp_path / "o"
    with pytest.raises(fxsplit.FxsplitError) as e:
        fxsplit.compile(model, (4,), flow="rtl", config=FAST, output_dir=out)
    msg = str(e.value)
    assert "Sigmoid" in msg or "sigmoid" in msg.lower()
    assert "act" in msg
    assert not out.exists()


def test_rtl_streaming_refuses_unsupported_layer_before_build(tmp_path):
    """io_stream: the streaming design refuses, naming the layer and partition, what it cannot stream exactly."""
    model = nn.Sequential(nn.Linear(4, 8), fxsplit.Cut("act"), nn.Sigmoid(), nn.Linear(8, 2))
    out = tmp_path / "o"
    with pytest.raises(fxsplit.FxsplitError) as e:
        fxsplit.compile(model, (4,), flow="rtl", config={**FAST, "io_type": "io_stream"}, output_dir=out)
    msg = str(e.value)
    assert "RTL flow" in msg and "sigmoid" in msg.lower() and "partition: act" in msg, msg
    assert not out.exists()
