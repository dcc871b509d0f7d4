"""The PyTorch models of hls4ml's own API tests, each with the hls4ml config and io types those tests convert it
with (hls4ml 1.3.0, ``test/pytest/test_pytorch_api.py``: the models, input shapes and
``config_from_pytorch_model`` arguments below mirror that file's; only the Vivado-family backends fxsplit builds
for are kept). Used to cut every model at every position (``test_hls4ml_cuts.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class OneLinear(nn.Module):                          # hls4ml: LinearModel (test_linear)
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x):
        return self.linear(x)


class Functional(nn.Module):                         # hls4ml: ReLuModel, SoftmaxModel, ... (activation functionals)
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class LinearReluBatchNorm(nn.Module):                # hls4ml: BatchNormModel (test_bn)
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(5, 8)
        self.relu = nn.ReLU()                        # keeps hls4ml from folding the BatchNorm into the Linear
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        return self.bn(self.relu(self.linear(x)))


class UnsqueezeLinearSqueeze(nn.Module):             # hls4ml: SqueezeModel (test_squeeze)
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(5, 3, bias=False)
        self.bn = nn.BatchNorm1d(3)                  # defined, never called (as in hls4ml's model)
        nn.init.ones_(self.linear.weight)

    def forward(self, x):
        x = torch.unsqueeze(x, dim=1)
        x = self.linear(x)
        x = torch.squeeze(x)
        return torch.relu(x)


class SkippedLayers(nn.Module):                      # hls4ml: ModelSkippedLayers (test_skipped_layers)
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(3, 6, kernel_size=3, bias=False)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(6, 5, kernel_size=3, bias=False)
        self.relu2 = nn.ReLU()
        self.dropout1 = nn.Dropout()                 # hls4ml skips both dropouts
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(5 * 4, 6, bias=False)
        self.dropout2 = nn.Dropout()
        self.fc2 = nn.Linear(6, 5, bias=False)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        x = self.fc1(self.flatten(self.dropout1(x)))
        return self.fc2(self.dropout2(x))


class ConvFlattenLinear(nn.Module):                  # hls4ml: test_remove_transpose's TestModel (rank 2 and 3)
    def __init__(self, rank: int):
        super().__init__()
        conv, width = (nn.Conv1d, 4 * 6) if rank == 2 else (nn.Conv2d, 4 * 6 * 6)
        self.conv1 = conv(1, 4, kernel_size=3, bias=False)
        self.relu1 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(width, 5, bias=False)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.fc1(self.flatten(self.relu1(self.conv1(x)))))


class ConvView(nn.Module):                           # hls4ml: test_view's TestModel
    def __init__(self, n_in=2, n_out=4, size_in=128):
        super().__init__()
        self.width = n_out * size_in
        self.conv1 = nn.Conv1d(n_in, n_out, kernel_size=3, padding=1, bias=False)

    def forward(self, x):
        return self.conv1(x).view(-1, self.width)


class EinsumOuter(nn.Module):                        # hls4ml: EinsumOuterProduct
    def forward(self, x, y):
        return torch.einsum("bi,bj->bij", x, y)


class EinsumMatMul(nn.Module):                       # hls4ml: EinsumBatchMatMul
    def forward(self, x, y):
        return torch.einsum("bij,bjk->bik", x, y)


class LinearEinsum(nn.Module):                       # hls4ml: EinsumSingleInput
    def __init__(self, n=8):
        super().__init__()
        self.linear = nn.Linear(n, n)

    def forward(self, x):
        out = self.linear(x)
        return torch.einsum("ij,ij->i", out, out)


@dataclass
class Case:
    """One model of hls4ml's tests as they convert it: ``config(model, io_type)`` is their hls4ml config."""
    name: str
    make: Callable[[], nn.Module]
    shape: tuple | list
    io_types: tuple[str, ...]
    config: Callable[[nn.Module, str], dict]


def _cfg(shape, **kw):
    def make(model, io_type):
        from hls4ml.utils.config import config_from_pytorch_model
        return config_from_pytorch_model(model, shape, **kw)
    return make


def _conv_cfg(shape):
    """test_conv1d / test_conv2d: 'internal' conversion for io_stream, 'full' with transposed outputs otherwise."""
    def make(model, io_type):
        from hls4ml.utils.config import config_from_pytorch_model
        if io_type == "io_stream":
            return config_from_pytorch_model(model, shape, channels_last_conversion="internal", transpose_outputs=False)
        return config_from_pytorch_model(model, shape, channels_last_conversion="full", transpose_outputs=True)
    return make


def _squeeze_cfg(model, io_type):
    from hls4ml.utils.config import config_from_pytorch_model
    cfg = config_from_pytorch_model(model, (5,))
    del cfg["Model"]["ChannelsLastConversion"]       # as hls4ml's test_squeeze: nothing touched
    return cfg


