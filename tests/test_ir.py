"""fxsplit.ir: ports, partitions and the partition DAG, built by hand (no tracing of a user model, no builds)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.fx
from torch import nn

import fxsplit
from fxsplit import ir
from fxsplit.errors import FxsplitError
from fxsplit.ir import MODEL_INPUT, Partition, Partitioning, Port


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def _gm() -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(_Tiny())


def _design() -> Partitioning:
    """x (3, 8, 8) -> p0 -> conv (4, 8, 8) -> p1 -> fc (10,); p1 also reads x (a skip from the model input)."""
    x = Port("x", (8, 8, 3), (3, 8, 8), "fixed<16,6>")
    conv = Port("conv", (8, 8, 4), (4, 8, 8), "fixed<12,4>")
    fc = Port("fc", (10,), (10,), None)
    gm = _gm()
    p0 = Partition("p0", 0, gm, [x], [conv], ["conv", "relu"], {"x": MODEL_INPUT}, ["conv", "relu"])
    p1 = Partition("p1", 1, gm, [conv, x], [fc], ["flatten", "fc"], {"conv": "p0", "x": MODEL_INPUT}, ["fc"])
    return Partitioning(gm, [p0, p1], [x], [fc], {"fc": "p1"})


def test_port_size_is_the_product_of_its_shape():
    assert Port("a", (8, 8, 3), (3, 8, 8)).size == 192
    assert Port("b", (10,), (10,)).size == 10
    assert Port("c", (), ()).size == 1


def test_port_to_dict_is_json_with_lists():
    p = Port("conv", (8, 8, 4), (4, 8, 8), "fixed<12,4>")
    assert p.to_dict() == {"name": "conv", "shape": [8, 8, 4], "torch_shape": [4, 8, 8], "precision": "fixed<12,4>"}
    assert Port("y", (2,), (2,)).to_dict()["precision"] is None
    assert json.loads(json.dumps(p.to_dict())) == p.to_dict()


def test_partition_repr_names_its_ports_and_counts_its_nodes():
    pt = _design()
    assert repr(pt["p0"]) == "Partition('p0', in=[x], out=[conv], nodes=2)"
    assert repr(pt["p1"]) == "Partition('p1', in=[conv, x], out=[fc], nodes=2)"


def test_partitioning_is_a_sequence_of_partitions_by_name():
    pt = _design()
    assert len(pt) == 2
    assert [p.name for p in pt] == ["p0", "p1"]
    assert pt["p1"] is pt.partitions[1]
    with pytest.raises(KeyError, match="p2"):
        pt["p2"]


def test_ports_are_the_model_inputs_and_every_partition_output():
    pt = _design()
    ports = pt.ports()
    assert list(ports) == ["x", "conv", "fc"]
    # one object per tensor: the producer's output port is the consumer's input port
    assert ports["conv"] is pt["p0"].outputs[0] is pt["p1"].inputs[0]
    assert ports["x"] is pt.inputs[0] is pt["p1"].inputs[1]


def test_dag_is_plain_data_with_channels_last_shapes_and_sources():
    pt = _design()
    dag = pt.dag()
    x = {"name": "x", "shape": [8, 8, 3], "torch_shape": [3, 8, 8], "precision": "fixed<16,6>"}
    conv = {"name": "conv", "shape": [8, 8, 4], "torch_shape": [4, 8, 8], "precision": "fixed<12,4>"}
    fc = {"name": "fc", "shape": [10], "torch_shape": [10], "precision": None}
    assert dag == {
        "inputs": [x], "outputs": [fc], "output_sources": {"fc": "p1"},
        "partitions": [{"name": "p0", "inputs": [x], "outputs": [conv], "sources": {"x": "input"}},
                       {"name": "p1", "inputs": [conv, x], "outputs": [fc], "sources": {"conv": "p0", "x": "input"}}],
    }
    assert json.loads(json.dumps(dag)) == dag
    # a copy: editing it leaves the partitioning as it was
    dag["partitions"][0]["sources"]["x"] = "p9"
    dag["output_sources"]["fc"] = "p9"
    assert pt["p0"].sources == {"x": "input"} and pt.output_sources == {"fc": "p1"}


class _ConvCut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        x = fxsplit.cut(self.relu(self.conv(x)), "head")
        return self.fc(torch.flatten(x, 1))


def test_the_partitioner_follows_the_port_conventions():
    """Port names are the uncut graph's node names, shapes channels-last with the PyTorch shape kept beside them,
    and a model input's producer is MODEL_INPUT."""
    assert MODEL_INPUT == "input"
    pt = fxsplit.partition(_ConvCut(), (3, 6, 6))
    assert [p.name for p in pt] == ["p0", "head"]
    assert [(p.name, p.shape, p.torch_shape) for p in pt.inputs] == [("x", (6, 6, 3), (3, 6, 6))]
    assert [(p.name, p.shape, p.torch_shape) for p in pt["p0"].outputs] == [("relu", (6, 6, 4), (4, 6, 6))]
    assert pt["p0"].sources == {"x": MODEL_INPUT} and pt["head"].sources == {"relu": "p0"}
    assert pt.output_sources == {"fc": "head"} and [(p.name, p.shape) for p in pt.outputs] == [("fc", (10,))]
    assert all(p.precision is None for p in pt.ports().values())        # typed by lowering, not here


