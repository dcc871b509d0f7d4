// fxsplit io_parallel glue for the Vivado stitcher (tcl/fxsplit_stitch.tcl), added to the block design as
// module references. Plain Verilog-2001, one port per line (tests/tcl/mock_vivado.tcl reads these headers).
//
// A Vitis HLS ap_vld output is a one-cycle pulse, while the partition that reads the tensor may still be busy
// with the previous sample, and a partition with several inputs must wait until every one has arrived. So
// every edge of the partition DAG (every consumer of every tensor, and every model output) gets a hold:
//
//   fxsplit_hold  latches each valid group of its tensor (one group per Vitis HLS data pin: one element of a
//                 partitioned array, or the whole reshaped array) on that group's valid, and keeps the tensor
//                 until its consumer has read it (fire & ack). `full`/`empty` are chained through the
//                 prev_*/all_* pins, so a partition's holds AND together without a variable-width gate.
//   fxsplit_join  one per partition: starts it (ap_ctrl_hs: ap_start held until ap_ready) when every input
//                 hold is full (inputs_full, the end of its input chain), every hold its outputs feed is
//                 empty (outputs_free, the end of its output chain) and no run of it is in flight
//                 (ap_start & ap_ready .. ap_done). Its ap_start is also every input hold's `fire` (the
//                 consumer's input ap_vld), and the partition's ap_ready is their `ack`.
//
// One sample at a time per partition and one slot per edge: a producer never writes into a hold that still
// holds data (it is only started when all of them are empty, and has no run in flight), so nothing is lost;
// and every cycle of the "waits for" graph of a DAG with one-slot edges passes through a free slot, so it
// cannot deadlock. Partitions still overlap along the DAG (a pipeline of samples).

`timescale 1 ns / 1 ps

module fxsplit_hold #(
    parameter integer W = 16,
    parameter integer NV = 1
) (
    (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" *)
    (* X_INTERFACE_PARAMETER = "ASSOCIATED_RESET ap_rst" *)
    input  wire          ap_clk,
    (* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 ap_rst RST" *)
    (* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_HIGH" *)
    input  wire          ap_rst,
    input  wire [W-1:0]  din,
    input  wire [NV-1:0] din_vld,
    input  wire          prev_full,
    output wire          all_full,
    input  wire          prev_free,
    output wire          all_free,
    input  wire          fire,
    input  wire          ack,
    output wire [W-1:0]  dout,
    output wire          dout_vld
);
    localparam integer G = W / NV;     // bits per valid group (W is a multiple of NV)
    reg [W-1:0]  data;
    reg [NV-1:0] got;
    wire full = &got;
    wire empty = ~|got;
    assign all_full = prev_full & full;
    assign all_free = prev_free & empty;
    assign dout = data;
    assign dout_vld = fire & full;
    integer g;
    always @(posedge ap_clk) begin
        if (ap_rst) begin
            got <= {NV{1'b0}};
        end else if (fire & ack) begin
            got <= {NV{1'b0}};
        end else begin
            got <= got | din_vld;
        end
        for (g = 0; g < NV; g = g + 1)
            if (din_vld[g]) data[g*G +: G] <= din[g*G +: G];
    end
endmodule

module fxsplit_join (
    (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" *)
    (* X_INTERFACE_PARAMETER = "ASSOCIATED_RESET ap_rst" *)
    input  wire ap_clk,
    (* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 ap_rst RST" *)
    (* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_HIGH" *)
    input  wire ap_rst,
    input  wire inputs_full,
    input  wire outputs_free,
    output wire ap_start,
    input  wire ap_ready,
    input  wire ap_done
);
    reg busy;
    assign ap_start = inputs_full & outputs_free & ~busy;
    always @(posedge ap_clk) begin
        if (ap_rst)
            busy <= 1'b0;
        else if (ap_start & ap_ready & ~ap_done)
            busy <= 1'b1;
        else if (ap_done)
            busy <= 1'b0;
    end
endmodule
