"""A stand-in for xsim in the mock Vivado flow (tests/tcl/mock_vivado.tcl), run by the scripts the mock's
``launch_simulation -scripts_only`` writes when ``FXS_MOCK_XSIM`` is set:

    python tests/tcl/mock_xsim.py <compile|elaborate|simulate> <sim dir> <top> <sim files...>

``compile`` turns the block design the mock recorded (``mock_design.json`` in the sim dir) into a Verilog
netlist of ``<bd>_wrapper`` with the ports Vivado's wrapper has, exactly as recorded: every net and interface
net, the real join RTL (fxsplit/flows/vitis/tcl/rtl/fxsplit_join.v) for the module references, and
behavioural models for the Xilinx glue IPs (xlconcat, xlslice, xlconstant, util_vector_logic, axis_data_fifo
holding exactly FIFO_DEPTH beats, a lockstep axis_broadcaster) and for each partition's Vitis HLS IP, on the
pins the catalog (``FXS_MOCK_STITCH_JSON``: stitch.json) gives it. It compiles that with the testbench under
Icarus; ``simulate`` runs it.

A partition model computes :func:`partition_function` of its inputs (a deterministic mix of all input
elements, so a misrouted element or a wrong sample shows) with random latencies. io_parallel: ap_ctrl_hs,
inputs read with ap_start and their ap_vld, output elements written one by one in random cycles with junk on
the data pins in between. io_stream: the whole sample read first, one input stream after the other (in
interface order, or reversed with ``FXS_MOCK_DEFINES=FXS_REVERSE``), then the outputs written beat-interleaved:
the schedule that needs the reconvergence FIFOs. These are models of the protocols, not of the IPs Vitis HLS
makes; they say nothing about an IP's real latency or its arithmetic.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------------- the partition function

def _mult(i: int, k: int, oi: int, j: int) -> int:
    return 1 + (i * 7 + k * 13 + oi * 5 + j * 3) % 11


def partition_function(pid: int, ins: list[list[int]], out_sizes: list[int], out_widths: list[int]) -> list[list[int]]:
    """Output element j of output oi: sum over inputs k, elements i of x*mult(i,k,oi,j), plus a constant,
    modulo 2^width. Inputs and outputs are raw unsigned element values."""
    outs = []
    for oi, (size, w) in enumerate(zip(out_sizes, out_widths)):
        o = []
        for j in range(size):
            acc = j * 97 + oi * 31 + pid * 17
            for k, xs in enumerate(ins):
                for i, x in enumerate(xs):
                    acc += x * _mult(i, k, oi, j)
            o.append(acc % (1 << w))
        outs.append(o)
    return outs


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def expected(desc: dict, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of the DAG for raw unsigned model inputs ``{name: (n, size)}``, by the partition models."""
    n = len(next(iter(inputs.values())))
    env = {k: np.asarray(v, dtype=object) for k, v in inputs.items()}
    pending = list(enumerate(desc["partitions"]))
    while pending:
        for item in list(pending):
            pid, p = item
            if all(t["name"] in env for t in p["inputs"]):
                args = p["interface"]["inputs"]
                outs = p["interface"]["outputs"]
                res = [np.zeros((n, _size(t["shape"])), dtype=object) for t in p["outputs"]]
                for s in range(n):
                    vals = partition_function(pid, [list(env[a["port"]][s]) for a in args],
                                              [_size(t["shape"]) for t in p["outputs"]],
                                              [a["element_width"] for a in outs])
                    for r, v in zip(res, vals):
                        r[s] = v
                for a, r in zip(outs, res):
                    env[a["port"]] = r
                pending.remove(item)
    return env


# ----------------------------------------------------------------------------------------- behavioural models

