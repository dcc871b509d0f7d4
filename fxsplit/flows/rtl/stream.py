"""The open RTL flow's stream interface: the same partitions, stitched by AXI4-Stream handshakes.

The pipelined top (:mod:`.stitch`) runs every partition on one schedule and balances paths with delay
lines; nothing may stall. This top instead lets any input pause and any output refuse (``TVALID`` /
``TREADY``, port names ``<tensor>_TDATA``/``_TVALID``/``_TREADY`` as Vitis HLS names an ``axis`` port),
which is what the partitions of a vendor io_stream design do, and proves the stream stitching in
simulation (``RTLDesign.verify(..., interface="axis")``, random input gaps and output backpressure).

- **Shell per partition** (``fxs_shell_<p>``): the partition's free-running pipeline (latency ``L``,
  II=1) behind a join and a credit counter. It fires when every input holds a beat and every output
  queue has room for everything in flight; each output has a queue of ``L + 2`` whole tensors, so a
  result leaving the pipeline always has a place (the pipeline cannot stall, the credits guarantee it).
- **Edges**: every tensor forks to its consumers (a beat leaves when every consumer's FIFO has room),
  and every edge has a FIFO (``fxs_axis_fifo``). A *reconvergent* edge (:func:`fxsplit.flows.common.dagdesc.edges`,
  the same analysis the Vivado stitcher in ``flows/vitis/tcl/`` uses) gets a FIFO as deep as the delay
  its path needs on the stream schedule, plus two, so the shorter path never throttles the longer one;
  any other edge gets two entries.
- A beat here is a whole tensor (one sample), so every partition consumes one beat per input and
  produces one per output per sample, and no FIFO depth can deadlock the design: depths set throughput
  only (a test builds the design with every FIFO at one entry and checks it still completes, slower).

Plain Verilog-2001; ``rst`` (synchronous, active high) clears FIFOs and counters.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..common.dagdesc import MODEL_INPUT, MODEL_OUTPUT, edges as dag_edges
from ...errors import FxsplitError
from .names import verilog_name
from .rtltype import parse_precision
from .stitch import dag_objects, schedule

SHELL_EXTRA = 2          # cycles a hop adds on the stream schedule (the shell's queue, the edge FIFO)

FIFO_MODULE = """// fxsplit: a synchronous FIFO with valid/ready on both sides (first word falls through)
module fxs_axis_fifo #(parameter W = 1, parameter DEPTH = 2, parameter AW = 1, parameter CW = 2) (
    input clk,
    input rst,
    input [W-1:0] s_data,
    input s_valid,
    output s_ready,
    output [W-1:0] m_data,
    output m_valid,
    input m_ready,
    output [CW-1:0] count
);
    reg [W-1:0] mem [0:DEPTH-1];
    reg [AW-1:0] rd = 0;
    reg [AW-1:0] wr = 0;
    reg [CW-1:0] n = 0;
    wire do_push = s_valid && s_ready;
    wire do_pop = m_valid && m_ready;
    assign s_ready = (n != DEPTH);
    assign m_valid = (n != 0);
    assign m_data = mem[rd];
    assign count = n;
    always @(posedge clk) begin
        if (rst) begin
            rd <= 0;
            wr <= 0;
            n <= 0;
        end else begin
            if (do_push) begin
                mem[wr] <= s_data;
                wr <= (wr == DEPTH - 1) ? 0 : wr + 1;
            end
            if (do_pop)
                rd <= (rd == DEPTH - 1) ? 0 : rd + 1;
            if (do_push && !do_pop)
                n <= n + 1;
            else if (do_pop && !do_push)
                n <= n - 1;
        end
    end
