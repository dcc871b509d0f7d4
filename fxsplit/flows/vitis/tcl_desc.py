"""``stitch.json`` as a Tcl file for the Vivado stitcher (``tcl/fxsplit_stitch.tcl``).

Vivado's Tcl has no JSON parser, so :func:`to_tcl` writes the same description as one Tcl variable,
``fxsplit_desc``: JSON objects become Tcl dicts, arrays Tcl lists, ``null`` the empty string, booleans 1/0.
Every key of ``stitch.json`` is kept as it is (one source of truth: ``dict get $fxsplit_desc partitions`` is
``desc["partitions"]``). One key is added, ``stitch``: what the stitcher needs that is computed from the DAG
and the interfaces (:func:`stitch_info`), so that the Tcl stays plain wiring:

- ``tensors``: per tensor, its producer (a partition or ``input``), the edges that read it, and the producer's
  pins in element order (io_parallel: data and ``_ap_vld`` pins, ``nv`` = valid groups; io_stream: the AXI4-Stream
  interface, TDATA width, beats per sample);
- ``edges``: one per (tensor, consumer), consumer a partition or ``output`` (a model output), with the
  consumer's pins; io_parallel: ``hold 1`` (every edge gets an ``fxsplit_hold``: ap_vld outputs are one-cycle
  pulses) and, per partition, ``join``: 1 where it has several inputs (several producers, or several tensors
  of one producer), so its start waits for all of them; io_stream: ``bypass`` (another path of partitions
  leads from the producer to the consumer) and ``fifo_depth`` (0: no FIFO), see :func:`fifo_depth`;
- ``partitions``: per partition, the block-design cell name, the IP's VLNV (Vitis HLS's default
  ``xilinx.com:hls:<top>:1.0`` unless the partition says ``vlnv``) and its clock/reset pins.

Where the FIFOs go, and how deep (io_stream). A partition may read its input streams in any order (all of one
before any of the other) and write its outputs interleaved; an AXI4-Stream edge without a FIFO holds no
data, and a broadcaster moves in lockstep. Where two paths from a common source meet (a tensor bypassing one or
more partitions and the path it runs alongside, or two tensors from one partition into one consumer), the
consumer can wait on one path while the producer waits on the other: a deadlock. So every input edge of such
a *reconvergence* consumer gets an ``axis_data_fifo`` that holds a whole tensor (all its beats of one sample):
then every producer can write its whole sample of that tensor without the consumer reading anything, whatever
order the consumer reads in, and the consumer (which finished the previous sample before reading this one)
eventually has all of its inputs. Bypass edges are such edges; the edges they run alongside are too (a
bypass FIFO alone does not help a consumer that reads the bypass first while the other path is stalled).
Edges with no reconvergence need none. Assumptions, stated for the testbench as well: every partition
finishes reading sample n before reading sample n+1; the environment drives every model input stream on its
own and keeps TREADY high on every model output. The depth is a power of two (what ``axis_data_fifo`` accepts,
16 .. 32768) no smaller than the beats; in common-clock mode that FIFO stores at least FIFO_DEPTH beats.
"""

from __future__ import annotations

import re
from typing import Any

from ..common import vectors as vec
from ..common.dagdesc import MODEL_INPUT, MODEL_OUTPUT, edges as dag_edges
from ...errors import FxsplitError

DEFAULT_PART = "xcvu13p-flga2577-2-e"          # hls4ml's Vitis backend default (create_initial_config)
FIFO_MIN, FIFO_MAX = 16, 32768                   # axis_data_fifo FIFO_DEPTH range (powers of two)
TDATA_MAX_BYTES = 512
BROADCAST_MAX = 16                               # axis_broadcaster NUM_MI
RESERVED_PORTS = {"ap_clk", "ap_rst", "ap_start", "in_ready"}
_WORD = re.compile(r"^[A-Za-z0-9_.:/<>,+\-=@%]+$")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# ----------------------------------------------------------------------------- Tcl quoting