AXIS_MODELS = r"""
`timescale 1 ns / 1 ps
// axis_data_fifo: holds exactly DEPTH beats (the real IP, common clock, holds at least that many)
module mock_axis_fifo #(parameter integer W = 8, parameter integer DEPTH = 16) (
    input aclk, input aresetn,
    input [W-1:0] s_tdata, input s_tvalid, output s_tready,
    output [W-1:0] m_tdata, output m_tvalid, input m_tready);
    reg [W-1:0] mem [0:DEPTH-1];
    reg [31:0] rd, wr, count;
    wire push = s_tvalid && s_tready, pop = m_tvalid && m_tready;
    assign s_tready = aresetn && count < DEPTH;
    assign m_tvalid = aresetn && count > 0;
    assign m_tdata = mem[rd];
    always @(posedge aclk) begin
        if (!aresetn) begin rd <= 0; wr <= 0; count <= 0; end
        else begin
            if (push) begin mem[wr] <= s_tdata; wr <= (wr + 1) % DEPTH; end
            if (pop) rd <= (rd + 1) % DEPTH;
            count <= count + push - pop;
        end
    end
endmodule
// axis_broadcaster: every beat to every master, the next beat once all of them took it
module mock_axis_bcast #(parameter integer W = 8, parameter integer N = 2) (
    input aclk, input aresetn,
    input [W-1:0] s_tdata, input s_tvalid, output s_tready,
    output [N*W-1:0] m_tdata, output [N-1:0] m_tvalid, input [N-1:0] m_tready);
    reg [N-1:0] sent;
    assign m_tdata = {N{s_tdata}};
    assign m_tvalid = {N{s_tvalid & aresetn}} & ~sent;
    assign s_tready = aresetn && &(sent | m_tready);
    always @(posedge aclk) begin
        if (!aresetn) sent <= 0;
        else if (s_tvalid && s_tready) sent <= 0;
        else sent <= sent | (m_tvalid & m_tready);
    end
endmodule
"""


def _pins(arg, role):
    return [p for p in arg["pins"] if p["role"] == role]


