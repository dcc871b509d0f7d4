"""The self-checking testbench of streaming modules with any number of AXI4-Stream inputs and outputs (a streaming
partition, or the stitched streaming top): every input driven with its own random gaps, every output refused at
random by its own backpressure, frames back to back with no reset between them, every element of every output beat
compared with hls4ml's C simulation."""

from __future__ import annotations

import os
import re

import numpy as np

from ...errors import FxsplitError
from ..common import vectors as vec


def _seed(seed: int, k: int) -> int:
    return (seed * 0x9E3779B1 + (k + 1) * 0x7F4A7C15) & 0xFFFFFFFF or 1


PARAMS = 'tb_params.hex'       # the run's pause probabilities, timeout and seeds, read at time 0


def run_params(n_in: int, n_out: int, total: int, gaps: float = 0.3, backpressure: float = 0.3, seed: int = 1,
               timeout_cycles: int | None = None, latency: int = 0) -> list[int]:
    """The words of :data:`PARAMS` for one run: the gap and backpressure thresholds (of 256), the timeout in cycles,
    one xorshift seed per input and per output."""
    if not (0 <= gaps < 1 and 0 <= backpressure < 1):
        raise FxsplitError(f'gaps ({gaps}) and backpressure ({backpressure}) must be probabilities below 1')
    slow = 1.0 / ((1 - gaps) * (1 - backpressure))
    timeout = timeout_cycles or int(4 * total * slow + 20 * latency + 2000)
    return ([int(round(gaps * 256)), int(round(backpressure * 256)), timeout] +
            [_seed(seed, k) for k in range(n_in)] + [_seed(seed, 100 + k) for k in range(n_out)])


