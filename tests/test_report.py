"""report.json / report.html (self-contained, inline SVG) / terminal text."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fxsplit.engine import Job, run_jobs  # noqa: E402
from fxsplit.report import format_text, render_html, write_report  # noqa: E402


def make_file(workdir, inputs, name="x.txt"):
    Path(workdir, name).write_text(name)
    return {"file": name}


def fail(workdir, inputs):
    print("ERROR: [SYNTH 8-439] module not found")
    raise RuntimeError("vivado exited with 1")


def _job(id_, state, start=None, end=None, worker="host/1", secs=1.0, deps=()):
    part, step = id_.split("/")
    return {"id": id_, "partition": part, "step": step, "state": state, "start": start, "end": end,
            "seconds": secs if state != "cached" else 0.0, "build_seconds": secs, "worker": worker,
            "attempts": 1, "deps": list(deps), "log_path": f"/logs/{part}_{step}.log",
            "error": "RuntimeError: boom" if state == "failed" else None,
            "error_tail": "line\nRuntimeError: boom" if state == "failed" else None}


def sample_report() -> dict:
    jobs = [_job("p0/csim", "cached", secs=3.0), _job("p0/hls", "built", 100.0, 112.0, "w1", 12.0, ("p0/csim",)),
            _job("p1/csim", "built", 100.0, 103.0, "w2", 3.0), _job("p1/hls", "failed", 103.0, 104.0, "w2", 1.0,
                                                                   ("p1/csim",)),
            _job("p1/synth", "skipped", secs=0.0, deps=("p1/hls",)),
            _job("_monolithic/csim", "built", 104.0, 109.0, "w2", 5.0)]
    parts = [{"name": "p0", "layers": 3, "params": 1000, "ops": 50000,
              "inputs": [{"name": "x", "shape": [16, 16, 3], "precision": "fixed<16,6>"}],
              "outputs": [{"name": "relu", "shape": [8, 8, 16], "precision": "fixed<8,3>"}],
              "latency": 321, "resources": {"LUT": 15000, "FF": 9000, "CARRY": 400, "DSP": 16},
              "jobs": jobs[:2]},
             {"name": "p1", "layers": 2, "params": 500, "ops": 1000,
              "inputs": [{"name": "relu", "shape": [8, 8, 16], "precision": "fixed<8,3>"}],
              "outputs": [{"name": "fc", "shape": [5], "precision": "fixed<16,6>"}],
              "latency": None, "resources": None, "jobs": jobs[2:5]}]
    return {"model": "JetTagger", "flow": "rtl", "output_dir": "/tmp/out", "wall_seconds": 15.5,
            "partitions": parts, "jobs": jobs, "predicted_wall": {"1": 25.0, "2": 15.0, "4": 15.0, "8": 15.0},
            "verification": {"bit_exact": True, "samples": 64}}


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", html, flags=re.S)]


def test_write_report_json_and_self_contained_html(tmp_path):
    rep = sample_report()
    jp, hp = write_report(rep, tmp_path / "out")
    assert jp.name == "report.json" and hp.name == "report.html"
    assert json.loads(jp.read_text()) == rep
    html = hp.read_text()
    # self-contained: no scripts, stylesheets, images or fetches
    assert "<script" not in html and "<link" not in html and "<img" not in html and "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html)
    assert set(re.findall(r"url\(([^)]*)\)", html)) <= {"#hatch"}
    # summary
    for text in ("JetTagger", "rtl flow", "15.5 s", "jobs built", "jobs reused", "predicted, 8 workers", "25.0 s"):
        assert text in html, text
    # partition table: ports with shapes and types, latency, resources, step states
    for text in ("x (16, 16, 3) fixed&lt;16,6&gt;", "fc (5) fixed&lt;16,6&gt;", ">321<", "15,000", "9,000", ">400<",
                 "hls 12.0 s built", "csim 3.0 s reused", "hls 1.0 s FAILED", "synth", "skipped"):
        assert text in html, text
    svgs = _svgs(html)
    assert len(svgs) == 2
    gantt, res = svgs
    ns = "{http://www.w3.org/2000/svg}"
    bars = [r for r in gantt.iter(ns + "rect") if r.find(ns + "title") is not None]
    titles = [r.find(ns + "title").text for r in bars]
    # one bar per job that ran (4) + one hatched bar per reused job (1)
    assert len(bars) == 5
    assert sum("reused from the cache" in t for t in titles) == 1
    assert any(t.startswith("p1/hls: failed") for t in titles)
    worker_rows = {list(t.itertext())[-1] for t in gantt.iter(ns + "text")}
    assert {"w1", "w2", "reused from cache"} <= worker_rows
    # bars coloured by step: p0/hls and p1/csim differ; the two csim bars share a colour
    fill = {r.find(ns + "title").text.split(":")[0]: r.get("fill") for r in bars}
    assert fill["p0/hls"] != fill["p1/csim"] and fill["p1/csim"] == fill["_monolithic/csim"]
    # resource chart: a LUT, FF and DSP panel with a bar for the one partition that has resources
    res_titles = [t.text for t in res.iter(ns + "title")]
    assert res_titles == ["p0 LUT: 15,000", "p0 FF: 9,000", "p0 DSP: 16"]
    assert "RuntimeError: boom" in html and "/logs/p1_hls.log" in html


def test_html_escapes_and_tolerates_missing_fields(tmp_path):
    html = render_html({"partitions": [{"name": "<script>alert(1)</script>"}]})
    assert "<script>" not in html and "&lt;script&gt;" in html
    html = render_html({})
    assert "<html" in html and "No jobs." in html
    # jobs given as a whole BuildResult.to_dict(); predicted wall computed when absent
    rep = sample_report()
    rep["jobs"] = {"jobs": rep["jobs"], "wall_seconds": 1.0}
    del rep["predicted_wall"]
    for p in rep["partitions"]:
        p.pop("jobs")
        p.pop("resources")
        p.pop("latency")
    html = render_html(rep)
    assert "predicted, 2 workers" in html and "hls 12.0 s built" in html
    write_report(rep, tmp_path)
    text = format_text(rep)
    assert "JetTagger" in text and "p1" in text


def test_format_text():
    text = format_text(sample_report())
    lines = text.splitlines()
    assert lines[0].startswith("fxsplit: JetTagger (rtl flow), 2 partition(s), wall 15.5 s; jobs: 3 built, "
                               "1 reused, 1 FAILED, 1 skipped")
    assert "predicted wall on 1: 25.0 s, 2: 15.0 s" in lines[1]
    row = next(ln for ln in lines if ln.startswith("p0 "))
    assert "15,000" in row and "321" in row and "hls:built 12.0 s" in row
    assert "p0: x (16, 16, 3) fixed<16,6> -> relu (8, 8, 16) fixed<8,3>" in text
    assert "FAILED p1/hls: RuntimeError: boom" in text
    assert all(len(ln) <= 120 for ln in lines)


def test_report_from_a_real_build(tmp_path):
    jobs = [Job("p0/csim", "p0", "csim", make_file, {}, b"a"),
            Job("p0/hls", "p0", "hls", make_file, {"name": "y.txt"}, b"b", deps=("p0/csim",)),
            Job("p1/csim", "p1", "csim", fail, {}, b"c")]
    run_jobs(jobs[:1], tmp_path / "cache", max_workers=1, progress=False)
    r = run_jobs(jobs, tmp_path / "cache", max_workers=2, progress=False)
    b = r.to_dict()
    rep = {"model": "toy", "flow": "hls4ml", "wall_seconds": r.wall_seconds, "jobs": b["jobs"],
           "predicted_wall": b["predicted_wall"],
           "partitions": [{"name": n, "jobs": [j for j in b["jobs"] if j["partition"] == n]} for n in ("p0", "p1")]}
    jp, hp = write_report(rep, tmp_path / "out")
    html = hp.read_text()
    assert "vivado exited with 1" in html and "SYNTH 8-439" in html
    gantt = _svgs(html)[0]
    titles = [t.text for t in gantt.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("p0/hls: built") for t in titles)
    assert any(t.startswith("p0/csim: reused") for t in titles)
    assert "p1/csim: RuntimeError: vivado exited with 1" in format_text(rep).replace("FAILED ", "")
    # peak memory and CPU per job: measured for the built and failed jobs, the manifest's for the reused one
    assert all(j["peak_rss"] > 0 and j["cpu_seconds"] is not None for j in b["jobs"]), b["jobs"]
    assert "<h2>Memory and CPU per job</h2>" in html
    for j in b["jobs"]:
        assert f"<td>{j['id']}</td><td>{j['state']}</td>" in html
    big = max(b["jobs"], key=lambda j: j["peak_rss"])
    assert f"memory and CPU: largest job peak {big['peak_rss'] / 2**20:.0f} MiB ({big['id']})" in format_text(rep)


_job_st = st.fixed_dictionaries({
    "id": st.text(min_size=1, max_size=8), "partition": st.sampled_from(["p0", "p1", "<&>", ""]),
    "step": st.sampled_from(["csim", "hls", "synth", "weird step"]),
    "state": st.sampled_from(["built", "cached", "failed", "skipped", "odd"]),
    "start": st.none() | st.floats(0, 1e6), "seconds": st.none() | st.floats(0, 1e5),
    "build_seconds": st.none() | st.floats(0, 1e5), "worker": st.none() | st.text(max_size=40),
}, optional={"peak_rss": st.none() | st.integers(0, 2**40), "base_rss": st.none() | st.integers(0, 2**40),
             "cpu_seconds": st.none() | st.floats(0, 1e6)})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_job_st, max_size=8), st.lists(st.fixed_dictionaries(
    {"name": st.text(max_size=10)},
    optional={"layers": st.integers(0, 10**6), "latency": st.none() | st.integers(0, 10**7),
              "resources": st.none() | st.fixed_dictionaries({}, optional={
                  k: st.integers(0, 10**7) for k in ("LUT", "FF", "CARRY", "DSP")}),
              "inputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)},
                                                       optional={"shape": st.lists(st.integers(1, 64), max_size=3)}),
                                 max_size=2)}), max_size=5))
def test_render_never_crashes(jobs, parts):
    for j in jobs:
        if j["start"] is not None:
            j["end"] = j["start"] + (j["seconds"] or 0.0)
    rep = {"partitions": parts, "jobs": jobs}
    html = render_html(rep)
    svgs = _svgs(html)                # ET.fromstring: raises on malformed XML
    assert len(svgs) == html.count("<svg ") and all(s.tag == "{http://www.w3.org/2000/svg}svg" for s in svgs)
    format_text(rep)


def test_verification_section_is_sentences_not_json():
    rep = sample_report()
    rep["verification"] = {
        "level": "rtl", "n_samples": 300, "bit_exact": False, "mismatches": 2, "max_abs_error_vs_torch": 0.0123,
        "summary": "rtl: 300 samples, 2 mismatching elements",
        "first_mismatches": [{"sample": 4, "output": "fc4", "index": 1, "got": 0.5, "expected": 0.25}],
        "extra": {"rtl_vs_csim": {"passed": 299, "failed": 1}, "csim_vs_monolithic_mismatches": 0,
                  "simulator": "verilator", "latency_cycles": 10, "testbench_dir": "/x/tb", "sim_seconds": 1.5}}
    html = render_html(rep)
    sec = html[html.index("<h2>Verification</h2>"):html.index("<h2>Partitions</h2>")]
    assert "{" not in sec and "&quot;" not in sec                  # no JSON dumped into the page
    for text in ("MISMATCH: 2 differing elements", "stitched RTL simulation vs stitched C simulation",
                 "299 samples passed, 1 failed (verilator, 10 cycles latency", "0.0123",
                 "<td>fc4</td>", "First mismatches"):
        assert text in sec, text
    rep["verification"].update(bit_exact=True, mismatches=0, first_mismatches=[])
    sec = render_html(rep).split("<h2>Verification</h2>")[1]
    assert "BIT-EXACT" in sec and "First mismatches" not in sec.split("<h2>")[0]
