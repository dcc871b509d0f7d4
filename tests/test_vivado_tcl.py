"""The Vivado stitcher (fxsplit/flows/vitis/tcl/fxsplit_stitch.tcl) run in a real tclsh against a mock of
Vivado's commands.

Vivado is not installed here, so Vivado itself never runs in these tests. What runs:

- fxsplit compiles real models (residual_cnn, and a DAG in which one tensor bypasses two partitions and one
  partition has two producers) for flow="vitis" in io_parallel and io_stream; their stitch.json goes through
  ``tcl_desc.to_tcl`` into the stitcher, which runs in Debian's tclsh with the Vivado commands defined by
  tests/tcl/mock_vivado.tcl. The mock records the design and refuses what Vivado would refuse (an IP, cell,
  pin or interface that does not exist, an input driven twice or not at all, widths that differ, a FIFO
  shallower than its tensor); it takes each IP's pins from a separate copy of the description, i.e. from the
  hls4ml pragmas under Vitis HLS's naming rules, so a wrong name in the description the stitcher reads fails.
- The recorded design is then traced bit by bit in Python: every edge of ``Partitioning.dag()`` must connect
  the producer's pins for each element to the consumer's pins for the same element (through the glue cells,
  modelled here by what they do), every partition's start must come from a join of exactly its own inputs,
  and in io_stream every bypass edge must have a FIFO that holds the whole tensor.
- With the sim step on, the mock's xsim scripts (tests/tcl/mock_xsim.py) simulate the recorded design itself
  under Icarus: the netlist exactly as the stitcher wired it, the real join RTL, behavioural models of the
  Xilinx glue and of every partition's IP on its catalog pins (a deterministic function of all its inputs,
  random latencies; in io_stream every input read whole before any output is written, the schedule that
  needs the FIFOs), driven by fxsplit's generated wrapper testbench (``tcl_desc.wrapper_testbench``) through
  the stitcher's own sim step. It must pass, and fail when two edges are swapped or the FIFOs are left out or
  made too shallow (a deadlock).
- The join RTL (fxsplit/flows/vitis/tcl/rtl/fxsplit_join.v) is simulated (Icarus, or Verilator) with random
  arrival orders, gaps and consumer timings: the consumer must start exactly once per sample, with the right
  data; two broken variants of the RTL must fail the same testbench.

What this does not prove: that Vivado accepts every command as the mock does (option spellings, the newest
IP versions' parameter ranges, module references in a packaged IP, the xsim script layout), that Vitis HLS
names the ports exactly as stitch.json says (only seen where Vitis HLS runs), timing or resources of the
stitched design, that the real Xilinx IPs behave like their models here, or that the HLS IPs compute what the
model's C simulation does (the partition models are stand-ins with the same pins and protocols).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST, HAVE_ICARUS, needs_icarus
from fxsplit.flows.rtl.testbench import write_hex
from fxsplit.flows.vitis.tcl_desc import fifo_depth, stitch_info, tcl_value, to_tcl, wrapper_testbench
from fxsplit.zoo import build

ROOT = Path(__file__).resolve().parents[1]
STITCHER = ROOT / "fxsplit" / "flows" / "vitis" / "tcl" / "fxsplit_stitch.tcl"
MOCK = ROOT / "tests" / "tcl" / "mock_vivado.tcl"
MOCK_XSIM = ROOT / "tests" / "tcl" / "mock_xsim.py"
JOIN_V = STITCHER.parent / "rtl" / "fxsplit_join.v"
TCLSH = shutil.which("tclsh")
_spec = importlib.util.spec_from_file_location("mock_xsim", MOCK_XSIM)
mock_xsim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mock_xsim)

pytestmark = pytest.mark.skipif(TCLSH is None, reason="tclsh is not installed (Debian: apt-get install tcl)")


class BypassNet(nn.Module):
    """p0 -> a; p1(a) -> b; p2(b) -> c; p3(c + a): `a` bypasses p1 and p2, and p3 has two producers (p2, p0)."""

    def __init__(self):
        super().__init__()
        self.c0, self.c1, self.c2, self.c3 = (nn.Conv1d(2, 4, 1), nn.Conv1d(4, 4, 1), nn.Conv1d(4, 4, 1),
                                              nn.Conv1d(4, 3, 1))
        self.r0, self.r1, self.r2 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.k1, self.k2, self.k3 = fxsplit.Cut("p1"), fxsplit.Cut("p2"), fxsplit.Cut("p3")

    def forward(self, x):
        a = self.k1(self.r0(self.c0(x)))
        b = self.k2(self.r1(self.c1(a)))
        c = self.k3(self.r2(self.c2(b)))
        return self.c3(c + a)


_COMPILED: dict = {}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(model, io_type) -> (design, stitch.json dict, bundle dir), compiled once per module."""
    def get(model: str, io: str):
        if (model, io) not in _COMPILED:
            splits = None
            if model == "bypass":
                torch.manual_seed(0)
                net, shape = BypassNet().eval(), (2, 8)
            elif model == "wide_split":           # cuts inside layers: fc2's pieces, the output a Concatenate
                (net, shape), splits = build("wide_mlp"), ["fc2@32", "fc4@2"]
            else:
                net, shape = build(model)
            out = tmp_path_factory.mktemp(f"{model}_{io}")
            d = fxsplit.compile(net, shape, flow="vitis", emit_only=True, config={**FAST, "io_type": io},
                                output_dir=out, progress=False, jobs=2, splits=splits)
            bundle = out / "stitched" / "vitis"
            _COMPILED[model, io] = (d, json.loads((bundle / "stitch.json").read_text()), bundle)
        return _COMPILED[model, io]
    return get


# ----------------------------------------------------------------------------------------- running the stitcher

_DRIVER = r"""
source {mock}
mock::load_catalog {catalog}
mock::tcl85
set out {out}
set argv [list desc={desc} out=$out {args}]
if {{[catch {{source {stitcher}}} err]}} {{
    puts stderr "STITCH-ERROR: $err"
    exit 1
}}
if {{[catch {{mock::check}} err]}} {{
    puts stderr "STITCH-ERROR: $err"
    exit 1
}}
mock::write_json $out/mock_design.json
"""


