"""Exact quantized layers as hls4ml's PyTorch converter sees them.

fxsplit reads every brevitas layer (``lower/brevitas/``) into one of these plain-torch leaves, which carry
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
    (QuantIdentity, QuantReLU, QuantHardTanh) read exactly. ``activation``: 'linear' or 'relu'.

    ``binary``: brevitas' binary quantizer, ``+2**-frac`` where ``x >= 0``, else ``-2**-frac`` (``qmin, qmax =
    -1, 1``, type ``fixed<2,2-frac,TRN,SAT_SYM>``). hls4ml converts it as that type's linear quantizer, which is the
    identity on values already binary: fxsplit lowers it so only there (elsewhere the sign is a
    :class:`FxsQuantBatchNorm`, ``lower/brevitas/norm.py``).

    ``float_scale``: a quantizer whose scale is not a power of two. Its tensor holds the integer levels (``frac``
    0, type ``fixed<W,W>``); this layer is then the identity on levels, which a :class:`FxsQuantBatchNorm` before it
    produced (the scale is carried by the reader, ``lower/brevitas/grid.py``'s ``Scaled``)."""

    def __init__(self, activation: str, precision: str, frac: int, qmin: int, qmax: int, rounding: str,
                 source: str, binary: bool = False, float_scale: float | None = None):
        super().__init__()
        self.activation, self.precision, self.frac = activation, precision, int(frac)
        self.qmin, self.qmax, self.rounding, self.source = int(qmin), int(qmax), rounding, source
        self.binary = bool(binary)
        self.float_scale = None if float_scale is None else float(float_scale)

    def forward(self, x):
        x = getattr(x, "value", x).to(torch.float64)
        if self.binary:
            return torch.where(x >= 0, 1.0, -1.0).to(torch.float64) * 2.0 ** -self.frac
        if self.activation == "relu":
            x = torch.relu(x)
        q = _ROUND[self.rounding](x * 2.0 ** self.frac).clamp(float(self.qmin), float(self.qmax))
        return q * 2.0 ** -self.frac

    @property
    def step(self) -> float:
        """The value one level stands for (brevitas' scale)."""
        return self.float_scale if self.float_scale is not None else 2.0 ** -self.frac

    def extra_repr(self) -> str:
        return f"{'binary' if self.binary else self.activation}, {self.precision}, from {self.source}"


class FxsQuantBatchNorm(HLS4MLModule):
    """A BatchNorm and the brevitas quantizer after it, as one exact affine map per channel: ``scale`` and ``bias``
    (float64 buffers, dyadic) found so that rounding ``x * scale + bias`` onto the quantizer's grid (``precision``,
    its hls4ml type) gives brevitas' level for every input the channel can receive (checked exhaustively)."""

    def __init__(self, scale: torch.Tensor, bias: torch.Tensor, scale_precision: str, bias_precision: str,
                 act: FxsQuantAct, source: str):
        super().__init__()
        self.num_features = int(scale.numel())
        self.register_buffer("scale", scale.detach().to(torch.float64).clone())
        self.register_buffer("bias", bias.detach().to(torch.float64).clone())
        self.scale_precision, self.bias_precision, self.source = scale_precision, bias_precision, source
        self.precision, self.frac, self.qmin, self.qmax = act.precision, act.frac, act.qmin, act.qmax
        self.rounding, self.activation = act.rounding, act.activation

    def forward(self, x):
        x = getattr(x, "value", x).to(torch.float64)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = x * self.scale.reshape(shape) + self.bias.reshape(shape)        # exact for the sizes fxsplit derives
        return _ROUND[self.rounding](y * 2.0 ** self.frac).clamp(float(self.qmin), float(self.qmax)) * 2.0 ** -self.frac

    def extra_repr(self) -> str:
        return (f"{self.num_features} channels, scale {self.scale_precision}, bias {self.bias_precision} -> "
                f"{self.precision}, from {self.source}")


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


class FxsQuantConv(HLS4MLModule):
    """A brevitas QuantConv1d / QuantConv2d read exactly (as :class:`FxsQuantDense`), with the attributes of a
    ``torch.nn.Conv1d/2d`` that hls4ml's convolution parser reads."""

    padding_mode = "zeros"
    groups = 1

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, weight_precision: str,
                 bias_precision: str | None, source: str, stride, padding, dilation):
        super().__init__()
        self.n_dim = weight.dim() - 2
        self.out_channels, self.in_channels = int(weight.shape[0]), int(weight.shape[1])
        self.kernel_size = tuple(int(k) for k in weight.shape[2:])
        as_tuple = (lambda v: tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * self.n_dim)
        self.stride, self.padding, self.dilation = as_tuple(stride), as_tuple(padding), as_tuple(dilation)
        self.register_buffer("weight", weight.detach().to(torch.float64).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float64).clone())
        self.weight_precision, self.bias_precision, self.source = weight_precision, bias_precision, source

    def forward(self, x):
        x = getattr(x, "value", x).to(torch.float64)
        conv = torch.nn.functional.conv1d if self.n_dim == 1 else torch.nn.functional.conv2d
        return conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.out_channels}, kernel {self.kernel_size}, stride {self.stride}, "
                f"padding {self.padding}, weight {self.weight_precision}, bias {self.bias_precision}, "
                f"from {self.source}")