def stream_testbench(top: str, ins: list[dict], outs: list[dict], tb_name: str = 'fxsplit_tb',
                     probes: list[str] = ()) -> str:
    """Verilog of the testbench of module ``top``. ``ins``/``outs``: per stream ``name`` (the module's port prefix),
    ``bits`` (one beat), ``elem_bits`` and ``n`` (beats in the run); vectors ``in_i<k>.hex``/``exp_o<k>.hex``
    (:mod:`fxsplit.flows.common.vectors`, one beat per line). An input pauses at random (``TVALID`` low with
    probability ``gaps``; once up it holds its data until ``TREADY``); an output refuses at random (``TREADY`` low
    with probability ``backpressure``); one xorshift generator per stream. These and the timeout are read from
    :data:`PARAMS` (:func:`run_params`) in the directory it runs in, so one build serves several runs. Prints ``IN <k> <i>
    <cycle>`` per accepted input beat, ``OUT <k> <j> <cycle>`` per output beat, ``STALLS <k> <n>`` and ``EXTRA <k>
    <n>`` (beats after the last expected one: failures), the vectors module's MISMATCH lines (sample = the output's
    beat), ``CYCLES`` (to the last expected beat) and ``N passed, M failed`` (output beats; a beat that never came is
    a failure). A network that stops (a deadlock) ends at the timeout, saying how many beats never came out.
    ``probes``: streams inside ``top`` (their signal prefix in the module, e.g. the wire between two partitions of
    a stitched top): ``PROBE <k> <cycle>`` per beat that passes on each."""
    if not ins or not outs:
        raise FxsplitError('a streaming testbench needs at least one input and one output stream')
    npar = 3 + len(ins) + len(outs)
    L = ['`timescale 1 ns / 1 ps', f'module {tb_name};', "    reg clk = 1'b0;", "    reg rst_n = 1'b0;",
         '    integer cycles = 0;', '    integer n_fail = 0;', '    integer n_pass = 0;', '    integer extra = 0;',
         '    integer done_at = -1;', '    integer e;', '    integer bad;', f'    reg [31:0] par [0:{npar - 1}];',
         f'    initial $readmemh("{PARAMS}", par);', '    wire [7:0] gth = par[0][7:0];', '    wire [7:0] bth = par[1][7:0];',
         '    wire [31:0] timeout = par[2];']
    conns = []
    for k, s in enumerate(ins):
        b = int(s['bits'])
        L += [f'    reg [{b - 1}:0] {vec.memory(vec.INPUT, f"i{k}")} [0:{int(s["n"]) - 1}];',
              f"    reg [{b - 1}:0] i{k}_TDATA = {b}'d0;", f"    reg i{k}_TVALID = 1'b0;", f'    wire i{k}_TREADY;',
              f'    integer i{k}_n = 0;', f'    integer i{k}_stalls = 0;', f'    reg [31:0] i{k}_r;',
              f'    initial #1 i{k}_r = par[{3 + k}];']
        conns.append(f'.{s["name"]}_TDATA(i{k}_TDATA), .{s["name"]}_TVALID(i{k}_TVALID), '
                     f'.{s["name"]}_TREADY(i{k}_TREADY)')
    for k, s in enumerate(outs):
        b, w = int(s['bits']), int(s['elem_bits'])
        L += [f'    reg [{b - 1}:0] {vec.memory(vec.EXPECTED, f"o{k}")} [0:{int(s["n"]) - 1}];',
              f'    wire [{b - 1}:0] o{k}_TDATA;', f'    wire o{k}_TVALID;', f"    reg o{k}_TREADY = 1'b0;",
              f'    integer o{k}_n = 0;', f'    integer o{k}_extra = 0;',
              f'    reg [31:0] o{k}_r;', f'    initial #1 o{k}_r = par[{3 + len(ins) + k}];']
        L += vec.element_regs(f'got_o{k}', f'exp_o{k}', w, True)
        conns.append(f'.{s["name"]}_TDATA(o{k}_TDATA), .{s["name"]}_TVALID(o{k}_TVALID), '
                     f'.{s["name"]}_TREADY(o{k}_TREADY)')
    L.append(f'    {top} dut (.clk(clk), .rst_n(rst_n), {", ".join(conns)});')
    L += vec.load_vectors([f'i{k}' for k in range(len(ins))], [f'o{k}' for k in range(len(outs))])
    L += ['    always #5 clk = ~clk;',
          '    function [31:0] xorshift(input [31:0] x);', '        reg [31:0] y;',
          '        begin y = x ^ (x << 13); y = y ^ (y >> 17); xorshift = y ^ (y << 5); end', '    endfunction',
          '    always @(posedge clk) begin', '        cycles <= cycles + 1;', "        if (cycles == 4) rst_n <= 1'b1;",
          '    end']
    # drivers: values sampled at the edge are the pre-edge ones (the DUT updates with non-blocking assignments)
    for k, s in enumerate(ins):
        n = int(s['n'])
        L += ['    always @(posedge clk) if (rst_n) begin : drive_i%d' % k, '        integer nxt;',
              f'        i{k}_r <= xorshift(i{k}_r);',
              f'        if (i{k}_TVALID && !i{k}_TREADY) i{k}_stalls = i{k}_stalls + 1;',
              f'        if (i{k}_TVALID && i{k}_TREADY) $display("IN {k} %0d %0d", i{k}_n, cycles);',
              f'        nxt = i{k}_n + ((i{k}_TVALID && i{k}_TREADY) ? 1 : 0);', f'        i{k}_n <= nxt;',
              f'        if (!i{k}_TVALID || i{k}_TREADY) begin',
              f'            if (nxt < {n} && i{k}_r[7:0] >= gth) begin',
              f"                i{k}_TVALID <= 1'b1; i{k}_TDATA <= {vec.memory(vec.INPUT, f'i{k}')}[nxt];",
              f"            end else i{k}_TVALID <= 1'b0;", '        end', '    end']
    for k, s in enumerate(outs):
        n, w, size = int(s['n']), int(s['elem_bits']), int(s['bits']) // int(s['elem_bits'])
        L += ['    always @(posedge clk) if (rst_n) begin', f'        o{k}_r <= xorshift(o{k}_r);',
              f'        o{k}_TREADY <= (o{k}_r[7:0] >= bth);',
              f'        if (o{k}_TVALID && o{k}_TREADY) begin',
              f'            if (o{k}_n < {n}) begin',
              f'                $display("OUT {k} %0d %0d", o{k}_n, cycles);', '                bad = 0;']
        L += vec.compare_output(s['name'], f'o{k}', size, w, f'o{k}_TDATA', f'o{k}_n', 'bad = 1;', f'got_o{k}',
                                f'exp_o{k}', indent=16)
        L += ['                if (bad) n_fail = n_fail + 1; else n_pass = n_pass + 1;',
              f'            end else o{k}_extra = o{k}_extra + 1;', f'            o{k}_n <= o{k}_n + 1;', '        end',
              '    end']
    for k, sig in enumerate(probes):
        if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_$]*', sig):
            raise FxsplitError(f'stream probe {sig!r} is not a signal name of {top}')
        L.append(f'    always @(posedge clk) if (rst_n && dut.{sig}_TVALID && dut.{sig}_TREADY) '
                 f'$display("PROBE {k} %0d", cycles);')
    complete = ' && '.join(f'o{k}_n >= {int(s["n"])}' for k, s in enumerate(outs))
    missing = ' + '.join(f'(o{k}_n < {int(s["n"])} ? {int(s["n"])} - o{k}_n : 0)' for k, s in enumerate(outs))
    extras = ' + '.join(f'o{k}_extra' for k in range(len(outs)))
    L += ['    always @(posedge clk) if (done_at < 0 && ' + complete + ') done_at <= cycles;']
    body = [vec.timeout_display(f'!({complete})', '%0d output beats never came out', missing)]
    body += [f'$display("STALLS {k} %0d", i{k}_stalls);' for k in range(len(ins))]
    body += [f'$display("EXTRA {k} %0d", o{k}_extra);' for k in range(len(outs))]
    body.append(vec.cycles_display('(done_at < 0 ? cycles : done_at) - 5'))
    # after the last expected beat, 64 more cycles with the outputs taken at random: any further beat is extra
    L.append('    always @(negedge clk) begin')
    L += vec.finish_lines('(done_at >= 0 && cycles > done_at + 64) || cycles > timeout', body, 'n_pass',
                          f'n_fail + {extras} + {missing}')
    L += ['    end', 'endmodule']
    return '\n'.join(L) + '\n'


