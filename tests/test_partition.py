"""Markers, tracing and DAG partitioning (no builds)."""

import pytest
import numpy as np
import torch
from torch import nn

import fxsplit
from fxsplit import Cut, FxsplitError, cut
from fxsplit.zoo import build


class TwoLayer(nn.Module):
    def __init__(self, marker=True):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.relu = nn.ReLU()
        self.mark = Cut("second") if marker else None
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        x = self.relu(self.fc1(x))
        if self.mark is not None:
            x = self.mark(x)
        return self.fc2(x)


def test_cut_is_identity_in_pytorch():
    torch.manual_seed(0)
    with_cut, without = TwoLayer(True), TwoLayer(False)
    without.load_state_dict(with_cut.state_dict())  # Cut has no state: the state dicts are interchangeable
    assert set(with_cut.state_dict()) == set(without.state_dict())
    x = torch.randn(5, 8, requires_grad=True)
    y1, y2 = with_cut(x), without(x)
    assert torch.equal(y1, y2)
    g1, = torch.autograd.grad(y1.sum(), x)
    g2, = torch.autograd.grad(y2.sum(), x)
    assert torch.equal(g1, g2)
    with_cut.eval()
    assert torch.equal(with_cut(x), without.eval()(x))
    t = torch.randn(3)
    assert cut(t, "n") is t


def test_partition_names_ports_and_erased_markers():
    pt = fxsplit.partition(TwoLayer(), (8,))
    assert [p.name for p in pt.partitions] == ["p0", "second"]
    p0, p1 = pt.partitions
    assert [p.name for p in p0.outputs] == ["relu"] and p1.inputs[0] is p0.outputs[0]
    assert p1.sources == {"relu": "p0"}
    for p in pt.partitions:  # markers are gone from the partitions
        assert not any(isinstance(m, Cut) for m in p.module.modules())
        assert all(n.target is not cut for n in p.module.graph.nodes)
    assert not any(n.op == "call_module" and "mark" in str(n.target) for n in pt.graph.graph.nodes)


def test_splits_combine_with_markers_and_are_ordered():
    pt = fxsplit.partition(TwoLayer(), (8,), splits=["relu"])
    assert [p.name for p in pt.partitions] == ["p0", "p1", "second"]
    assert [len(p.nodes) for p in pt.partitions] == [1, 1, 1]


def test_split_at_a_marker_merges_with_it():
    pt = fxsplit.partition(TwoLayer(), (8,), splits=["fc2", "fc2"])
    assert [p.name for p in pt.partitions] == ["p0", "second"]


def test_skip_connection_bypasses_partitions():
    model, shape = build("branchy_cnn")
    pt = fxsplit.partition(model, shape)
    assert [p.name for p in pt.partitions] == ["p0", "branches", "mix"]
    mix = pt["mix"]
    # 'relu' (the stem output) is produced in p0 and consumed two partitions later
    assert mix.sources["relu"] == "p0"
    assert "relu" in [p.name for p in pt["p0"].outputs]
    assert pt["branches"].sources == {"relu": "p0", "relu_a": "p0"}  # program order: branch a precedes the cut
    # ports are channels-last
    assert mix.inputs[[p.name for p in mix.inputs].index("relu")].shape == (8, 8, 4)


def test_marker_inside_residual_block():
    model, shape = build("residual_cnn")
    pt = fxsplit.partition(model, shape)
    tail = pt["block_tail"]
    # the skip tensor (relu0) and the branch tensor (relu1) both cross the cut
    assert sorted(tail.sources) == ["relu0", "relu1"]
    assert set(tail.sources.values()) == {"p0"}


def test_partition_graph_computes_same_as_model():
    model, shape = build("residual_cnn")
    pt = fxsplit.partition(model, shape)
    x = torch.randn(4, *shape)
    env = {pt.inputs[0].name: x}
    with torch.no_grad():
        for p in pt.partitions:
            ys = p.module(*[env[i.name] for i in p.inputs])
            for port, y in zip(p.outputs, ys):
                env[port.name] = y
        assert torch.allclose(env[pt.outputs[0].name], model(x), atol=1e-6)


