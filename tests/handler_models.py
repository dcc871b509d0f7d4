"""One tiny model per handler of hls4ml's PyTorch converter registry, and the checks of the handler matrix.

``BUILDERS`` maps every name in ``hls4ml.converters.pytorch_to_hls.get_supported_pytorch_layers()`` to a
function ``build(before=True, after=True) -> Case``. Each model puts the operation mid-model::

    pre (and pre2, for two-input operations) -> [Cut 'op'] -> OPERATION -> [Cut 'post'] -> post

so with both markers it has three partitions: ``p0`` (the producing layer(s)), ``op`` (the operation alone)
and ``post`` (the consuming layer). ``before``/``after`` leave a marker out (to build only the legal cuts when
fxsplit refuses one). The markers are identities for hls4ml's own tracer, so plain hls4ml converts the same
model uncut.

:func:`run_case` is the whole check of one (handler, io_type) case, shared by ``tests/test_handler_matrix.py``
and ``scripts/handler_matrix.py`` (which prints the Markdown table):

- plain hls4ml (``convert_from_pytorch_model`` + ``compile``) on the uncut model;
- if plain hls4ml fails: fxsplit must raise an ``FxsplitError`` saying hls4ml cannot convert/build it;
- else fxsplit's uncut C simulation (``design.predict_monolithic``) == plain hls4ml's ``predict``, bit for bit,
  and the stitched design (``design.predict``) == both, bit for bit (and ``design.verify(x).bit_exact``);
- a cut fxsplit refuses because hls4ml fuses layers across it must be a true refusal (plain hls4ml's layer
  list lacks one of the operation's layers); the model is then built with the legal cut(s) only.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import fxsplit

PRECISION = "fixed<12,5>"          # input range [-16, 16): the inputs below reach beyond it (wrap)
N_SAMPLES = 50
INPUT_RANGE = (-20.0, 20.0)
CSIM_OPT = "-O0"                   # numerics do not depend on it; compiles twice as fast
IO_TYPES = ("io_parallel", "io_stream")


# ----------------------------------------------------------------------------------------------- models

class Sandwich(nn.Module):
    """``post(fn(self, pre(x)[, pre2(x)]))`` with a Cut marker right before and right after ``fn``.

    ``fn`` is the operation under test (it may call ``self.op``, the module under test, and read buffers
    registered on this module). Module attribute names stay free of hls4ml's name-based triggers (node
    names starting with add/mul/sub/fmin/fmax, or containing 'const', mean something to its converter)."""

    def __init__(self, pre: nn.Module, post: nn.Module, fn: Callable, op: nn.Module | None = None,
                 pre2: nn.Module | None = None, before: bool = True, after: bool = True,
                 buffers: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.pre = pre
        self.pre2 = pre2
        self.op = op
        self.post = post
        for k, v in (buffers or {}).items():
            self.register_buffer(k, v)
        self.fn = fn
        self.cut_before = fxsplit.Cut("op") if before else None
        self.cut_after = fxsplit.Cut("post") if after else None

    def forward(self, x):
        a = self.pre(x)
        if self.pre2 is None:
            if self.cut_before is not None:
                a = self.cut_before(a)
            y = self.fn(self, a)
        else:
            b = self.pre2(x)          # program order: both producers, then the marker, then the operation
            if self.cut_before is not None:
                b = self.cut_before(b)
            y = self.fn(self, a, b)
        if self.cut_after is not None:
            y = self.cut_after(y)
        return self.post(y)


@dataclass
class Case:
    """One handler's model: the operation mid-model, input shape (PyTorch, no batch) and input range."""
    handler: str
    model: nn.Module
    shape: tuple[int, ...]
    what: str                                   # how the handler is triggered (for the table and errors)
    low: float = INPUT_RANGE[0]
    high: float = INPUT_RANGE[1]

    def inputs(self, n: int = N_SAMPLES, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).uniform(self.low, self.high, size=(n, *self.shape))


def _seeded(fn):
    """Every builder starts from the same seed: same weights whatever ran before, with or without markers."""
    def wrapper(before: bool = True, after: bool = True) -> Case:
        torch.manual_seed(0)
        case = fn(before, after)
        case.model.eval()
        return case
    return wrapper


def _call_op(m, h):
    return m.op(h)


