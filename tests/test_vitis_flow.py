"""The vendor flow (flow="vitis"), part one: Vitis HLS projects per partition as parallel jobs, the DAG
description with each IP's interface read from the hls4ml pragmas, bit-exact test vectors, the run script.

This machine has no Vitis or Vivado: the tests prove what fxsplit writes (projects, stitch.json, vectors,
run_vitis.sh) and that a build asked for without the tools stops before anything is written. Whether
Vitis HLS names the ports exactly as stitch.json says is only checked where it runs (the test that needs
it skips here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import fxsplit
from pathlib import Path
from conftest import FAST
from fxsplit.fixed import layout, raw_to_float
from fxsplit.zoo import build

HAVE_VITIS = shutil.which("vitis_hls") is not None and shutil.which("vivado") is not None


def test_missing_vendor_tools_stop_before_anything_is_written(tmp_path):
    if HAVE_VITIS:
        pytest.skip("vitis_hls and vivado are on PATH here")
    model, shape = build("jet_tagger")
    with pytest.raises(fxsplit.FxsplitError) as e:
        fxsplit.compile(model, shape, flow="vitis", output_dir=tmp_path / "o")
    msg = str(e.value)
    assert "vitis_hls" in msg and "vivado" in msg and "emit_only=True" in msg and "--emit-only" in msg
    assert not (tmp_path / "o").exists()
    with pytest.raises(fxsplit.FxsplitError, match="emit_only applies to flow='vitis' only"):
        fxsplit.compile(model, shape, flow="hls4ml", emit_only=True, output_dir=tmp_path / "o")
    with pytest.raises(fxsplit.FxsplitError, match="Vitis backend"):
        fxsplit.compile(model, shape, flow="vitis", emit_only=True, config={"backend": "Vivado"},
                        output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_missing_stitcher_is_an_error_not_an_incomplete_bundle(tmp_path, monkeypatch):
    """An install without the Vivado stitcher (package data left out of the wheel) is refused before anything
    is written, naming the missing files and how to repair the install."""
    import fxsplit.flows.vitis as vitis
    model, shape = build("jet_tagger")
    monkeypatch.setattr(vitis, "TCL_DIR", tmp_path / "nowhere" / "tcl")
    with pytest.raises(fxsplit.FxsplitError) as e:
        fxsplit.compile(model, shape, flow="vitis", emit_only=True, config=FAST, output_dir=tmp_path / "o")
    msg = str(e.value)
    assert "Vivado stitcher" in msg and "fxsplit_stitch.tcl" in msg and "fxsplit_join.v" in msg
    assert "reinstall" in msg
    assert not (tmp_path / "o").exists()
    partial = tmp_path / "partial" / "tcl"             # the stitcher without its glue RTL
    partial.mkdir(parents=True)
    (partial / "fxsplit_stitch.tcl").write_text("# stitcher\n")
    monkeypatch.setattr(vitis, "TCL_DIR", partial)
    with pytest.raises(fxsplit.FxsplitError, match="fxsplit_join.v") as e:
        vitis.stitcher_dir()
    assert "fxsplit_stitch.tcl" not in e.value.message             # only what is missing is named
    monkeypatch.undo()
    assert (vitis.stitcher_dir() / "fxsplit_stitch.tcl").is_file()


def _read_hex(path):
    return [int(line, 16) for line in Path(path).read_text().split()]


def _unpack(rows, n_elem, width):
    out = np.zeros((len(rows), n_elem), dtype=object)
    for s, v in enumerate(rows):
        for i in range(n_elem):
            b = (v >> (i * width)) & ((1 << width) - 1)
            out[s, i] = b - (1 << width) if b >> (width - 1) else b
    return out


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_emit_only_residual_cnn(io_type, tmp_path):
    """A DAG whose skip tensor crosses a cut, emitted for Vitis: one project per partition, interfaces from the
    pragmas, vectors that the uncut C simulation reproduces, a run script that stops clearly without Vitis."""
    model, shape = build("residual_cnn")
    out = tmp_path / "r"
    design = fxsplit.compile(model, shape, flow="vitis", emit_only=True, config={**FAST, "io_type": io_type},
                             output_dir=out, progress=False)
    names = [p.name for p in design.partitions]
    assert names == ["p0", "block_tail", "head"]
    desc = json.loads((out / "stitched" / "vitis" / "stitch.json").read_text())
    dag = design.partitioning.dag()
    assert [p["name"] for p in desc["partitions"]] == names and desc["io_type"] == io_type
    assert desc["inputs"] == dag["inputs"] and desc["outputs"] == dag["outputs"]
    # the skip tensor leaves p0 and is read by block_tail: the edge is in the description
    skip = [p["name"] for p in dag["partitions"][1]["inputs"] if p["name"] != "relu1"]
    assert dag["partitions"][1]["sources"][skip[0]] == "p0"
    for p, part in zip(desc["partitions"], design.partitions):
        proj = out / p["name"] / "vitis"
        cpp = (proj / "firmware" / f"{p['name']}.cpp").read_text()
        assert (proj / "build_prj.tcl").exists() and os.path.normpath(out / "stitched" / "vitis" / p["project"]) == \
            os.path.normpath(proj)
        iface = p["interface"]
        assert [a["port"] for a in iface["inputs"]] == [q.name for q in part.inputs]
        assert [a["port"] for a in iface["outputs"]] == [q.name for q in part.outputs]
        for a, q in zip([*iface["inputs"], *iface["outputs"]], [*part.inputs, *part.outputs]):
            assert re.search(rf"\b{a['arg']}\b", cpp.split("{")[0])          # an argument of the top function
            protocol = "ap_vld" if io_type == "io_parallel" else "axis"
            assert re.search(rf"#pragma HLS INTERFACE {protocol} port=\S*\b{a['arg']}\b", cpp)
            data = [pin for pin in a["pins"] if pin["role"] == "data"]
            width = layout(q.precision).width
            if io_type == "io_parallel":               # every element on exactly one data pin, with its valid
                assert sum(pin["width"] for pin in data) == q.size * width
                assert sorted(i for pin in data for i in range(pin["elements"][0], sum(pin["elements"]))) == \
                    list(range(q.size))
                assert len([pin for pin in a["pins"] if pin["role"] == "valid"]) == len(data)
            else:                                      # one pack of channels per beat, whole bytes
                (pin,) = data
                assert pin["width"] % 8 == 0 and pin["width"] >= pin["elements"][1] * width
                assert pin["elements"][1] * pin["beats"] == q.size and pin["elements"][1] == q.shape[-1]
                assert {x["name"] for x in a["pins"]} == {f"{a['arg']}_TDATA", f"{a['arg']}_TVALID",
                                                         f"{a['arg']}_TREADY"}
    # vectors: the expected outputs are what the uncut C simulation gives on the same raw inputs
    vec = out / "stitched" / "vitis" / "vectors"
    inp, outp = design.partitioning.inputs[0], design.partitioning.outputs[0]
    lin, lout = layout(inp.precision), layout(outp.precision)
    raw_in = _unpack(_read_hex(vec / f"in_{inp.name}.hex"), inp.size, lin.width)
    raw_exp = _unpack(_read_hex(vec / f"exp_{outp.name}.hex"), outp.size, lout.width)
    assert len(raw_in) == 200
    x = raw_to_float(raw_in, inp.precision).reshape(200, *inp.shape)
    x = np.moveaxis(x, -1, 1)                          # the ports are channels-last; predict takes PyTorch's layout
    ref = design.predict_monolithic(x)
    assert np.array_equal(raw_to_float(raw_exp, outp.precision), np.asarray(ref).reshape(200, -1))
    assert len({tuple(r) for r in raw_in}) == 200      # random, not a constant pattern
    # the Vivado side travels with the bundle: the description as Tcl, the stitcher, the testbench
    bundle = out / "stitched" / "vitis"
    assert (bundle / "tcl" / "fxsplit_stitch.tcl").exists() and (bundle / "tcl" / "rtl" / "fxsplit_join.v").exists()
    assert "set fxsplit_desc" in (bundle / "stitch.tcl").read_text()
    assert "module fxsplit_tb" in (bundle / "fxsplit_tb.v").read_text()
    # the run script: valid bash, and without vitis_hls it stops with the reason
    script = out / "stitched" / "vitis" / "run_vitis.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if not HAVE_VITIS:
        r = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                           env={**os.environ, "PATH": "/usr/bin:/bin"})
        assert r.returncode == 1 and "vitis_hls not on PATH" in r.stderr
    assert design.verify(np.random.default_rng(0).uniform(-8, 8, size=(30, *shape))).bit_exact


@pytest.mark.skipif(not HAVE_VITIS, reason="vitis_hls and vivado are not on PATH (no Vitis/Vivado on this machine)")
@pytest.mark.parametrize("model,io_type", [("jet_tagger", "io_parallel"), ("residual_cnn", "io_stream")])
def test_vitis_hls_builds_every_partition(model, io_type, tmp_path):
    """Where the tools are: every partition through Vitis HLS (its exported IP's ports checked against
    stitch.json), then the DAG stitched in Vivado, synthesized out of context and simulated in xsim on the
    vectors of the bit-exact C simulation."""
    net, shape = build(model)
    design = fxsplit.compile(net, shape, flow="vitis", output_dir=tmp_path / "v", progress=False,
                             config={"io_type": io_type, "tb_vectors": 50})
    for p in design.partitions:
        assert (tmp_path / "v" / p.name / "vitis" / f"{p.name}_prj" / "solution1" / "impl" / "ip").is_dir()
        assert design.build[f"{p.name}/hls"].meta["ip_vlnv"] == f"xilinx.com:hls:{p.name}:1.0"
    # every partition's C-synthesis report, read by hls4ml's reader, is in the report and summed
    assert all(p["hls"]["resources"]["LUT"] > 0 and p["latency"] is not None for p in design.report["partitions"])
    vt = design.report["vitis"]
    assert vt["ran"] and vt["total_estimate"]["LUT"] == sum(p["hls"]["resources"]["LUT"]
                                                            for p in design.report["partitions"])
    st = vt["stitched"]
    assert st["xsim"] == {"passed": 50, "failed": 0} and st["utilization"]["LUT"] > 0
    assert (tmp_path / "v" / "stitched" / "vitis" / "vivado_run" / "vivado" / "ip" / "component.xml").exists()
    assert "<b>Stitched in Vivado</b>" in (tmp_path / "v" / "report.html").read_text()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "200"])
def test_tb_vectors_is_validated_before_anything_is_written(bad, tmp_path):
    model, shape = build("jet_tagger")
    with pytest.raises(fxsplit.FxsplitError, match="tb_vectors must be a positive number"):
        fxsplit.compile(model, shape, flow="vitis", emit_only=True, config={"tb_vectors": bad},
                        output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
