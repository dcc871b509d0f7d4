"""Stitched RTL of a real fxsplit partitioning (with a bypass edge) vs the uncut hls4ml csim."""
import numpy as np
import torch
import torch.nn as nn

import re

from fxsplit.flows.rtl import _stitched_files, lower as rl, testbench as tbm
from fxsplit.flows.rtl.stitch import generate_stitched
from fxsplit.flows.rtl.synth import synthesize
from conftest import needs_icarus


class SkipMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        self.r = nn.ReLU()

    def forward(self, x):
        h = self.r(self.l1(x))
        return self.l3(self.l2(h) + x)   # x bypasses partition p0


@needs_icarus
def test_stitched_skip_mlp(tmp_path):
    from fxsplit import partition
    from fxsplit.lower import lower, normalize_config
    torch.manual_seed(0)
    model = SkipMLP().eval()
    pt = partition(model, (8,), splits=['l2', 'l3'])
    assert len(pt) == 3
    fc = normalize_config({'csim_opt': '-O0', 'layers': {n: {'precision': {'result': 'fixed<24,12>'}} for n in ('l1', 'l2', 'l3', 'add')}}, pt)
    lw = lower(pt, fc, str(tmp_path / 'hls'))
    pt = lw.partitioning
    specs, graphs, mono = lw.specs, lw.graphs, lw.mono
    rtl = {}
    for part in pt.partitions:
        hm = graphs[part.name]
        inv = {v: k for k, v in specs[part.name].name_map.items()}
        prog = rl.extract_program(hm, part.name, input_names=[inv.get(v, v) for v in hm.inputs],
                                  output_names=[inv.get(v, v) for v in hm.outputs])
        wd = str(tmp_path / 'rtl' / part.name)
        meta = rl.emit_verilog(prog, wd, f'fxs_{part.name}', latency_cutoff=5.0)
        meta['workdir'] = wd
        rtl[part.name] = meta
    text, latency, sched = generate_stitched('top', pt.dag(), rtl)
    top_v = tmp_path / 'top.v'
    top_v.write_text(text)
    st = {'latency': latency, 'files': _stitched_files(pt.partitions, rtl) + [str(top_v)]}
    assert st['latency'] == sum(rtl[p.name]['latency'] for p in pt.partitions)
    # the model input x bypasses p0: one delay line as deep as p0's latency, as wide as x
    x = pt.inputs[0]
    x_bits = 8 * rl.parse_precision(x.precision)[1]
    assert sched['delays'][x.name] == rtl['p0']['latency'] > 0
    regs = {(m.group(2), int(m.group(3))): int(m.group(1)) + 1
            for m in re.finditer(r'reg \[(\d+):0\] fxs_t_(\w+)_d(\d+);', text)}
    depth = rtl['p0']['latency']
    x_regs = {d: w for (name, d), w in regs.items() if name == rl.verilog_name(x.name)}
    assert x_regs == {d: x_bits for d in range(1, depth + 1)}
    # the top's own logic is synthesized (partitions as black boxes): at least one register per delayed bit
    boxes = [str(tmp_path / 'rtl' / p.name / rtl[p.name]['wrapper']) for p in pt.partitions]
    syn = synthesize(str(tmp_path / 'top_synth'), [str(top_v)], 'top', blackboxes=boxes)
    assert syn['blackbox_cells'] == {'fxs_p0': 1, 'fxs_p1': 1, 'fxs_p2': 1}
    assert syn['ff'] + syn['srl'] >= x_bits + 1        # x's delay line and the valid line (FFs or SRLs)
    assert (tmp_path / 'top_synth' / syn['netlist']).exists()
    n = 200
    inp, out = pt.inputs[0], pt.outputs[0]
    rng = np.random.default_rng(0)
    lo, hi = rl.type_raw_range(rl.parse_precision(inp.precision))
    raw = rng.integers(lo, hi + 1, size=(n, 8))
    mono.compile()
    y = mono.predict(rl.from_raw(raw, inp.precision))
    exp = rl.to_raw(np.asarray(y).reshape(n, -1), out.precision)
    ports_in = [{'name': inp.name, 'precision': inp.precision, 'shape': list(inp.shape)}]
    ports_out = [{'name': out.name, 'precision': out.precision, 'shape': list(out.shape)}]
    res = tbm.simulate('icarus', st['files'], 'top', ports_in, ports_out, [raw], [exp], st['latency'],
                       str(tmp_path / 'sim'))
    assert res.failed == 0, res.mismatches[:10]
    assert res.passed == n