def run_stitcher(bundle: Path, desc: dict, work: Path, args: str = "synth=1 export=1", value: dict | None = None,
                 env: dict | None = None, catalog: dict | None = None):
    """Run the stitcher in tclsh with the mock. The catalog (what the IPs really have) comes from the pristine
    stitch.json in ``bundle`` (or ``catalog``); the stitcher reads ``value`` (default: ``desc`` plus its computed
    stitch info). Returns (returncode, stderr + stdout, recorded design or None)."""
    work.mkdir(parents=True, exist_ok=True)
    if value is None:
        text = to_tcl(desc)
    else:
        text = "set fxsplit_desc " + tcl_value(value) + "\n"
    desc_path = bundle / f"desc_{work.name}.tcl"           # next to stitch.json: ip_repo paths are relative
    desc_path.write_text(text)
    cat = catalog
    catalog = bundle / f"catalog_{work.name}.tcl"         # next to stitch.json too
    catalog.write_text("set fxsplit_desc " + tcl_value(cat if cat is not None else
                                                      json.loads((bundle / "stitch.json").read_text())) + "\n")
    out = work / "vivado"
    driver = work / "driver.tcl"
    driver.write_text(_DRIVER.format(mock=MOCK, catalog=catalog, out=out, desc=desc_path, args=args,
                                     stitcher=STITCHER))
    r = subprocess.run([TCLSH, str(driver)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {})})
    rec = out / "mock_design.json"
    return r.returncode, r.stderr + r.stdout, (json.loads(rec.read_text()) if r.returncode == 0 else None)


def full_value(desc: dict) -> dict:
    v = copy.deepcopy(desc)
    v["stitch"] = stitch_info(desc)
    return v


# ----------------------------------------------------------------------------------------- reading the design

class Recorded:
    """The mock's recorded block design, with the glue cells' behaviour for tracing bits back to their source."""

    def __init__(self, js: dict):
        self.js, self.cells = js, js["cells"]
        self.drv: dict[str, str] = {}
        for n in js["nets"]:
            assert n["driver"], f"a net without a driver: {n}"
            for s in n["sinks"]:
                assert s not in self.drv, f"{s} driven twice"
                self.drv[s] = n["driver"]
        self.isrc = {n["sink"]: n["source"] for n in js["intf_nets"]}

    @staticmethod
    def split(obj: str):
        parts = obj.strip("/").split("/")
        return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])

    def trace(self, sink: str, bit: int, holds: tuple = ()):
        """(source object, source bit, holds passed) of one bit of a sink pin or output port."""
        d = self.drv[sink]
        cell, pin = self.split(d)
        if cell is None:
            return d, bit, holds
        c = self.cells[cell]
        cfg = c["config"]
        if c["kind"] == "xilinx" and c["ip"] == "xlconcat":
            off = 0
            for k in range(int(cfg["NUM_PORTS"])):
                w = int(cfg[f"IN{k}_WIDTH"])
                if bit < off + w:
                    return self.trace(f"/{cell}/In{k}", bit - off, holds)
                off += w
            raise AssertionError(f"bit {bit} beyond {cell}")
        if c["kind"] == "xilinx" and c["ip"] == "xlslice":
            return self.trace(f"/{cell}/Din", bit + int(cfg["DIN_TO"]), holds)
        if c["kind"] == "xilinx" and c["ip"] == "xlconstant":
            return "const", (int(cfg["CONST_VAL"]) >> bit) & 1, holds
        if c["kind"] == "module" and c["ref"] == "fxsplit_hold" and pin == "dout":
            return self.trace(f"/{cell}/din", bit, holds + (cell,))
        return d, bit, holds

    def chain(self, sink: str, what: str) -> list[str]:
        """The holds of a prev_<what> -> all_<what> chain ending at ``sink``, from its constant-1 start."""
        out = []
        while True:
            d = self.drv[sink]
            cell, pin = self.split(d)
            if cell is not None and self.cells[cell]["ip"] == "xlconstant":
                assert self.cells[cell]["config"]["CONST_VAL"] in (1, "1")
                return out[::-1]
            assert pin == f"all_{what}" and self.cells[cell]["ref"] == "fxsplit_hold", f"{sink} <- {d}"
            out.append(cell)
            sink = f"/{cell}/prev_{what}"

    def stream_source(self, sink: str):
        """(source interface, FIFO cells, broadcaster cells) feeding an AXI4-Stream sink."""
        fifos, bcasts = [], []
        src = self.isrc[sink]
        while True:
            cell, name = self.split(src)
            if cell is None or self.cells[cell]["kind"] == "hls":
                return src, fifos, bcasts
            ip = self.cells[cell]["ip"]
            assert ip in ("axis_data_fifo", "axis_broadcaster"), src
            (fifos if ip == "axis_data_fifo" else bcasts).append(cell)
            src = self.isrc[f"/{cell}/S_AXIS"]


def dag_edges(dag: dict):
    """(tensor, producer, consumer) of Partitioning.dag(); model inputs come from 'input', outputs go to 'output'."""
    out = []
    for p in dag["partitions"]:
        for t in p["inputs"]:
            out.append((t["name"], p["sources"][t["name"]], p["name"]))
    for t in dag["outputs"]:
        out.append((t["name"], dag["output_sources"][t["name"]], "output"))
    return out


def bypass_edges(dag: dict) -> set:
    """Edges P -> C (P a partition or a model input) such that another path of partitions leads from P to C."""
    succ = defaultdict(set)
    for t, p, c in dag_edges(dag):
        if c != "output":
            succ[p if p != "input" else "input:" + t].add(c)

    def reach(a, b):
        todo, seen = [a], {a}
        while todo:
            for s in succ[todo.pop()]:
                if s == b:
                    return True
                if s not in seen:
                    seen.add(s)
                    todo.append(s)
        return False
    return {(t, p, c) for t, p, c in dag_edges(dag) if c != "output" and
            any(s != c and reach(s, c) for s in succ[p if p != "input" else "input:" + t])}


def _arg(desc, partition, side, port):
    p = next(p for p in desc["partitions"] if p["name"] == partition)
    return next(a for a in p["interface"][side] if a["port"] == port)


# ----------------------------------------------------------------------------------------- the checks

def check_common(rec: Recorded, desc: dict, dag: dict, bundle: Path):
    parts = [p["name"] for p in dag["partitions"]]
    hls = {n: c for n, c in rec.cells.items() if c["kind"] == "hls"}
    assert sorted(hls) == sorted(f"{p}_0" for p in parts)                 # one cell per partition
    for p in parts:
        assert hls[f"{p}_0"]["vlnv"] == f"xilinx.com:hls:{p}:1.0"
        for pin, info in hls[f"{p}_0"]["pins"].items():                  # every IP input driven, once
            if info["dir"] == "I" and not info["intf"]:
                assert f"/{p}_0/{pin}" in rec.drv, f"{p}_0/{pin} undriven"
            if info["intf"]:
                assert any(f"/{p}_0/{info['intf']}" in pair for pair in rec.isrc.items()), info["intf"]
        assert rec.drv[f"/{p}_0/ap_clk"] == "/ap_clk"
    assert rec.js["validated"] == 1
    steps = [s[0] for s in rec.js["steps"]]
    for s in ("validate_bd_design", "make_wrapper", "synth_design", "report_utilization", "report_timing_summary",
              "ipx::package_project", "ipx::save_core"):
        assert s in steps, s
    synth = next(s for s in rec.js["steps"] if s[0] == "synth_design")
    assert synth[1] == desc.get("top", "fxsplit_top") + "_wrapper" and synth[3] == "out_of_context"
    assert rec.js["part"] == (desc["part"] or "xcvu13p-flga2577-2-e")
    for s in rec.js["steps"]:
        if s[0].startswith("report_"):
            assert Path(s[1]).is_file()
    # ip_repo_paths: every partition's exported IP, where stitch.json says it is
    assert sorted(rec.js["ip_repo_paths"]) == sorted(os.path.normpath(bundle / p["ip_repo"])
                                                     for p in desc["partitions"])


