"""A streaming (io_stream) Conv2d of the open RTL flow: one hls4ml io_stream convolution as a Verilog module with
AXI4-Stream ports, bit-exact against hls4ml's io_stream C simulation.

hls4ml's io_stream convolution (``nnet_conv2d_stream.h``, ``nnet_conv_stream.h``, line-buffer implementation)
reads one pixel per stream beat (all C channels, channels-last, row by row), keeps the last ``fh - 1`` rows in line
buffers and a ``fh x fw`` window of pixels, and whenever the window is complete and aligned to the stride (valid
convolution: padding is a separate ZeroPadding2D layer before it) computes the output pixel with the same dense
kernel as a Dense layer over the window's ``fh*fw*C`` inputs (order ``ky, kx, c``, the weight layout). Its result is
one beat of F filters.

The module here does the same:

- **Line buffer**: one shift register of ``(fh - 1) * W`` pixels, advanced on every accepted input beat; the pixel
  ``r`` rows above the current one is the one accepted ``r * W`` beats ago.
- **Window**: ``fh x fw`` pixel registers shifted left on every accepted beat, the new column (the input pixel and
  the pixels above it from the line buffer) entering on the right.
- **Counters**: ``px``/``py`` position of the accepted beat, wrapping at ``W`` and ``H``; frames follow each other
  back to back with the state kept (as hls4ml's static state), so a new frame needs no reset. A beat at
  ``(py, px)`` completes an output window when ``py >= fh-1``, ``px >= fw-1`` and both are aligned to the stride.
- **Kernel**: the per-pixel dense program (:func:`pixel_program`) lowered by da4ml (:func:`emit_verilog`), a free
  running pipeline of fixed latency ``L`` (it never stalls); it reads the window registers the cycle after the
  beat that completed it.
- **Flow control**: an output FIFO of ``L + 3`` beats (first word falls through) and a credit counter of the pixels
  in flight in the kernel. A beat that completes a window is accepted only while the pixels in flight plus the
  FIFO's occupancy leave a free entry, so every result leaving the kernel has a place; a beat that does not
  complete a window is accepted whenever it comes. No beat is lost or duplicated under any pattern of input gaps
  and output backpressure; with neither, one input beat is accepted per cycle.

Pins: ``clk``; ``rst_n``, an active-low *synchronous* reset (one cycle is enough) that clears the position and
stride counters, the credit counter, the kernel's valid pipeline and the FIFO (the line buffer, window and kernel
data are not cleared: no pixel is read before it is written in a frame, and no result leaves without its valid);
``in_TDATA`` (C elements of the input type, element 0 in the LSBs, raw two's complement), ``in_TVALID``,
``in_TREADY`` (low during reset); ``out_TDATA`` (F elements of the result type, same packing), ``out_TVALID``,
``out_TREADY``. Frames need no reset between them; after a reset the next beat is pixel (0, 0) of a frame.
Plain Verilog-2001.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from ...errors import FxsplitError
from .emit import emit_verilog

FIFO_EXTRA = 3      # output FIFO depth = kernel latency + this (one input beat per cycle without backpressure)


def _geometry(entry: dict) -> dict:
    if entry.get('kind') != 'conv':
        raise FxsplitError(f"stream convolution: layer {entry.get('name')!r} is not a convolution")
    H, W = (int(v) for v in entry['in_hw'])
    fh, fw = (int(v) for v in entry['filt'])
    sh, sw = (int(v) for v in entry['stride'])
    C, F = int(entry['n_chan']), int(entry['n_filt'])
    if tuple(int(p) for p in entry.get('pad', (0, 0))) != (0, 0):
        raise FxsplitError(f"stream convolution: layer {entry.get('name')!r} has padding; hls4ml's io_stream "
                           'convolution pads in a separate ZeroPadding2D layer', hint='use padding=0 in the conv')
    OH, OW = (H - fh) // sh + 1, (W - fw) // sw + 1
    if tuple(int(v) for v in entry['out_hw']) != (OH, OW):
        raise FxsplitError(f"stream convolution: layer {entry.get('name')!r}: output {tuple(entry['out_hw'])} is not "
                           f'the valid convolution output {(OH, OW)}')
    if fh == 1 and sh != 1 and entry.get('class_name') != 'PointwiseConv2D':
        # hls4ml's io_stream line buffer handles filt_height == 1 with its 1-d kernel, which ignores stride_height
        raise FxsplitError(f"stream convolution: layer {entry.get('name')!r}: a 1-row filter with a vertical "
                           'stride is not reproduced', hint='use stride 1 for 1xN filters')
    return dict(H=H, W=W, fh=fh, fw=fw, sh=sh, sw=sw, C=C, F=F, OH=OH, OW=OW)


def pixel_program(entry: dict, x_t: tuple) -> dict:
    """The program (:func:`emit_verilog`'s format) of ONE output pixel of conv ``entry``: input ``win``, the window's
    ``fh*fw*C`` elements of type ``x_t`` in the order ``ky, kx, c`` (element ``(ky*fw + kx)*C + c`` is the pixel
    ``fh-1-ky`` rows above and ``fw-1-kx`` columns left of the newest one, channel ``c``), output ``pix``, the F
    filters of the result type; the conv's weights, bias and types as a Dense layer (hls4ml's per-pixel kernel)."""
    g = _geometry(entry)
    n_in = g['fh'] * g['fw'] * g['C']
    weight = np.asarray(entry['weight'], dtype=np.float64).reshape(n_in, g['F'])
    layer = {'name': f"{entry['name']}_pixel", 'class_name': 'Dense', 'kind': 'dense', 'inputs': ['win'],
             'output': 'pix', 'out_shape': (g['F'],), 'res_t': tuple(entry['res_t']), 'w_t': tuple(entry['w_t']),
             'acc_t': tuple(entry['acc_t']), 'weight': weight, 'bias_acc': np.asarray(entry['bias_acc'])}
    return {'version': 1, 'partition': entry['name'],
            'inputs': [{'var': 'win', 'shape': (n_in,), 'type': tuple(x_t), 'port': 'win'}],
            'outputs': [{'var': 'pix', 'shape': (g['F'],), 'type': tuple(entry['res_t']), 'port': 'pix'}],
            'layers': [layer]}


def _clog2(n: int) -> int:
    return max(1, (int(n) - 1).bit_length())


def check_module_names(*names: str) -> None:
    for name in names:
        if not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', name):
            raise FxsplitError(f'streaming RTL: invalid Verilog module name {name!r}')


def shell_declarations(depth: int) -> list[str]:
    """The signals shared by a kernel shell's input side and its back end (:func:`shell_back_end`): the credit
    counter, the FIFO's occupancy, ``fire`` (the kernel's input is valid this cycle) and ``room`` (a new result
    has a place)."""
    cw = _clog2(depth + 1) + 1
    return [f'    reg [{cw - 1}:0] inflight = 0;', f'    reg [{cw - 1}:0] fifo_n = 0;', "    reg fire = 1'b0;",
            f'    wire room = (inflight + fifo_n) < {depth};', '    wire kout_valid;']


def shell_back_end(kernel_module: str, kernel_ports: str, out_bits: int, latency: int, depth: int,
                   take: str = 'take') -> list[str]:
    """A kernel shell's back end: the free-running kernel ``kernel_module`` (instance connections
    ``kernel_ports``, its result on the wire ``pix``), its valid pipeline of ``latency`` cycles cleared by reset,
    the credit counter (a computation counts from the cycle its input beat is accepted, ``take``, until its result
    enters the FIFO) and the output FIFO of ``depth`` beats (first word falls through) driving ``out_TDATA``,
    ``out_TVALID``; ``out_TREADY`` pops it."""
    L, OWB = int(latency), int(out_bits)
    aw = _clog2(depth)
    o = [f'    wire [{OWB - 1}:0] pix;',
         f'    {kernel_module} kernel (.clk(clk), .in_valid(fire), .out_valid(), {kernel_ports}, .pix(pix));']
    if L > 0:
        o.append(f"    reg [{L - 1}:0] kvalid = {L}'d0;")
        shift = 'fire' if L == 1 else f'{{kvalid[{L - 2}:0], fire}}'
        o.append(f"    always @(posedge clk) kvalid <= rst_n ? {shift} : {L}'d0;")
        o.append(f'    assign kout_valid = kvalid[{L - 1}];')
    else:
        o.append('    assign kout_valid = fire;')
    o += ['    always @(posedge clk) begin',
          '        if (!rst_n) inflight <= 0;',
          f'        else if ({take} && !kout_valid) inflight <= inflight + 1;',
          f'        else if (kout_valid && !{take}) inflight <= inflight - 1;',
          '    end']
    o += [f'    reg [{OWB - 1}:0] fifo [0:{depth - 1}];', f'    reg [{aw - 1}:0] rd = 0;',
          f'    reg [{aw - 1}:0] wr = 0;',
          '    wire pop = out_TVALID && out_TREADY;',
          '    assign out_TVALID = (fifo_n != 0);', '    assign out_TDATA = fifo[rd];',
          '    always @(posedge clk) begin',
          '        if (!rst_n) begin',
          '            rd <= 0; wr <= 0; fifo_n <= 0;',
          '        end else begin',
          '            if (kout_valid) begin',
          '                fifo[wr] <= pix;',
          f'                wr <= (wr == {depth - 1}) ? 0 : wr + 1;',
          '            end',
          f'            if (pop) rd <= (rd == {depth - 1}) ? 0 : rd + 1;',
          '            if (kout_valid && !pop) fifo_n <= fifo_n + 1;',
          '            else if (pop && !kout_valid) fifo_n <= fifo_n - 1;',
          '        end',
          '    end']
    return o


def window_stream_verilog(module: str, kernel_module: str, g: dict, in_bits: int, out_bits: int, latency: int,
                          title: str) -> str:
    """Verilog-2001 of a streaming window unit ``module``: line buffer, ``fh x fw`` window, stride counters and the
    per-window kernel ``kernel_module`` (ports ``clk``, ``in_valid``, ``out_valid``, ``win``: the window's
    ``fh*fw`` pixels, ``pix``: one output beat; pipelined with ``latency`` cycles). ``g``: the geometry (``H``,
    ``W``, ``fh``, ``fw``, ``sh``, ``sw``); ``in_bits``/``out_bits``: one input/output beat. A convolution, a
    pooling window (stride equal to the pool) and a per-pixel layer (1x1, stride 1) are all this unit. Ports and
    behaviour: see the module docstring."""
    check_module_names(module, kernel_module)
    H, W, fh, fw, sh, sw = (int(g[k]) for k in ('H', 'W', 'fh', 'fw', 'sh', 'sw'))
    PW, OWB, L = int(in_bits), int(out_bits), int(latency)
    NW = fh * fw * PW             # the window
    depth = L + FIFO_EXTRA
    xcw, ycw = _clog2(W), _clog2(H)
    scw_x, scw_y = _clog2(sw + 1), _clog2(sh + 1)
    nlb = (fh - 1) * W
    o = [f'// Generated by fxsplit (RTL flow, da4ml): {title}',
         f'// input {H}x{W} pixels of {PW} bits, window {fh}x{fw}, stride {sh}x{sw}, output beats of {OWB} bits',
         f'// kernel {kernel_module}: latency {L}; output FIFO depth {depth}',
         '`timescale 1 ns / 1 ps', f'module {module} (', '    input clk,', '    input rst_n,',
         f'    input [{PW - 1}:0] in_TDATA,', '    input in_TVALID,', '    output in_TREADY,',
         f'    output [{OWB - 1}:0] out_TDATA,', '    output out_TVALID,', '    input out_TREADY', ');']
    o += shell_declarations(depth)
    # position of the next beat, and the stride phase of x and y (0: aligned)
    o += [f'    reg [{xcw - 1}:0] px = 0;', f'    reg [{ycw - 1}:0] py = 0;',
          f'    reg [{scw_x - 1}:0] phx = 0;', f'    reg [{scw_y - 1}:0] phy = 0;']
    # the beat at (py, px) completes an aligned window
    o.append(f"    wire emits = (py >= {fh - 1}) && (px >= {fw - 1}) && (phx == 0) && (phy == 0);")
    o.append('    assign in_TREADY = rst_n && (!emits || room);')
    o.append('    wire accept = in_TVALID && in_TREADY;')
    o.append('    wire take = accept && emits;')
    # counters: the stride phase counts from the first full window position; it stays 0 before it
    o += ['    always @(posedge clk) begin',
          '        if (!rst_n) begin',
          "            px <= 0; py <= 0; phx <= 0; phy <= 0; fire <= 1'b0;",
          '        end else begin',
          '            fire <= take;',
          '            if (accept) begin',
          f'                if (px == {W - 1}) begin',
          '                    px <= 0;',
          '                    phx <= 0;',
          f'                    if (py == {H - 1}) begin',
          '                        py <= 0;',
          '                        phy <= 0;',
          '                    end else begin',
          '                        py <= py + 1;',
          f'                        if (py >= {fh - 1}) phy <= (phy == {sh - 1}) ? 0 : phy + 1;',
          '                    end',
          '                end else begin',
          '                    px <= px + 1;',
          f'                    if (px >= {fw - 1}) phx <= (phx == {sw - 1}) ? 0 : phx + 1;',
          '                end',
          '            end',
          '        end',
          '    end']
    # line buffer: lb[k] = the pixel accepted k+1 beats ago
    col = ['in_TDATA'] + [f'lb[{r * W - 1}]' for r in range(1, fh)]       # col[r]: r rows above
    if nlb:
        o += [f'    reg [{PW - 1}:0] lb [0:{nlb - 1}];', '    integer k;',
              '    always @(posedge clk) if (accept) begin',
              '        lb[0] <= in_TDATA;',
              f'        for (k = 1; k < {nlb}; k = k + 1) lb[k] <= lb[k - 1];',
              '    end']
    # window: win_r[ky][kx] flattened to wreg[(ky*fw + kx)], kx = fw-1 the newest column
    o += [f'    reg [{PW - 1}:0] wreg [0:{fh * fw - 1}];', f'    wire [{NW - 1}:0] win;']
    o.append('    always @(posedge clk) if (accept) begin')
    for ky in range(fh):
        for kx in range(fw - 1):
            o.append(f'        wreg[{ky * fw + kx}] <= wreg[{ky * fw + kx + 1}];')
        o.append(f'        wreg[{ky * fw + fw - 1}] <= {col[fh - 1 - ky]};')
    o.append('    end')
    for n in range(fh * fw):
        o.append(f'    assign win[{(n + 1) * PW - 1}:{n * PW}] = wreg[{n}];')
    o += shell_back_end(kernel_module, '.win(win)', OWB, L, depth)
    o.append('endmodule')
    return '\n'.join(o) + '\n'


def conv_stream_verilog(module: str, kernel_module: str, entry: dict, x_t: tuple, latency: int) -> str:
    """Verilog-2001 of the streaming convolution ``module`` around the per-pixel kernel ``kernel_module`` (the
    :func:`emit_verilog` wrapper of :func:`pixel_program`: ports ``clk``, ``in_valid``, ``out_valid``, ``win``,
    ``pix``; pipelined with ``latency`` cycles). Ports and behaviour: see the module docstring."""
    g = _geometry(entry)
    xw, rw = int(x_t[1]), int(entry['res_t'][1])
    title = (f'streaming Conv2d {entry["name"]!r}, hls4ml io_stream line buffer; {g["H"]}x{g["W"]}x{g["C"]} '
             f'({xw}-bit elements) to {g["OH"]}x{g["OW"]}x{g["F"]} ({rw}-bit elements)')
    return window_stream_verilog(module, kernel_module, g, g['C'] * xw, g['F'] * rw, latency, title)


def emit_conv_stream(entry: dict, x_t: tuple, workdir: str, module: str, latency_cutoff: float | None = 5.0,
                     solver_options: dict | None = None) -> dict:
    """Write the per-pixel da4ml kernel (``<module>_kernel``, :func:`emit_verilog` of :func:`pixel_program`) and the
    streaming wrapper ``module`` into ``workdir``. Returns JSON-able metadata: ``top``, ``files`` (relative to
    ``workdir``, dependencies first), ``latency`` (the kernel's), ``fifo_depth``, ``in_bits``/``out_bits`` (beat
    widths), ``in_elem_bits``/``out_elem_bits``, the geometry and the kernel's metadata."""
    g = _geometry(entry)
    kmod = f'{module}_kernel'
    kmeta = emit_verilog(pixel_program(entry, x_t), workdir, kmod, latency_cutoff=latency_cutoff,
                         solver_options=solver_options)
    lat = int(kmeta['latency'])
    fn = f'src/{module}.v'
    with open(os.path.join(workdir, fn), 'w') as fh:
        fh.write(conv_stream_verilog(module, kmod, entry, x_t, lat))
    meta = {'top': module, 'files': list(kmeta['files']) + [fn], 'latency': lat, 'fifo_depth': lat + FIFO_EXTRA,
            'in_bits': g['C'] * int(x_t[1]), 'out_bits': g['F'] * int(entry['res_t'][1]),
            'in_elem_bits': int(x_t[1]), 'out_elem_bits': int(entry['res_t'][1]),
            'geometry': g, 'kernel': {k: kmeta[k] for k in ('top', 'latency', 'cost', 'pipeline_stages')}}
    with open(os.path.join(workdir, f'{module}.stream.json'), 'w') as fh:
        json.dump(meta, fh, indent=1)
    meta['workdir'] = workdir
    return meta