def test_keep_torch_layout_gives_every_port_its_pytorch_shape():
    pt = _design()
    assert pt.channels_last is True
    pt.keep_torch_layout()
    assert pt.channels_last is False
    assert {n: p.shape for n, p in pt.ports().items()} == {"x": (3, 8, 8), "conv": (4, 8, 8), "fc": (10,)}
    assert pt["p1"].inputs[0].shape == (4, 8, 8) and pt["p1"].inputs[1].shape == (3, 8, 8)
    assert pt.dag()["inputs"][0]["shape"] == [3, 8, 8]


def test_uncut_is_the_original_graph_when_layers_were_split():
    pt = _design()
    assert pt.uncut is pt.graph
    original = _gm()
    pt.original = original
    assert pt.uncut is original and pt.graph is not original


def test_origin_maps_pieces_and_cats_to_their_layer():
    pt = _design()
    pt.layer_splits = {"fc2": {"module": "fc2", "bounds": [0, 32, 64], "pieces": ["fc2__o0", "fc2__o32"],
                               "starts": {0: "fc2__o0", 32: "fc2__o32", 64: "cat"}, "cats": ["cat"]}}
    assert [pt.origin(n) for n in ("fc2__o0", "fc2__o32", "cat")] == ["fc2", "fc2", "fc2"]
    assert pt.origin("fc1") == "fc1" and pt.origin("cat_1") == "cat_1"


def test_defaults_of_a_new_partitioning():
    gm = _gm()
    pt = Partitioning(gm, [], [], [])
    assert (pt.output_sources, pt.channels_last, pt.float32_inputs, pt.torch_exact, pt.outputs_torch_layout,
            pt.original, pt.layer_splits) == ({}, True, False, None, True, None, {})
    assert len(pt) == 0 and pt.ports() == {} and pt.dag() == {"inputs": [], "outputs": [], "output_sources": {},
                                                              "partitions": []}


def test_cut_point_reads_layer_and_output():
    CutPoint = ir.CutPoint
    assert CutPoint.of("fc2@32") == CutPoint("fc2", 32)
    assert CutPoint.of("layer2.0.conv1") == CutPoint("layer2.0.conv1", None)
    assert CutPoint.of("fc@-1") == CutPoint("fc", -1)
    assert CutPoint.of("fc@x") == CutPoint("fc@x")        # not '<layer>@<int>': a name as written
    c = CutPoint("fc2", 32)
    assert CutPoint.of(c) is c
    assert str(CutPoint("fc2", 32)) == "fc2@32" and str(CutPoint("fc2")) == "fc2"
    with pytest.raises(FxsplitError, match=r"splits must be a list of module names \(strings\), got 3"):
        CutPoint.of(3)


def test_copy_has_its_own_ports_shared_between_its_partitions():
    pt = _design()
    cp = pt.copy()
    assert cp.dag() == pt.dag()
    assert cp["p0"].outputs[0] is not pt["p0"].outputs[0]
    # the copy keeps one object per tensor, as the original does
    assert cp["p0"].outputs[0] is cp["p1"].inputs[0] and cp.inputs[0] is cp["p1"].inputs[1]
    assert cp.graph is pt.graph and cp["p0"].module is pt["p0"].module
    cp["p0"].outputs[0].precision = "fixed<8,3>"
    cp["p1"].sources["conv"] = "p9"
    cp.keep_torch_layout()
    assert pt["p0"].outputs[0].precision == "fixed<12,4>" and pt["p1"].sources["conv"] == "p0"
    assert pt.channels_last is True and pt.inputs[0].shape == (8, 8, 3)


def test_port_types_by_name():
    pt = _design()
    assert pt.port_types() == {"x": "fixed<16,6>", "conv": "fixed<12,4>", "fc": None}