def check_parallel(rec: Recorded, desc: dict, dag: dict):
    """Every DAG edge, bit by bit, through exactly one hold; valids; joins and their chains."""
    ports = {p["name"]: p for p in dag["inputs"]}
    for p in dag["partitions"]:
        for t in p["outputs"]:
            ports[t["name"]] = t
    hold_of = {}
    for t, prod, cons in dag_edges(dag):
        size = 1
        for d in ports[t]["shape"]:
            size *= d
        if prod == "input":
            ew = _arg(desc, cons, "inputs", t)["element_width"]
            src_of = lambda i, b: (f"/{t}", i * ew + b)             # noqa: E731
            vsrc_of = lambda i: f"/{t}_ap_vld"                       # noqa: E731
        else:
            a = _arg(desc, prod, "outputs", t)
            ew = a["element_width"]
            data = [x for x in a["pins"] if x["role"] == "data"]

            def src_of(i, b, data=data, prod=prod, ew=ew):
                pin = next(x for x in data if x["elements"][0] <= i < sum(x["elements"]))
                return f"/{prod}_0/{pin['name']}", (i - pin["elements"][0]) * ew + b

            def vsrc_of(i, data=data, prod=prod):
                pin = next(x for x in data if x["elements"][0] <= i < sum(x["elements"]))
                return f"/{prod}_0/{pin['name']}_ap_vld"
        if cons == "output":
            sinks = [(f"/{t}", i, i * ew) for i in range(size)]
            vsinks = [f"/{t}_ap_vld"]
        else:
            a = _arg(desc, cons, "inputs", t)
            data = [x for x in a["pins"] if x["role"] == "data"]
            sinks = [(f"/{cons}_0/{x['name']}", i, (i - x["elements"][0]) * ew)
                     for x in data for i in range(x["elements"][0], sum(x["elements"]))]
            vsinks = [f"/{cons}_0/{x['name']}_ap_vld" for x in data]
        assert sorted(i for _, i, _ in sinks) == list(range(size))
        holds = set()
        for sink, i, off in sinks:
            for b in range(ew):
                src, sbit, passed = rec.trace(sink, off + b)
                assert (src, sbit) == src_of(i, b), f"edge {t} {prod}->{cons}: element {i} bit {b} from {src}[{sbit}]"
                assert len(passed) == 1, passed
                holds |= set(passed)
        (h,) = holds
        assert h not in hold_of.values(), "two edges share a hold"
        hold_of[t, prod, cons] = h
        for v in vsinks:
            assert rec.drv[v] == f"/{h}/dout_vld"
        nv = int(rec.cells[h]["config"]["NV"])
        group = size // nv
        for g in range(nv):
            src, sbit, _ = rec.trace(f"/{h}/din_vld", g)
            assert sbit == 0 and src == vsrc_of(g * group), (h, g, src)
    # a join per partition: starts from exactly its own input holds, gated by the holds it feeds
    for p in dag["partitions"]:
        c = f"/{p['name']}_0"
        start = rec.drv[f"{c}/ap_start"]
        j, pin = Recorded.split(start)
        assert rec.cells[j]["ref"] == "fxsplit_join" and pin == "ap_start"
        mine = [hold_of[e] for e in hold_of if e[2] == p["name"]]
        chain = rec.chain(f"/{j}/inputs_full", "full")
        assert sorted(chain) == sorted(mine) and len(chain) == len(p["inputs"])
        if len(p["inputs"]) > 1:                    # a join of several producers/tensors
            assert len(chain) >= 2
        feeds = [hold_of[e] for e in hold_of if e[1] == p["name"]]
        assert sorted(rec.chain(f"/{j}/outputs_free", "free")) == sorted(feeds)
        for h in mine:
            assert rec.drv[f"/{h}/fire"] == start and rec.drv[f"/{h}/ack"] == f"{c}/ap_ready"
        assert rec.drv[f"/{j}/ap_ready"] == f"{c}/ap_ready" and rec.drv[f"/{j}/ap_done"] == f"{c}/ap_done"
        assert rec.drv[f"{c}/ap_rst"] == "/ap_rst" and rec.drv[f"/{j}/ap_clk"] == "/ap_clk"
    inputs = [hold_of[e] for e in hold_of if e[1] == "input"]
    assert sorted(rec.chain("/in_ready", "free")) == sorted(inputs)
    outs = [hold_of[e] for e in hold_of if e[2] == "output"]
    fire = {rec.drv[f"/{h}/fire"] for h in outs}
    assert len(fire) == 1
    last, pin = Recorded.split(fire.pop())
    assert pin == "all_full" and sorted(rec.chain(f"/{last}/prev_full", "full") + [last]) == sorted(outs)
    for h in outs:
        assert rec.cells[Recorded.split(rec.drv[f"/{h}/ack"])[0]]["ip"] == "xlconstant"
    return hold_of


def check_stream(rec: Recorded, desc: dict, dag: dict):
    """Every DAG edge from the producer's stream to the consumer's, FIFOs on bypass edges, deep enough."""
    consumers = defaultdict(int)
    for t, prod, cons in dag_edges(dag):
        consumers[t] += 1
    byp = bypass_edges(dag)
    fifo_edges = {}
    for t, prod, cons in dag_edges(dag):
        sink = f"/{t}" if cons == "output" else f"/{cons}_0/{_arg(desc, cons, 'inputs', t)['arg']}"
        src, fifos, bcasts = rec.stream_source(sink)
        if prod == "input":
            assert src == f"/{t}" and rec.js["intf_ports"][t]["mode"] == "Slave"
            a = _arg(desc, cons, "inputs", t)
        else:
            a = _arg(desc, prod, "outputs", t)
            assert src == f"/{prod}_0/{a['arg']}", f"edge {t} {prod}->{cons} fed by {src}"
        beats = next(x for x in a["pins"] if x["role"] == "data")["beats"]
        assert len(bcasts) == (1 if consumers[t] > 1 else 0)
        for b in bcasts:
            assert int(rec.cells[b]["config"]["NUM_MI"]) == consumers[t]
        assert len(fifos) <= 1
        for f in fifos:
            assert int(rec.cells[f]["config"]["FIFO_DEPTH"]) >= beats
        if (t, prod, cons) in byp:
            assert fifos, f"bypass edge {t} {prod}->{cons} has no FIFO"
        fifo_edges[t, prod, cons] = fifos
    for p in dag["partitions"]:
        assert rec.drv[f"/{p['name']}_0/ap_start"] == "/ap_start"
    return fifo_edges


