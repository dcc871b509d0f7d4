"""Every spelling of the cut marker is traced as a cut, before and after eager forwards and training;
a marker that could be lost is refused instead."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fxsplit
from fxsplit import FxsplitError

sys.path.insert(0, os.path.dirname(__file__))
import marker_models as mm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _names(model):
    return [p.name for p in fxsplit.partition(model, (8,)).partitions]


def _train_step(model):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = model(torch.randn(4, 8)).pow(2).mean()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("cls", mm.ALL, ids=lambda c: c.__name__)
def test_every_spelling_is_a_cut_before_and_after_eager_use(cls):
    model = cls().eval()
    assert _names(model) == ["p0", "tail"]            # traced first
    model(torch.randn(3, 8))                          # an eager forward, as inference does
    assert _names(model) == ["p0", "tail"]
    _train_step(model)                                # a training step
    assert _names(model) == ["p0", "tail"]
    assert torch.equal(model.eval()(torch.ones(2, 8)), model.fc2(model.act(model.fc1(torch.ones(2, 8)))))


def test_fresh_process_forward_then_partition():
    """The reported case: import fxsplit, one eager forward with fxsplit.cut, then partition."""
    code = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, sys.argv[1])
        import marker_models as mm, fxsplit
        m = mm.ModuleAttribute().eval()
        m(torch.randn(2, 8))
        print([p.name for p in fxsplit.partition(m, (8,)).partitions])
    """)
    r = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "['p0', 'tail']"


def test_marker_inside_a_leaf_module_is_refused():
    with pytest.raises(FxsplitError, match="inside a module that torch.fx keeps as a leaf"):
        fxsplit.partition(mm.MarkerInsideLeaf().eval(), (8,))


def test_cut_module_never_called_is_refused():
    with pytest.raises(FxsplitError, match="never calls it") as e:
        fxsplit.partition(mm.UncalledCut().eval(), (8,))
    assert e.value.module == "cut"


def test_cut_on_a_non_tensor_while_tracing_is_refused():
    with pytest.raises(FxsplitError, match="not a traced tensor"):
        fxsplit.partition(mm.CutOnTuple().eval(), (8,))


def test_cut_is_identity_outside_tracing():
    x = torch.randn(3)
    assert fxsplit.cut(x, "n") is x
    assert mm.cut(x) is x


def test_markers_are_identities_under_other_tracers():
    """hls4ml traces the user's model with its own tracer: cut() must vanish there, not become an
    operation hls4ml cannot convert."""
    from hls4ml.utils.torch import CustomFXTracer
    for cls in mm.ALL:
        graph = CustomFXTracer().trace(cls().eval())
        ops = [n.target for n in graph.nodes if n.op == "call_function"]
        assert fxsplit.cut not in ops and not any("cut" in str(n.target) for n in graph.nodes), cls.__name__
