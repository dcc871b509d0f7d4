"""fxsplit.lower.config: normalize_config (fxsplit's config keys and a user's hls4ml config, validated and expressed as
one hls4ml config keyed by fx node name) and given_precision (hls4ml's precedence of precisions), on small partitioned
models (fxsplit.partition only: no hls4ml conversion, no builds)."""

from __future__ import annotations

import copy

import pytest
from torch import nn

import fxsplit
from fxsplit import Cut
from fxsplit.errors import FxsplitError
from fxsplit.lower.config import DEFAULT_PRECISION, FlowConfig, given_precision, normalize_config

NAMES = {"x": "x", "fc1": "fc1", "relu": "relu", "fc2": "fc2"}       # hls4ml's layer names -> fx node names


class TwoLayer(nn.Module):
    """x -> fc1 -> relu | Cut("second") | fc2: partitions p0 (fc1, relu) and second (fc2)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.relu = nn.ReLU()
        self.mark = Cut("second")
        self.fc2 = nn.Linear(16, 6)

    def forward(self, x):
        return self.fc2(self.mark(self.relu(self.fc1(x))))


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.block(x))


@pytest.fixture(scope="module")
def pt():
    return fxsplit.partition(TwoLayer(), (8,))


def test_defaults(pt):
    assert [(p.name, p.nodes) for p in pt] == [("p0", ["fc1", "relu"]), ("second", ["fc2"])]
    fc = normalize_config(None, pt)
    assert fc == FlowConfig(model={"Precision": {"default": "fixed<16,6>"}, "ReuseFactor": 1, "Strategy": "Latency",
                                   "BramFactor": 1_000_000_000, "TraceOutput": False}, exact_accum=False)
    assert DEFAULT_PRECISION == "fixed<16,6>"
    assert (fc.layer_name, fc.layer_type, fc.from_hls_config, fc.accum_changes) == ({}, {}, False, {})
    assert (fc.io_type, fc.backend, fc.csim_opt, fc.tb_vectors, fc.csim_pch) == ("io_parallel", "Vivado", "-O3", 200,
                                                                                 True)


def test_model_section_from_fxsplits_keys(pt):
    fc = normalize_config({"precision": "fixed<12,4>", "reuse_factor": 4, "strategy": "Resource",
                           "io_type": "io_stream", "clock_period": 3.3}, pt)
    assert fc.model == {"Precision": {"default": "fixed<12,4>"}, "ReuseFactor": 4, "Strategy": "Resource",
                        "BramFactor": 1_000_000_000, "TraceOutput": False}
    assert (fc.precision, fc.io_type, fc.clock_period) == ("fixed<12,4>", "io_stream", 3.3)


def test_unknown_key_is_refused_with_close_names(pt):
    with pytest.raises(FxsplitError, match="unknown config key 'precison' in config") as ei:
        normalize_config({"precison": "fixed<8,3>"}, pt)
    assert ei.value.hint.startswith("did you mean 'precision'")


@pytest.mark.parametrize("key, value, message", [
    ("csim_opt", "-O4", "config csim_opt must be one of -O0..-O3, got '-O4'"),
    ("tb_vectors", 0, "config tb_vectors must be a positive number of samples, got 0"),
    ("tb_vectors", True, "config tb_vectors must be a positive number of samples, got True"),
    ("tb_vectors", "5", "config tb_vectors must be a positive number of samples, got '5'"),
    ("csim_pch", "yes", "config csim_pch must be True or False, got 'yes'"),
    ("io_type", "io_serial", "config io_type must be 'io_parallel' or 'io_stream', got 'io_serial'"),
    ("exact_accum", 1, "config exact_accum must be True or False, got 1"),
])
def test_invalid_values_are_refused(pt, key, value, message):
    with pytest.raises(FxsplitError) as ei:
        normalize_config({key: value}, pt)
    assert str(ei.value) == message


def test_partition_override_applies_to_every_layer_of_the_partition(pt):
    fc = normalize_config({"partitions": {"second": {"precision": "fixed<10,4>", "reuse_factor": 2}},
                           "input_precision": "fixed<8,2>"}, pt)
    assert fc.layer_name == {"fc2": {"Precision": {"result": "fixed<10,4>", "weight": "fixed<10,4>",
                                                   "bias": "fixed<10,4>"}, "ReuseFactor": 2},
                             "x": {"Precision": {"result": "fixed<8,2>"}}}
    fc = normalize_config({"partitions": {"p0": {"strategy": "Resource"}}}, pt)
    assert fc.layer_name == {"fc1": {"Strategy": "Resource"}, "relu": {"Strategy": "Resource"}}


def test_bad_partition_overrides_are_refused(pt):
    with pytest.raises(FxsplitError, match="config names partition 'secnd', which does not exist") as ei:
        normalize_config({"partitions": {"secnd": {}}}, pt)
    assert ei.value.hint == "did you mean 'second'?"
    with pytest.raises(FxsplitError, match=r"config\['partitions'\]\['p0'\] must be a dict like"):
        normalize_config({"partitions": {"p0": ["fixed<8,3>"]}}, pt)
    with pytest.raises(FxsplitError, match=r"unknown config key 'io_type' in config\['partitions'\]\['p0'\]") as ei:
        normalize_config({"partitions": {"p0": {"io_type": "io_stream"}}}, pt)
    assert ei.value.hint == "known: precision, reuse_factor, strategy"
    with pytest.raises(FxsplitError, match=r"config\['layers'\]\['fc1'\]: precision must be a string such as "):
        normalize_config({"layers": {"fc1": {"precision": 8}}}, pt)


def test_layers_by_module_name_or_node_name():
    pt = fxsplit.partition(Nested(), (8,), splits=["head"])
    fc = normalize_config({"layers": {"block.0": {"precision": {"weight": "fixed<6,2>"}, "reuse_factor": 8},
                                      "head": {"precision": "fixed<10,5>"}}}, pt)
    assert fc.layer_name == {"block_0": {"Precision": {"weight": "fixed<6,2>"}, "ReuseFactor": 8},
                             "head": {"Precision": {"result": "fixed<10,5>", "weight": "fixed<10,5>",
                                                    "bias": "fixed<10,5>"}}}
    # the node name reaches the same layer; a layer override wins over its partition's
    fc = normalize_config({"partitions": {"p0": {"reuse_factor": 2}}, "layers": {"block_0": {"reuse_factor": 8}}}, pt)
    assert fc.layer_name["block_0"] == {"ReuseFactor": 8} and fc.layer_name["block_1"] == {"ReuseFactor": 2}
    with pytest.raises(FxsplitError, match="config names layer 'block.2', which is not in the model") as ei:
        normalize_config({"layers": {"block.2": {}}}, pt)
    assert "'block.0'" in ei.value.hint


def test_exact_accum_sets_auto_where_the_config_names_no_accumulator(pt):
    fc = normalize_config({"exact_accum": True, "layers": {"fc2": {"precision": "fixed<10,4>"}}}, pt)
    assert fc.layer_name == {"fc1": {"Precision": {"accum": "auto"}},
                             "fc2": {"Precision": {"result": "fixed<10,4>", "weight": "fixed<10,4>",
                                                   "bias": "fixed<10,4>", "accum": "auto"}}}
    # each changed layer with the accumulator plain hls4ml would have given it (fc2's dict has no default: Model's)
    assert fc.accum_changes == {"fc1": "fixed<16,6>", "fc2": "fixed<16,6>"}
    named = normalize_config({"exact_accum": True, "layers": {"fc1": {"precision": {"accum": "fixed<20,8>"}}}}, pt)
    assert named.layer_name["fc1"] == {"Precision": {"accum": "fixed<20,8>"}} and named.accum_changes == {
        "fc2": "fixed<16,6>"}
    assert normalize_config(None, pt, exact_accum_default=True).accum_changes == {"fc1": "fixed<16,6>",
                                                                                  "fc2": "fixed<16,6>"}
    assert normalize_config({"exact_accum": False}, pt, exact_accum_default=True).layer_name == {}


def test_hls_config_is_the_config(pt):
    hls = {"Model": {"Precision": {"default": "fixed<10,4>"}, "ReuseFactor": 1, "Strategy": "Latency"},
           "LayerType": {"Dense": {"Precision": {"accum": "fixed<24,8>"}}},
           "LayerName": {"fc1": {"Precision": {"weight": "fixed<6,2>"}}}, "InputShape": [None, 8]}
    given = copy.deepcopy(hls)
    fc = normalize_config({"io_type": "io_stream"}, pt, hls_config=hls, hls_names=NAMES, exact_accum_default=True)
    assert fc.from_hls_config and fc.precision == "fixed<10,4>" and fc.io_type == "io_stream"
    assert fc.model == hls["Model"] and fc.layer_type == hls["LayerType"]
    assert fc.layer_name == {"fc1": {"Precision": {"weight": "fixed<6,2>"}}}
    assert fc.exact_accum is False and fc.accum_changes == {}        # plain hls4ml's accumulators by default
    fc.model["ReuseFactor"] = 9
    fc.layer_name["fc1"]["Precision"]["weight"] = "fixed<2,1>"
    assert hls == given                                               # the user's dict is copied, never changed
    fc = normalize_config({"exact_accum": True}, pt, hls_config={"Model": {"Precision": "fixed<10,4>"}},
                          hls_names=NAMES)
    assert fc.precision == "fixed<10,4>" and fc.accum_changes == {"fc1": "fixed<10,4>", "fc2": "fixed<10,4>"}


@pytest.mark.parametrize("config, hls_config, message", [
    ({"precision": "fixed<8,3>", "reuse_factor": 2}, {"Model": {}},
     r"config sets \['precision', 'reuse_factor'\] and hls_config is given: the hls4ml config holds the numerics"),
    (None, {"LayerName": {}}, "hls_config must be an hls4ml config dict with a 'Model' section"),
    (None, [], "hls_config must be an hls4ml config dict with a 'Model' section"),
    (None, {"Model": {}, "Flows": []}, "hls_config section 'Flows' is not one fxsplit applies"),
    (None, {"Model": {}, "InputShape": [4]},
     r"hls_config InputShape \[4\] differs from the input shape\(s\) \[\(8,\)\] given to compile"),
    (None, {"Model": {"ChannelsLastConversion": "bogus"}},
     "hls_config Model ChannelsLastConversion='bogus' is not one hls4ml knows"),
    (None, {"Model": {}, "LayerName": {"fc9": {}}}, "hls_config LayerName names 'fc9', which hls4ml does not see"),
    (None, {"Model": {}, "LayerName": {"fc1": "fixed<8,3>"}}, r"hls_config LayerName\['fc1'\] must be a dict, got str"),
])
def test_bad_hls_configs_are_refused(pt, config, hls_config, message):
    with pytest.raises(FxsplitError, match=message):
        normalize_config(config, pt, hls_config=hls_config, hls_names=NAMES)


def test_split_layer_pieces_take_the_layers_settings():
    pt = fxsplit.partition(TwoLayer(), (8,), splits=["fc1@4"])
    assert [(p.name, p.nodes) for p in pt] == [("p0", ["fc1__o0"]), ("p1", ["fc1__o4", "cat", "relu"]),
                                               ("second", ["fc2"])]
    fc = normalize_config({"layers": {"fc1": {"reuse_factor": 4}}}, pt)
    assert fc.layer_name == {"fc1": {"ReuseFactor": 4}, "fc1__o0": {"ReuseFactor": 4}, "fc1__o4": {"ReuseFactor": 4}}
    assert fc.layer_name["fc1__o0"] is not fc.layer_name["fc1__o4"]
    with pytest.raises(FxsplitError, match=r"layer 'fc1' is split across partitions \['p0', 'p1'\], and the config "
                                           "gives its pieces different settings") as ei:
        normalize_config({"partitions": {"p1": {"reuse_factor": 4}}}, pt)
    assert ei.value.module == "fc1"
    # the same override on every partition holding a piece: the layer's own
    fc = normalize_config({"partitions": {"p0": {"reuse_factor": 4}, "p1": {"reuse_factor": 4}}}, pt)
    assert fc.layer_name["fc1"] == fc.layer_name["fc1__o0"] == fc.layer_name["fc1__o4"] == {"ReuseFactor": 4}


def test_given_precision_follows_hls4mls_precedence():
    """LayerName[var], LayerName default, LayerType[var], LayerType default, Model[var], Model default."""
    fc = FlowConfig(model={"Precision": {"default": "fixed<16,6>", "accum": "fixed<30,10>"}},
                    layer_type={"Dense": {"Precision": {"default": "fixed<12,4>", "bias": "fixed<9,3>"}}},
                    layer_name={"fc1": {"Precision": {"result": "fixed<8,3>", "default": "fixed<14,5>"}},
                                "fc2": {"Precision": {"result": "fixed<7,2>"}},
                                "fc3": {"Precision": "fixed<5,1>"}, "fc4": {"ReuseFactor": 2}})
    assert given_precision(fc, "fc1", "Dense", "result") == "fixed<8,3>"        # LayerName[var]
    assert given_precision(fc, "fc1", "Dense", "bias") == "fixed<14,5>"         # LayerName default over LayerType[var]
    assert given_precision(fc, "fc2", "Dense", "bias") == "fixed<9,3>"          # LayerType[var]
    assert given_precision(fc, "fc2", "Dense", "accum") == "fixed<12,4>"        # LayerType default over Model[var]
    assert given_precision(fc, "fc3", "Dense", "accum") == "fixed<5,1>"         # a LayerName string: every variable
    assert given_precision(fc, "fc4", "Dense", "weight") == "fixed<12,4>"       # a LayerName entry without Precision
    assert given_precision(fc, "conv", "Conv2D", "accum") == "fixed<30,10>"     # Model[var]
    assert given_precision(fc, "conv", "Conv2D", "weight") == "fixed<16,6>"     # Model default


def test_given_precision_layer_type_is_case_insensitive_and_none_when_unset():
    fc = FlowConfig(layer_type={"dense": {"Precision": {"accum": "fixed<20,8>"}}, "Conv2D": {"ReuseFactor": 2}})
    assert given_precision(fc, "fc", "Dense", "accum") == "fixed<20,8>"
    assert given_precision(fc, "fc", "Dense", "result") is None                 # nothing anywhere: None
    assert given_precision(fc, "conv", "Conv2D", "accum") is None
    assert given_precision(FlowConfig(model={"Precision": "fixed<10,4>"}), "fc", "Dense", "accum") == "fixed<10,4>"