# ----------------------------------------------------------------------------------------- tests

CASES = [("residual_cnn", "io_parallel"), ("residual_cnn", "io_stream"), ("bypass", "io_parallel"),
         ("bypass", "io_stream"), ("wide_split", "io_parallel")]


@pytest.mark.parametrize("model,io", CASES)
def test_stitcher_builds_the_dag(model, io, compiled, tmp_path):
    """The stitcher, in tclsh against the mock, builds one cell per partition and wires every DAG edge exactly;
    the mock accepted it (nothing undriven, no width mismatch, no FIFO too shallow, every name exists)."""
    design, desc, bundle = compiled(model, io)
    dag = design.partitioning.dag()
    rc, log, js = run_stitcher(bundle, desc, tmp_path)
    assert rc == 0, log
    rec = Recorded(js)
    check_common(rec, desc, dag, bundle)
    if io == "io_parallel":
        hold_of = check_parallel(rec, desc, dag)
        assert len(hold_of) == len(dag_edges(dag))
    else:
        fifos = check_stream(rec, desc, dag)
        byp = bypass_edges(dag)
        if model == "bypass":
            # r0 (p0's output) bypasses p1 and p2 into p3; p3 has the producers p0 and p2
            assert ("r0", "p0", "p3") in byp and fifos["r0", "p0", "p3"]
            assert fifos["r2", "p2", "p3"]        # the path it runs alongside is buffered too
            assert not fifos["r0", "p0", "p1"] and not fifos["r1", "p1", "p2"]
        else:
            # two tensors of p0 into block_tail: both buffered, 64 beats each
            assert fifos["relu0", "p0", "block_tail"] and fifos["relu1", "p0", "block_tail"]
            for f in fifos["relu0", "p0", "block_tail"]:
                assert int(rec.cells[f]["config"]["FIFO_DEPTH"]) == 64
    if model == "bypass":
        info = stitch_info(desc)
        assert info["partitions"]["p3"]["join"] == 1 and info["partitions"]["p1"]["join"] == 0
        assert {(e["tensor"], e["producer"], e["consumer"]) for e in info["edges"] if e["bypass"]} == \
            bypass_edges(dag) == {("r0", "p0", "p3")}


def test_stitcher_takes_the_reset_the_ip_has(compiled, tmp_path):
    """Vitis HLS gives a top with AXI interfaces an active-low ap_rst_n, which the hls4ml pragmas do not say: the
    stitcher asks the IP and drives ap_rst_n through one inverter of the active-high ap_rst port."""
    design, desc, bundle = compiled("bypass", "io_stream")
    cat = copy.deepcopy(desc)
    for p in cat["partitions"]:
        p["interface"]["control"] = ["ap_rst_n" if c == "ap_rst" else c for c in p["interface"]["control"]]
    rc, log, js = run_stitcher(bundle, desc, tmp_path, catalog=cat)
    assert rc == 0, log
    rec = Recorded(js)
    for p in design.partitions:
        assert f"partition {p.name}: its IP resets on ap_rst_n, not ap_rst" in log
        assert rec.drv[f"/{p.name}_0/ap_rst_n"] == "/fxs_rst_n/Res"
        assert f"/{p.name}_0/ap_rst" not in rec.drv
    inv = rec.cells["fxs_rst_n"]
    assert inv["ip"] == "util_vector_logic" and inv["config"]["C_OPERATION"] == "not"
    assert rec.drv["/fxs_rst_n/Op1"] == "/ap_rst"
    # and as described (active high): straight from the port
    rc, log, js = run_stitcher(bundle, desc, tmp_path / "high")
    assert rc == 0 and "resets on" not in log, log
    rec = Recorded(js)
    assert all(rec.drv[f"/{p.name}_0/ap_rst"] == "/ap_rst" for p in design.partitions)


def _drop_edge(desc: dict, tensor: str, consumer: str) -> dict:
    """The description without the edge tensor -> consumer (the IP still has the pins)."""
    d = copy.deepcopy(desc)
    p = next(p for p in d["partitions"] if p["name"] == consumer)
    p["inputs"] = [t for t in p["inputs"] if t["name"] != tensor]
    del p["sources"][tensor]
    p["interface"]["inputs"] = [a for a in p["interface"]["inputs"] if a["port"] != tensor]
    return d


@pytest.mark.parametrize("io", ["io_parallel", "io_stream"])
def test_mock_refuses_a_wrong_description(io, compiled, tmp_path):
    """Negative: the same stitcher with a wrong pin/interface name, a missing edge, a wrong width or a missing
    IP repository in its description fails in the mock, naming the problem (so the positive runs can fail)."""
    design, desc, bundle = compiled("bypass", io)
    # a pin (io_parallel) / an interface (io_stream) the IP does not have
    d = copy.deepcopy(desc)
    a = _arg(d, "p0", "outputs", "r0")
    if io == "io_parallel":                  # data pin and its valid renamed alike: a consistent, wrong description
        assert a["pins"][1]["name"] == a["pins"][0]["name"] + "_ap_vld"
        a["pins"][0]["name"] += "_typo"
        a["pins"][1]["name"] = a["pins"][0]["name"] + "_ap_vld"
        expect = r"no pin layer3_out_0_typo"
    else:
        a["arg"] += "_typo"
        expect = r"no interface layer3_out_typo"
    rc, log, _ = run_stitcher(bundle, d, tmp_path / "pin")
    assert rc != 0 and re.search(expect, log), log
    # the bypass edge r0 -> p3 left out: the IP's inputs stay undriven
    rc, log, _ = run_stitcher(bundle, _drop_edge(desc, "r0", "p3"), tmp_path / "edge")
    expect = r"input pin /p3_0/r0 is not connected" if io == "io_parallel" else r"interface /p3_0/r0 is not connected"
    assert rc != 0 and re.search(expect, log), log
    # a width that differs from the IP's
    v = full_value(desc)
    if io == "io_parallel":
        v["stitch"]["tensors"]["r1"]["bits"] += 16
        expect = r"widths differ"
    else:
        v["stitch"]["tensors"]["r0"]["tdata_width"] += 8       # r0 goes through a broadcaster and a FIFO
        expect = r"TDATA widths differ"
    rc, log, _ = run_stitcher(bundle, desc, tmp_path / "width", value=v)
    assert rc != 0 and re.search(expect, log), log
    # the IP repository of p2 not where the description says
    d = copy.deepcopy(desc)
    d["partitions"][2]["ip_repo"] += "_moved"
    rc, log, _ = run_stitcher(bundle, d, tmp_path / "repo")
    assert rc != 0 and "no IP xilinx.com:hls:p2:1.0 in the IP repositories" in log, log
    # unknown option
    rc, log, _ = run_stitcher(bundle, desc, tmp_path / "opt", args="synth=1 bogus=1")
    assert rc != 0 and "unknown option 'bogus'" in log