def tcl_word(s: str) -> str:
    """One Tcl list element that reads back as ``s`` (what Tcl's ``list`` would write)."""
    if s == "":
        return "{}"
    if _WORD.match(s) and not s.startswith("#"):
        return s
    depth = 0
    braceable = "\\" not in s and s.isascii()
    for ch in s:
        depth += ch == "{"
        depth -= ch == "}"
        if depth < 0:
            braceable = False
    if braceable and depth == 0:
        return "{" + s + "}"
    return "".join("\\" + {"\n": "n", "\r": "r", "\t": "t"}.get(ch, ch) if ch in ' \t\n\r;"$[]{}\\#' else
                   ch if ch.isascii() else f"\\u{ord(ch):04x}" for ch in s)


def tcl_value(v: Any, indent: int = 0) -> str:
    """A JSON value as Tcl: dicts as dicts, lists as lists (nested values braced), scalars as words."""
    pad = " " * indent
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{pad} {tcl_word(str(k))} {tcl_value(x, indent + 1)}" for k, x in v.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(v, (list, tuple)):
        if not v:
            return "{}"
        if all(not isinstance(x, (dict, list, tuple)) for x in v):
            return "{" + " ".join(tcl_value(x) for x in v) + "}"
        return "{\n" + "\n".join(f"{pad} {tcl_value(x, indent + 1)}" for x in v) + f"\n{pad}}}"
    if v is None:
        return "{}"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return repr(v)
    return tcl_word(str(v))


# ----------------------------------------------------------------------------- computed stitch info

def fifo_depth(beats: int) -> int:
    """The smallest FIFO_DEPTH axis_data_fifo accepts that holds ``beats`` beats (a whole tensor)."""
    d = FIFO_MIN
    while d < beats:
        d *= 2
    if d > FIFO_MAX:
        raise FxsplitError(f"a bypass tensor of {beats} beats needs a FIFO deeper than axis_data_fifo's "
                           f"{FIFO_MAX}", hint="cut the model elsewhere, so that this tensor crosses no "
                                               "reconvergent path, or pack more elements per beat")
    return d


def default_vlnv(top: str) -> str:
    return f"xilinx.com:hls:{top}:1.0"


def _pins(arg: dict, role: str) -> list[dict]:
    return [p for p in arg["pins"] if p["role"] == role]