def test_partition_does_not_change_training_mode():
    model, shape = build("residual_cnn")
    model.train()
    fxsplit.partition(model, shape)
    assert model.training


# ------------------------------------------------------------------------- bad input, caught early

class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:          # data-dependent control flow
            return self.fc(x)
        return x


def test_untraceable_control_flow_names_module_and_line():
    with pytest.raises(FxsplitError) as e:
        fxsplit.partition(nn.Sequential(nn.Linear(4, 4), DataDependent()), (4,))
    msg = str(e.value)
    assert "control flow" in msg and "module: 1" in msg
    assert "test_partition.py" in msg and "if x.sum() > 0" in msg
    _plain_hls4ml_fails(nn.Sequential(nn.Linear(4, 4), DataDependent()), (4,))


def _plain_hls4ml_fails(model, shape):
    """The refusal is true: plain hls4ml (its config builder and converter) fails on the same model."""
    import tempfile

    import hls4ml
    from hls4ml.utils.config import config_from_pytorch_model
    with tempfile.TemporaryDirectory() as d, pytest.raises(Exception) as plain:
        cfg = config_from_pytorch_model(model, shape)
        hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=d, backend="Vivado")
    assert not isinstance(plain.value, FxsplitError)


def test_layer_hls4ml_cannot_convert_is_refused(tmp_path):
    """GELU is not in hls4ml 1.3's PyTorch registry: refused before any build, naming the module, and truly."""
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)).eval()
    with pytest.raises(FxsplitError) as e:
        fxsplit.compile(model, (4,), output_dir=tmp_path / "o")
    assert "hls4ml cannot convert module '1' (GELU)" in str(e.value)
    assert not (tmp_path / "o").exists()
    _plain_hls4ml_fails(model, (4,))


def test_unknown_split_name_suggests_close_names():
    model, shape = build("jet_tagger")
    with pytest.raises(FxsplitError) as e:
        fxsplit.partition(model, shape, splits=["fc33"])
    assert "'fc33'" in str(e.value) and "did you mean" in str(e.value) and "'fc3'" in str(e.value)


@pytest.mark.parametrize("where", ["start", "end", "twice"])
def test_cut_leaving_a_partition_empty(where):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
            self.c1 = Cut("one")
            if where == "twice":      # a Cut the forward never calls is refused on its own (test_markers)
                self.c2 = Cut("two")

        def forward(self, x):
            if where == "start":
                return self.b(self.a(self.c1(x)))
            if where == "end":
                return self.c1(self.b(self.a(x)))
            return self.b(self.c2(self.c1(self.a(x))))

    with pytest.raises(FxsplitError) as e:
        fxsplit.partition(M(), (4,))
    assert "empty" in str(e.value) and "test_partition.py" in str(e.value)


@pytest.mark.parametrize("bad", ["../escape", "a/b", "stitched", "", "9lives", "_hidden"])
def test_partition_names_cannot_escape_output_dir(bad, tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), Cut(bad), nn.Linear(4, 2))
    out = tmp_path / "out"
    with pytest.raises(FxsplitError) as e:
        fxsplit.compile(model, (4,), output_dir=out)
    assert "usable partition name" in str(e.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_duplicate_partition_names():
    model = nn.Sequential(nn.Linear(4, 4), Cut("x1"), nn.Linear(4, 4), Cut("x1"), nn.Linear(4, 2))
    with pytest.raises(FxsplitError, match="several partitions would be named 'x1'"):
        fxsplit.partition(model, (4,))


def test_unsupported_layer_named_with_partition_before_build(tmp_path):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 8)
            self.cut = Cut("tail")
            self.act = nn.GELU()
            self.fc2 = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(self.act(self.cut(self.fc1(x))))

    out = tmp_path / "out"
    with pytest.raises(FxsplitError) as e:
        fxsplit.compile(M(), (4,), output_dir=out)
    msg = str(e.value)
    assert "GELU" in msg and "module: act" in msg and "partition: tail" in msg and "test_partition.py" in msg
    assert not out.exists()