def test_mock_refuses_a_shallow_fifo(compiled, tmp_path):
    """Negative: a bypass FIFO made shallower than its tensor (64 beats) is refused by the mock's validation;
    the description's own depth passes."""
    design, desc, bundle = compiled("residual_cnn", "io_stream")
    v = full_value(desc)
    edges = v["stitch"]["edges"]
    k = next(i for i, e in enumerate(edges) if e["tensor"] == "relu0" and e["consumer"] == "block_tail")
    assert edges[k]["fifo_depth"] == 64 == fifo_depth(64)
    edges[k]["fifo_depth"] = 32
    rc, log, _ = run_stitcher(bundle, desc, tmp_path / "shallow", value=v)
    assert rc != 0 and "FIFO fxs_fifo_block_tail_relu0 is 32 deep, shallower than its tensor's 64 beats" in log, log
    edges[k]["fifo_depth"] = 48                          # not a power of two: axis_data_fifo refuses it
    rc, log, _ = run_stitcher(bundle, desc, tmp_path / "odd", value=v)
    assert rc != 0 and "FIFO_DEPTH 48 is not one of" in log, log


_MOCK_PRELUDE = """
source {mock}
mock::load_catalog {catalog}
create_project -force t {work} -part xcvu13p-flga2577-2-e
create_bd_design d
proc try_it {{script}} {{
    if {{[catch {{uplevel #0 $script}} err]}} {{ puts "REFUSED: $err" }} else {{ puts "ACCEPTED" }}
}}
"""

_MOCK_CASES = {
    "unknown_vlnv": ("", "create_bd_cell -type ip -vlnv xilinx.com:ip:nope:1.0 a", "not in the IP catalog"),
    "hls_ip_before_its_repo": ("", "create_bd_cell -type ip -vlnv xilinx.com:hls:p:1.0 p_0", "not in the IP catalog"),
    "unknown_pin": ("create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant:1.1 c",
                    "connect_bd_net [get_bd_pins -quiet /c/dout] [get_bd_pins -quiet /c/nope]", "no pin or port ''"),
    "input_driven_twice": ("create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant:1.1 a\n"
                           "create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant:1.1 b\n"
                           "create_bd_cell -type ip -vlnv xilinx.com:ip:xlconcat:2.1 cat\n"
                           "connect_bd_net /a/dout /cat/In0",
                           "connect_bd_net /b/dout /cat/In0", "driven by 2 outputs"),
    "width_mismatch": ("create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant:1.1 a\n"
                       "create_bd_cell -type ip -vlnv xilinx.com:ip:xlslice:1.0 s",
                       "connect_bd_net /a/dout /s/Din", "widths differ"),
    "unknown_parameter": ("create_bd_cell -type ip -vlnv xilinx.com:ip:xlconcat:2.1 cat",
                          "set_property CONFIG.FOO 1 /cat", "has no parameter FOO"),
    "undriven_input": ("create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant:1.1 a\n"
                       "create_bd_cell -type ip -vlnv xilinx.com:ip:xlconcat:2.1 cat\n"
                       "connect_bd_net /a/dout /cat/In0",
                       "validate_bd_design", "input pin /cat/In1 is not connected"),
    "master_to_master": ("create_bd_cell -type ip -vlnv xilinx.com:ip:axis_data_fifo:2.0 f\n"
                         "create_bd_cell -type ip -vlnv xilinx.com:ip:axis_data_fifo:2.0 g",
                         "connect_bd_intf_net /f/M_AXIS /g/M_AXIS", "cannot connect"),
    "interface_twice": ("create_bd_cell -type ip -vlnv xilinx.com:ip:axis_data_fifo:2.0 f\n"
                        "create_bd_cell -type ip -vlnv xilinx.com:ip:axis_data_fifo:2.0 g\n"
                        "create_bd_cell -type ip -vlnv xilinx.com:ip:axis_data_fifo:2.0 h\n"
                        "connect_bd_intf_net /f/M_AXIS /g/S_AXIS",
                        "connect_bd_intf_net /f/M_AXIS /h/S_AXIS", "already connected"),
    "module_not_in_sources": ("", "create_bd_cell -type module -reference fxsplit_hold h", "no module fxsplit_hold"),
    "module_parameter": (f"add_files {JOIN_V}\ncreate_bd_cell -type module -reference fxsplit_hold h",
                         "set_property CONFIG.X 1 /h", "module fxsplit_hold has no parameter X"),
    "same_name_twice": ("create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant:1.1 a",
                        "create_bd_port -dir I a", "already used"),
    "synth_before_validate": ("", "synth_design -top d_wrapper -part xcvu13p-flga2577-2-e -mode out_of_context",
                              "before the wrapper exists"),
}


@pytest.mark.parametrize("case", sorted(_MOCK_CASES))
def test_mock_refuses_what_vivado_refuses(case, tmp_path):
    """The mock's own refusals, one by one, each next to the same setup without the offending command."""
    setup, bad, message = _MOCK_CASES[case]
    catalog = tmp_path / "catalog.tcl"
    catalog.write_text("set fxsplit_desc " + tcl_value({"partitions": [{
        "name": "p", "ip_repo": "repo", "interface": {"control": ["ap_clk", "ap_rst", "ap_start", "ap_done",
                                                                  "ap_idle", "ap_ready"], "inputs": [], "outputs": []}}]})
                       + "\n")
    f = tmp_path / "t.tcl"
    f.write_text(_MOCK_PRELUDE.format(mock=MOCK, catalog=catalog, work=tmp_path / "w") +
                 f"try_it {{{setup}}}\ntry_it {{{bad}}}\n")
    r = subprocess.run([TCLSH, str(f)], capture_output=True, text=True)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0] == "ACCEPTED", r.stdout + r.stderr
    assert lines[1].startswith("REFUSED") and message in r.stdout, r.stdout


def test_fifo_depth_rule():
    assert [fifo_depth(b) for b in (1, 16, 17, 64, 65, 1000, 32768)] == [16, 16, 32, 64, 128, 1024, 32768]
    with pytest.raises(fxsplit.FxsplitError, match="deeper than"):
        fifo_depth(32769)