def _nontrivial_bn(bn: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from the identity."""
    with torch.no_grad():
        n = bn.num_features
        bn.running_mean.copy_(torch.linspace(-1.5, 2.0, n))
        bn.running_var.copy_(torch.linspace(0.5, 3.0, n))
        bn.weight.copy_(torch.linspace(0.6, 1.8, n))
        bn.bias.copy_(torch.linspace(-0.7, 0.9, n))
    return bn


# flat vectors: Linear(4 -> 6) -> op -> Linear(6 -> 3)
def _flat(handler, op, before, after, what, fn=_call_op, width_out=None, **kw):
    pre = nn.Linear(4, 6)
    post = nn.Linear(width_out or 6, 3)
    return Case(handler, Sandwich(pre, post, fn, op=op, before=before, after=after, **kw), (4,), what)


def _flat_two(handler, fn, before, after, what, width_b=6, width_out=6):
    pre, pre2 = nn.Linear(4, 6), nn.Linear(4, width_b)
    post = nn.Linear(width_out, 3)
    return Case(handler, Sandwich(pre, post, fn, pre2=pre2, before=before, after=after), (4,), what)


# 1D feature maps (C=2, L=6): Conv1d(2 -> 3, k=3, pad=1) -> op -> Conv1d(C -> 2, k=1)
def _conv1d(handler, op, before, after, what, c_out=3, fn=_call_op):
    pre = nn.Conv1d(2, 3, 3, padding=1)
    post = nn.Conv1d(c_out, 2, 1)
    return Case(handler, Sandwich(pre, post, fn, op=op, before=before, after=after), (2, 6), what)


# 2D feature maps (C=2, 4x4): Conv2d(2 -> 3, k=3, pad=1) -> op -> Conv2d(C -> 2, k=1)
def _conv2d(handler, op, before, after, what, c_out=3, fn=_call_op):
    pre = nn.Conv2d(2, 3, 3, padding=1)
    post = nn.Conv2d(c_out, 2, 1)
    return Case(handler, Sandwich(pre, post, fn, op=op, before=before, after=after), (2, 4, 4), what)


# sequences, (T=3, F=4) in PyTorch: Conv1d(2 -> 3, k=3, pad=1) on (2, 4) -> op -> ...
# (a Linear producer on a sequence makes plain hls4ml fail in io_parallel: its 'full' channels-last conversion
# transposes the 2D input, and the Dense-on-2D rewrite then splits its weights unevenly)
def _seq(handler, op, before, after, what, fn, post):
    pre = nn.Conv1d(2, 3, 3, padding=1)
    return Case(handler, Sandwich(pre, post, fn, op=op, before=before, after=after), (2, 4), what)


BUILDERS: dict[str, Callable[..., Case]] = {}     # registry name -> build(before=True, after=True) -> Case


def builder(*names):
    """Register ``fn(name, before, after) -> Case`` as the builder of each registry name in ``names``."""
    def deco(fn):
        for name in names:
            BUILDERS[name] = _seeded(lambda before, after, fn=fn, name=name: fn(name, before, after))
        return fn
    return deco


@builder("Linear")
def _linear(h, before, after):
    return _flat(h, nn.Linear(6, 5), before, after, "nn.Linear", width_out=5)


_ACTIVATIONS = {
    "ReLU": lambda: nn.ReLU(),
    "LeakyReLU": lambda: nn.LeakyReLU(0.125),
    "ELU": lambda: nn.ELU(0.75),
    "PReLU": lambda: nn.PReLU(6, init=0.2),
    "Sigmoid": lambda: nn.Sigmoid(),
    "Tanh": lambda: nn.Tanh(),
    "Softmax": lambda: nn.Softmax(dim=-1),
    "Threshold": lambda: nn.Threshold(0.5, 0.0),     # hls4ml: ThresholdedReLU (value 0, threshold >= 0)
}


@builder(*_ACTIVATIONS)
def _activation(h, before, after):
    op = _ACTIVATIONS[h]()
    if h == "PReLU":
        with torch.no_grad():
            op.weight.copy_(torch.linspace(-0.5, 0.75, 6))
    return _flat(h, op, before, after, f"nn.{type(op).__name__}")


@builder("BatchNorm1d")
def _bn1d(h, before, after):
    return _flat(h, _nontrivial_bn(nn.BatchNorm1d(6)), before, after, "nn.BatchNorm1d")


@builder("BatchNorm2d")
def _bn2d(h, before, after):
    return _conv2d(h, _nontrivial_bn(nn.BatchNorm2d(3)), before, after, "nn.BatchNorm2d")


@builder("Batch_norm")
def _batch_norm_fn(h, before, after):
    # the registry's 'Batch_norm' (capital B): torch.fx names F.batch_norm's node 'batch_norm'
    bn = _nontrivial_bn(nn.BatchNorm1d(6))
    bufs = {"bn_mean": bn.running_mean.clone(), "bn_var": bn.running_var.clone(),
            "bn_weight": bn.weight.detach().clone(), "bn_bias": bn.bias.detach().clone()}
    fn = lambda m, x: F.batch_norm(x, m.bn_mean, m.bn_var, m.bn_weight, m.bn_bias, False, 0.0, 1e-5)  # noqa: E731
    return _flat(h, None, before, after, "F.batch_norm", fn=fn, buffers=bufs)


@builder("Constant")
def _constant(h, before, after):
    # hls4ml turns a scalar operand of add/mul/sub/fmin/fmax into a Constant layer
    return _flat(h, None, before, after, "x * 0.75 (scalar operand)", fn=lambda m, x: x * 0.75)


@builder("ConstantPad1d")
def _pad1d(h, before, after):
    return _conv1d(h, nn.ConstantPad1d((1, 2), 0.0), before, after, "nn.ConstantPad1d((1, 2), 0)")


@builder("ConstantPad2d")
def _pad2d(h, before, after):
    return _conv2d(h, nn.ConstantPad2d((1, 0, 2, 1), 0.0), before, after, "nn.ConstantPad2d((1, 0, 2, 1), 0)")


@builder("Conv1d")
def _conv1(h, before, after):
    return _conv1d(h, nn.Conv1d(3, 4, 3), before, after, "nn.Conv1d(3, 4, 3)", c_out=4)


@builder("Conv2d")
def _conv2(h, before, after):
    return _conv2d(h, nn.Conv2d(3, 4, 3, padding=1), before, after, "nn.Conv2d(3, 4, 3, padding=1)", c_out=4)


@builder("MaxPool1d", "AvgPool1d")
def _pool1d(h, before, after):
    op = getattr(nn, h)(2)
    return _conv1d(h, op, before, after, f"nn.{h}(2)")


@builder("MaxPool2d", "AvgPool2d")
def _pool2d(h, before, after):
    op = getattr(nn, h)(2)
    return _conv2d(h, op, before, after, f"nn.{h}(2)")


@builder("Upsample")
def _upsample(h, before, after):
    return _conv1d(h, nn.Upsample(scale_factor=2, mode="nearest"), before, after, "nn.Upsample(scale_factor=2) on 1D")


@builder("UpsamplingNearest2d", "UpsamplingBilinear2d")
def _upsample2d(h, before, after):
    return _conv2d(h, getattr(nn, h)(scale_factor=2), before, after, f"nn.{h}(scale_factor=2)")


@builder("Flatten")
def _flatten(h, before, after):
    pre = nn.Conv1d(2, 3, 3, padding=1)
    post = nn.Linear(18, 3)
    return Case(h, Sandwich(pre, post, _call_op, op=nn.Flatten(), before=before, after=after), (2, 6), "nn.Flatten")


@builder("View")
def _view(h, before, after):
    pre = nn.Conv1d(2, 3, 3, padding=1)
    post = nn.Linear(18, 3)
    return Case(h, Sandwich(pre, post, lambda m, x: x.view(-1, 18), before=before, after=after), (2, 6),
                "Tensor.view(-1, 18)")


@builder("squeeze")
def _squeeze(h, before, after):
    pre = nn.Conv1d(2, 1, 3, padding=1)        # (1, 6): a singleton channel
    post = nn.Linear(6, 3)
    return Case(h, Sandwich(pre, post, lambda m, x: x.squeeze(1), before=before, after=after), (2, 6),
                "Tensor.squeeze(1)")


@builder("unsqueeze")
def _unsqueeze(h, before, after):
    pre = nn.Linear(4, 6)
    post = nn.Conv1d(1, 2, 3)                  # reads the (1, 6) map
    return Case(h, Sandwich(pre, post, lambda m, x: x.unsqueeze(1), before=before, after=after), (4,),
                "Tensor.unsqueeze(1)")


@builder("RNN", "GRU", "LSTM")
def _recurrent(h, before, after):
    op = getattr(nn, h)(4, 4, batch_first=True)
    # hls4ml's recurrent layers return the last hidden state: out[:, -1, :] (batch_first)
    return _seq(h, op, before, after, f"nn.{h}(batch_first=True), out[:, -1, :]",
                fn=lambda m, x: m.op(x)[0][:, -1, :], post=nn.Linear(4, 3))


@builder("LayerNorm")
def _layernorm(h, before, after):
    op = nn.LayerNorm(4)
    with torch.no_grad():
        op.weight.copy_(torch.linspace(0.5, 1.5, 4))
        op.bias.copy_(torch.linspace(-0.5, 0.5, 4))
    return _seq(h, op, before, after, "nn.LayerNorm(4) on (3, 4)", fn=_call_op, post=nn.Conv1d(3, 2, 1))


_MERGES = {
    "add": ("a + b", lambda m, a, b: a + b),
    "sub": ("a - b", lambda m, a, b: a - b),
    "mul": ("a * b", lambda m, a, b: a * b),
    "multiply": ("torch.multiply(a, b)", lambda m, a, b: torch.multiply(a, b)),
    "subtract": ("torch.subtract(a, b)", lambda m, a, b: torch.subtract(a, b)),
    "fmin": ("torch.fmin(a, b)", lambda m, a, b: torch.fmin(a, b)),
    "fmax": ("torch.fmax(a, b)", lambda m, a, b: torch.fmax(a, b)),
    "minimum": ("torch.minimum(a, b)", lambda m, a, b: torch.minimum(a, b)),
    "maximum": ("torch.maximum(a, b)", lambda m, a, b: torch.maximum(a, b)),
}


@builder(*_MERGES)
def _merge(h, before, after):
    what, fn = _MERGES[h]
    return _flat_two(h, fn, before, after, what)


_CONCATS = {
    "cat": lambda m, a, b: torch.cat([a, b], dim=1),
    "concat": lambda m, a, b: torch.concat([a, b], dim=1),
    "concatenate": lambda m, a, b: torch.concatenate([a, b], dim=1),
}


@builder(*_CONCATS)
def _concat(h, before, after):
    return _flat_two(h, _CONCATS[h], before, after, f"torch.{h}([a, b], dim=1)", width_b=5, width_out=11)


@builder("einsum")
def _einsum(h, before, after):
    return _flat_two(h, lambda m, a, b: torch.einsum("bi,bi->bi", a, b), before, after,
                     "torch.einsum('bi,bi->bi', a, b)")


# ------------------------------------------------------------------------------------------- registry

def registry() -> list[str]:
    """hls4ml 1.3's PyTorch converter registry, read at call time (a new handler is a new case)."""
    import hls4ml.converters  # noqa: F401  (registers the handlers)
    from hls4ml.converters.pytorch_to_hls import get_supported_pytorch_layers
    return list(get_supported_pytorch_layers())


# ------------------------------------------------------------------------------------------- checks

# fxsplit's refusals of a cut through a group of layers hls4ml merges (lower.checks._check_boundaries)
FUSION_REFUSAL = re.compile(r"hls4ml merges|splits a group of layers hls4ml merges")
# fxsplit's other refusals of a cut (lower.checks._check_graph), each shown true by its own test in
# tests/test_partition.py: a partition holding only a reshape hls4ml drops (plain hls4ml cannot build such a
# graph either), and a cut right after a layer hls4ml leaves channels-first at a graph's end (LayerNorm)
OTHER_REFUSALS = {re.compile(r"holds nothing hls4ml keeps"): "the partition would hold only a reshape hls4ml drops",
                  re.compile(r"computes channels-first"): "hls4ml leaves this layer's output channels-first at a "
                                                          "graph's end"}


def hls_config(model: nn.Module, shape, io_type: str) -> dict:
    """The hls4ml config a user of plain hls4ml would have (model granularity, fixed<12,5>)."""
    from hls4ml.utils.config import config_from_pytorch_model
    conversion = "full" if io_type == "io_parallel" else "internal"     # hls4ml: 'full' is io_parallel only
    return config_from_pytorch_model(model, shape, granularity="model", default_precision=PRECISION,
                                     channels_last_conversion=conversion)


def op_layers(model: nn.Module) -> list[str]:
    """The names hls4ml gives the operation under test (its own trace): every node that is not an input,
    a producer (pre, pre2), the consumer (post), a getitem or a constant."""
    import operator

    from hls4ml.utils.torch import CustomFXTracer
    names = []
    for n in CustomFXTracer().trace(model).nodes:
        if n.op in ("placeholder", "output", "get_attr"):
            continue
        if n.op == "call_module" and n.target in ("pre", "pre2", "post"):
            continue
        if n.op == "call_function" and n.target is operator.getitem:
            continue
        names.append(n.name)
    return names


def _short(e: BaseException | str, limit: int = 110) -> str:
    text = e if isinstance(e, str) else (getattr(e, "message", None) or str(e) or type(e).__name__)
    line = " ".join(text.strip().splitlines()[0].split())
    if not isinstance(e, str) and not isinstance(e, fxsplit.FxsplitError):
        line = f"{type(e).__name__}: {line}"
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _plain_input(x: np.ndarray, io_type: str) -> np.ndarray:
    """Plain hls4ml's predict: channels-first input with 'full' (io_parallel), channels-last with 'internal'."""
    if io_type == "io_stream" and x.ndim > 2:
        x = np.moveaxis(x, 1, -1)
    return np.ascontiguousarray(x)


def _hls_layout(y, n: int, design) -> np.ndarray:
    """fxsplit's outputs in plain hls4ml's output layout (channels-last: TransposeOutputs is False in
    config_from_pytorch_model's default), as (N, -1). fxsplit returns that layout itself when given such an
    hls_config (``Partitioning.outputs_torch_layout`` False), PyTorch's layout otherwise."""
    y = np.asarray(y)
    if getattr(design.partitioning, "outputs_torch_layout", True) and y.ndim > 2:
        y = np.moveaxis(y, 1, -1)
    return np.ascontiguousarray(y).reshape(n, -1)


@contextlib.contextmanager
def c_stdout_to(path: Path):
    """Send what the C simulations print (hls::stream warnings, at file-descriptor level) to ``path``."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class PlainHLS4ML:
    """Plain hls4ml on the uncut model: convert + write in the caller, compile (g++, -O0) in a thread so it
    overlaps fxsplit's own build. ``error`` is set if conversion or compilation failed."""

    def __init__(self, case: Case, cfg: dict, io_type: str, out_dir: Path, log):
        import contextlib
        import hls4ml
        self.hm, self.error, self.layers = None, None, []
        self._thread = None
        try:
            with contextlib.redirect_stdout(log):
                hm = hls4ml.converters.convert_from_pytorch_model(case.model, hls_config=cfg, output_dir=str(out_dir),
                                                                  backend="Vivado", io_type=io_type)
                hm.write()
            script = out_dir / "build_lib.sh"
            text = script.read_text()
            if 'CFLAGS="-O3' not in text:
                raise RuntimeError("hls4ml's build_lib.sh has an unexpected form (no CFLAGS=\"-O3)")
            script.write_text(text.replace('CFLAGS="-O3', f'CFLAGS="{CSIM_OPT}', 1))
        except Exception as e:                       # plain hls4ml failed to convert: that is the finding
            self.error = f"conversion: {_short(e)}"
            return
        self.hm = hm
        self.layers = [layer.name for layer in hm.get_layers()]
        self._log = log
        self._thread = threading.Thread(target=self._compile, daemon=True)
        self._thread.start()

    @classmethod
    def failed(cls, error: str) -> "PlainHLS4ML":
        self = cls.__new__(cls)
        self.hm, self.error, self.layers, self._thread = None, error, [], None
        return self

    def _compile(self):
        import contextlib
        try:
            with contextlib.redirect_stdout(self._log):      # hls4ml prints g++'s output on failure
                self.hm._compile()
        except Exception as e:
            self.error = f"compile: {_short(e)}"
            return
        silent = self.layers_without_code()
        if silent:
            self.error = ("no C++ generated for " + ", ".join(f"{c} {n!r}" for n, c in silent) +
                          ": its consumer reads uninitialized data")

    # layers hls4ml implements without a call of their own (in-place reshapes, inputs, constants)
    _NO_CALL = {"Input", "InputLayer", "Reshape", "Constant"}

    def layers_without_code(self) -> list[tuple[str, str]]:
        """Layers of plain hls4ml's graph that its generated top function never computes: hls4ml writes one
        call per layer, followed by the comment ``// <layer name>``."""
        top = Path(self.hm.config.get_output_dir()) / "firmware" / f"{self.hm.config.get_project_name()}.cpp"
        body = top.read_text().split("NETWORK INSTANTIATION")[-1]
        called = set(re.findall(r"//\s*(\w+)\s*$", body, re.M))
        return [(layer.name, layer.class_name) for layer in self.hm.get_layers()
                if layer.class_name not in self._NO_CALL and layer.name not in called]

    def wait(self) -> "PlainHLS4ML":
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self

    def predict(self, x: np.ndarray, io_type: str) -> np.ndarray:
        return np.asarray(self.hm.predict(_plain_input(x, io_type))).reshape(x.shape[0], -1)


@dataclass
class Row:
    """One case of the matrix: a cell per column (pass / hls4ml fails / refused / FAIL), and the failures."""
    handler: str
    io_type: str
    what: str = ""
    uncut: str = ""
    before: str = ""
    after: str = ""
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, column: str, msg: str) -> None:
        self.failures.append(f"{self.handler} [{self.io_type}] {column}: {msg}")
        cell = f"FAIL: {_short(msg)}"
        setattr(self, column, cell if not getattr(self, column) else getattr(self, column))