def hls_model(p: dict, pid: int, io: str) -> str:
    """A behavioural model of partition ``p``'s Vitis HLS IP on exactly its catalog pins."""
    ifc = p["interface"]
    ports = ["input ap_clk", f"input {'ap_rst' if 'ap_rst' in ifc['control'] else 'ap_rst_n'}", "input ap_start",
             "output reg ap_done", "output ap_idle", "output ap_ready"]
    rst = "ap_rst" if "ap_rst" in ifc["control"] else "!ap_rst_n"
    for side, d in (("inputs", "input"), ("outputs", "output reg")):
        for a in ifc[side]:
            for pin in a["pins"]:
                dd = d if pin["role"] != "ready" else ("output reg" if side == "inputs" else "input")
                w = pin["width"]
                ports.append(f"{dd} {f'[{w - 1}:0] ' if w > 1 else ''}{pin['name']}")
    L = ["`timescale 1 ns / 1 ps", f"module hls_{p['name']} (", "    " + ",\n    ".join(ports), ");",
         f"    integer seed = {pid * 7919 + 17};",
         "    function integer rnd(input integer m); begin rnd = ($random(seed) & 32'h7fffffff) % m; end endfunction",
         "    integer st = 0, cnt = 0, i, j, b, q;", "    reg [63:0] acc;",
         "    assign ap_idle = st == 0;"]
    ins, outs = ifc["inputs"], ifc["outputs"]
    for k, a in enumerate(ins):
        L.append(f"    reg [{_size(p['inputs'][k]['shape']) * a['element_width'] - 1}:0] in_{k};")
    for oi, a in enumerate(outs):
        L.append(f"    reg [{_size(p['outputs'][oi]['shape']) * a['element_width'] - 1}:0] out_{oi};")
    comp = ["    task compute; begin"]
    for oi, a in enumerate(outs):
        ew_o = a["element_width"]
        comp += [f"        for (j = 0; j < {_size(p['outputs'][oi]['shape'])}; j = j + 1) begin",
                 f"            acc = j * 97 + {oi * 31 + pid * 17};"]
        for k, ak in enumerate(ins):
            ew = ak["element_width"]
            comp.append(f"            for (i = 0; i < {_size(p['inputs'][k]['shape'])}; i = i + 1) "
                        f"acc = acc + in_{k}[i*{ew} +: {ew}] * (1 + (i * 7 + {k * 13 + oi * 5} + j * 3) % 11);")
        comp += [f"            out_{oi}[j*{ew_o} +: {ew_o}] = acc[{ew_o - 1}:0];", "        end"]
    comp.append("    end endtask")
    L += comp
    if io == "io_parallel":
        data_out = [(oi, pin) for oi, a in enumerate(outs) for pin in _pins(a, "data")]
        L += ["    reg rdy = 1'b0;", "    assign ap_ready = rdy;", f"    reg [{len(data_out) - 1}:0] pend;",
              "    always @(posedge ap_clk) begin", "        rdy <= 1'b0; ap_done <= 1'b0;"]
        for oi, pin in data_out:
            L += [f"        {pin['name']}_ap_vld <= 1'b0; {pin['name']} <= $random(seed);"]
        allv = " && ".join(f"{pin['name']}_ap_vld" for a in ins for pin in _pins(a, "data"))
        L += [f"        if ({rst}) st = 0;", "        else case (st)",
              f"            0: if (ap_start && {allv}) begin cnt = rnd(3); st = 1; end",
              "            1: if (cnt > 0) cnt = cnt - 1; else begin",
              f"                   if (!(ap_start && {allv})) $display(\"ERROR {p['name']}: inputs gone before ap_ready\");"]
        for k, a in enumerate(ins):
            for pin in _pins(a, "data"):
                e0, n = pin["elements"]
                L.append(f"                   in_{k}[{e0 * a['element_width']} +: {n * a['element_width']}] = {pin['name']};")
        L += ["                   compute; rdy <= 1'b1; pend = {%d{1'b1}}; cnt = rnd(10); st = 2;" % len(data_out),
              "               end",
              "            2: if (cnt > 0) cnt = cnt - 1; else st = 3;",
              "            3: begin"]
        for q, (oi, pin) in enumerate(data_out):
            e0, n = pin["elements"]
            ew = outs[oi]["element_width"]
            L.append(f"                if (pend[{q}] && rnd(3) == 0) begin {pin['name']} <= out_{oi}[{e0 * ew} +: {n * ew}]; "
                     f"{pin['name']}_ap_vld <= 1'b1; pend[{q}] = 1'b0; end")
        L += ["                if (pend == 0) st = 4;", "            end",
              "            4: begin ap_done <= 1'b1; st = 0; end", "        endcase", "    end"]
    else:
        # read every input stream, one after the other, then write the outputs interleaved beat by beat
        L += ["    assign ap_ready = ap_done;",
              "`ifdef FXS_REVERSE", "    localparam integer REV = 1;", "`else", "    localparam integer REV = 0;",
              "`endif", "    integer cur = 0, beat = 0, ob = 0, oo = 0;"]
        nin = len(ins)
        L += ["    always @(posedge ap_clk) begin", "        ap_done <= 1'b0;"]
        for a in ins:
            L.append(f"        {a['arg']}_TREADY <= 1'b0;")
        L += [f"        if ({rst}) begin st = 0;"]
        L += [f"            {a['arg']}_TVALID <= 1'b0;" for a in outs]
        L += ["        end else case (st)",
              "            0: if (ap_start) begin st = 1; cur = 0; beat = 0; end",
              "            1: begin : rd", f"                q = REV ? {nin - 1} - cur : cur;",
              "                case (q)"]
        for k, a in enumerate(ins):
            d = _pins(a, "data")[0]
            pw = d["elements"][1] * a["element_width"]
            L += [f"                    {k}: begin",
                  f"                        if ({a['arg']}_TVALID && {a['arg']}_TREADY) begin",
                  f"                            in_{k}[beat*{pw} +: {pw}] = {a['arg']}_TDATA[{pw - 1}:0]; beat = beat + 1;",
                  f"                            if (beat == {d['beats']}) begin beat = 0; cur = cur + 1; end",
                  "                        end",
                  f"                        if (cur < {nin} && (REV ? {nin - 1} - cur : cur) == {k}) "
                  f"{a['arg']}_TREADY <= rnd(4) != 0;",
                  "                    end"]
        L += ["                endcase",
              f"                if (cur == {nin}) begin compute; st = 2; ob = 0; oo = 0; end",
              "            end",
              "            2: begin : wr"]
        maxb = max(_pins(a, "data")[0]["beats"] for a in outs)
        for oi, a in enumerate(outs):
            d = _pins(a, "data")[0]
            pw = d["elements"][1] * a["element_width"]
            pad = d["width"] - pw
            val = f"out_{oi}[ob*{pw} +: {pw}]"
            L += [f"                if (oo == {oi}) begin",
                  f"                    if ({a['arg']}_TVALID && {a['arg']}_TREADY) begin {a['arg']}_TVALID <= 1'b0; "
                  f"oo = oo + 1; end",
                  f"                    else if (!{a['arg']}_TVALID && ob < {d['beats']} && rnd(4) != 0) begin",
                  f"                        {a['arg']}_TDATA <= {{{{{pad}{{1'b0}}}}, {val}}}; {a['arg']}_TVALID <= 1'b1; end"
                  if pad else
                  f"                        {a['arg']}_TDATA <= {val}; {a['arg']}_TVALID <= 1'b1; end",
                  f"                    else if (ob >= {d['beats']}) oo = oo + 1;",
                  "                end"]
        L += [f"                if (oo == {len(outs)}) begin oo = 0; ob = ob + 1; end",
              f"                if (ob == {maxb}) begin ap_done <= 1'b1; st = 0; end",
              "            end",
              "        endcase",
              "    end"]
    L.append("endmodule")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------------------- the netlist