def test_tcl_value_round_trip(compiled, tmp_path):
    """to_tcl writes the same content as stitch.json: every leaf read back by a real tclsh (dict get / lindex)
    equals the JSON value, also for strings that need Tcl quoting."""
    design, desc, bundle = compiled("residual_cnn", "io_parallel")
    nasty = {"plain": "fixed<16,6,TRN,WRAP,0>", "space": "a b", "brace": "x{y", "close": "}", "pair": "{a b}",
             "dollar": "$x [y]", "quote": 'say "hi"', "back": "a\\b", "hash": "#c", "empty": "", "semi": "a;b",
             "nl": "a\nb", "uni": "µs", "num": 5.0, "neg": -3, "none": None, "true": True, "list": [[], [""], ["a b"]]}
    for value in (desc, nasty):
        leaves = []

        def walk(v, path):
            if isinstance(v, dict):
                for k, x in v.items():
                    walk(x, path + [("d", k)])
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    walk(x, path + [("l", i)])
                if not v:
                    leaves.append((path, ""))
            else:
                leaves.append((path, "" if v is None else ("1" if v is True else "0" if v is False else
                                                          repr(v) if isinstance(v, float) else str(v))))
        walk(value, [])
        script = [f"set fxsplit_desc {tcl_value(value)}", "fconfigure stdout -encoding utf-8 -translation lf"]
        for path, _ in leaves:
            expr = "$fxsplit_desc"
            for kind, k in path:
                expr = f"[dict get {expr} {{{k}}}]" if kind == "d" else f"[lindex {expr} {k}]"
            script.append(f"puts -nonewline \"{expr}\\x00\"")
        f = tmp_path / "rt.tcl"
        f.write_text("\n".join(script) + "\n", encoding="utf-8")
        r = subprocess.run([TCLSH, str(f)], capture_output=True)
        assert r.returncode == 0, r.stderr.decode()
        got = r.stdout.decode("utf-8").split("\x00")[:-1]
        assert got == [x for _, x in leaves]
    # the whole to_tcl output is valid Tcl that sets only fxsplit_desc, with the original keys first
    f = tmp_path / "d.tcl"
    text = to_tcl(desc)
    assert text.isascii()
    f.write_text(text + "puts [dict keys $fxsplit_desc]\n")
    r = subprocess.run([TCLSH, str(f)], capture_output=True, text=True)
    assert r.stdout.split() == [*desc, "stitch"]