def build_pool(workers: int | None = None):
    """A process pool kept for the whole matrix (``fxsplit.compile(executor=...)``): its workers import hls4ml
    once instead of once per case."""
    import concurrent.futures as cf
    import multiprocessing
    return cf.ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=multiprocessing.get_context("forkserver"))


def _compile(case: Case, cfg: dict | None, io_type: str, out_dir: Path, cache_dir, executor=None):
    """fxsplit with the user's hls4ml config (or, where hls4ml cannot make one, fxsplit's own: same numerics)."""
    config = {"csim_opt": CSIM_OPT, "io_type": io_type}
    if cfg is None:
        config["precision"] = PRECISION
    return fxsplit.compile(case.model, case.shape, hls_config=cfg, config=config, output_dir=out_dir, progress=False,
                           cache_dir=cache_dir, executor=executor)


def _check_design(row: Row, design, x: np.ndarray, ref: np.ndarray, cuts: list[str]) -> None:
    """uncut fxsplit == plain hls4ml; stitched == uncut (each a bit-for-bit comparison). An exception while
    predicting is a failure of the columns checked, reported with its type and message."""
    try:
        with c_stdout_to(Path(design.output_dir) / "csim_stdout.log"):
            _compare(row, design, x, ref, cuts)
    except Exception as e:               # noqa: BLE001
        where = traceback.extract_tb(e.__traceback__)[-1]
        msg = (f"{type(e).__name__} while comparing ({os.path.basename(where.filename)}:{where.lineno}): {e}")
        for column in ([] if row.uncut else ["uncut"]) + cuts:
            if not getattr(row, column):
                row.fail(column, msg)


