"""config['da4ml_solver']: da4ml's constant-matrix solver settings reach every kernel of the rtl flow, sit in the
Verilog jobs' cache keys, change the adder graphs and never the numbers; bad settings are refused before any build."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST, random_inputs
from fxsplit.errors import FxsplitError
from fxsplit.flows.rtl.trace import SEARCH_DEPTHS_UP_TO, solver_settings


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)).eval()


CFG = {**FAST, "precision": "fixed<8,3>", "synth": False}


def _kernel_cost(design) -> int:
    return sum(int(r.meta["cost"]) for r in design.build if r.step == "rtl" and r.partition != "stitched")


def test_solver_settings_shape_the_adders_not_the_numbers(tmp_path, rng):
    model = _mlp()
    cache = tmp_path / "cache"
    a = fxsplit.compile(model, (16,), splits=["2"], flow="rtl", config=CFG, output_dir=tmp_path / "a",
                        cache_dir=cache, jobs=2, progress=False)
    b = fxsplit.compile(model, (16,), splits=["2"], flow="rtl",
                        config={**CFG, "da4ml_solver": {"method0": "dummy", "method1": "dummy"}},
                        output_dir=tmp_path / "b", cache_dir=cache, jobs=2, progress=False)
    # the settings are in the Verilog jobs' keys: b rebuilt every kernel, and took its C simulations from the cache
    kinds = {(r.step, r.state) for r in b.build if r.partition != "stitched"}
    assert ("rtl", "built") in kinds and ("rtl", "cached") not in kinds, kinds
    assert {r.state for r in b.build if r.step == "csim"} == {"cached"}
    # no common subexpressions: more adders (da4ml's own estimate) ...
    assert _kernel_cost(b) > 1.3 * _kernel_cost(a), (_kernel_cost(a), _kernel_cost(b))
    # ... and the same bits, in RTL, as the C simulation (inputs far outside fixed<8,3>: wrap)
    x = random_inputs(rng, (16,), n=200, scale=16.0)
    for d in (a, b):
        r = d.verify(x, level="rtl")
        assert r.bit_exact and r.mismatches == 0, r.summary()
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


@pytest.mark.parametrize("bad,message", [
    ("wmc", "config da4ml_solver must be a dict"),
    ({"method": "wmc"}, "unknown config key 'method' in config\\['da4ml_solver'\\]"),
    ({"hard_dc": "2"}, "\\['hard_dc'\\] must be a int"),
    ({"search_all_decompose_dc": 1}, "must be a bool"),
    ({"method0": "fast"}, "'fast' is not a da4ml method"),
])
def test_bad_solver_settings_are_refused_before_any_build(tmp_path, bad, message):
    with pytest.raises(FxsplitError, match=message):
        fxsplit.compile(_mlp(), (16,), flow="rtl", config={**CFG, "da4ml_solver": bad}, output_dir=tmp_path / "o",
                        cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_large_kernels_take_da4mls_default_depth_unless_told():
    assert solver_settings(SEARCH_DEPTHS_UP_TO, None) == {"search_all_decompose_dc": True}
    assert solver_settings(SEARCH_DEPTHS_UP_TO + 1, {}) == {"search_all_decompose_dc": False}
    assert solver_settings(10 ** 6, {"search_all_decompose_dc": True, "method0": "mc"}) == {
        "search_all_decompose_dc": True, "method0": "mc"}
