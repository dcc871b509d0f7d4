"""With an hls_config, every layer gets exactly the accumulator plain hls4ml gives it (LayerName > LayerType >
Model, ``Precision.default`` included), in every flow; exact accumulators apply under fxsplit's own config or an
explicit ``exact_accum=True``, and the report lists each accumulator they change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fxsplit
from fxsplit.errors import FxsplitError
from fxsplit.lower import hls4ml_layer_names, normalize_config
from fxsplit.lower.config import given_precision
from fxsplit.frontend.partitioner import partition as make_partitioning
from conftest import FAST
from test_hls4ml_parity import MLP3


MLP = MLP3          # 12-24-16-5, the parity tests' MLP


def _hls_config(model, where: str):
    """hls4ml's own config of ``model`` (every accumulator from ``Precision.default``), the accumulator set
    where a user sets it."""
    from hls4ml.utils.config import config_from_pytorch_model
    gran = {"default": "model", "model": "model", "type": "type", "name": "name"}[where]
    cfg = config_from_pytorch_model(model, (12,), granularity=gran, default_precision="fixed<10,3>")
    if where == "model":
        cfg["Model"]["Precision"] = {"default": "fixed<10,3>", "accum": "fixed<9,3>"}
    elif where == "type":
        cfg["LayerType"].setdefault("Dense", {}).setdefault("Precision", {})
        if not isinstance(cfg["LayerType"]["Dense"]["Precision"], dict):
            cfg["LayerType"]["Dense"]["Precision"] = {"default": cfg["LayerType"]["Dense"]["Precision"]}
        cfg["LayerType"]["Dense"]["Precision"]["accum"] = "fixed<11,4>"
    elif where == "name":
        cfg["LayerName"]["fc2"]["Precision"]["accum"] = "fixed<9,2>"
    return cfg


@pytest.mark.parametrize("where", ["default", "model", "type", "name"])
@pytest.mark.parametrize("flow_default", [True, False], ids=["rtl", "hls4ml"])
def test_hls_config_accumulators_are_plain_hls4mls(where, flow_default):
    torch.manual_seed(0)
    model = MLP().eval()
    cfg = _hls_config(model, where)
    pt = make_partitioning(model, (12,), ["fc2"])
    fc = normalize_config({}, pt, hls_config=cfg, hls_names=hls4ml_layer_names(model),
                          exact_accum_default=flow_default)
    assert fc.exact_accum is False and fc.accum_changes == {}
    for node in ("fc1", "fc2", "fc3"):
        lc = (fc.layer_name.get(node) or {}).get("Precision")
        assert not (isinstance(lc, dict) and lc.get("accum") == "auto"), (node, lc)
    want = {"default": "fixed<10,3>", "model": "fixed<9,3>", "type": "fixed<11,4>", "name": None}[where]
    if want:
        assert given_precision(fc, "fc1", "Dense", "accum") == want


def test_explicit_exact_accum_with_hls_config_changes_only_unnamed_accumulators():
    torch.manual_seed(0)
    model = MLP().eval()
    cfg = _hls_config(model, "name")              # fc2's accumulator named; fc1, fc3 from Precision.default
    pt = make_partitioning(model, (12,), ["fc2"])
    fc = normalize_config({"exact_accum": True}, pt, hls_config=cfg, hls_names=hls4ml_layer_names(model))
    assert fc.accum_changes == {"fc1": "fixed<10,3>", "fc3": "fixed<10,3>"}
    assert fc.layer_name["fc1"]["Precision"]["accum"] == "auto"
    assert fc.layer_name["fc2"]["Precision"]["accum"] == "fixed<9,2>"
    with pytest.raises(FxsplitError, match="exact_accum must be True or False"):
        normalize_config({"exact_accum": "yes"}, pt)


def _plain(model, cfg, out):
    import hls4ml
    hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=str(out),
                                                      backend="Vivado", io_type="io_parallel")
    hm.compile()
    return hm


def test_rtl_flow_keeps_the_users_accumulators_bit_for_bit(tmp_path):
    """The open RTL flow under an hls_config whose accumulators (Precision.default, fixed<10,3>) wrap: the stitched
    design, the uncut reference and the Verilog all give plain hls4ml's bits."""
    torch.manual_seed(1)
    model = MLP().eval()
    cfg = _hls_config(model, "default")
    plain = _plain(model, cfg, tmp_path / "plain")
    d = fxsplit.compile(model, (12,), flow="rtl", splits=["fc2"], hls_config=cfg,
                        config={**FAST, "synth": False}, output_dir=tmp_path / "fx", jobs=2, progress=False)
    x = np.random.default_rng(0).uniform(-8, 8, size=(300, 12))
    ours = np.asarray(d.predict(x)).reshape(300, -1)
    theirs = np.asarray(plain.predict(np.ascontiguousarray(x))).reshape(300, -1)
    assert np.array_equal(ours, theirs), f"{np.sum(ours != theirs)} of {ours.size} outputs differ from plain hls4ml"
    num = d.report["numerics"]
    assert num["exact_accum"] is False and num["accumulators_changed"] == []
    r = d.verify(x[:100], level="rtl")
    assert r.bit_exact, r.details[:5]


def test_report_lists_each_accumulator_made_exact(tmp_path):
    torch.manual_seed(1)
    model = MLP().eval()
    d = fxsplit.compile(model, (12,), flow="hls4ml", splits=["fc2"],
                        config={**FAST, "precision": "fixed<10,3>", "exact_accum": True},
                        output_dir=tmp_path / "fx", progress=False)
    changed = {c["layer"]: (c["from"], c["to"]) for c in d.report["numerics"]["accumulators_changed"]}
    assert set(changed) == {"fc1", "fc2", "fc3"}
    for layer, (before, after) in changed.items():
        assert before == "fixed<10,3>" and after.startswith("fixed<") and after != before, (layer, before, after)
    from fxsplit.report import format_text
    assert "accumulator fc1: fixed<10,3> -> " in format_text(d.report)