def _compare(row: Row, design, x: np.ndarray, ref: np.ndarray, cuts: list[str]) -> None:
    n = x.shape[0]
    mono = _hls_layout(design.predict_monolithic(x), n, design)
    if not row.uncut:
        if mono.shape != ref.shape:
            row.fail("uncut", f"fxsplit's uncut output has shape {mono.shape}, plain hls4ml's {ref.shape}")
        elif not np.array_equal(mono, ref):
            row.fail("uncut", f"fxsplit's uncut C simulation differs from plain hls4ml in {int(np.sum(mono != ref))} "
                              f"of {ref.size} outputs (first at {np.argwhere(mono != ref)[0].tolist()}: "
                              f"{mono[mono != ref][0]} vs {ref[mono != ref][0]})")
        else:
            row.uncut = "pass"
    stitched = _hls_layout(design.predict(x), n, design)
    res = design.verify(x)
    for column in cuts:
        if stitched.shape != mono.shape or not np.array_equal(stitched, mono):
            row.fail(column, f"the stitched design differs from the uncut one in {int(np.sum(stitched != mono))} of "
                             f"{mono.size} outputs (partitions {[p.name for p in design.partitions]})")
        elif not res.bit_exact:
            row.fail(column, f"design.verify(x) is not bit exact: {res.mismatches} mismatches")
        else:
            setattr(row, column, "pass")


