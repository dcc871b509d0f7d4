"""Real Vivado HLS / Vivado reports (hls4ml's test data, tests/data/hls4ml_reports/PROVENANCE.md) read
through fxsplit into the report and its HTML page, strictly: a missing report is an error, not a blank."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import fxsplit
from conftest import FAST
from fxsplit.flows.vitis.reports import read_hls_report
from fxsplit.report import write_report
from fxsplit.report.summary import build_report
from fxsplit.zoo import build

DATA = Path(__file__).parent / "data" / "hls4ml_reports" / "vivado_hls_2020.1"


def _place_reports(project: Path, name: str, vivado: bool = True) -> None:
    """Where Vivado/Vitis HLS leaves its reports in a project: ``<name>_prj/solution1/syn/report/``."""
    rep = project / f"{name}_prj" / "solution1" / "syn" / "report"
    rep.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "vivado_hls.app", project / f"{name}_prj" / "vivado_hls.app")
    shutil.copy(DATA / "myproject_csynth.xml", rep / f"{name}_csynth.xml")
    shutil.copy(DATA / "myproject_csynth.rpt", rep / f"{name}_csynth.rpt")
    if vivado:
        shutil.copy(DATA / "vivado_synth.rpt", project / "vivado_synth.rpt")


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    model, shape = build("jet_tagger")
    out = tmp_path_factory.mktemp("vr") / "jt"
    design = fxsplit.compile(model, shape, flow="vitis", emit_only=True, config=FAST, output_dir=out,
                             progress=False)
    return design, out


def test_emit_only_report_says_vitis_did_not_run(emitted):
    design, out = emitted
    assert design.report["vitis"] == {"bundle": str(out / "stitched" / "vitis"), "ran": False}
    html = (out / "report.html").read_text()
    assert "Vitis HLS did not run here (emit only)" in html
    assert all("hls" not in p for p in design.report["partitions"])


def test_real_reports_read_into_the_report(emitted, tmp_path):
    design, out = emitted
    names = [p.name for p in design.partitions]
    for i, name in enumerate(names):
        _place_reports(out / name / "vitis", name, vivado=(i == 0))
    reps = {name: read_hls_report(str(out / name / "vitis"), name) for name in names}
    r = reps[names[0]]
    # the figures Vivado HLS 2020.1 wrote into myproject_csynth.xml and Vivado into vivado_synth.rpt
    assert r["latency_cycles"] == {"best": 10, "worst": 10} and r["interval"] == {"min": 8, "max": 8}
    assert r["clock_ns"] == {"target": 5.0, "estimated": 4.049}
    assert r["resources"] == {"LUT": 2532, "FF": 7969, "DSP": 73, "BRAM_18K": 0, "URAM": 0}
    assert r["available"]["DSP"] == 220 and r["available"]["LUT"] == 53200
    assert r["vivado_synth"] == {"LUT": 1526, "FF": 2428, "DSP": 66, "BRAM_18K": 0, "URAM": None}
    assert reps[names[1]]["vivado_synth"] is None
    # as the hls jobs would have returned them where Vitis HLS runs
    for name in names:
        design.build[f"{name}/hls"].meta["hls_report"] = reps[name]
    report = build_report(design, "jet_tagger", {})
    parts = {p["name"]: p for p in report["partitions"]}
    assert parts[names[0]]["latency"] == 10 and parts[names[0]]["resources"]["LUT"] == 2532
    n = len(names)
    assert report["vitis"]["ran"] and report["vitis"]["total_estimate"] == \
        {"LUT": 2532 * n, "FF": 7969 * n, "DSP": 73 * n, "BRAM_18K": 0, "URAM": 0}
    _json, html_path = write_report(report, tmp_path)
    html = html_path.read_text()
    assert "<h2>Vitis HLS</h2>" in html and "5.0 / 4.049" in html
    assert "LUT 1,526, FF 2,428, DSP 66, BRAM_18K 0, URAM -" in html           # Vivado's own figures
    assert f"<b>{2532 * n:,}</b>" in html and f"<b>{7969 * n:,}</b>" in html   # the sum row
    # one partition without its report: no sum, and it says which
    design.build[f"{names[-1]}/hls"].meta.pop("hls_report")
    report = build_report(design, "jet_tagger", {})
    assert "total_estimate" not in report["vitis"] and report["vitis"]["missing"] == [names[-1]]


def test_missing_or_broken_report_is_an_error(emitted, tmp_path):
    design, out = emitted
    name = design.partitions[0].name
    proj = tmp_path / "p"
    shutil.copytree(out / name / "vitis", proj)
    # nothing synthesized: hls4ml's reader prints a line and returns a report without the section
    shutil.rmtree(proj / f"{name}_prj", ignore_errors=True)
    with pytest.raises(fxsplit.FxsplitError, match="no Vitis HLS synthesis report could be read") as e:
        read_hls_report(str(proj), name)
    assert e.value.partition == name and "hls4ml's reader said" in str(e.value)
    # a solution directory without the solution list (hls4ml's reader would fail with an IndexError)
    (proj / f"{name}_prj" / "solution1").mkdir(parents=True)
    with pytest.raises(fxsplit.FxsplitError, match="no Vitis HLS synthesis report could be read"):
        read_hls_report(str(proj), name)
    # a report whose latency is undefined ('undef' in a variable-trip-count design)
    _place_reports(proj, name)
    xml = proj / f"{name}_prj" / "solution1" / "syn" / "report" / f"{name}_csynth.xml"
    xml.write_text(xml.read_text().replace("<Worst-caseLatency>10</Worst-caseLatency>",
                                           "<Worst-caseLatency>undef</Worst-caseLatency>"))
    with pytest.raises(fxsplit.FxsplitError, match="lacks its latency or interval"):
        read_hls_report(str(proj), name)