def conv_stream_testbench(meta: dict, n_in: int, n_out: int, gaps: float = 0.3, backpressure: float = 0.3,
                          seed: int = 1, tb_name: str = 'fxsplit_tb', signed_out: bool = True,
                          timeout_cycles: int | None = None, reset_after: int = 0,
                          reset_cycles: int = 1) -> str:
    """Self-checking testbench of a streaming module with one input and one output stream (:func:`emit_conv_stream`;
    ``meta``: ``top``, ``in_bits``, ``out_bits``, ``out_elem_bits``, ``latency``, and the port names ``in_port``,
    ``out_port``, default ``in`` and ``out``): ``n_in`` input beats from
    ``in_in.hex`` (frames back to back, no reset between them) and ``n_out`` expected output beats from
    ``exp_out.hex`` (:mod:`fxsplit.flows.common.vectors` files, one beat per line). The input pauses at random
    (``TVALID`` low with probability ``gaps``; once up it stays up with the same data until ``TREADY``) and the
    output refuses at random (``TREADY`` low with probability ``backpressure``), from xorshift generators seeded by
    ``seed`` (the same schedule in every simulator). Every element of every output beat is compared; the report is
    the vectors module's (MISMATCH lines, ``CYCLES``, ``N passed, M failed``, one sample = one output beat), plus
    ``IN <i> <cycle>`` per accepted input beat, ``OUT <j> <cycle>`` per output beat, ``STALLS <n>`` (cycles with
    ``in_TVALID`` high and ``in_TREADY`` low) and ``EXTRA <n>`` (output beats after the last expected one, failures).

    ``reset_after`` > 0: the first ``reset_after`` input beats are a prefix; as soon as the last of them is accepted
    (pixels still in the kernel and the FIFO), ``rst_n`` is pulled low for ``reset_cycles`` cycles, the beats that
    came out before are dropped (``DROPPED <n>``), and the checked run starts with beat ``reset_after`` on a fresh
    module."""
    from ..common import vectors as vec

    if not (0 <= gaps < 1 and 0 <= backpressure < 1):
        raise FxsplitError(f'gaps ({gaps}) and backpressure ({backpressure}) must be probabilities below 1')
    gth, bth = int(round(gaps * 256)), int(round(backpressure * 256))
    ib, ob, ow = meta['in_bits'], meta['out_bits'], meta['out_elem_bits']
    size = ob // ow
    slow = 1.0 / ((1 - gaps) * (1 - backpressure))
    timeout = timeout_cycles or int(4 * (n_in + n_out) * slow + 20 * meta['latency'] + 2000)
    s_in = (seed * 0x9E3779B1 + 0x7F4A7C15) & 0xFFFFFFFF or 1
    s_out = (seed * 0x9E3779B1 + 2 * 0x7F4A7C15) & 0xFFFFFFFF or 1
    L = ['`timescale 1 ns / 1 ps', f'module {tb_name};', "    reg clk = 1'b0;", "    reg rst_n = 1'b0;",
         f'    localparam NI = {n_in};', f'    localparam N = {n_out};', '    integer cycles = 0;',
         '    integer n_fail = 0;', '    integer n_pass = 0;', '    integer extra = 0;', '    integer stalls = 0;',
         '    integer done_at = -1;', '    integer e;', '    integer bad;',
         f'    reg [{ib - 1}:0] {vec.memory(vec.INPUT, "in")} [0:NI-1];',
         f'    reg [{ob - 1}:0] {vec.memory(vec.EXPECTED, "out")} [0:N-1];',
         f"    reg [{ib - 1}:0] in_TDATA = {ib}'d0;", "    reg in_TVALID = 1'b0;", '    wire in_TREADY;',
         f'    wire [{ob - 1}:0] out_TDATA;', '    wire out_TVALID;', "    reg out_TREADY = 1'b0;",
         '    integer i_in = 0;', '    integer j_out = 0;', f'    localparam NP = {int(reset_after)};',
         '    integer rcnt = 0;', '    integer dropped = 0;', "    reg main_phase = (NP == 0);",
         f"    reg [31:0] r_in = 32'd{s_in};", f"    reg [31:0] r_out = 32'd{s_out};"]
    L += vec.element_regs('got_out', 'exp_out', ow, signed_out)
    ip, op = meta.get('in_port', 'in'), meta.get('out_port', 'out')
    L.append(f"    {meta['top']} dut (.clk(clk), .rst_n(rst_n), .{ip}_TDATA(in_TDATA), .{ip}_TVALID(in_TVALID), "
             f'.{ip}_TREADY(in_TREADY), .{op}_TDATA(out_TDATA), .{op}_TVALID(out_TVALID), .{op}_TREADY(out_TREADY));')
    L += vec.load_vectors(['in'], ['out']) + ['    always #5 clk = ~clk;']
    L += ['    function [31:0] xorshift(input [31:0] x);', '        reg [31:0] y;',
          '        begin y = x ^ (x << 13); y = y ^ (y >> 17); xorshift = y ^ (y << 5); end', '    endfunction',
          '    always @(posedge clk) begin', '        cycles <= cycles + 1;',
          "        if (cycles == 4) rst_n <= 1'b1;",
          '        else if (!main_phase && rst_n && cycles > 4 && i_in >= NP) begin',
          f"            rst_n <= 1'b0; rcnt <= {max(1, int(reset_cycles))};", '        end',
          '        else if (!main_phase && !rst_n && cycles > 4) begin',
          "            if (rcnt == 1) begin rst_n <= 1'b1; main_phase <= 1'b1; end",
          '            rcnt <= rcnt - 1;', '        end', '    end']
    # the driver: values sampled at the edge are the pre-edge ones (the DUT updates with non-blocking assignments)
    L += ['    always @(posedge clk) if (rst_n) begin : drive', '        integer nxt;',
          '        r_in <= xorshift(r_in);',
          '        if (in_TVALID && !in_TREADY) stalls = stalls + 1;',
          '        if (in_TVALID && in_TREADY) $display("IN %0d %0d", i_in, cycles);',
          '        nxt = i_in + ((in_TVALID && in_TREADY) ? 1 : 0);', '        i_in <= nxt;',
          '        if (!in_TVALID || in_TREADY) begin',
          f'            if (nxt < (main_phase ? NI : NP) && r_in[7:0] >= {gth}) begin',
          f"                in_TVALID <= 1'b1; in_TDATA <= {vec.memory(vec.INPUT, 'in')}[nxt];",
          "            end else in_TVALID <= 1'b0;", '        end', '    end']
    L += ['    always @(posedge clk) if (rst_n) begin', '        r_out <= xorshift(r_out);',
          f'        out_TREADY <= (r_out[7:0] >= {bth});',
          '        if (out_TVALID && out_TREADY && !main_phase) dropped = dropped + 1;',
          '        else if (out_TVALID && out_TREADY) begin',
          '            if (j_out < N) begin',
          '                $display("OUT %0d %0d", j_out, cycles);', '                bad = 0;']
    L += vec.compare_output('out', 'out', size, ow, 'out_TDATA', 'j_out', 'bad = 1;', 'got_out', 'exp_out', indent=16)
    L += ['                if (bad) n_fail = n_fail + 1; else n_pass = n_pass + 1;',
          '                if (j_out == N - 1) done_at = cycles;',
          '            end else extra = extra + 1;', '            j_out <= j_out + 1;', '        end', '    end']
    body = [vec.timeout_display('j_out < N', '%0d output beats never came out', 'N - j_out'),
            '$display("STALLS %0d", stalls);', '$display("EXTRA %0d", extra);', '$display("DROPPED %0d", dropped);',
            vec.cycles_display('(done_at < 0 ? cycles : done_at) - 5')]
    # after the last expected beat, 64 more cycles with the output ready: any further beat is an extra one
    L.append('    always @(negedge clk) begin')
    L += vec.finish_lines(f'(done_at >= 0 && cycles > done_at + 64) || cycles > {timeout}', body, 'n_pass',
                          'n_fail + extra + (N > j_out ? N - j_out : 0)')
    L.append('    end')
    L.append('endmodule')
    return '\n'.join(L) + '\n'


