"""Every single cut of every PyTorch model in hls4ml's own API tests (hls4ml 1.3.0,
``test/pytest/test_pytorch_api.py``; the models and their configs are in ``hls4ml_api_models.py``), lowered with
the hls4ml config those tests convert the model with, in each io type they use: a cut either lowers into two
partitions, or is refused with an FxsplitError that names other cuts, each of which lowers. No other exception
(none of hls4ml's own) escapes. Lowering only (hls4ml conversion, no build), except one build of the cut right
before a Dropout, checked against plain hls4ml bit for bit."""

from __future__ import annotations

import ast
import re

import numpy as np
import pytest
import torch
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.errors import FxsplitError
from fxsplit.lower import hls4ml_layer_names, lower, normalize_config
from hls4ml_api_models import CASES, SkippedLayers

_OPS = ("call_module", "call_function", "call_method")
_SUGGESTION = re.compile(r"splits=\[([^\]]*)\]")

# the cuts fxsplit refuses: the first partition would hold only the unsqueeze, which hls4ml drops at a graph's end
# in io_parallel (nothing left to build) and turns into a Repack to a 2-D shape in io_stream (whose element order
# fxsplit does not carry across a cut)
REFUSED = {("squeeze", "io_parallel"): {"linear"}, ("squeeze", "io_stream"): {"linear"}}


def _split_name(n: torch.fx.Node) -> str:
    return str(n.target) if n.op == "call_module" else n.name


def _hls_config(case, model, io_type):
    return case.config(model, io_type)        # as hls4ml's test gives it (InputShape [(None, 4), (None, 5)] too)


def _lower(model, shape, splits, io_type, out, hls_config=None):
    pt = fxsplit.partition(model, shape, splits)
    names = hls4ml_layer_names(model) if hls_config is not None else None
    fc = normalize_config({"io_type": io_type}, pt, hls_config=hls_config, hls_names=names)
    lower(pt, fc, str(out))
    return pt


def _every_cut(model, shape, io_type, tmp_path, hls_config=None) -> dict[str, str]:
    """Cut ``model`` before each of its operations in turn (the first excepted: nothing would precede that cut,
    refused as such); every cut lowers into two partitions or raises an FxsplitError whose suggested cuts all
    lower. Returns {refused cut: message}."""
    def lower_one(splits):
        return _lower(model, shape, splits, io_type, tmp_path / "lower", hls_config)

    uncut = lower_one([])
    ops = [n for n in uncut.graph.graph.nodes if n.op in _OPS]
    with pytest.raises(FxsplitError, match="leaves partition 'p0' empty"):
        lower_one([_split_name(ops[0])])
    refused = {}
    for n in ops[1:]:
        at = _split_name(n)
        try:
            pt = lower_one([at])
        except FxsplitError as e:
            refused[at] = str(e)
            continue
        assert len(pt.partitions) == 2, (at, [p.nodes for p in pt.partitions])
        assert pt.partitions[1].nodes[0] == n.name, (at, [p.nodes for p in pt.partitions])
    for at, msg in refused.items():
        assert "hls4ml could not convert" not in msg, msg          # one of hls4ml's own errors, only wrapped
        suggested = [ast.literal_eval(f"[{s}]") for s in _SUGGESTION.findall(msg)]
        assert suggested, f"the refusal of the cut before {at!r} names no other cut:\n{msg}"
        for splits in suggested:
            assert splits != [at], f"the refusal of the cut before {at!r} suggests that very cut:\n{msg}"
            pt = lower_one(splits)
            assert len(pt.partitions) == len(splits) + 1
    return refused


@pytest.mark.parametrize("case,io_type", [(c, io) for c in CASES for io in c.io_types],
                         ids=[f"{c.name}-{io}" for c in CASES for io in c.io_types])
def test_every_cut_of_hls4ml_test_models(case, io_type, tmp_path):
    torch.manual_seed(0)
    model = case.make().eval()
    refused = _every_cut(model, case.shape, io_type, tmp_path, _hls_config(case, model, io_type))
    assert set(refused) == REFUSED.get((case.name, io_type), set()), refused


# layers hls4ml keeps no layer for (Dropout, Identity, a Flatten it drops at a graph's end) at the start or the end
# of a partition, under fxsplit's own config; a partition holding nothing else is refused, naming cuts that lower
NO_OP_MODELS = {
    "dropout_last": (lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout()), (4,), {"2"}),
    "dropout_first": (lambda: nn.Sequential(nn.Dropout(), nn.Linear(4, 6), nn.ReLU()), (4,), {"1"}),
    "identities": (lambda: nn.Sequential(nn.Linear(4, 6), nn.Identity(), nn.ReLU(), nn.Identity(), nn.Linear(6, 2)),
                   (4,), set()),
    "dropout_flatten_dropout": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Dropout(), nn.Flatten(),
                                                      nn.Dropout(), nn.Linear(18, 4)), (2, 8), set()),
    "flatten_last": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten()), (2, 8), set()),
}


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("name", sorted(NO_OP_MODELS))
def test_every_cut_next_to_layers_hls4ml_keeps_nothing_for(name, io_type, tmp_path):
    make, shape, expected = NO_OP_MODELS[name]
    torch.manual_seed(0)
    refused = _every_cut(make().eval(), shape, io_type, tmp_path)
    assert set(refused) == expected, refused
    for msg in refused.values():
        assert "holds nothing hls4ml keeps (only Dropout" in msg, msg


def test_cut_right_before_a_dropout_builds_plain_hls4mls_bits(tmp_path):
    """hls4ml's ModelSkippedLayers cut before ``dropout1``: the second partition starts with the Dropout (which
    reads the partition's input). The stitched design gives plain hls4ml's bits under the same hls_config."""
    import hls4ml
    case = next(c for c in CASES if c.name == "skipped_layers")
    torch.manual_seed(0)
    model = SkippedLayers().eval()
    cfg = _hls_config(case, model, "io_parallel")
    plain = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=str(tmp_path / "plain"),
                                                         backend="Vivado", io_type="io_parallel")
    plain.compile()
    design = fxsplit.compile(model, case.shape, splits=["dropout1"], hls_config=cfg, config=FAST,
                             output_dir=tmp_path / "fx", progress=False)
    assert [p.nodes[0] for p in design.partitions] == ["conv1", "dropout1"]
    x = np.random.default_rng(0).uniform(-8, 8, size=(100, *case.shape))
    res = design.verify(x)
    assert res.bit_exact, res.details[:5]
    ours = np.asarray(design.predict(x)).reshape(100, -1)
    theirs = np.asarray(plain.predict(np.ascontiguousarray(x))).reshape(100, -1)
    assert np.array_equal(ours, theirs), f"{np.sum(ours != theirs)} of {ours.size} outputs differ from plain hls4ml"