def test_tcl85_only(tmp_path):
    """The mock hides Tcl 8.6 additions (Vivado's Tcl is 8.5), so the stitcher runs without them."""
    f = tmp_path / "t.tcl"
    f.write_text(f"source {MOCK}\nmock::tcl85\nputs [catch {{lmap x {{1}} {{set x}}}}][catch {{dict map {{k v}} {{}} {{}}}}]"
                 f"[catch {{try {{}}}}]\n")
    r = subprocess.run([TCLSH, str(f)], capture_output=True, text=True)
    assert r.stdout.strip() == "111"
    text = "\n".join(line for line in STITCHER.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b(lmap|try|dict map|string cat|tailcall)\b", text)


# ----------------------------------------------------------------------------------------- the join RTL, simulated

def _join_tb(widths: list[tuple[int, int]], n: int) -> str:
    """A testbench: K producers (hold k of W bits, NV valid groups) into one join and a consumer model.
    Producers emit each group once per sample, in random order over random cycles, with junk on the groups
    whose valid is low; the consumer (ap_ctrl_hs) takes random times to ready and done, sometimes both at once,
    and its downstream is busy for random times after each done. Prints 'N passed, M failed'."""
    k = len(widths)
    L = ["`timescale 1 ns / 1 ps", "module tb;", "    parameter integer SEED = 1;", f"    localparam integer N = {n};",
         "    reg clk = 1'b0, rst = 1'b1;", "    always #5 clk = ~clk;", "    integer seed, errors = 0, accepted = 0;",
         "    wire start;", "    wire one = 1'b1;", "    reg ready = 1'b0, done = 1'b0, ofree = 1'b1;"]
    for i, (w, nv) in enumerate(widths):
        L += [f"    reg [{w - 1}:0] din{i}; reg [{nv - 1}:0] vld{i} = 0; wire [{w - 1}:0] dout{i}; wire dv{i}, full{i}, free{i};",
              f"    reg [{w - 1}:0] exp{i} [0:N-1];"]
    for i, (w, nv) in enumerate(widths):
        prev = "one" if i == 0 else f"full{i - 1}"
        L.append(f"    fxsplit_hold #(.W({w}), .NV({nv})) h{i} (.ap_clk(clk), .ap_rst(rst), .din(din{i}), .din_vld(vld{i}), "
                 f".prev_full({prev}), .all_full(full{i}), .prev_free(one), .all_free(free{i}), .fire(start), .ack(ready), "
                 f".dout(dout{i}), .dout_vld(dv{i}));")
    L.append(f"    fxsplit_join j (.ap_clk(clk), .ap_rst(rst), .inputs_full(full{k - 1}), .outputs_free(ofree), "
             ".ap_start(start), .ap_ready(ready), .ap_done(done));")
    L += ["    function integer rnd(input integer m); begin rnd = ($random(seed) & 32'h7fffffff) % m; end endfunction",
          "    initial begin seed = SEED; repeat (3) @(posedge clk); rst <= 1'b0; end"]
    for i, (w, nv) in enumerate(widths):
        g = w // nv
        L += [f"    // producer {i}",
              "    initial begin : prod" + str(i),
              f"        integer s, b, left; reg [{w + 31}:0] val, junk; reg [{nv - 1}:0] sent, now;",
              "        @(negedge rst);",
              "        for (s = 0; s < N; s = s + 1) begin",
              f"            @(posedge clk); while (!free{i}) @(posedge clk);",
              "            repeat (rnd(4)) @(posedge clk);",
              f"            for (b = 0; b < {w}; b = b + 32) val[b +: 32] = $random(seed);",
              f"            exp{i}[s] = val[{w - 1}:0];",
              "            sent = 0;",
              f"            while (sent != {{{nv}{{1'b1}}}}) begin",
              f"                for (b = 0; b < {w}; b = b + 32) junk[b +: 32] = $random(seed);",
              "                now = 0;",
              f"                for (b = 0; b < {nv}; b = b + 1) if (!sent[b] && rnd(3) == 0) now[b] = 1'b1;",
              f"                for (b = 0; b < {nv}; b = b + 1) if (now[b]) junk[b*{g} +: {g}] = val[b*{g} +: {g}];",
              f"                din{i} <= junk[{w - 1}:0]; vld{i} <= now; sent = sent | now;",
              "                @(posedge clk);",
              "            end",
              f"            vld{i} <= 0; din{i} <= junk[{w - 1}:0] ^ {{{w}{{1'b1}}}};",
              "        end",
              "    end"]
    checks = " && ".join(f"dv{i} && dout{i} === exp{i}[accepted]" for i in range(k))
    L += ["    // consumer: ap_ctrl_hs; 0 idle, 1 start seen, 2 ready cycle, 3 running",
          "    integer st = 0, cnt = 0, both = 0, busy_cycles = 0;",
          "    always @(posedge clk) begin",
          "        ready <= 1'b0; done <= 1'b0;",
          "        if (!rst) case (st)",
          "            0: if (start) begin",
          "                   if (!ofree) begin errors = errors + 1; $display(\"ERROR start while downstream busy\"); end",
          "                   cnt <= rnd(4); st <= 1; end",
          "            1: if (!start) begin errors = errors + 1; $display(\"ERROR ap_start dropped before ap_ready\"); st <= 0; end",
          "               else if (cnt == 0) begin ready <= 1'b1; both = (rnd(3) == 0); done <= both; st <= 2; end",
          "               else cnt <= cnt - 1;",
          "            2: begin cnt <= rnd(12); st <= both ? 0 : 3; end",
          "            3: begin if (start) begin errors = errors + 1; $display(\"ERROR started while a run is in flight\"); end",
          "               if (cnt == 0) begin done <= 1'b1; st <= 0; end else cnt <= cnt - 1; end",
          "        endcase",
          "    end",
          "    always @(posedge clk) if (done) begin ofree <= 1'b0; busy_cycles <= rnd(5); end",
          "                          else if (busy_cycles > 0) busy_cycles <= busy_cycles - 1; else ofree <= 1'b1;",
          "    always @(negedge clk) if (ready && start) begin",
          f"        if (!({checks})) begin errors = errors + 1; $display(\"MISMATCH sample=%0d\", accepted); end",
          "        accepted = accepted + 1;",
          "        if (accepted == N) begin repeat (20) @(negedge clk);",
          "            $display(\"%0d passed, %0d failed\", N - errors, errors); $finish; end",
          "    end",
          "    initial begin #(N * 2000); $display(\"TIMEOUT after %0d samples\", accepted);",
          "        $display(\"%0d passed, %0d failed\", accepted - errors, N - accepted + errors); $finish; end",
          "endmodule"]
    return "\n".join(L) + "\n"


def _simulate(sources: list[Path], top: str, work: Path, seed: int):
    from fxsplit.flows.rtl.testbench import get_runner
    name = "icarus" if HAVE_ICARUS else "verilator"
    r = get_runner(name)
    extra = [f"-P{top}.SEED={seed}"] if name == "icarus" else [f"-GSEED={seed}"]
    r.build([str(s) for s in sources], top, str(work / f"build_{name}_{seed}"), extra_args=extra)
    return r.test()


JOIN_CASES = [[(16, 1)], [(64, 4), (32, 1)], [(48, 3), (16, 1), (64, 4)]]


@pytest.mark.parametrize("widths", JOIN_CASES, ids=["one_input", "two_inputs", "three_inputs"])
def test_join_rtl_simulated(widths, tmp_path):
    """The join (fxsplit_hold + fxsplit_join) in a real simulator: random arrival orders and gaps per valid group,
    junk on invalid groups, random consumer ready/done timing (sometimes in the same cycle), a downstream that is
    busy for random times. The consumer must start exactly once per sample (never while a run is in flight,
    never with its downstream busy, ap_start held until ap_ready) and read exactly that sample's data."""
    tb = tmp_path / "tb.v"
    tb.write_text(_join_tb(widths, 150))
    for seed in ((1, 7, 12345) if HAVE_ICARUS else (7,)):       # a Verilator build takes ~8 s
        res = _simulate([JOIN_V, tb], "tb", tmp_path, seed)
        assert res.failed == 0 and res.passed == 150 and not res.timeout, res.log[-2000:]


@pytest.mark.parametrize("mutation", ["no_busy", "latch_all_groups"])
def test_join_testbench_catches_a_broken_join(mutation, tmp_path):
    """The same testbench fails on two broken joins: one that restarts the consumer while a run is in flight,
    one that latches every group whenever any group's valid is high."""
    text = JOIN_V.read_text()
    if mutation == "no_busy":
        bad = text.replace("assign ap_start = inputs_full & outputs_free & ~busy;",
                           "assign ap_start = inputs_full & outputs_free;")
    else:
        bad = text.replace("if (din_vld[g]) data[g*G +: G] <= din[g*G +: G];",
                           "if (|din_vld) data[g*G +: G] <= din[g*G +: G];")
    assert bad != text
    v = tmp_path / "bad_join.v"
    v.write_text(bad)
    tb = tmp_path / "tb.v"
    tb.write_text(_join_tb(JOIN_CASES[2], 150))
    res = _simulate([v, tb], "tb", tmp_path, 7)
    assert res.failed > 0 or res.timeout


# ----------------------------------------------------------------------------------------- the design, simulated

def run_with_xsim(bundle: Path, desc: dict, work: Path, n: int, value: dict | None = None, reverse: bool = False,
                  timeout_cycles: int | None = None):
    """The stitcher with sim=1: fxsplit's wrapper testbench and vectors (random raw inputs, expected outputs by
    the partition models), the mock's xsim scripts simulating the recorded design under Icarus."""
    work.mkdir(parents=True, exist_ok=True)
    info = stitch_info(desc)
    rng = np.random.default_rng(len(work.name))
    ins = {t: rng.integers(0, 1 << info["tensors"][t]["element_width"], size=(n, info["tensors"][t]["size"]))
           .astype(object) for t in info["model_inputs"]}
    env = mock_xsim.expected(desc, ins)
    vec = work / "vectors"
    vec.mkdir(exist_ok=True)
    for t in info["model_inputs"]:
        write_hex(str(vec / f"in_{t}.hex"), ins[t], info["tensors"][t]["element_width"])
    for t in info["model_outputs"]:
        write_hex(str(vec / f"exp_{t}.hex"), env[t], info["tensors"][t]["element_width"])
    tb = work / "fxsplit_tb.v"
    tb.write_text(wrapper_testbench(desc, n, timeout_cycles=timeout_cycles))
    return run_stitcher(bundle, desc, work, args=f"synth=0 export=0 sim=1 tb={tb} tb_top=fxsplit_tb vectors={vec}",
                        value=value, env={"FXS_MOCK_XSIM": f"{sys.executable} {MOCK_XSIM}",
                                          "FXS_MOCK_STITCH_JSON": str(bundle / "stitch.json"),
                                          "FXS_MOCK_DEFINES": "FXS_REVERSE" if reverse else ""})


@needs_icarus
@pytest.mark.parametrize("model,io", CASES)
def test_stitched_design_simulates(model, io, compiled, tmp_path):
    """The recorded design, simulated through the stitcher's sim step with fxsplit's wrapper testbench: every
    sample comes out right (io_stream: with the partitions reading their inputs in either order)."""
    design, desc, bundle = compiled(model, io)
    n = 12 if model == "residual_cnn" else 30
    for reverse in ((False, True) if io == "io_stream" else (False,)):
        rc, log, js = run_with_xsim(bundle, desc, tmp_path / f"sim{int(reverse)}", n, reverse=reverse)
        assert rc == 0 and f"xsim: {n} passed, 0 failed" in log, log[-3000:]
        assert [s[0] for s in js["steps"]].count("launch_simulation") == 1


@needs_icarus
def test_simulation_catches_swapped_edges(compiled, tmp_path):
    """Negative: p3's inputs r2 and r0 (same shape, so every width matches and the mock accepts it) swapped in
    the stitcher's description: the structural trace and the simulation both fail."""
    design, desc, bundle = compiled("bypass", "io_parallel")
    v = full_value(desc)
    edges = v["stitch"]["edges"]
    a = next(e for e in edges if e["tensor"] == "r2" and e["consumer"] == "p3")
    b = next(e for e in edges if e["tensor"] == "r0" and e["consumer"] == "p3")
    a["data"], b["data"], a["valid"], b["valid"] = b["data"], a["data"], b["valid"], a["valid"]
    rc, log, js = run_stitcher(bundle, desc, tmp_path / "struct", value=v)
    assert rc == 0, log
    with pytest.raises(AssertionError, match="edge r2 p2->p3"):
        check_parallel(Recorded(js), desc, design.partitioning.dag())
    rc, log, _ = run_with_xsim(bundle, desc, tmp_path / "sim", 10, value=v)
    assert rc != 0 and "xsim: 0 passed, 10 failed" in log, log[-3000:]
    assert re.search(r"MISMATCH sample=\d+ port=c3 elem=", log), log[-3000:]


@needs_icarus
def test_simulation_deadlocks_without_deep_fifos(compiled, tmp_path):
    """Negative: without the reconvergence FIFOs (bypass DAG), or with FIFOs half as deep as the tensor
    (residual_cnn, 64 beats), the simulated design deadlocks; the description's depths pass (above)."""
    design, desc, bundle = compiled("bypass", "io_stream")
    v = full_value(desc)
    for e in v["stitch"]["edges"]:
        e["fifo_depth"] = 0
    rc, log, _ = run_with_xsim(bundle, desc, tmp_path / "nofifo", 10, value=v, timeout_cycles=5000)
    assert rc != 0 and "TIMEOUT" in log and "xsim: 0 passed, 10 failed" in log, log[-3000:]
    # too shallow: the mock refuses it before simulating, so simulate its recorded design with the depth changed
    design, desc, bundle = compiled("residual_cnn", "io_stream")
    rc, log, _ = run_with_xsim(bundle, desc, tmp_path / "deep", 4)
    assert rc == 0, log[-3000:]
    simdir = next((tmp_path / "deep" / "vivado").glob("*.sim/sim_1/behav/xsim"))
    js = json.loads((simdir / "mock_design.json").read_text())
    fifos = [c for c in js["cells"].values() if c["ip"] == "axis_data_fifo"]
    assert len(fifos) == 2 and all(int(c["config"]["FIFO_DEPTH"]) == 64 for c in fifos)
    for c in fifos:
        c["config"]["FIFO_DEPTH"] = 32
    (simdir / "mock_design.json").write_text(json.dumps(js))
    (simdir / "fxsplit_tb.v").write_text(wrapper_testbench(desc, 4, timeout_cycles=5000))
    env = {**os.environ, "FXS_MOCK_STITCH_JSON": str(bundle / "stitch.json")}
    for step in ("compile", "simulate"):
        r = subprocess.run([sys.executable, str(MOCK_XSIM), step, str(simdir), "fxsplit_tb", str(simdir / "fxsplit_tb.v")],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    assert "TIMEOUT" in r.stdout and "0 passed, 4 failed" in r.stdout, r.stdout[-2000:]


# ----------------------------------------------------------------------------------------- ResNet20, emitted whole

RESNET20_SPLITS = ["stage1.1.conv2", "stage2.0.conv2", "stage3.1.conv2"]   # inside residual blocks


def test_resnet20_emits_completely(tmp_path):
    """ResNet20 (io_stream) with the zoo's three stage markers and three more cuts inside residual blocks (the
    block's input, its skip tensor, crosses each of them): every partition's Vitis project, stitch.json, the
    vectors; its C simulations stitched bit-exact against the uncut model; the Vivado stitcher, in tclsh
    against the mock, builds the DAG with a whole-tensor FIFO on every reconvergent edge."""
    from fxsplit.flows.common.dagdesc import edges as reconv_edges
    model, shape = build("resnet20")
    out = tmp_path / "r20"
    d = fxsplit.compile(model, shape, splits=RESNET20_SPLITS, flow="vitis", emit_only=True,
                        config={"io_type": "io_stream", "csim_opt": "-O2", "tb_vectors": 4}, output_dir=out,
                        progress=False, jobs=2)       # -O2: a ResNet20 sample takes 18 s at -O0, 0.75 s at -O2
    names = [p.name for p in d.partitions]
    assert len(names) >= 4, names
    dag = d.partitioning.dag()
    # every in-block cut carries two tensors, the block's main path and its skip (the block's input)
    two_in = [p["name"] for p in dag["partitions"] if len(p["inputs"]) >= 2]
    assert len(two_in) >= len(RESNET20_SPLITS), two_in
    for n in names:
        assert (out / n / "vitis" / "build_prj.tcl").is_file() and (out / n / "vitis" / "firmware" / f"{n}.cpp").is_file()
    bundle = out / "stitched" / "vitis"
    desc = json.loads((bundle / "stitch.json").read_text())
    assert [p["name"] for p in desc["partitions"]] == names
    assert len((bundle / "vectors" / f"in_{dag['inputs'][0]['name']}.hex").read_text().split()) == 4
    assert "localparam integer N = 4;" in (bundle / "fxsplit_tb.v").read_text()
    # the partitions' C simulations, stitched, equal the uncut model bit for bit
    x = np.random.default_rng(20).uniform(-8, 8, size=(3, *shape))
    res = d.verify(x)
    assert res.bit_exact and res.mismatches == 0
    # the stitcher builds it; every reconvergent edge (the shared analysis) holds a whole tensor
    rc, log, js = run_stitcher(bundle, desc, tmp_path / "stitch")
    assert rc == 0, log[-3000:]
    rec = Recorded(js)
    check_common(rec, desc, dag, bundle)
    fifos = check_stream(rec, desc, dag)
    reconv = [(e["tensor"], e["producer"], e["consumer"]) for e in reconv_edges(desc) if e["reconvergent"]]
    assert reconv and all(fifos[e] for e in reconv)
    assert all(not f for e, f in fifos.items() if e not in reconv)