def test_bad_config_is_rejected_before_build(tmp_path):
    model, shape = build("jet_tagger")
    out = tmp_path / "out"
    with pytest.raises(FxsplitError, match="did you mean 'hidden'"):
        fxsplit.compile(model, shape, output_dir=out, config={"partitions": {"hiden": {"reuse_factor": 2}}})
    with pytest.raises(FxsplitError, match="unknown config key 'precison'"):
        fxsplit.compile(model, shape, output_dir=out, config={"precison": "fixed<8,3>"})
    with pytest.raises(FxsplitError, match="not in the model"):
        fxsplit.compile(model, shape, output_dir=out, config={"layers": {"fc9": {"precision": "fixed<8,3>"}}})
    assert not out.exists()


def _name_granularity(model, shape):
    """hls4ml's per-layer config with 'auto' types (config_from_pytorch_model(..., granularity='name'))."""
    from hls4ml.utils.config import config_from_pytorch_model
    cfg = config_from_pytorch_model(model, shape, granularity="name")
    cfg.pop("PytorchModel")
    return cfg


def test_cut_between_conv_and_batchnorm_is_refused(tmp_path):
    """With 'auto' types hls4ml fuses the BatchNorm into the convolution: a cut between them is refused.
    With fixed types (hls4ml's model granularity, fxsplit's default) hls4ml keeps them apart: no refusal."""
    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), Cut("bn"), nn.BatchNorm2d(2), nn.ReLU(),
                             nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).eval()
    with pytest.raises(FxsplitError) as e:
        fxsplit.compile(model(), (2, 4, 4), hls_config=_name_granularity(model(), (2, 4, 4)),
                        output_dir=tmp_path / "o")
    msg = str(e.value)
    assert "merges '_2' into '_0'" in msg and "partition: bn" in msg and "module: 2" in msg
    # the nearest legal cuts: after the BatchNorm (before the ReLU, module '3') or before the convolution
    assert "cut after '_2' (splits=['3']) or before '_0' (splits=['0'])" in msg
    assert not (tmp_path / "o").exists()
    # a true refusal: plain hls4ml, uncut, with the same config, has no BatchNorm layer left (it is fused)
    import hls4ml
    plain = hls4ml.converters.convert_from_pytorch_model(model(), hls_config=_name_granularity(model(), (2, 4, 4)),
                                                         output_dir=str(tmp_path / "plain"), backend="Vivado")
    kinds = [layer.class_name for layer in plain.get_layers()]
    assert "BatchNormalization" not in kinds and any(k.startswith("Conv2D") for k in kinds), kinds
    from fxsplit.lower import lower, normalize_config
    pt = fxsplit.partition(model(), (2, 4, 4))
    lw = lower(pt, normalize_config({}, pt), str(tmp_path / "scratch"))
    assert "_2" in [layer.name for layer in lw.graphs["bn"].get_layers()]     # the BatchNorm, kept


def test_wrong_input_shape():
    model, _ = build("jet_tagger")
    with pytest.raises(FxsplitError, match="input_shape"):
        fxsplit.partition(model, (17,))
    with pytest.raises(FxsplitError, match="tuple of ints"):
        fxsplit.partition(model, "16")


_TWICE = {"add": (lambda y: y + y, 4), "mul": (lambda y: y * y, 4), "maximum": (lambda y: torch.maximum(y, y), 4),
          "cat": (lambda y: torch.cat([y, y], dim=1), 8),
          "einsum": (lambda y: torch.einsum("bi,bj->bij", y, y).flatten(1), 16)}


def _twice_model(op):
    fn, width = _TWICE[op]

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.out = nn.Linear(width, 2)

        def forward(self, x):
            return self.out(fn(self.fc(x)))
    torch.manual_seed(0)
    return M().eval()


