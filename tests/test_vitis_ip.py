"""The vendor flow's checks of what Vitis HLS and Vivado hand back, on this machine without them:

- an exported IP's ports (its IP-XACT ``component.xml``) against the interface fxsplit read from the hls4ml
  pragmas (``flows/vitis/ipxact.py``; the ``hls`` job runs it right after ``export_design``);
- Vivado's utilization and timing reports of the stitched design (``flows/vitis/reports.py``), which the
  ``stitched/vivado`` job reads after its xsim run;
- the report and HTML page of a vendor build whose Vivado stitch ran.

The ``component.xml`` files here are written by the test in the layout Vitis HLS's export uses (SPIRIT
1685-2009: ``model/ports/port`` with ``wire/direction`` and ``wire/vector/left, right``; checked by hand
against an hls4ml IP exported by Vivado HLS, which cannot be redistributed here), from the pins of a real
emitted partition; that proves the reading and the comparison, not what a given Vitis HLS release names.
The utilization report is a real one (Vivado 2020.1, from hls4ml's test data; see PROVENANCE.md). The
full build with the tools is ``test_vitis_flow.py::test_vitis_hls_builds_every_partition`` (skipped here).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

import fxsplit
from conftest import FAST
from fxsplit.flows.vitis.ipxact import check_ip, read_ports
from fxsplit.flows.vitis.reports import read_timing, read_utilization
from fxsplit.report import write_report
from fxsplit.zoo import build

DATA = Path(__file__).parent / "data" / "hls4ml_reports" / "vivado_hls_2020.1"
SPIRIT = "http://www.spiritconsortium.org/XMLSchema/SPIRIT/1685-2009"
IPXACT14 = "http://www.accellera.org/XMLSchema/IPXACT/1685-2014"


def component_xml(name: str, ports: list[tuple[str, str, int]], ns: str = SPIRIT) -> str:
    """An IP-XACT component with these (name, direction, width) ports, laid out as an HLS export writes it."""
    p = "spirit" if ns == SPIRIT else "ipxact"
    rows = []
    for pname, d, w in ports:
        if w == 1:
            vec = ""
        elif ns == SPIRIT:
            vec = (f'<{p}:vector><{p}:left {p}:format="long">{w - 1}</{p}:left>'
                   f'<{p}:right {p}:format="long">0</{p}:right></{p}:vector>')
        else:
            vec = f"<{p}:vectors><{p}:vector><{p}:left>{w - 1}</{p}:left><{p}:right>0</{p}:right></{p}:vector></{p}:vectors>"
        rows.append(f"<{p}:port><{p}:name>{pname}</{p}:name><{p}:wire><{p}:direction>{d}</{p}:direction>{vec}"
                    f"<{p}:wireTypeDefs><{p}:wireTypeDef><{p}:typeName>std_logic</{p}:typeName></{p}:wireTypeDef>"
                    f"</{p}:wireTypeDefs></{p}:wire></{p}:port>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{p}:component xmlns:xilinx="http://www.xilinx.com" '
            f'xmlns:{p}="{ns}"><{p}:vendor>xilinx.com</{p}:vendor><{p}:library>hls</{p}:library>'
            f"<{p}:name>{name}</{p}:name><{p}:version>1.0</{p}:version><{p}:model><{p}:views/>"
            f"<{p}:ports>{''.join(rows)}</{p}:ports></{p}:model></{p}:component>\n")


def ports_of(iface: dict) -> list[tuple[str, str, int]]:
    """The ports an HLS export of this interface has (control, then every argument's pins)."""
    ctrl = [(c, "in" if c in ("ap_clk", "ap_rst", "ap_start") else "out", 1) for c in iface["control"]]
    return ctrl + [(pin["name"], pin["dir"], pin["width"])
                   for g in ("inputs", "outputs") for a in iface[g] for pin in a["pins"]]


@pytest.fixture(scope="module", params=["io_parallel", "io_stream"])
def emitted(request, tmp_path_factory):
    model, shape = build("residual_cnn")
    out = tmp_path_factory.mktemp("ip") / request.param
    fxsplit.compile(model, shape, flow="vitis", emit_only=True, config={**FAST, "io_type": request.param},
                    output_dir=out, progress=False)
    return json.loads((out / "stitched" / "vitis" / "stitch.json").read_text())


def test_ip_ports_checked_against_the_description(emitted, tmp_path):
    for part in emitted["partitions"]:
        name, iface = part["name"], part["interface"]
        ports = ports_of(iface)
        xml = tmp_path / f"{name}.xml"
        xml.write_text(component_xml(name, ports))
        got = check_ip(str(xml), iface, name, vlnv=f"xilinx.com:hls:{name}:1.0")
        assert got["vlnv"] == f"xilinx.com:hls:{name}:1.0" and got["reset"] == "ap_rst"
        assert {k: (v["dir"], v["width"]) for k, v in got["ports"].items()} == {n: (d, w) for n, d, w in ports}
        # the 2014 schema reads the same
        xml.write_text(component_xml(name, ports, IPXACT14))
        assert read_ports(str(xml))["ports"] == got["ports"]
        # an extra output (left open) is fine; an extra input (undriven) is not
        xml.write_text(component_xml(name, ports + [("debug_out", "out", 8)]))
        check_ip(str(xml), iface, name)
        xml.write_text(component_xml(name, ports + [("mode_in", "in", 2)]))
        with pytest.raises(fxsplit.FxsplitError, match="extra in port mode_in") as e:
            check_ip(str(xml), iface, name)
        assert e.value.partition == name
    part = emitted["partitions"][1]
    name, iface = part["name"], part["interface"]
    ports = ports_of(iface)
    data = next(i for i, p in enumerate(ports) if p[0] == iface["inputs"][0]["pins"][0]["name"])
    # a data port one bit narrower than the pragmas imply, a renamed one, a flipped direction, another VLNV
    for k, (edit, msg) in enumerate([
            (lambda ps: ps.__setitem__(data, (ps[data][0], "in", ps[data][2] - 1)), "expected in"),
            (lambda ps: ps.__setitem__(data, (ps[data][0] + "_V", "in", ps[data][2])), f"no port {ports[data][0]} "),
            (lambda ps: ps.__setitem__(data, (ps[data][0], "out", ps[data][2])), f"port {ports[data][0]} is out")]):
        bad = copy.deepcopy(ports)
        edit(bad)
        xml = tmp_path / f"bad{k}.xml"
        xml.write_text(component_xml(name, bad))
        with pytest.raises(fxsplit.FxsplitError, match="does not have the ports stitch.json describes") as e:
            check_ip(str(xml), iface, name)
        assert msg in str(e.value), str(e.value)
    xml.write_text(component_xml(name, ports))
    with pytest.raises(fxsplit.FxsplitError, match="the stitcher instantiates xilinx.com:hls:other:1.0"):
        check_ip(str(xml), iface, name, vlnv="xilinx.com:hls:other:1.0")


def test_active_low_reset_accepted_and_reported(emitted, tmp_path):
    """Vitis HLS resets an AXI top on ap_rst_n; the pragmas do not say so. Either reset is accepted and the
    IP's is reported (the hls job writes it into stitch.json); two resets, or none, are refused."""
    part = emitted["partitions"][0]
    name, iface = part["name"], part["interface"]
    ports = [("ap_rst_n", d, w) if n == "ap_rst" else (n, d, w) for n, d, w in ports_of(iface)]
    xml = tmp_path / "n.xml"
    xml.write_text(component_xml(name, ports))
    assert check_ip(str(xml), iface, name)["reset"] == "ap_rst_n"
    xml.write_text(component_xml(name, ports + [("ap_rst", "in", 1)]))
    with pytest.raises(fxsplit.FxsplitError, match="no port ap_rst_n|extra in port ap_rst"):
        check_ip(str(xml), iface, name)
    xml.write_text(component_xml(name, [p for p in ports if p[0] != "ap_rst_n"]))
    with pytest.raises(fxsplit.FxsplitError, match="no port ap_rst "):
        check_ip(str(xml), iface, name)


def test_not_a_component_is_refused(tmp_path):
    f = tmp_path / "c.xml"
    f.write_text("<design><ports/></design>")
    with pytest.raises(fxsplit.FxsplitError, match="is not an IP-XACT component"):
        read_ports(str(f))
    f.write_text("<spirit:component xmlns:spirit='%s'><spirit:name>x</spirit:name></spirit:component>" % SPIRIT)
    with pytest.raises(fxsplit.FxsplitError, match="lists no ports"):
        read_ports(str(f))
    f.write_text("<spirit:compo")
    with pytest.raises(fxsplit.FxsplitError, match="cannot read the IP description"):
        read_ports(str(f))


def test_vivado_utilization_report(tmp_path):
    """A real report_utilization output (Vivado 2020.1, hls4ml's test data)."""
    u = read_utilization(str(DATA / "vivado_synth.rpt"))
    assert u == {"LUT": 1526, "FF": 2428, "BRAM_tiles": 0, "DSP": 66, "URAM": 0}
    cut = tmp_path / "u.rpt"
    cut.write_text("".join(line for line in (DATA / "vivado_synth.rpt").read_text().splitlines(keepends=True) if "DSPs" not in line))
    with pytest.raises(fxsplit.FxsplitError, match="has no DSP row"):
        read_utilization(str(cut))


# report_timing_summary's "Design Timing Summary" table, in the layout UG906 documents (no real report of an
# out-of-context run is available here to copy)
TIMING = """
------------------------------------------------------------------------------------------------
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints  THS Total Endpoints     WPWS(ns)     TPWS(ns)  TPWS Failing Endpoints  TPWS Total Endpoints
    -------      -------  ---------------------  -------------------      -------      -------  ---------------------  -------------------     --------     --------  ----------------------  --------------------
     {wns}       {tns}                      {nf}                 2415        0.052        0.000                      0                 2415        2.225        0.000                       0                   981


{verdict}
"""


def test_vivado_timing_summary(tmp_path):
    f = tmp_path / "t.rpt"
    f.write_text(TIMING.format(wns="0.734", tns="0.000", nf=0, verdict="All user specified timing constraints are met."))
    assert read_timing(str(f)) == {"wns_ns": 0.734, "tns_ns": 0.0, "whs_ns": 0.052, "ths_ns": 0.0, "met": True}
    f.write_text(TIMING.format(wns="-0.412", tns="-3.100", nf=12, verdict="Timing constraints are not met."))
    t = read_timing(str(f))
    assert t["wns_ns"] == -0.412 and t["tns_ns"] == -3.1 and not t["met"]
    f.write_text("Timing Report\n(nothing)\n")
    with pytest.raises(fxsplit.FxsplitError, match="no Design Timing Summary"):
        read_timing(str(f))


def test_report_shows_the_vivado_stitch(tmp_path):
    """What the ``stitched/vivado`` job returns, as it lands in the report and on the HTML page."""
    model, shape = build("jet_tagger")
    out = tmp_path / "jt"
    d = fxsplit.compile(model, shape, flow="vitis", emit_only=True, config=FAST, output_dir=out, progress=False)
    html = (out / "report.html").read_text()
    assert "The stitched design was not built in Vivado in this run" not in html       # emit only: did not run
    report = copy.deepcopy(d.report)
    report["vitis"]["ran"] = True
    report["vitis"]["stitched"] = {"xsim": {"passed": 200, "failed": 0},
                                   "utilization": read_utilization(str(DATA / "vivado_synth.rpt")),
                                   "timing": {"wns_ns": 0.734, "tns_ns": 0.0, "whs_ns": 0.05, "ths_ns": 0.0,
                                              "met": True}, "ip": "vivado/ip"}
    _j, h = write_report(report, tmp_path / "r")
    html = h.read_text()
    assert "<b>Stitched in Vivado</b>" in html and "LUT 1,526, FF 2,428, BRAM_tiles 0, DSP 66, URAM 0" in html
    assert "WNS 0.734 ns (met)" in html and "xsim: 200 vectors passed, 0 failed" in html
    shutil.rmtree(out)


def seen_by_the_stitch(workdir, inputs, names, rpt):
    """Stands in for ``vivado_job`` (no Vivado here) in the test of compile's post-job stage below: it lists the
    partition artifacts the engine handed over, as the Vivado stitch would read their IPs, and returns figures
    shaped as that job's (the real utilization report of hls4ml's test data)."""
    import os as _os
    seen = {n: sorted(_os.listdir(_os.path.join(inputs[f"{n}/hls"], n))) for n in names}
    with open(_os.path.join(workdir, "seen.json"), "w") as f:
        json.dump(seen, f)
    return {"seen": seen, "xsim": {"passed": 1, "failed": 0}, "utilization": read_utilization(rpt),
            "timing": {"wns_ns": 1.0, "met": True}, "ip": "vivado/ip"}


def test_post_jobs_run_after_the_bundle_with_the_hls_artifacts(monkeypatch, tmp_path):
    """compile's second stage, which runs the Vivado stitch where the tools are: it starts after the bundle is
    written, gets every partition's hls artifacts through the engine (cache hits, not rebuilds), lands in the
    build record and the report, and is itself cached."""
    from fxsplit.engine import Job
    from fxsplit.flows.vitis import VitisFlow

    def post_jobs(self, jobs):
        assert (self.out / "stitched" / "vitis" / "stitch.json").exists() and \
            (self.out / "stitched" / "vitis" / "fxsplit_tb.v").exists()
        hls = [j for j in jobs if j.step == "hls"]
        return hls + [Job(id="stitched/vivado", partition="stitched", step="vivado", fn=seen_by_the_stitch,
                          params={"names": [j.partition for j in hls], "rpt": str(DATA / "vivado_synth.rpt")},
                          key_data="post", deps=tuple(j.id for j in hls))]

    monkeypatch.setattr(VitisFlow, "post_jobs", post_jobs)
    model, shape = build("jet_tagger")
    out = tmp_path / "jt"
    d = fxsplit.compile(model, shape, flow="vitis", emit_only=True, config=FAST, output_dir=out, progress=False)
    names = [p.name for p in d.partitions]
    st = d.report["vitis"]["stitched"]
    assert sorted(st["seen"]) == sorted(names)
    assert all("firmware" in st["seen"][n] and "build_prj.tcl" in st["seen"][n] for n in names)
    assert d.build["stitched/vivado"].state == "built"
    assert all(d.build[f"{n}/hls"].state == "built" for n in names)      # this run's record, not the cache hit
    assert json.loads((out / "stitched" / "vitis" / "vivado_run" / "seen.json").read_text()) == st["seen"]
    assert "<b>Stitched in Vivado</b>" in (out / "report.html").read_text()
    assert any(j["id"] == "stitched/vivado" for j in json.loads((out / "report.json").read_text())["jobs"])
    d2 = fxsplit.compile(model, shape, flow="vitis", emit_only=True, config=FAST, output_dir=out, progress=False)
    assert d2.build["stitched/vivado"].state == "cached" and d2.report["vitis"]["stitched"]["seen"] == st["seen"]