def netlist(js: dict) -> str:
    """``<bd>_wrapper``: the recorded block design as a Verilog netlist."""
    cells, ports, iports = js["cells"], js["ports"], js["intf_ports"]
    L = ["`timescale 1 ns / 1 ps", f"module {js['bd']}_wrapper ("]
    decl = []
    for n, p in ports.items():
        w = f"[{p['width'] - 1}:0] " if p["width"] > 1 else ""
        decl.append(f"    {'input' if p['dir'] == 'I' else 'output'} {w}{n}")
    for n, p in iports.items():
        tw = 8 * int(p["config"]["CONFIG.TDATA_NUM_BYTES"])
        i, o = ("input", "output") if p["mode"] == "Slave" else ("output", "input")
        decl += [f"    {i} [{tw - 1}:0] {n}_tdata", f"    {i} {n}_tvalid", f"    {o} {n}_tready"]
    L.append(",\n".join(decl))
    L.append(");")

    def wire(cell, pin):
        return f"w_{cell}__{pin}"
    # a wire per cell pin and per interface signal
    for c, info in cells.items():
        for pin, p in info["pins"].items():
            if not p["intf"]:
                L.append(f"    wire [{p['width'] - 1}:0] {wire(c, pin)};")
        for i, x in info["intfs"].items():
            L += [f"    wire [{x['tdata'] - 1}:0] {wire(c, i)}_tdata;", f"    wire {wire(c, i)}_tvalid, {wire(c, i)}_tready;"]

    def obj(o):
        parts = o.strip("/").split("/")
        return parts[0] if len(parts) == 1 else wire(*parts)
    for n in js["nets"]:
        for s in n["sinks"]:
            L.append(f"    assign {obj(s)} = {obj(n['driver'])};")
    for n in js["intf_nets"]:
        s, k = obj(n["source"]), obj(n["sink"])
        L += [f"    assign {k}_tdata = {s}_tdata;", f"    assign {k}_tvalid = {s}_tvalid;",
              f"    assign {s}_tready = {k}_tready;"]
    for c, info in cells.items():
        cfg = info["config"]
        if info["kind"] == "hls":
            conns = []
            for pin, p in info["pins"].items():
                if p["intf"]:
                    sig = pin[len(p["intf"]) + 1:].lower()
                    conns.append(f".{pin}({wire(c, p['intf'])}_{sig})")
                else:
                    conns.append(f".{pin}({wire(c, pin)})")
            L.append(f"    hls_{info['ip']} u_{c} ({', '.join(conns)});")
        elif info["kind"] == "module":
            params = ", ".join(f".{k}({v})" for k, v in cfg.items())
            conns = ", ".join(f".{pin}({wire(c, pin)})" for pin in info["pins"])
            L.append(f"    {info['ref']} {'#(' + params + ') ' if params else ''}u_{c} ({conns});")
        else:
            ip = info["ip"]
            if ip == "xlconcat":
                ins = [wire(c, f"In{k}") for k in range(int(cfg["NUM_PORTS"]))]
                L.append(f"    assign {wire(c, 'dout')} = {{{', '.join(reversed(ins))}}};")
            elif ip == "xlslice":
                L.append(f"    assign {wire(c, 'Dout')} = {wire(c, 'Din')}[{cfg['DIN_FROM']}:{cfg['DIN_TO']}];")
            elif ip == "xlconstant":
                L.append(f"    assign {wire(c, 'dout')} = {cfg['CONST_VAL']};")
            elif ip == "util_vector_logic":
                op = {"not": "~{a}", "and": "{a} & {b}", "or": "{a} | {b}", "xor": "{a} ^ {b}"}[cfg["C_OPERATION"]]
                L.append(f"    assign {wire(c, 'Res')} = {op.format(a=wire(c, 'Op1'), b=wire(c, 'Op2'))};")
            elif ip == "axis_data_fifo":
                w = 8 * int(cfg["TDATA_NUM_BYTES"])
                s, m = wire(c, "S_AXIS"), wire(c, "M_AXIS")
                L.append(f"    mock_axis_fifo #(.W({w}), .DEPTH({cfg['FIFO_DEPTH']})) u_{c} (.aclk({wire(c, 's_axis_aclk')}), "
                         f".aresetn({wire(c, 's_axis_aresetn')}), .s_tdata({s}_tdata), .s_tvalid({s}_tvalid), "
                         f".s_tready({s}_tready), .m_tdata({m}_tdata), .m_tvalid({m}_tvalid), .m_tready({m}_tready));")
            elif ip == "axis_broadcaster":
                n = int(cfg["NUM_MI"])
                w = 8 * int(cfg["S_TDATA_NUM_BYTES"])
                ms = [wire(c, f"M{k:02d}_AXIS") for k in reversed(range(n))]
                s = wire(c, "S_AXIS")
                L.append(f"    mock_axis_bcast #(.W({w}), .N({n})) u_{c} (.aclk({wire(c, 'aclk')}), "
                         f".aresetn({wire(c, 'aresetn')}), .s_tdata({s}_tdata), .s_tvalid({s}_tvalid), "
                         f".s_tready({s}_tready), .m_tdata({{{', '.join(m + '_tdata' for m in ms)}}}), "
                         f".m_tvalid({{{', '.join(m + '_tvalid' for m in ms)}}}), "
                         f".m_tready({{{', '.join(m + '_tready' for m in ms)}}}));")
            else:
                raise ValueError(f"no model for {ip}")
    L.append("endmodule")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------------------- the xsim stand-in