@pytest.mark.parametrize("op", ["add", "mul", "maximum", "cat"])
def test_same_tensor_twice_in_a_merge_is_refused(op, tmp_path):
    """hls4ml's merge and concatenate layers fail on x op x: refused up front, and truly (plain hls4ml fails)."""
    with pytest.raises(FxsplitError, match="same tensor 'fc' twice"):
        fxsplit.compile(_twice_model(op), (4,), output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    import hls4ml
    from hls4ml.utils.config import config_from_pytorch_model
    with pytest.raises(Exception) as plain:
        model = _twice_model(op)
        hls4ml.converters.convert_from_pytorch_model(model, hls_config=config_from_pytorch_model(model, (4,)),
                                                     output_dir=str(tmp_path / "plain"), backend="Vivado")
    assert not isinstance(plain.value, FxsplitError)


def test_same_tensor_twice_where_hls4ml_converts_it(tmp_path):
    """einsum(y, y) converts in plain hls4ml: no refusal, and the same bits."""
    import hls4ml
    from hls4ml.utils.config import config_from_pytorch_model
    model = _twice_model("einsum")
    cfg = config_from_pytorch_model(model, (4,))
    plain = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=str(tmp_path / "plain"),
                                                         backend="Vivado")
    plain.compile()
    design = fxsplit.compile(model, (4,), splits=["einsum"], hls_config=cfg, config={"csim_opt": "-O0"},
                             output_dir=tmp_path / "o", progress=False)
    x = np.random.default_rng(0).uniform(-20, 20, size=(50, 4))
    assert np.array_equal(np.asarray(design.predict(x)), plain.predict(x))
    assert design.verify(x).bit_exact


def test_public_names_survive_submodule_imports():
    """A submodule named like a public function would shadow it once imported (fxsplit.partition did)."""
    import importlib
    import pkgutil
    for mod in pkgutil.walk_packages(fxsplit.__path__, "fxsplit."):
        if mod.name != "fxsplit.__main__":
            importlib.import_module(mod.name)
    from fxsplit.frontend.partitioner import partition as impl
    assert fxsplit.partition is impl and callable(fxsplit.compile) and isinstance(fxsplit.Cut, type)


def test_partition_of_only_a_dropped_reshape_is_refused(tmp_path):
    """io_parallel: hls4ml drops a Reshape that ends a graph, so a partition holding only one would wire its
    input to its output. Refused before any build; and truly: plain hls4ml cannot build such a graph either."""
    import hls4ml
    from hls4ml.utils.config import config_from_pytorch_model

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.conv = nn.Linear(4, 6), nn.Conv1d(1, 2, 3)
            self.c1, self.c2 = Cut("mid"), Cut("tail")

        def forward(self, x):
            return self.conv(self.c2(self.c1(self.fc(x)).unsqueeze(1)))

    with pytest.raises(FxsplitError, match="partition 'mid' holds nothing hls4ml keeps") as e:
        fxsplit.compile(M().eval(), (4,), output_dir=tmp_path / "o")
    assert "partition: mid" in str(e.value)
    assert not (tmp_path / "o").exists()

    class OnlyReshape(nn.Module):
        def forward(self, x):
            return x.unsqueeze(1)

    plain = hls4ml.converters.convert_from_pytorch_model(
        OnlyReshape(), hls_config=config_from_pytorch_model(OnlyReshape(), (6,)), output_dir=str(tmp_path / "plain"),
        backend="Vivado")
    with pytest.raises(Exception, match="Failed to compile"):
        plain.compile()