def simulate_conv_stream(meta: dict, workdir: str, in_raw: np.ndarray, exp_raw: np.ndarray,
                         simulator: str = 'verilator', **tb) -> dict:
    """Simulate the streaming convolution of ``meta`` (files relative to ``meta['workdir']``): ``in_raw`` input beats
    (n_in, C) and ``exp_raw`` expected output beats (n_out, F), raw integers. ``tb``: :func:`conv_stream_testbench`
    options (with ``reset_after``, ``in_raw`` starts with the prefix). Returns ``{'result': SimResult, 'in_cycles',
    'out_cycles', 'stalls', 'extra', 'dropped', 'build_seconds',
    'sim_seconds'}`` (cycles: the cycle of each accepted input beat and of each output beat, in order)."""
    from ..common import vectors as vec
    from .testbench import get_runner

    os.makedirs(workdir, exist_ok=True)
    in_raw, exp_raw = np.asarray(in_raw), np.asarray(exp_raw)
    vec.write_vectors(workdir, [('in', in_raw, meta['in_elem_bits'])], [('out', exp_raw, meta['out_elem_bits'])])
    path = os.path.join(workdir, 'fxsplit_tb.v')
    with open(path, 'w') as fh:
        fh.write(conv_stream_testbench(meta, int(in_raw.shape[0]), int(exp_raw.shape[0]), **tb))
    r = get_runner(simulator)
    srcs = [os.path.join(meta['workdir'], f) for f in meta['files']] + [path]
    r.build(srcs, 'fxsplit_tb', os.path.join(workdir, f'build_{r.name}'))
    res = r.test(test_dir=workdir)
    text = res.log

    def grab(tag):
        return [int(c) for _, c in sorted((int(i), c) for i, c in re.findall(rf'^{tag} (\d+) (\d+)$', text, re.M))]

    one = {k: int(m.group(1)) for k in ('STALLS', 'EXTRA', 'DROPPED')
           for m in [re.search(rf'^{k} (\d+)$', text, re.M)] if m}
    return {'result': res, 'in_cycles': grab('IN'), 'out_cycles': grab('OUT'), 'stalls': one.get('STALLS'),
            'extra': one.get('EXTRA'), 'dropped': one.get('DROPPED'), 'build_seconds': round(r.build_seconds, 2),
            'sim_seconds': round(res.seconds, 2)}


__all__ = ['pixel_program', 'conv_stream_verilog', 'emit_conv_stream', 'conv_stream_testbench', 'simulate_conv_stream',
           'FIFO_EXTRA']