def stitch_info(desc: dict) -> dict:
    """What the Vivado stitcher needs beyond ``stitch.json`` (see the module docstring). Refuses, as
    :class:`FxsplitError`, a description the stitcher could not build."""
    io = desc.get("io_type")
    if io not in ("io_parallel", "io_stream"):
        raise FxsplitError(f"stitch.json: io_type {io!r} is neither io_parallel nor io_stream")
    parts = {p["name"]: p for p in desc["partitions"]}
    for name, p in parts.items():
        if not _IDENT.match(name) or name.startswith("fxs_"):
            raise FxsplitError(f"partition name {name!r} cannot name a block-design cell",
                               hint="use a plain identifier that does not start with fxs_")
        if "interface" not in p:
            raise FxsplitError(f"stitch.json: partition {name!r} has no interface (write it with flow='vitis')")
    ports: dict[str, dict] = {}
    producer: dict[str, str] = {}
    out_arg: dict[str, dict] = {}
    for t in desc["inputs"]:
        ports[t["name"]] = t
        producer[t["name"]] = MODEL_INPUT
    for name, p in parts.items():
        args = {a["port"]: a for a in p["interface"]["outputs"]}
        for t in p["outputs"]:
            if t["name"] in producer:
                raise FxsplitError(f"tensor {t['name']!r} is produced twice ({producer[t['name']]}, {name})")
            if t["name"] not in args:
                raise FxsplitError(f"partition {name!r}: output {t['name']!r} has no pins in its interface")
            ports[t["name"]] = t
            producer[t["name"]] = name
            out_arg[t["name"]] = args[t["name"]]
    for t in [*desc["inputs"], *desc["outputs"]]:
        if t["name"] in RESERVED_PORTS or not _IDENT.match(t["name"]) or t["name"].endswith("_ap_vld"):
            raise FxsplitError(f"model port {t['name']!r} cannot name a block-design port",
                               hint=f"the stitched design uses {sorted(RESERVED_PORTS)}")

    # the edges: every consumer of every tensor; a model output is consumed by 'output'
    edges: list[dict] = []
    for name, p in parts.items():
        args = {a["port"]: a for a in p["interface"]["inputs"]}
        for t in p["inputs"]:
            src = p["sources"].get(t["name"])
            if src is None or producer.get(t["name"]) != src:
                raise FxsplitError(f"partition {name!r}: input {t['name']!r} comes from {src!r}, but "
                                   f"{producer.get(t['name'])!r} produces it")
            if t["name"] not in args:
                raise FxsplitError(f"partition {name!r}: input {t['name']!r} has no pins in its interface")
            edges.append({"tensor": t["name"], "producer": src, "consumer": name, "arg": args[t["name"]]})
    for t in desc["outputs"]:
        src = desc["output_sources"].get(t["name"])
        if src is None or producer.get(t["name"]) != src or src == MODEL_INPUT:
            raise FxsplitError(f"model output {t['name']!r}: source {src!r} does not produce it "
                               "(a model input cannot be a model output here)")
        edges.append({"tensor": t["name"], "producer": src, "consumer": MODEL_OUTPUT, "arg": None})
    for t in producer:
        if not any(e["tensor"] == t for e in edges):
            raise FxsplitError(f"tensor {t!r} is produced by {producer[t]!r} but nothing reads it")

    # per-tensor widths, from the interface of whichever side is an IP
    def element_width(t: str) -> int:
        if t in out_arg:
            return int(out_arg[t]["element_width"])
        return int(next(e["arg"]["element_width"] for e in edges if e["tensor"] == t and e["arg"]))

    def size(t: str) -> int:
        n = 1
        for d in ports[t]["shape"]:
            n *= int(d)
        return n

    tensors: dict[str, dict] = {}
    for t, src in producer.items():
        ew = element_width(t)
        info: dict[str, Any] = {"producer": src, "size": size(t), "element_width": ew, "bits": size(t) * ew,
                                "edges": [i for i, e in enumerate(edges) if e["tensor"] == t]}
        if src != MODEL_INPUT:
            a = out_arg[t]
            info["arg"] = a["arg"]
            data, valid = _pins(a, "data"), _pins(a, "valid")
            if io == "io_parallel":
                data = sorted(data, key=lambda p: p["elements"][0])
                vmap = {p["name"]: p for p in valid}
                groups = {p["elements"][1] for p in data}
                if len(groups) != 1 or sum(p["elements"][1] for p in data) != info["size"]:
                    raise FxsplitError(f"partition {src!r}: the pins of output {t!r} do not cover its "
                                       f"{info['size']} elements in equal groups")
                missing = [p["name"] for p in data if p["name"] + "_ap_vld" not in vmap]
                if missing:
                    raise FxsplitError(f"partition {src!r}: data pins {missing[:3]} have no _ap_vld pin")
                info.update(data=[p["name"] for p in data], valid=[p["name"] + "_ap_vld" for p in data],
                            nv=len(data), pin_width=int(data[0]["width"]))
            else:
                (d,) = data
                info.update(intf=a["arg"], tdata_width=int(d["width"]), beats=int(d["beats"]),
                            pack=int(d["elements"][1]))
        elif io == "io_parallel":
            info.update(data=[t], valid=[f"{t}_ap_vld"], nv=1, pin_width=info["bits"])
        tensors[t] = info

    for e in edges:
        t, info = e["tensor"], tensors[e["tensor"]]
        a = e.pop("arg")
        if a is not None:
            e["arg"] = a["arg"]
            if io == "io_parallel":
                data = sorted(_pins(a, "data"), key=lambda p: p["elements"][0])
                e["data"] = [[p["name"], int(p["elements"][0]), int(p["elements"][1]), int(p["width"])]
                             for p in data]
                e["valid"] = [p["name"] + "_ap_vld" for p in data]
                if sum(p[2] for p in e["data"]) != info["size"] or \
                        any(p[3] != p[2] * info["element_width"] for p in e["data"]):
                    raise FxsplitError(f"partition {e['consumer']!r}: the pins of input {t!r} do not cover its "
                                       f"{info['size']} elements of {info['element_width']} bits")
            else:
                (d,) = _pins(a, "data")
                e["intf"] = a["arg"]
                e["tdata_width"] = int(d["width"])
                e["beats"] = int(d["beats"])
                e["pack"] = int(d["elements"][1])
        if io == "io_stream":
            if info["producer"] == MODEL_INPUT:
                info.setdefault("tdata_width", e.get("tdata_width"))
                info.setdefault("beats", e.get("beats"))
                info.setdefault("pack", e.get("pack"))
                info["intf"] = t
            if e.get("tdata_width", info["tdata_width"]) != info["tdata_width"] or \
                    e.get("beats", info["beats"]) != info["beats"]:
                raise FxsplitError(f"tensor {t!r}: the producer's stream ({info['tdata_width']} bits x "
                                   f"{info['beats']} beats) differs from {e['consumer']!r}'s "
                                   f"({e['tdata_width']} x {e['beats']})")
            if info["tdata_width"] // 8 > TDATA_MAX_BYTES:
                raise FxsplitError(f"tensor {t!r}: {info['tdata_width']}-bit TDATA is wider than the "
                                   f"AXI4-Stream IPs' {TDATA_MAX_BYTES} bytes")
        else:
            e["hold"] = 1

    # bypass and reconvergence per edge: the same analysis the open Verilog stream stitcher uses
    flags = {(f["tensor"], f["consumer"]): f for f in dag_edges(desc)}
    for e in edges:
        f = flags[(e["tensor"], e["consumer"])]
        e["bypass"] = f["bypass"]
        if io == "io_stream":
            e["reconvergent"] = f["reconvergent"]
            e["fifo_depth"] = fifo_depth(tensors[e["tensor"]]["beats"]) if f["reconvergent"] else 0
    if io == "io_stream":
        for t, info in tensors.items():
            if len(info["edges"]) > BROADCAST_MAX:
                raise FxsplitError(f"tensor {t!r} feeds {len(info['edges'])} consumers, more than one "
                                   f"axis_broadcaster's {BROADCAST_MAX}")

    pinfo: dict[str, dict] = {}
    for name, p in parts.items():
        ctrl = p["interface"]["control"]
        rst = [c for c in ctrl if c in ("ap_rst", "ap_rst_n")]
        need = {"ap_clk", "ap_start", "ap_done", "ap_ready"}
        if len(rst) != 1 or not need <= set(ctrl):
            raise FxsplitError(f"partition {name!r}: control pins {ctrl} are not ap_ctrl_hs with one reset")
        ins = [i for i, e in enumerate(edges) if e["consumer"] == name]
        pinfo[name] = {"cell": f"{name}_0", "vlnv": p.get("vlnv") or default_vlnv(name), "reset": rst[0],
                       "inputs": ins, "join": int(len(ins) > 1),
                       "feeds": [i for i, e in enumerate(edges) if e["producer"] == name]}
    period = float(desc.get("clock_period") or 5.0)
    return {"version": 1, "io_type": io, "bd": desc.get("top") or "fxsplit_top",
            "part": desc.get("part") or DEFAULT_PART, "clock_period": period,
            "clock_freq_hz": int(round(1e9 / period)),
            "model_inputs": [t["name"] for t in desc["inputs"]],
            "model_outputs": [t["name"] for t in desc["outputs"]],
            "input_feeds": [i for i, e in enumerate(edges) if e["producer"] == MODEL_INPUT],
            "partitions": pinfo, "tensors": tensors, "edges": edges}