endmodule
"""


def _clog2(n: int) -> int:
    return max(1, (int(n) - 1).bit_length())


def _bits(port) -> int:
    n = 1
    for d in port.shape:
        n *= int(d)
    return n * parse_precision(port.precision)[1]


def _fifo(inst: str, width: int, depth: int, s: tuple[str, str, str], m: tuple[str, str, str],
          count: str = "") -> str:
    aw, cw = _clog2(depth), _clog2(depth + 1) + 1
    return (f"    fxs_axis_fifo #(.W({width}), .DEPTH({depth}), .AW({aw}), .CW({cw})) {inst} (.clk(clk), .rst(rst), "
            f".s_data({s[0]}), .s_valid({s[1]}), .s_ready({s[2]}), .m_data({m[0]}), .m_valid({m[1]}), "
            f".m_ready({m[2]}), .count({count}));")


def _shell(part, meta: Mapping[str, Any]) -> str:
    """``fxs_shell_<p>``: the partition behind a join, a credit counter and one queue per output."""
    lat = int(meta["latency"])
    depth = lat + SHELL_EXTRA
    cw = _clog2(depth + 1) + 1
    vn = verilog_name
    L = [f"// partition {part.name}: pipeline latency {lat}, output queues of {depth}",
         f"module fxs_shell_{vn(part.name)} (", "    input clk,", "    input rst,"]
    decl = []
    for i in part.inputs:
        decl += [f"    input [{_bits(i) - 1}:0] {vn(i.name)}_TDATA", f"    input {vn(i.name)}_TVALID",
                 f"    output {vn(i.name)}_TREADY"]
    for o in part.outputs:
        decl += [f"    output [{_bits(o) - 1}:0] {vn(o.name)}_TDATA", f"    output {vn(o.name)}_TVALID",
                 f"    input {vn(o.name)}_TREADY"]
    L.append(",\n".join(decl))
    L.append(");")
    L.append("    wire fxs_fire;")
    L.append("    wire fxs_ov;")
    L.append(f"    reg [{cw - 1}:0] fxs_inflight = 0;")
    room = []
    for o in part.outputs:
        L.append(f"    wire [{_bits(o) - 1}:0] fxs_y_{vn(o.name)};")
        L.append(f"    wire [{cw - 1}:0] fxs_n_{vn(o.name)};")
        room.append(f"(fxs_n_{vn(o.name)} + fxs_inflight < {depth})")
    valid = " && ".join(f"{vn(i.name)}_TVALID" for i in part.inputs) or "1'b1"
    L.append(f"    assign fxs_fire = {valid} && {' && '.join(room)};")
    for i in part.inputs:
        L.append(f"    assign {vn(i.name)}_TREADY = fxs_fire;")
    L.append("    always @(posedge clk) begin")
    L.append("        if (rst) fxs_inflight <= 0;")
    L.append("        else if (fxs_fire && !fxs_ov) fxs_inflight <= fxs_inflight + 1;")
    L.append("        else if (fxs_ov && !fxs_fire) fxs_inflight <= fxs_inflight - 1;")
    L.append("    end")
    conns = [".clk(clk)", ".in_valid(fxs_fire)", ".out_valid(fxs_ov)"]
    conns += [f".{vn(i.name)}({vn(i.name)}_TDATA)" for i in part.inputs]
    conns += [f".{vn(o.name)}(fxs_y_{vn(o.name)})" for o in part.outputs]
    L.append(f"    {meta['top']} fxs_core (" + ", ".join(conns) + ");")
    for o in part.outputs:
        v = vn(o.name)
        L.append(_fifo(f"fxs_q_{v}", _bits(o), depth, (f"fxs_y_{v}", "fxs_ov", ""), (f"{v}_TDATA", f"{v}_TVALID", f"{v}_TREADY"),
                       f"fxs_n_{v}"))
    L.append("endmodule")
    return "\n".join(L)


def edge_depths(dag: Mapping[str, Any], rtl: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Every edge (:func:`fxsplit.flows.common.dagdesc.edges`) with its FIFO depth on the stream schedule."""
    parts, inputs, outputs, _src = dag_objects(dag)
    start, ready = schedule(parts, {n: {"latency": int(m["latency"]) + SHELL_EXTRA} for n, m in rtl.items()})
    for i in inputs:
        ready[i.name] = 0
    out = []
    for e in dag_edges(dag):
        # a model output is never reconvergent (dagdesc): only partition inputs get deep FIFOs
        depth = start[e["consumer"]] - ready[e["tensor"]] + SHELL_EXTRA if e["reconvergent"] else SHELL_EXTRA
        out.append(dict(e, depth=max(1, depth)))
    return out