def _refusal(row: Row, column: str, err: BaseException, plain: PlainHLS4ML, ops: list[str]) -> None:
    """A refused cut: true only if plain hls4ml's uncut layer list lacks one of the operation's layers."""
    if isinstance(err, fxsplit.FxsplitError) and FUSION_REFUSAL.search(err.message):
        missing = [op for op in ops if op not in plain.layers]
        if missing:
            setattr(row, column, f"refused ({_short(err.message, 90)}); plain hls4ml has no layer "
                                 f"{', '.join(map(repr, missing))}: {plain.layers}")
        else:
            row.fail(column, f"fxsplit refuses the cut as a fusion, but plain hls4ml keeps the operation's layer(s) "
                             f"{ops} (its layers: {plain.layers}); fxsplit says: {err}")
    elif _other_refusal(err):
        setattr(row, column, f"refused ({_other_refusal(err)})")
    else:
        row.fail(column, f"fxsplit raised {type(err).__name__} where plain hls4ml works: {err}")


def _other_refusal(err) -> str | None:
    if isinstance(err, fxsplit.FxsplitError):
        for pattern, reason in OTHER_REFUSALS.items():
            if pattern.search(err.message):
                return reason
    return None


COLUMNS = ("before", "after")
_SINGLE = {"before": (True, False), "after": (False, True)}     # the markers each column's model keeps


