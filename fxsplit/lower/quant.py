"""Exact quantized layers as hls4ml's PyTorch converter sees them.

fxsplit reads every brevitas layer (``lower/brevitas.py``) into one of these plain-torch leaves, which carry
the exact values brevitas computes with (integer weights times a power-of-two scale, the bias brevitas adds)
and the exact hls4ml types; hls4ml's PyTorch converter gets a handler for each (registered on import). They
travel to the build workers inside the partitions' GraphModules (no brevitas needed there), and their
``forward`` computes what brevitas computes, in float64, so fxsplit can check its reading against brevitas.

Types (``precision`` strings) are hls4ml's: ``fixed<W,I,RND_CONV,SAT>`` for an activation quantizer (round half
to even and clamp, as brevitas' ``RoundSte`` and ``TensorClamp``), exact ``fixed<W,I>`` for weights and biases.
"""

from __future__ import annotations

import torch
from hls4ml.utils.torch import HLS4MLModule

# hls4ml rounding mode -> what brevitas' float_to_int does (torch)
_ROUND = {"RND_CONV": torch.round, "TRN": torch.floor, "TRN_ZERO": torch.trunc}


class FxsQuantAct(HLS4MLModule):
    """``y = clamp(round(act(x) * 2**frac), qmin, qmax) * 2**-frac``: a brevitas activation quantizer
    (QuantIdentity, QuantReLU, QuantHardTanh) read exactly. ``activation``: 'linear' or 'relu'."""

    def __init__(self, activation: str, precision: str, frac: int, qmin: int, qmax: int, rounding: str,
                 source: str):
        super().__init__()
        self.activation, self.precision, self.frac = activation, precision, int(frac)
        self.qmin, self.qmax, self.rounding, self.source = int(qmin), int(qmax), rounding, source

    def forward(self, x):
        x = getattr(x, "value", x).to(torch.float64)
        if self.activation == "relu":
            x = torch.relu(x)
        q = _ROUND[self.rounding](x * 2.0 ** self.frac).clamp(self.qmin, self.qmax)
        return q * 2.0 ** -self.frac

    def extra_repr(self) -> str:
        return f"{self.activation}, {self.precision}, from {self.source}"


class FxsQuantDense(HLS4MLModule):
    """A brevitas QuantLinear read exactly: ``weight`` and ``bias`` (float64 buffers) hold the values brevitas
    multiplies and adds, ``weight_precision`` / ``bias_precision`` the exact hls4ml types that hold them."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, weight_precision: str,
                 bias_precision: str | None, source: str):
        super().__init__()
        self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        self.register_buffer("weight", weight.detach().to(torch.float64).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float64).clone())
        self.weight_precision, self.bias_precision, self.source = weight_precision, bias_precision, source

    def forward(self, x):
        x = getattr(x, "value", x).to(torch.float64)
        return torch.nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_features} -> {self.out_features}, weight {self.weight_precision}, "
                f"bias {self.bias_precision}, from {self.source}")


# ---- hls4ml's PyTorch converter: one handler per class (its registry is keyed by the class name)

def _parse_act(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
    from hls4ml.backends.fpga.fpga_backend import FPGABackend
    from hls4ml.model.quantizers import QuantNodeQuantizer
    layer = {"class_name": "Activation", "activation": class_object.activation, "name": layer_name,
             "inputs": input_names}
    if class_object.activation == "linear":
        # hls4ml's MergeLinearActivation removes a linear activation after a Dense/Conv whose result type is 'auto',
        # and keeps the quantization only if the activation carries a quantizer (as its QONNX frontend does)
        layer["quantizer"] = QuantNodeQuantizer(FPGABackend.convert_precision_string(class_object.precision))
    return layer, input_shapes[0]


def _parse_dense(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
    m = class_object
    layer = {"class_name": "Dense", "name": layer_name, "inputs": input_names,
             "weight_data": m.weight.numpy(), "bias_data": None if m.bias is None else m.bias.numpy(),
             "n_in": m.in_features, "n_out": m.out_features, "use_bias": m.bias is not None}
    shape = list(input_shapes[0])
    shape[-1] = m.out_features
    return layer, shape


HANDLERS = {"FxsQuantAct": _parse_act, "FxsQuantDense": _parse_dense}


def register_handlers() -> None:
    """Put fxsplit's handlers into hls4ml's PyTorch converter (idempotent)."""
    from hls4ml.converters.pytorch_to_hls import layer_handlers, register_pytorch_layer_handler
    for name, fn in HANDLERS.items():
        if layer_handlers.get(name) is not fn:
            if name in layer_handlers:
                del layer_handlers[name]
            register_pytorch_layer_handler(name, fn)


register_handlers()
