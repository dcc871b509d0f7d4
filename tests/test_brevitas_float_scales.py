"""brevitas layers with float (not power-of-two) scales, read exactly: a quantizer's integer levels and a layer's
integer accumulator carry the float scale through the reader, the consumer absorbs it (a BatchNorm and quantizer
fold, a quantizer's fold, the exact product at a model output); where brevitas' own float32 arithmetic decides a
quantizer differently, the decisions are counted and reported."""

import time

import numpy as np
import pytest
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int32Bias, Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from torch import nn

import fxsplit
from conftest import FAST
from fxsplit.zoo import randomize_batchnorm
from fxsplit.zoo.qat import calibrate

PIXELS = {**FAST, "input_precision": "ufixed<8,0,TRN,SAT>"}


def _conv(c_in, c_out):
    """brevitas' default float weight quantizer (Int8WeightPerTensorFloat), 4 bits, one float scale per output
    channel, no bias (a BatchNorm follows)."""
    return QuantConv2d(c_in, c_out, 3, padding=1, bias=False, weight_quant=Int8WeightPerTensorFloat,
                       weight_bit_width=4, weight_scaling_per_output_channel=True)


def _relu():
    return QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=True)


class FloatCNN(nn.Module):
    """8x8 pixels (the declared input type) -> two conv-BN-ReLU blocks with float scales -> max pooling ->
    flatten -> a float-scaled QuantLinear, its bias an integer times the input scale times the weight scale."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = _conv(1, 8), nn.BatchNorm2d(8), _relu()
        self.conv2, self.bn2, self.relu2 = _conv(8, 12), nn.BatchNorm2d(12), _relu()
        self.pool = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.fc = QuantLinear(12 * 4 * 4, 10, bias=True, weight_quant=Int8WeightPerTensorFloat, weight_bit_width=6,
                              bias_quant=Int32Bias)

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        return self.fc(self.flat(self.pool(y)))


def _model(cls=FloatCNN, seed=0, shape=(1, 8, 8)):
    torch.manual_seed(seed)
    model = cls()
    randomize_batchnorm(model, seed)
    calibrate(model, shape, seed, batches=35)
    return model.eval()


def _pixels(n, shape=(1, 8, 8), seed=3):
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (n, *shape), generator=g)
    k[0], k[1] = 0, 255                                      # the type's extremes
    return k.to(torch.float32) / 256