def generate_stream_stitched(top: str, dag: Mapping[str, Any], rtl: Mapping[str, Mapping[str, Any]],
                             depth_override: int | None = None) -> tuple[str, list[dict]]:
    """Verilog of the stream top ``top`` (FIFO module, one shell per partition, the top), and its edges
    with their FIFO depths. ``depth_override`` sets every FIFO depth (tests: deadlock freedom)."""
    parts, inputs, outputs, _src = dag_objects(dag)
    ports = {p.name: p for p in inputs}
    for part in parts:
        for o in part.outputs:
            ports[o.name] = o
    edges = edge_depths(dag, rtl)
    if depth_override is not None:
        edges = [dict(e, depth=int(depth_override)) for e in edges]
    for e in edges:
        if e["producer"] is None or (e["producer"] != MODEL_INPUT and e["producer"] not in rtl):
            raise FxsplitError(f"tensor {e['tensor']!r}: no partition produces it")
    vn = verilog_name
    L = ["// Generated by fxsplit: stream-stitched RTL top (Verilog-2001), AXI4-Stream valid/ready per tensor",
         "`timescale 1 ns / 1 ps", FIFO_MODULE]
    for part in parts:
        L.append(_shell(part, rtl[part.name]))
    L += [f"module {top} (", "    input clk,", "    input rst,"]
    decl = []
    for i in inputs:
        decl += [f"    input [{_bits(i) - 1}:0] {vn(i.name)}_TDATA", f"    input {vn(i.name)}_TVALID",
                 f"    output {vn(i.name)}_TREADY"]
    for o in outputs:
        decl += [f"    output [{_bits(o) - 1}:0] {vn(o.name)}_TDATA", f"    output {vn(o.name)}_TVALID",
                 f"    input {vn(o.name)}_TREADY"]
    L.append(",\n".join(decl))
    L.append(");")
    # each tensor's source stream: a model input port, or its partition shell's output (s_<tensor>_*)
    model_in = {i.name for i in inputs}

    def src(t: str) -> str:
        return vn(t) if t in model_in else f"fxs_s_{vn(t)}"

    for name, port in ports.items():
        if name not in model_in:
            s = src(name)
            L += [f"    wire [{_bits(port) - 1}:0] {s}_TDATA;", f"    wire {s}_TVALID;", f"    wire {s}_TREADY;"]
    # edges: fork (a beat leaves when every consumer FIFO has room) and one FIFO per edge
    by_tensor: dict[str, list[int]] = {}
    for k, e in enumerate(edges):
        by_tensor.setdefault(e["tensor"], []).append(k)
    for t, ks in by_tensor.items():
        v, b = src(t), _bits(ports[t])
        L.append(f"    // tensor {t}: {len(ks)} consumer(s)")
        for k in ks:
            L += [f"    wire fxs_e{k}_s_ready;", f"    wire [{b - 1}:0] fxs_e{k}_m_data;", f"    wire fxs_e{k}_m_valid;",
                  f"    wire fxs_e{k}_m_ready;"]
        all_ready = " && ".join(f"fxs_e{k}_s_ready" for k in ks)
        L.append(f"    assign {v}_TREADY = {all_ready};")
        for k in ks:
            e = edges[k]
            L.append(f"    // edge {k}: {e['producer']} -> {e['consumer']}"
                     + (" (reconvergent)" if e["reconvergent"] else "") + f", depth {e['depth']}")
            L.append(_fifo(f"fxs_f{k}", b, e["depth"], (f"{v}_TDATA", f"{v}_TVALID && {all_ready}", f"fxs_e{k}_s_ready"),
                           (f"fxs_e{k}_m_data", f"fxs_e{k}_m_valid", f"fxs_e{k}_m_ready")))
    # consumers
    edge_of = {(e["tensor"], e["consumer"]): k for k, e in enumerate(edges)}
    for part in parts:
        conns = [".clk(clk)", ".rst(rst)"]
        for i in part.inputs:
            k = edge_of[(i.name, part.name)]
            conns += [f".{vn(i.name)}_TDATA(fxs_e{k}_m_data)", f".{vn(i.name)}_TVALID(fxs_e{k}_m_valid)",
                      f".{vn(i.name)}_TREADY(fxs_e{k}_m_ready)"]
        for o in part.outputs:
            s = src(o.name)
            conns += [f".{vn(o.name)}_TDATA({s}_TDATA)", f".{vn(o.name)}_TVALID({s}_TVALID)",
                      f".{vn(o.name)}_TREADY({s}_TREADY)"]
        L.append(f"    fxs_shell_{vn(part.name)} fxs_u_{vn(part.name)} (\n        " + ",\n        ".join(conns) + "\n    );")
    for o in outputs:
        k = edge_of[(o.name, MODEL_OUTPUT)]
        L += [f"    assign {vn(o.name)}_TDATA = fxs_e{k}_m_data;", f"    assign {vn(o.name)}_TVALID = fxs_e{k}_m_valid;",
              f"    assign fxs_e{k}_m_ready = {vn(o.name)}_TREADY;"]
    L.append("endmodule")
    return "\n".join(L) + "\n", edges