def _says_hls4ml_fails(err) -> bool:
    return isinstance(err, fxsplit.FxsplitError) and bool(re.search(r"hls4ml|build failed", err.message))


def _is_fusion_refusal(err) -> bool:
    return isinstance(err, fxsplit.FxsplitError) and bool(FUSION_REFUSAL.search(err.message))


def _exc(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(err)).strip()


def run_case(handler: str, io_type: str, workdir, cache_dir=None, n: int = N_SAMPLES, log=None,
             executor=None) -> Row:
    """The whole check of one (registry name, io_type) case; see the module docstring.

    The model with both cuts is built first. Where that is not a clean pass (a refusal, an error, a
    mismatch), the model is built again with each cut alone, so every column says what that cut does."""
    import io
    t0 = time.time()
    row = Row(handler, io_type)
    workdir = Path(workdir)
    log = log if log is not None else io.StringIO()
    if handler not in BUILDERS:
        msg = (f"hls4ml's PyTorch converter registers {handler!r} but tests/handler_models.py has no model for it: "
               "add a builder to BUILDERS")
        for column in ("uncut", *COLUMNS):
            row.fail(column, msg)
        return row
    case = BUILDERS[handler]()
    row.what = case.what
    x = case.inputs(n)
    state = {k: v.clone() for k, v in case.model.state_dict().items()}

    def attempt(c: Case, name: str):
        try:
            return _compile(c, cfg, io_type, workdir / name, cache_dir, executor), None
        except Exception as e:            # noqa: BLE001  (judged by the caller: FxsplitError or a bug)
            return None, e

    def single(column: str):
        c = BUILDERS[handler](*_SINGLE[column])
        same = c.model.state_dict()
        assert set(same) == set(state) and all(torch.equal(same[k], state[k]) for k in state), \
            "a builder must give the same weights with and without markers"
        return c, attempt(c, f"fx_{column}")

    try:
        cfg = hls_config(case.model, case.shape, io_type)
    except Exception as e:                # hls4ml cannot even parse the model to make its config
        cfg = None                        # fxsplit then gets its own config (the same numerics)
        plain = PlainHLS4ML.failed(f"config_from_pytorch_model: {_short(e)}")
    else:
        plain = PlainHLS4ML(case, cfg, io_type, workdir / "plain", log)
    design, err = attempt(case, "fx")     # both cuts, built while plain hls4ml compiles
    plain.wait()

    ref = None
    if plain.error is None:
        with c_stdout_to(workdir / "plain_csim_stdout.log"):
            ref = plain.predict(x, io_type)
        with torch.no_grad():
            size = int(np.prod(case.model(torch.as_tensor(x[:1], dtype=torch.float32)).shape[1:]))
        if ref.shape[1] != size:          # plain hls4ml builds, but not PyTorch's operation
            plain.error = f"its output has {ref.shape[1]} values per sample where PyTorch's has {size}"
    if plain.error is not None:
        _when_plain_fails(row, plain, design, err, single)
    else:
        _when_plain_works(row, plain, design, err, single, attempt, x, ref, op_layers(case.model))
    row.seconds = time.time() - t0
    return row