class FxsTruncAvgPool(HLS4MLModule):
    """brevitas' ``TruncAvgPool2d`` read exactly: the average of a window of a power-of-two number of values (exact
    in ``accum_precision``, as hls4ml's average pooling computes it), quantized onto ``precision``'s grid as
    brevitas' truncation quantizer does (``floor`` / ``round`` of the window's level sum shifted right, then clamped
    to ``qmin .. qmax``): ``y = clamp(round(avg(x) * 2**frac), qmin, qmax) * 2**-frac``. Carries the attributes
    of a ``torch.nn.AvgPool2d`` that hls4ml's pooling parser reads."""

    count_include_pad = True
    ceil_mode = False

    def __init__(self, kernel_size, stride, precision: str, accum_precision: str, frac: int, qmin: int, qmax: int,
                 rounding: str, source: str):
        super().__init__()
        self.kernel_size, self.stride, self.padding = tuple(kernel_size), tuple(stride), (0, 0)
        self.precision, self.accum_precision, self.frac = precision, accum_precision, int(frac)
        self.qmin, self.qmax, self.rounding, self.source = int(qmin), int(qmax), rounding, source

    def forward(self, x):
        x = getattr(x, "value", x).to(torch.float64)
        y = torch.nn.functional.avg_pool2d(x, self.kernel_size, self.stride)     # exact: dyadic values, 2**m terms
        return _ROUND[self.rounding](y * 2.0 ** self.frac).clamp(float(self.qmin), float(self.qmax)) * 2.0 ** -self.frac

    def extra_repr(self) -> str:
        return (f"kernel {self.kernel_size}, stride {self.stride}, accum {self.accum_precision} -> {self.precision}, "
                f"from {self.source}")


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


def _parse_conv(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
    from hls4ml.converters.pytorch.convolution import parse_conv1d_layer, parse_conv2d_layer
    parse, op = (parse_conv1d_layer, "Conv1d") if class_object.n_dim == 1 else (parse_conv2d_layer, "Conv2d")
    return parse(op, layer_name, input_names, input_shapes, node, class_object, data_reader, config)


def _parse_batchnorm(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
    m = class_object
    if bool(torch.all(m.scale == 1.0)) and bool(torch.all(m.bias == 0.0)):
        # scale 1, bias 0 (a quantizer reading a sum of its own scale, say): hls4ml's RemoveNopBatchNormalization
        # would drop the layer and with it the rounding and clamp of its result type. A linear activation carrying
        # that type as its quantizer casts the same way (hls4ml keeps it: a cast)
        from hls4ml.backends.fpga.fpga_backend import FPGABackend
        from hls4ml.model.quantizers import QuantNodeQuantizer
        layer = {"class_name": "Activation", "activation": "linear", "name": layer_name, "inputs": input_names,
                 "quantizer": QuantNodeQuantizer(FPGABackend.convert_precision_string(m.precision))}
        return layer, list(input_shapes[0])
    size = 1
    for d in input_shapes[0][1:]:
        size *= d
    layer = {"class_name": "BatchNormalization", "data_format": "channels_first", "name": layer_name,
             "inputs": input_names, "scale_data": m.scale.numpy(), "bias_data": m.bias.numpy(), "n_in": size,
             "n_out": size, "n_filt": -1 if len(input_shapes[0]) == 2 else input_shapes[0][1],
             "use_gamma": True, "use_beta": True}
    return layer, list(input_shapes[0])


def _parse_trunc_avg_pool(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
    from hls4ml.converters.pytorch.pooling import parse_pooling_layer
    return parse_pooling_layer("AvgPool2d", layer_name, input_names, input_shapes, node, class_object, data_reader,
                               config)


HANDLERS = {"FxsQuantAct": _parse_act, "FxsQuantDense": _parse_dense, "FxsQuantConv": _parse_conv,
            "FxsQuantBatchNorm": _parse_batchnorm, "FxsTruncAvgPool": _parse_trunc_avg_pool}


def register_handlers() -> None:
    """Put fxsplit's handlers into hls4ml's PyTorch converter (idempotent)."""
    from hls4ml.converters.pytorch_to_hls import layer_handlers, register_pytorch_layer_handler
    for name, fn in HANDLERS.items():
        if layer_handlers.get(name) is not fn:
            if name in layer_handlers:
                del layer_handlers[name]
            register_pytorch_layer_handler(name, fn)


register_handlers()