def test_cut_right_after_layernorm_is_refused(tmp_path):
    """hls4ml computes LayerNorm channels-first between two transposes and drops the second one where the
    LayerNorm ends a graph: a port there would carry channels-first data (the stitched design differed from
    the uncut one in every output before this refusal). Truly: plain hls4ml's own output of a graph ending in
    a LayerNorm is channels-first under channels_last_conversion='internal'."""
    import hls4ml
    from hls4ml.utils.config import config_from_pytorch_model

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv1d(2, 3, 3, padding=1), nn.LayerNorm(5)
            self.cut, self.head = Cut("tail"), nn.Conv1d(3, 2, 1)

        def forward(self, x):
            return self.head(self.cut(self.norm(self.conv(x))))

    with pytest.raises(FxsplitError, match="computes channels-first") as e:
        fxsplit.compile(M().eval(), (2, 5), output_dir=tmp_path / "o")
    assert "module: norm" in str(e.value) and "partition: p0" in str(e.value)
    assert not (tmp_path / "o").exists()

    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv1d(2, 3, 3, padding=1), nn.LayerNorm(5)

        def forward(self, x):
            return self.norm(self.conv(x))
    torch.manual_seed(0)
    tail = Tail().eval()
    cfg = config_from_pytorch_model(tail, (2, 5), channels_last_conversion="internal", default_precision="fixed<18,8>")
    plain = hls4ml.converters.convert_from_pytorch_model(tail, hls_config=cfg, output_dir=str(tmp_path / "plain"),
                                                         backend="Vivado")
    plain.compile()
    x = np.random.default_rng(0).uniform(-2, 2, (20, 2, 5))
    y = plain.predict(np.ascontiguousarray(np.moveaxis(x, 1, -1))).reshape(20, -1)
    with torch.no_grad():
        t = tail(torch.tensor(x, dtype=torch.float32)).numpy()
    err_first = np.abs(y - t.reshape(20, -1)).max()
    err_last = np.abs(y - np.moveaxis(t, 1, -1).reshape(20, -1)).max()
    assert err_first < 0.2 < err_last, (err_first, err_last)


def test_cut_right_after_a_dropout(tmp_path):
    """hls4ml skips Dropout: a cut right after one hands on the dropout's input (its tensor has no hls4ml layer)."""
    import numpy as np
    from conftest import FAST
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3)).eval()
    d = fxsplit.compile(model, (6,), splits=["3"], config=FAST, output_dir=tmp_path / "o", jobs=2, progress=False)
    assert [p.name for p in d.partitions[0].outputs] == ["_2"]
    r = d.verify(np.random.default_rng(0).uniform(-4, 4, (50, 6)))
    assert r.bit_exact and r.max_abs_error_vs_torch < 0.05


def test_container_split_on_a_model_without_its_markers_cuts_where_it_does_on_the_model():
    """strip_markers returns a GraphModule; tracing it again keeps every node's module path and source line, so
    a container name ('stage2.1', a ResNet block) cuts at the same operation as on the model itself."""
    from fxsplit.frontend.capture import node_source
    from fxsplit.frontend.partitioner import strip_markers
    model, shape = build("resnet20")
    a = fxsplit.partition(model, shape, splits=["stage1.1", "stage2.1"])
    b = fxsplit.partition(strip_markers(model, shape), shape, splits=["stage1.1", "stage2.1"])
    starts = [p.nodes[0] for p in b.partitions]
    assert starts == ["conv", "stage1_1_conv1", "stage2_1_conv1"]
    assert set(starts) <= {p.nodes[0] for p in a.partitions}       # the model's own cuts there, plus its markers
    conv = next(n for n in b.graph.graph.nodes if n.name == "stage2_1_conv1")
    assert "fxsplit/zoo/resnet20.py" in (node_source(conv) or "")


def test_split_naming_a_container_no_operation_is_attributed_to_says_so():
    """A GraphModule whose nodes carry no module paths (built by a tool that drops node meta): a container name
    exists in named_modules() but nothing says which operations it ran. Refused as such, not 'did you mean'
    the very same name."""
    from fxsplit.frontend.partitioner import strip_markers
    model, shape = build("resnet20")
    gm = strip_markers(model, shape)
    for n in gm.graph.nodes:
        n.meta.pop("nn_module_stack", None)
    with pytest.raises(FxsplitError, match="no traced operation is attributed to it") as e:
        fxsplit.partition(gm, shape, splits=["stage2.1"])
    assert "did you mean" not in str(e.value)
    fxsplit.partition(gm, shape, splits=["stage2.1.conv1"])     # a leaf name still works