def to_tcl(desc: dict) -> str:
    """The Tcl text that sets ``fxsplit_desc`` to ``desc`` plus the computed ``stitch`` key."""
    value = dict(desc)
    value["stitch"] = stitch_info(desc)
    return ("# fxsplit: the partition DAG description (stitch.json) for tcl/fxsplit_stitch.tcl, as one Tcl value.\n"
            "# Generated by fxsplit.flows.vitis.tcl_desc.to_tcl; relative paths are relative to this file.\n"
            f"set fxsplit_desc {tcl_value(value)}\n")


# ----------------------------------------------------------------------------- the wrapper's testbench

def wrapper_testbench(desc: dict, n_samples: int, tb_name: str = "fxsplit_tb",
                      timeout_cycles: int | None = None) -> str:
    """A self-checking Verilog-2001 testbench for the stitched design's wrapper (``<bd>_wrapper``, the ports
    tcl/fxsplit_stitch.tcl makes), reading ``in_<port>.hex`` / ``exp_<port>.hex`` as ``stitched/vitis/vectors``
    writes them (one line per sample, element 0 in the LSBs). Prints each wrong element as
    ``MISMATCH sample=<i> port=<name> elem=<j> got=<raw> expected=<raw>`` and ends with ``N passed, M failed``
    (the vector files and that report: :mod:`fxsplit.flows.common.vectors`, as in the open RTL flow's
    testbenches).

    io_parallel: a sample enters when ``in_ready`` is high (all inputs and their ``_ap_vld`` for one cycle) and
    leaves when the outputs' ``_ap_vld`` pulse. io_stream: ``ap_start`` held high, every input streamed by its
    own process as fast as TREADY allows, TREADY always high on the outputs (the assumptions of the FIFO
    sizing, see the module docstring)."""
    info = stitch_info(desc)
    T = info["tensors"]
    n = int(n_samples)
    timeout = timeout_cycles or 200000 + 20000 * n
    ins, outs = info["model_inputs"], info["model_outputs"]
    L = ["`timescale 1 ns / 1 ps", f"// generated by fxsplit (tcl_desc.wrapper_testbench) for {info['bd']}_wrapper, "
         f"{info['io_type']}", f"module {tb_name};", f"    localparam integer N = {n};",
         "    reg ap_clk = 1'b0;", "    reg ap_rst = 1'b1;", "    always #5 ap_clk = ~ap_clk;",
         "    integer cycles = 0, n_pass = 0, n_fail = 0, e, s;"]
    conns = [".ap_clk(ap_clk)", ".ap_rst(ap_rst)"]
    stream = info["io_type"] == "io_stream"
    for t in ins + outs:
        L.append(vec.vector_memory(vec.INPUT if t in ins else vec.EXPECTED, t, T[t]["bits"]))
    if not stream:
        L.append("    wire in_ready;")
        conns.append(".in_ready(in_ready)")
        for t in ins:
            L += [f"    reg [{T[t]['bits'] - 1}:0] {t} = 0;", f"    reg {t}_ap_vld = 1'b0;"]
            conns += [f".{t}({t})", f".{t}_ap_vld({t}_ap_vld)"]
        for t in outs:
            L += [f"    wire [{T[t]['bits'] - 1}:0] {t};", f"    wire {t}_ap_vld;"]
            conns += [f".{t}({t})", f".{t}_ap_vld({t}_ap_vld)"]
    else:
        L.append("    reg ap_start = 1'b0;")
        conns.append(".ap_start(ap_start)")
        for t in ins:
            tw = T[t]["tdata_width"]
            L += [f"    reg [{tw - 1}:0] {t}_tdata = 0;", f"    reg {t}_tvalid = 1'b0;", f"    wire {t}_tready;",
                  f"    integer k_{t} = 0;"]
            conns += [f".{t}_tdata({t}_tdata)", f".{t}_tvalid({t}_tvalid)", f".{t}_tready({t}_tready)"]
        for t in outs:
            L += [f"    wire [{T[t]['tdata_width'] - 1}:0] {t}_tdata;", f"    wire {t}_tvalid;",
                  f"    wire {t}_tready = 1'b1;",
                  f"    reg [{T[t]['bits'] - 1}:0] got_{t};", f"    integer k_{t} = 0, checked_{t} = 0;"]
            conns += [f".{t}_tdata({t}_tdata)", f".{t}_tvalid({t}_tvalid)", f".{t}_tready({t}_tready)"]
        L.append("    reg sbad [0:N-1];")
    for t in outs:                     # (got_<t> is a stream output's whole sample: g_/x_ hold one element)
        L += vec.element_regs(f"g_{t}", f"x_{t}", T[t]["element_width"], True)
    L.append(f"    {info['bd']}_wrapper dut ({', '.join(conns)});")
    after = ["for (s = 0; s < N; s = s + 1) sbad[s] = 1'b0;"] if stream else []
    after += ["repeat (8) @(posedge ap_clk);", "ap_rst <= 1'b0;"]
    if stream:
        after.append("@(posedge ap_clk) ap_start <= 1'b1;")
    L += vec.load_vectors(ins, outs, after=after)
    L.append("    always @(posedge ap_clk) cycles <= cycles + 1;")

    def compare(t, got, sample, bad, indent):
        return vec.compare_output(t, t, T[t]["size"], T[t]["element_width"], got, sample, bad, f"g_{t}", f"x_{t}",
                                  indent)
    if not stream:
        first = ins[0]
        L += ["    integer i_in = 0, i_out = 0, bad;",
              "    always @(posedge ap_clk) begin",
              f"        if (!ap_rst && i_in < N && in_ready && !{first}_ap_vld) begin"]
        for t in ins:
            L += [f"            {t} <= {vec.memory(vec.INPUT, t)}[i_in];", f"            {t}_ap_vld <= 1'b1;"]
        L += ["            i_in <= i_in + 1;", "        end else begin"]
        L += [f"            {t}_ap_vld <= 1'b0;" for t in ins]
        L += ["        end", "    end"]
        # some but not all outputs valid: the sample fails as a whole
        partial = [f"        else if ({' || '.join(f'{t}_ap_vld === 1' for t in outs)}) begin",
                   "            " + vec.mismatch_display("valid", "i_out", 0, 0, 1),
                   "            n_fail = n_fail + 1;",
                   "            i_out = i_out + 1;", "        end"]
        L += vec.check_in_order("ap_clk", " && ".join(f"{t}_ap_vld === 1" for t in outs),
                                [x for t in outs for x in compare(t, t, "i_out", "bad = 1;", 12)], timeout, partial)
    else:
        for t in ins:
            beats, pw = T[t]["beats"], T[t]["pack"] * T[t]["element_width"]
            pad = T[t]["tdata_width"] - pw
            data = f"{vec.memory(vec.INPUT, t)}[k_{t} / {beats}][(k_{t} % {beats})*{pw} +: {pw}]"
            L += [f"    always @(posedge ap_clk) if (!ap_rst && (!{t}_tvalid || {t}_tready)) begin",
                  f"        if (k_{t} < N * {beats}) begin",
                  (f"            {t}_tdata <= {{{{{pad}{{1'b0}}}}, {data}}};" if pad else
                   f"            {t}_tdata <= {data};"),
                  f"            {t}_tvalid <= 1'b1; k_{t} <= k_{t} + 1;",
                  f"        end else {t}_tvalid <= 1'b0;", "    end"]
        for t in outs:
            beats, pw = T[t]["beats"], T[t]["pack"] * T[t]["element_width"]
            L += [f"    always @(posedge ap_clk) if (!ap_rst && {t}_tvalid && {t}_tready) begin",
                  f"        got_{t}[(k_{t} % {beats})*{pw} +: {pw}] <= {t}_tdata[{pw - 1}:0];",
                  f"        k_{t} <= k_{t} + 1;", "    end",
                  f"    always @(negedge ap_clk) if (k_{t} / {beats} > checked_{t} && checked_{t} < N) begin"]
            L += compare(t, f"got_{t}", f"checked_{t}", f"sbad[checked_{t}] = 1'b1;", 8)
            L += [f"        checked_{t} = checked_{t} + 1;", "    end"]
        done = " && ".join(f"checked_{t} >= N" for t in outs)
        body = [vec.timeout_display(f"!({done})", "not every output came out for every sample"),
                "for (s = 0; s < N; s = s + 1)",
                f"    if (!sbad[s] && {' && '.join(f'checked_{t} > s' for t in outs)}) n_pass = n_pass + 1;"
                " else n_fail = n_fail + 1;"]
        L += ["    always @(negedge ap_clk) begin"]
        L += vec.finish_lines(f"({done}) || cycles > {timeout}", body, "n_pass", "n_fail") + ["    end"]
    L.append("endmodule")
    return "\n".join(L) + "\n"


__all__ = ["to_tcl", "stitch_info", "fifo_depth", "tcl_word", "tcl_value", "default_vlnv", "wrapper_testbench",
           "DEFAULT_PART"]