def simulate_streams(top: str, files: list[str], workdir: str, ins: list[dict], outs: list[dict],
                     simulator: str = 'verilator', runs: list[dict] | None = None, latency: int = 0,
                     probes: list[str] = (), **tb):
    """Simulate module ``top`` (Verilog ``files``, absolute) with :func:`stream_testbench`, built once. ``ins``/
    ``outs``: per stream ``name``, ``elem_bits`` and ``raw`` (beats, elements per beat) of raw integers: the inputs
    to drive and the outputs to expect. ``tb``: one run's :func:`run_params` options (``gaps``, ``backpressure``,
    ``seed``, ``timeout_cycles``); ``runs``: several, each in its own directory, returned as a list. A run's result:
    ``{'result': SimResult, 'in_cycles': [per input: the cycle of each accepted beat], 'out_cycles': [per output],
    'stalls': [per input], 'extra': [per output], 'probe_cycles': [per probe: the cycle of each beat on it],
    'build_seconds', 'sim_seconds'}``."""
    from .testbench import get_runner

    os.makedirs(workdir, exist_ok=True)

    def spec(s):
        raw = np.asarray(s['raw'])
        return {'name': s['name'], 'elem_bits': int(s['elem_bits']), 'bits': raw.shape[1] * int(s['elem_bits']),
                'n': raw.shape[0]}

    path = os.path.join(workdir, 'fxsplit_tb.v')
    with open(path, 'w') as fh:
        fh.write(stream_testbench(top, [spec(s) for s in ins], [spec(s) for s in outs], probes=list(probes)))
    r = get_runner(simulator)
    r.build(list(files) + [path], 'fxsplit_tb', os.path.join(workdir, f'build_{r.name}'))
    total = sum(np.asarray(s['raw']).shape[0] for s in ins + outs)
    results = []
    for k, run in enumerate(runs if runs is not None else [tb]):
        where = os.path.join(workdir, f'run{k}') if runs is not None else workdir
        os.makedirs(where, exist_ok=True)
        vec.write_vectors(where, [(f'i{m}', np.asarray(s['raw']), s['elem_bits']) for m, s in enumerate(ins)],
                          [(f'o{m}', np.asarray(s['raw']), s['elem_bits']) for m, s in enumerate(outs)])
        words = run_params(len(ins), len(outs), total, latency=latency, **run)
        with open(os.path.join(where, PARAMS), 'w') as fh:
            fh.write(''.join(f'{w & 0xFFFFFFFF:08x}\n' for w in words))
        res = r.test(test_dir=where)
        results.append(_read(res, len(ins), len(outs), r.build_seconds, len(probes)))
    return results if runs is not None else results[0]


def _read(res, n_in: int, n_out: int, build_seconds: float, n_probes: int = 0) -> dict:
    text = res.log

    def grab(tag: str, k: int) -> list[int]:
        return [int(c) for _, c in sorted((int(i), c) for i, c in re.findall(rf'^{tag} {k} (\d+) (\d+)$', text, re.M))]

    def one(tag: str, k: int) -> int | None:
        m = re.search(rf'^{tag} {k} (\d+)$', text, re.M)
        return int(m.group(1)) if m else None

    return {'result': res, 'in_cycles': [grab('IN', k) for k in range(n_in)],
            'out_cycles': [grab('OUT', k) for k in range(n_out)],
            'stalls': [one('STALLS', k) for k in range(n_in)], 'extra': [one('EXTRA', k) for k in range(n_out)],
            'probe_cycles': [[int(c) for c in re.findall(rf'^PROBE {k} (\d+)$', text, re.M)] for k in range(n_probes)],
            'build_seconds': round(build_seconds, 2), 'sim_seconds': round(res.seconds, 2)}


__all__ = ['stream_testbench', 'simulate_streams', 'run_params', 'PARAMS']