def main(argv: list[str]) -> int:
    step, simdir, top, files = argv[0], Path(argv[1]), argv[2], argv[3:]
    if step == "elaborate":
        print("mock xsim: elaborated by compile")
        return 0
    if step == "simulate":
        r = subprocess.run(["vvp", "-n", str(simdir / "sim.vvp")], cwd=simdir, capture_output=True, text=True)
        print(r.stdout + r.stderr)
        if "ERROR" in r.stdout:             # a partition model saw its protocol broken
            return 1
        return r.returncode
    js = json.loads((simdir / "mock_design.json").read_text())
    desc = json.loads(Path(os.environ["FXS_MOCK_STITCH_JSON"]).read_text())
    models = AXIS_MODELS + "".join(hls_model(p, pid, desc["io_type"]) for pid, p in enumerate(desc["partitions"]))
    (simdir / "models.v").write_text(models)
    (simdir / "netlist.v").write_text(netlist(js))
    rtl = [f for f in js["files"]["sources_1"] if f.endswith(".v") and "_wrapper" not in f]
    defines = [f"-D{d}" for d in os.environ.get("FXS_MOCK_DEFINES", "").split() if d]
    iverilog = shutil.which("iverilog")
    if iverilog is None:
        print("mock xsim: iverilog is not installed")
        return 1
    r = subprocess.run([iverilog, "-g2005", *defines, "-o", str(simdir / "sim.vvp"), "-s", top, *files, *rtl,
                        str(simdir / "netlist.v"), str(simdir / "models.v")], capture_output=True, text=True)
    print(r.stdout + r.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