def _when_plain_fails(row: Row, plain: PlainHLS4ML, design, err, single) -> None:
    """Plain hls4ml fails: fxsplit must raise an FxsplitError that says hls4ml cannot convert or build it."""
    row.uncut = f"hls4ml fails ({plain.error})"
    if _says_hls4ml_fails(err):
        row.before = row.after = f"hls4ml fails; fxsplit: {_short(err.message, 90)}"
        return
    what = "built the model" if design is not None else f"raised {_exc(err)}"
    row.failures.append(f"{row.handler} [{row.io_type}] both cuts: plain hls4ml fails ({plain.error}) but fxsplit "
                        f"{what}, not an FxsplitError saying hls4ml cannot convert it")
    for column in COLUMNS:
        _, (d, e) = single(column)
        if _says_hls4ml_fails(e):
            setattr(row, column, f"hls4ml fails; fxsplit: {_short(e.message, 90)}")
        elif d is not None:
            row.fail(column, f"plain hls4ml fails ({plain.error}) but fxsplit builds the model with this cut "
                             "without an FxsplitError")
        else:
            row.fail(column, f"plain hls4ml fails ({plain.error}); fxsplit raised {_exc(e)}, not an FxsplitError "
                             "saying hls4ml cannot convert it")


def _when_plain_works(row: Row, plain: PlainHLS4ML, design, err, single, attempt, x, ref, ops) -> None:
    combined = None                       # why the model with both cuts fails (None: it passes)
    if design is not None:
        _check_design(row, design, x, ref, list(COLUMNS))
        bad = [getattr(row, c) for c in COLUMNS if getattr(row, c).startswith("FAIL")]
        if not bad or row.uncut != "pass":
            return                        # a pass; or the uncut reference is already wrong: nothing to attribute
        combined = bad[0][len("FAIL: "):]
        for column in COLUMNS:            # which cut is it? (the failures recorded so far stay)
            setattr(row, column, "")
    elif not (_is_fusion_refusal(err) or _other_refusal(err)):
        combined = _short(err, 80)
        row.failures.append(f"{row.handler} [{row.io_type}] both cuts: fxsplit raised {type(err).__name__} where "
                            f"plain hls4ml works: {_exc(err)}")
    for column in COLUMNS:                # each cut alone: refused (truly?) or built and checked
        _, (d, e) = single(column)
        if d is None:
            _refusal(row, column, e, plain, ops)
        else:
            _check_design(row, d, x, ref, [column])
    if combined and not any(getattr(row, c).startswith("FAIL") for c in COLUMNS):
        # each cut alone passes, together they fail: the table must still show it
        for column in COLUMNS:
            if getattr(row, column) == "pass":
                setattr(row, column, f"FAIL with both cuts ({combined}); alone: pass")
    if not row.uncut:                     # both cuts refused: fxsplit's uncut reference on its own
        d, e = attempt(_uncut_case(row.handler), "fx_uncut")
        if d is None:
            row.fail("uncut", f"fxsplit cannot build the uncut model, which plain hls4ml builds: {_exc(e)}")
        else:
            _check_design(row, d, x, ref, [])


def _uncut_case(handler: str) -> Case:
    return BUILDERS[handler](False, False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[Row]) -> str:
    lines = ["| handler | io_type | uncut == hls4ml | cut before | cut after |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.handler} | {r.io_type} | {_cell(r.uncut)} | {_cell(r.before)} | {_cell(r.after)} |")
    return "\n".join(lines)
