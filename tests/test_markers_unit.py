"""fxsplit.frontend.markers on its own: Cut and cut() as identities, the count of markers run on real tensors, the
tracing flag, and how a marker node is recognised and named in a graph (no partitioning, no builds).
Every spelling of a marker in a user's model, through fxsplit.partition: tests/test_markers.py."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.fx
from torch import nn

from fxsplit.errors import FxsplitError
from fxsplit.frontend.capture import LeafTracer
from fxsplit.frontend.markers import Cut, count_marker_calls, cut, cut_name, fxsplit_tracing, is_cut_node


class Marked(nn.Module):
    """A Cut module, a named cut() and an unnamed one."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.mark = Cut("middle")
        self.anon = Cut()

    def forward(self, x):
        x = self.mark(self.fc(x))
        x = cut(x, "tail")
        x = self.anon(x)
        return cut(torch.relu(x))


def _nodes(gm) -> dict[str, torch.fx.Node]:
    return {n.name: n for n in gm.graph.nodes}


def test_cut_and_cut_module_return_their_argument():
    t = torch.randn(3, 4)
    assert Cut("a")(t) is t and Cut()(t) is t
    assert cut(t) is t and cut(t, "n") is t
    assert cut(5) == 5             # outside fxsplit's tracing anything passes through


def test_cut_module_name_and_repr():
    assert Cut("head").name == "head" and Cut().name is None
    assert repr(Cut("head")) == "Cut(name='head')" and repr(Cut()) == "Cut()"
    assert list(Cut("x").parameters()) == [] and Cut("x").state_dict() == {}


def test_count_marker_calls_counts_both_spellings_on_real_tensors():
    model = Marked()
    x = torch.randn(2, 4)
    with count_marker_calls() as ran:
        assert ran == [0]
        model(x)
        assert ran == [4]
        cut(x)
        Cut()(x)
    assert ran == [6]
    model(x)                   # no counting outside the block
    assert ran == [6]


def test_count_marker_calls_nests_and_restores_the_outer_count():
    x = torch.randn(1)
    with count_marker_calls() as outer:
        cut(x)
        with count_marker_calls() as inner:
            cut(x)
            cut(x)
        cut(x)
    assert (outer, inner) == ([2], [2])


def test_count_marker_calls_is_per_thread():
    x = torch.randn(1)
    with count_marker_calls() as ran:
        t = threading.Thread(target=lambda: [cut(x) for _ in range(3)])
        t.start()
        t.join()
        cut(x)
    assert ran == [1]


def test_cut_refuses_a_non_tensor_while_fxsplit_traces():
    with fxsplit_tracing():
        with pytest.raises(FxsplitError, match="fxsplit.cut\\(\\) was called while tracing with a int, not a traced "
                                               "tensor: the marker cannot be placed") as ei:
            cut(3)
        with pytest.raises(FxsplitError, match="while tracing with a tuple"):
            cut((torch.ones(1), torch.ones(1)))
    assert "x = cut(x, 'name')" in ei.value.hint
    assert cut(3) == 3         # the flag is cleared on leaving the block


def test_fxsplit_tracing_nests():
    with fxsplit_tracing():
        with fxsplit_tracing():
            pass
        with pytest.raises(FxsplitError):       # still tracing after the inner block
            cut(1.5)
    assert cut(1.5) == 1.5


def test_fxsplit_tracer_records_every_marker_as_a_node():
    gm = torch.fx.GraphModule(Marked(), LeafTracer().trace(Marked()))
    nodes = _nodes(gm)
    assert [(n.name, n.op) for n in gm.graph.nodes] == [
        ("x", "placeholder"), ("fc", "call_module"), ("mark", "call_module"), ("cut", "call_function"),
        ("anon", "call_module"), ("relu", "call_function"), ("cut_1", "call_function"), ("output", "output")]
    assert nodes["cut"].target is cut and nodes["cut"].kwargs == {"name": "tail"}
    assert nodes["cut_1"].target is cut and nodes["cut_1"].kwargs == {}
    assert [n for n, node in nodes.items() if is_cut_node(node, gm)] == ["mark", "cut", "anon", "cut_1"]
    assert {n: cut_name(nodes[n], gm) for n in ("mark", "cut", "anon", "cut_1")} == {
        "mark": "middle", "cut": "tail", "anon": None, "cut_1": None}


def test_other_tracers_see_markers_as_identities():
    """Under another tracer (hls4ml's, plain torch.fx) neither spelling leaves a node: the model traces as if it
    had no markers, and computes the same."""
    model = Marked()
    gm = torch.fx.symbolic_trace(model)
    assert [(n.name, n.op) for n in gm.graph.nodes] == [("x", "placeholder"), ("fc", "call_module"),
                                                        ("relu", "call_function"), ("output", "output")]
    x = torch.randn(2, 4)
    assert torch.equal(gm(x), model(x))


def test_cut_name_reads_a_positional_name():
    g = torch.fx.Graph()
    x = g.placeholder("x")
    node = g.call_function(cut, (x, "pos"))
    assert is_cut_node(node, nn.Module()) and cut_name(node, nn.Module()) == "pos"


def test_is_cut_node_is_false_for_everything_else():
    g = torch.fx.Graph()
    x = g.placeholder("x")
    relu = g.call_function(torch.relu, (x,))
    missing = g.call_module("nowhere", (x,))
    lin = g.call_module("fc", (x,))
    root = nn.Module()
    root.fc = nn.Linear(2, 2)
    out = g.output(relu)
    assert [is_cut_node(n, root) for n in (x, relu, missing, lin, out)] == [False] * 5