BOTH = ("io_parallel", "io_stream")
PARALLEL = ("io_parallel",)

_ACTIVATIONS = {"softmax": lambda: nn.Softmax(dim=-1), "relu": nn.ReLU, "tanh": nn.Tanh,
                "leaky_relu": lambda: nn.LeakyReLU(negative_slope=1.0), "elu": lambda: nn.ELU(alpha=1.0),
                "prelu": lambda: nn.PReLU(init=0.25), "sigmoid": nn.Sigmoid,
                "threshold": lambda: nn.Threshold(threshold=1.0, value=0.0)}
_FUNCTIONALS = {"softmax": lambda x: nn.functional.softmax(x, dim=-1), "relu": nn.functional.relu,
                "tanh": nn.functional.tanh, "leaky_relu": lambda x: nn.functional.leaky_relu(x, negative_slope=1.0),
                "elu": lambda x: nn.functional.elu(x, alpha=1.0), "sigmoid": nn.functional.sigmoid,
                "threshold": lambda x: nn.functional.threshold(x, threshold=1.0, value=0.0)}
_POOLS = {"MaxPool1d": (nn.MaxPool1d, (2, 121)), "MaxPool2d": (nn.MaxPool2d, (2, 15, 18)),
          "AvgPool1d": (nn.AvgPool1d, (2, 121)), "AvgPool2d": (nn.AvgPool2d, (2, 15, 18))}


def _act_model(make_act):
    return lambda: nn.Sequential(nn.Linear(1, 1), make_act())


def _functional_model(fn):
    return lambda: Functional(fn)


def _pool_model(cls, padds):
    return lambda: nn.Sequential(cls(2, padding=padds))


def _seq_conv(cls, padds):
    return lambda: nn.Sequential(cls(2, 2, 3, padding=padds), nn.ReLU())


CASES: list[Case] = [
    Case("linear", OneLinear, (1,), BOTH, _cfg((1,))),
    *[Case(f"activation_{k}", _act_model(v), (1,), BOTH, _cfg((1,))) for k, v in _ACTIVATIONS.items()],
    *[Case(f"functional_{k}", _functional_model(v), (1,), BOTH, _cfg((1,))) for k, v in _FUNCTIONALS.items()],
    *[Case(f"conv1d_pad{p}", _seq_conv(nn.Conv1d, p), (2, 4), BOTH, _conv_cfg((2, 4))) for p in (0, 1)],
    *[Case(f"conv2d_pad{p}", _seq_conv(nn.Conv2d, p), (2, 4, 4), BOTH, _conv_cfg((2, 4, 4))) for p in (0, 1)],
    *[Case(f"pooling_{k}_pad{p}", _pool_model(cls, p), shape, PARALLEL, _cfg(shape, transpose_outputs=True))
      for k, (cls, shape) in _POOLS.items() for p in (0, 1)],
    Case("batchnorm", LinearReluBatchNorm, (5,), BOTH, _cfg((5,))),
    Case("squeeze", UnsqueezeLinearSqueeze, (5,), BOTH, _squeeze_cfg),
    Case("flatten", lambda: nn.Sequential(nn.Conv2d(1, 32, 5, 1, 1), nn.Flatten(), nn.ReLU()), (1, 5, 5), PARALLEL,
         _cfg((1, 5, 5))),
    Case("skipped_layers", SkippedLayers, (3, 8), BOTH,
         _cfg((3, 8), default_precision="ap_fixed<32,16>", channels_last_conversion="full", transpose_outputs=False)),
    Case("remove_transpose_rank2", lambda: ConvFlattenLinear(2), (1, 8), PARALLEL,
         _cfg((1, 8), default_precision="ap_fixed<32,16>", channels_last_conversion="full")),
    Case("remove_transpose_rank3", lambda: ConvFlattenLinear(3), (1, 8, 8), PARALLEL,
         _cfg((1, 8, 8), default_precision="ap_fixed<32,16>", channels_last_conversion="full")),
    Case("view", lambda: ConvView().to(memory_format=torch.channels_last), (2, 128), BOTH,
         _cfg((2, 128), channels_last_conversion="internal", transpose_outputs=False)),
    Case("einsum_outer", EinsumOuter, [(4,), (5,)], PARALLEL,
         _cfg([(None, 4), (None, 5)], default_precision="ap_fixed<16,6>", channels_last_conversion="internal",
              transpose_outputs=False)),
    Case("einsum_matmul", EinsumMatMul, [(2, 5), (5, 4)], PARALLEL,
         _cfg([(None, 2, 5), (None, 5, 4)], default_precision="ap_fixed<16,6>", channels_last_conversion="internal",
              transpose_outputs=False)),
    Case("einsum_single_input", LinearEinsum, (8,), PARALLEL,
         _cfg([(None, 8)], default_precision="ap_fixed<32,12>", channels_last_conversion="internal",
              transpose_outputs=False)),
]
