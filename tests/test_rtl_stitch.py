"""Stitched RTL of a real fxsplit partitioning (with a bypass edge) vs the uncut hls4ml csim."""
import numpy as np
import torch
import torch.nn as nn

from fxsplit.flows import rtl_lower as rl
from fxsplit import testbench as tbm
from fxsplit.stitch_rtl import stitch


class SkipMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        self.r = nn.ReLU()

    def forward(self, x):
        h = self.r(self.l1(x))
        return self.l3(self.l2(h) + x)   # x bypasses partition p0


def test_stitched_skip_mlp(tmp_path):
    from fxsplit import partition
    from fxsplit.flows.hls4ml import lower, normalize_config
    torch.manual_seed(0)
    model = SkipMLP().eval()
    pt = partition(model, (8,), splits=['l2', 'l3'])
    assert len(pt) == 3
    fc = normalize_config({'csim_opt': '-O0', 'layers': {n: {'precision': {'result': 'fixed<24,12>'}} for n in ('l1', 'l2', 'l3', 'add')}}, pt)
    specs, graphs, mono_spec, mono = lower(pt, fc, str(tmp_path / 'hls'))
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
    st = stitch(str(tmp_path), 'top', pt.partitions, pt.inputs, pt.outputs, pt.output_sources, rtl)
    assert st['latency'] == sum(rtl[p.name]['latency'] for p in pt.partitions)
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
