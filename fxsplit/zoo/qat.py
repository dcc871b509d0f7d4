"""brevitas quantization-aware models with Cut markers in the source: hls4ml's jet tagger (6-bit inputs, 4-6 bit
weights and activations) and a residual CNN cut inside its residual block; power-of-two scales throughout."""

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int16Bias, \
    Uint8ActPerTensorFixedPoint
from torch import nn

from .. import Cut


def _linear(n_in, n_out, bits, last=False):
    return QuantLinear(n_in, n_out, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=bits,
                       bias_quant=Int16Bias, return_quant_tensor=not last)


def _relu(bits):
    return QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=True)


class QATJetTagger(nn.Module):
    """16 -> 64 -> 32 -> 32 -> 5: a 6-bit input quantizer, 6-bit first and last layers, 4-bit hidden layers,
    16-bit quantized biases; QuantTensors flow between the layers (return_quant_tensor=True); three partitions."""

    def __init__(self):
        super().__init__()
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=True)
        self.fc1 = _linear(16, 64, 6)
        self.relu1 = _relu(5)
        self.cut1 = Cut("hidden")
        self.fc2 = _linear(64, 32, 4)
        self.relu2 = _relu(4)
        self.fc3 = _linear(32, 32, 4)
        self.relu3 = _relu(4)
        self.cut2 = Cut("head")
        self.fc4 = _linear(32, 5, 6, last=True)

    def forward(self, x):
        x = self.cut1(self.relu1(self.fc1(self.inp(x))))
        x = self.relu3(self.fc3(self.relu2(self.fc2(x))))
        return self.fc4(self.cut2(x))


class QATResidualCNN(nn.Module):
    """3x8x8 -> 4-bit conv (8 channels) -> a residual block (conv, ReLU, conv; a Cut inside it, so the skip tensor
    crosses it) -> the sum of both branches, each requantized by one shared 6-bit quantizer (brevitas adds
    QuantTensors of one scale) -> ReLU -> 2x2 max pooling -> a 6-bit linear head (10 classes)."""

    def __init__(self):
        super().__init__()
        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=True)
        self.conv1 = _conv(3, 8)
        self.relu1 = _relu(4)
        self.conv2 = _conv(8, 8)
        self.relu2 = _relu(4)
        self.cut = Cut("block")                   # inside the residual block: relu1's output crosses it
        self.conv3 = _conv(8, 8)
        self.join = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=6, return_quant_tensor=True)
        self.relu3 = _relu(4)
        self.pool = nn.MaxPool2d(2)
        self.cut2 = Cut("head")
        self.fc = _linear(8 * 4 * 4, 10, 6, last=True)

    def forward(self, x):
        x = self.relu1(self.conv1(self.inp(x)))
        y = self.conv3(self.cut(self.relu2(self.conv2(x))))
        y = self.relu3(self.join(y) + self.join(x))
        return self.fc(self.cut2(self.pool(y)).flatten(1))


def _conv(c_in, c_out, bits=4):
    return QuantConv2d(c_in, c_out, 3, padding=1, bias=True, weight_quant=Int8WeightPerTensorFixedPoint,
                       weight_bit_width=bits, bias_quant=Int16Bias, return_quant_tensor=True)


def calibrate(model: nn.Module, input_shape, seed: int = 0, batches: int = 40) -> nn.Module:
    """What a short quantization-aware training run leaves in the quantizers: the activation scales brevitas
    learns from its runtime statistics (seeded data, no weight update; brevitas collects them for 30 steps, then
    keeps them as a parameter). Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed + 7)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn((256, *input_shape), generator=g) * 1.5)
    return model.eval()
