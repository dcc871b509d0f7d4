"""Lower an hls4ml ModelGraph (io_parallel, Vivado backend) to Verilog through da4ml.

The lowering reproduces hls4ml's C simulation bit for bit: every layer is traced
symbolically with ``da4ml.trace`` following the exact arithmetic of hls4ml's
``nnet_utils`` templates (per-product casts into ``accum_t``, bias cast into
``accum_t``, the final cast into ``result_t`` with that type's rounding and
overflow modes, ...).  Anything we cannot match exactly is refused up front with
an :class:`~fxsplit.errors.FxsplitError`.

The work is split in three so that the slow part can run in another process:

- :func:`check_rtl_supported` (fast, main process) raises if a layer/type is unsupported,
- :func:`extract_program` (fast, main process) turns the ModelGraph into a plain,
  picklable dict (numpy arrays, tuples, strings; no hls4ml objects),
- :func:`emit_verilog` (slow, worker process) traces the program with da4ml and writes
  Verilog into a work directory.

Port encoding (contract with :mod:`fxsplit.flows.rtl.stitch` and :mod:`fxsplit.flows.rtl.testbench`)
-------------------------------------------------------------------------------
The wrapper module has ``clk``, ``in_valid``, ``out_valid`` and one Verilog port per
tensor, named after the tensor (see :func:`verilog_name`).  Each element is the raw
two's-complement integer of exactly the hls4ml type of that port (``W`` bits,
value = raw * 2**-frac; unsigned types are stored unsigned); element 0 sits in the LSBs,
elements are in the C order of the channels-last shape.  da4ml narrows bit widths
internally; the wrapper sign/zero-extends back to the exact hls4ml type.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from typing import Any

import numpy as np

from fxsplit.errors import FxsplitError

# ----------------------------------------------------------------------------------------------
# Types
# ----------------------------------------------------------------------------------------------
# A type is a tuple (signed: int 0/1, width W, integer bits I (incl. sign), rounding, overflow)

SUPPORTED_ROUNDING = ('TRN', 'RND', 'RND_CONV')      # RND_CONV: half to even (brevitas' round)
SUPPORTED_OVERFLOW = ('WRAP', 'SAT', 'SAT_SYM')      # SAT_SYM: a narrow signed range (min = -max)
_SATURATING = ('SAT', 'SAT_SYM')

_TYPE_RE = re.compile(r'^\s*(?:ap_)?(u?)(fixed|int)\s*<\s*([^>]*)>\s*$')


class UnsupportedType(ValueError):
    pass


def parse_precision(s: Any) -> tuple[int, int, int, str, str]:
    """Parse an hls4ml precision (object or string) into ``(signed, W, I, rounding, overflow)``.

    Accepts ``fixed<W,I[,Q,O,N]>``, ``ufixed<...>``, ``int<W>``, ``uint<W>`` (optionally with
    an ``ap_`` prefix).  Raises :class:`UnsupportedType` for anything else (float, auto, xnor,
    exponent, saturation bits, unsupported rounding/overflow modes).
    """
    text = str(s).strip()
    m = _TYPE_RE.match(text)
    if not m:
        raise UnsupportedType(f'type {text!r} is not a fixed-point or integer type')
    unsigned, kind, args = m.group(1) == 'u', m.group(2), [a.strip() for a in m.group(3).split(',')]
    try:
        width = int(args[0])
        if kind == 'int':
            if len(args) != 1:
                raise UnsupportedType(f'type {text!r}: unexpected arguments')
            integer, rnd, ovf, nbits = width, 'TRN', 'WRAP', 0
        else:
            integer = int(args[1])
            rnd = args[2].upper() if len(args) > 2 else 'TRN'
            ovf = args[3].upper() if len(args) > 3 else 'WRAP'
            nbits = int(args[4]) if len(args) > 4 else 0
    except (IndexError, ValueError) as e:
        raise UnsupportedType(f'cannot parse type {text!r}') from e
    rnd = rnd.replace('AP_', '')
    ovf = ovf.replace('AP_', '')
    if width <= 0:
        raise UnsupportedType(f'type {text!r} has no bits')
    if rnd not in SUPPORTED_ROUNDING:
        raise UnsupportedType(f'type {text!r}: rounding mode {rnd} is not supported (only TRN, RND and RND_CONV)')
    if ovf not in SUPPORTED_OVERFLOW:
        raise UnsupportedType(f'type {text!r}: overflow mode {ovf} is not supported (only WRAP, SAT and SAT_SYM)')
    if nbits != 0:
        raise UnsupportedType(f'type {text!r}: saturation bits N={nbits} are not supported')
    return (0 if unsigned else 1, width, integer, rnd, ovf)


def type_str(t: tuple) -> str:
    k, w, i, rnd, ovf = t
    return f'{"" if k else "u"}fixed<{w},{i},{rnd},{ovf},0>'


def type_kif(t: tuple) -> tuple[int, int, int]:
    """da4ml's (keep_negative, integer bits without sign, fractional bits)."""
    k, w, i = t[0], t[1], t[2]
    return k, i - k, w - i


def type_frac(t: tuple) -> int:
    return t[1] - t[2]


def type_raw_range(t: tuple) -> tuple[int, int]:
    k, w = t[0], t[1]
    if k:
        return -(1 << (w - 1)), (1 << (w - 1)) - 1
    return 0, (1 << w) - 1


def _quantize_scalar(v: float, t: tuple) -> int:
    """Raw integer of the exact value ``v`` (a double) converted to type ``t`` (ap_fixed semantics)."""
    f = type_frac(t)
    x = math.ldexp(v, f)  # exact power-of-two scaling
    if t[3] == 'RND':
        raw = math.floor(x + 0.5) if abs(x) < 2**52 else int(x)
    elif t[3] == 'RND_CONV':
        raw = round(x)                      # Python rounds floats half to even, exactly
    else:
        raw = math.floor(x)
    raw = int(raw)
    lo, hi = type_raw_range(t)
    if t[4] == 'SAT_SYM' and t[0]:
        lo = -hi
    if t[4] in _SATURATING:
        raw = min(max(raw, lo), hi)
    else:
        span = 1 << t[1]
        raw = (raw - lo) % span + lo
    return raw


def quantize_raw(x: Any, precision: Any) -> np.ndarray:
    """Convert float values to raw integers of ``precision`` with the type's own rounding and
    overflow (what ``ap_fixed(double)`` does).  Returns int64 (object array of Python ints for
    types wider than 62 bits)."""
    t = precision if isinstance(precision, tuple) else parse_precision(precision)
    arr = np.asarray(x, dtype=np.float64)
    flat = [_quantize_scalar(float(v), t) for v in arr.ravel()]
    dtype = np.int64 if t[1] <= 62 else object
    return np.array(flat, dtype=dtype).reshape(arr.shape)


def to_raw(x: Any, precision: Any) -> np.ndarray:
    """Float values that are exactly representable in ``precision`` (e.g. hls4ml csim outputs)
    -> raw two's-complement integers.  Raises ValueError if a value is not on the type's grid."""
    t = precision if isinstance(precision, tuple) else parse_precision(precision)
    arr = np.asarray(x, dtype=np.float64)
    f = type_frac(t)
    scaled = np.ldexp(arr, f)
    if not np.all(np.isfinite(scaled)) or not np.all(scaled == np.round(scaled)):
        raise ValueError(f'values are not on the grid of {type_str(t)}')
    if t[1] <= 62:
        raw = scaled.astype(np.int64)
    else:
        raw = np.array([int(v) for v in scaled.ravel()], dtype=object).reshape(arr.shape)
    lo, hi = type_raw_range(t)
    if np.any(raw < lo) or np.any(raw > hi):
        raise ValueError(f'values out of range of {type_str(t)}')
    return raw


def from_raw(raw: Any, precision: Any) -> np.ndarray:
    """Raw integers of ``precision`` -> float64 values (raw * 2**-frac)."""
    t = precision if isinstance(precision, tuple) else parse_precision(precision)
    f = type_frac(t)
    arr = np.asarray(raw)
    if arr.dtype == object:
        return np.array([math.ldexp(float(int(v)), -f) for v in arr.ravel()], dtype=np.float64).reshape(arr.shape)
    return np.ldexp(arr.astype(np.float64), -f)


def raw_to_unsigned(raw: Any, width: int) -> list[int]:
    """Two's-complement bit patterns (as non-negative Python ints) of raw integers."""
    mask = (1 << width) - 1
    return [int(v) & mask for v in np.asarray(raw).ravel()]


def unsigned_to_raw(bits: Any, precision: Any) -> np.ndarray:
    t = precision if isinstance(precision, tuple) else parse_precision(precision)
    w = t[1]
    out = []
    for b in np.asarray(bits, dtype=object).ravel():
        b = int(b) & ((1 << w) - 1)
        if t[0] and b >> (w - 1):
            b -= 1 << w
        out.append(b)
    return np.array(out, dtype=np.int64 if w <= 62 else object).reshape(np.asarray(bits, dtype=object).shape)


# ----------------------------------------------------------------------------------------------
# Verilog names
# ----------------------------------------------------------------------------------------------

_VERILOG_KEYWORDS = set(
    """always and assign automatic begin buf bufif0 bufif1 case casex casez cell cmos config deassign default
    defparam design disable edge else end endcase endconfig endfunction endgenerate endmodule endprimitive
    endspecify endtable endtask event for force forever fork function generate genvar highz0 highz1 if ifnone
    incdir include initial inout input instance integer join large liblist library localparam macromodule medium
    module nand negedge nmos nor noshowcancelled not notif0 notif1 or output parameter pmos posedge primitive
    pull0 pull1 pulldown pullup pulsestyle_ondetect pulsestyle_onevent rcmos real realtime reg release repeat
    rnmos rpmos rtran rtranif0 rtranif1 scalared showcancelled signed small specify specparam strong0 strong1
    supply0 supply1 table task time tran tranif0 tranif1 tri tri0 tri1 triand trior trireg unsigned use uwire
    vectored wait wand weak0 weak1 while wire wor xnor xor
    bit byte int logic shortint longint string chandle class const enum export extends final import inside
    interface package program property rand randc ref sequence static struct super this type typedef union var
    virtual void clk in_valid out_valid""".split()
)


def _n_elements(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def _port_elements(entries, fields):
    """(verilog name, type width, frac bits, element index, da4ml field) for every element of every port."""
    n = 0
    for e in entries:
        W, F = e['type'][1], type_frac(e['type'])
        name = verilog_name(e['port'])
        for el in range(_n_elements(e['shape'])):
            yield name, W, F, el, fields[n]
            n += 1


def valid_shift_register(reg: str, latency: int) -> list[str]:
    """Verilog lines of a ``latency``-bit shift register ``reg`` fed by ``in_valid`` (bit k = valid k+1 cycles ago)."""
    lines = [f"    reg [{latency - 1}:0] {reg} = {latency}'d0;"]
    if latency == 1:
        lines.append(f'    always @(posedge clk) {reg} <= in_valid;')
    else:
        lines.append(f'    always @(posedge clk) {reg} <= {{{reg}[{latency - 2}:0], in_valid}};')
    return lines


def verilog_name(port: str) -> str:
    """The Verilog identifier used for a tensor port (identity for ordinary fx names)."""
    name = re.sub(r'[^A-Za-z0-9_]', '_', port)
    if not name or not (name[0].isalpha() or name[0] == '_'):
        name = 'p_' + name
    if name in _VERILOG_KEYWORDS or name.startswith('fxs_'):
        name = 'port_' + name
    return name


# ----------------------------------------------------------------------------------------------
# Extraction (main process)
# ----------------------------------------------------------------------------------------------

_CONV_CLASSES = ('Conv1D', 'Conv2D', 'PointwiseConv1D', 'PointwiseConv2D')
_POOL_CLASSES = ('MaxPooling1D', 'MaxPooling2D', 'AveragePooling1D', 'AveragePooling2D')
_MERGE_OPS = ('add', 'subtract')


def _layer_error(msg: str, layer, partition: str | None, hint: str | None = None) -> FxsplitError:
    return FxsplitError(
        f'RTL flow: layer {layer.name!r} ({layer.class_name}): {msg}',
        module=layer.name,
        partition=partition,
        hint=hint
        or 'the open RTL flow (da4ml) supports Dense/Linear, Conv1d/Conv2d, ReLU, LeakyReLU, BatchNorm, Add, '
        'Concatenate, Flatten/Reshape/Transpose and Max/Avg pooling with fixed-point TRN/RND/RND_CONV and '
        'WRAP/SAT/SAT_SYM types; '
        'move this layer out of the partition or use the hls4ml (Vivado/Vitis) flow',
    )


def _ptype(obj, what: str, layer, partition):
    prec = getattr(obj, 'precision', obj)
    try:
        return parse_precision(prec)
    except UnsupportedType as e:
        raise _layer_error(f'{what}: {e}', layer, partition,
                           hint='use fixed<W,I> types with TRN/RND/RND_CONV rounding and WRAP/SAT/SAT_SYM overflow') from None


def _fmt_weight_values(data: np.ndarray, t: tuple) -> np.ndarray:
    """Reproduce hls4ml's weight header: values printed with ``{:.Ff}`` (F = fractional bits),
    parsed as double by the C++ compiler and converted to the weight type."""
    f = max(0, type_frac(t))
    flat = np.asarray(data).ravel()
    out = np.empty(flat.size, dtype=np.float64)
    for n, v in enumerate(flat):
        printed = float(('{:.%df}' % f).format(v))
        out[n] = math.ldexp(_quantize_scalar(printed, t), -type_frac(t))
    return out.reshape(np.asarray(data).shape)


def _const_to_type(values: np.ndarray, t: tuple) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float64).ravel()
    out = np.array([math.ldexp(_quantize_scalar(float(v), t), -type_frac(t)) for v in flat])
    return out.reshape(np.asarray(values).shape)


def _attr(layer, name, default=None):
    v = layer.get_attr(name)
    return default if v is None else v


def _sat_safe(max_abs_sum: float, t: tuple) -> bool:
    lo, hi = type_raw_range(t)
    s = math.ldexp(1.0, -type_frac(t))
    return max_abs_sum <= hi * s and -max_abs_sum >= lo * s


def _type_max_abs(t: tuple) -> float:
    lo, hi = type_raw_range(t)
    return max(abs(lo), abs(hi)) * math.ldexp(1.0, -type_frac(t))


def extract_program(hls_model, partition: str | None = None, input_names: list[str] | None = None,
                    output_names: list[str] | None = None) -> dict:
    """Describe ``hls_model`` as a plain picklable dict for :func:`emit_verilog`.

    ``input_names``/``output_names`` optionally rename the model inputs/outputs (same order as
    ``hls_model.inputs`` / ``hls_model.outputs``) to the partition's port names.
    Raises FxsplitError naming the layer, its class and the partition for anything unsupported.
    """
    if str(hls_model.config.get_config_value('IOType')) != 'io_parallel':
        raise FxsplitError('RTL flow: only io_type="io_parallel" models can be lowered', partition=partition,
                           hint='convert the partition with io_type="io_parallel"')
    var_types: dict[str, tuple] = {}
    var_shapes: dict[str, tuple] = {}
    layers: list[dict] = []
    inputs: list[dict] = []

    for layer in hls_model.get_layers():
        cls = layer.class_name
        out_var = layer.get_output_variable()
        out_name = layer.outputs[0]
        out_shape = tuple(int(d) for d in out_var.shape)
        if cls in ('Input', 'InputLayer'):
            t = _ptype(out_var.type, 'input type', layer, partition)
            var_types[out_name], var_shapes[out_name] = t, out_shape
            inputs.append({'var': out_name, 'shape': out_shape, 'type': t})
            continue
        if len(layer.outputs) != 1:
            raise _layer_error('layers with several outputs are not supported', layer, partition)
        res_t = _ptype(out_var.type, 'result type', layer, partition)
        in_names = list(layer.inputs)
        for n in in_names:
            if n not in var_types:
                raise _layer_error(f'input {n!r} is produced by an unsupported layer', layer, partition)
        ent: dict[str, Any] = {'name': layer.name, 'class_name': cls, 'inputs': in_names, 'output': out_name,
                               'out_shape': out_shape, 'res_t': res_t}
        strategy = str(_attr(layer, 'strategy', 'latency')).lower()
        in_t = var_types[in_names[0]]

        if cls == 'Dense' or cls in _CONV_CLASSES:
            if strategy != 'latency':
                raise _layer_error(f'strategy {strategy!r} is not supported', layer, partition,
                                   hint='set Strategy="Latency" for this layer')
            if str(_attr(layer, 'rf', _attr(layer, 'reuse_factor', 1))) not in ('1',):
                pass  # reuse factor does not change numerics in hls4ml's latency kernels
            w_t = _ptype(layer.weights['weight'].type, 'weight type', layer, partition)
            acc_t = _ptype(layer.get_attr('accum_t'), 'accumulator type', layer, partition)
            W = _fmt_weight_values(layer.weights['weight'].data, w_t)
            if 'bias' in layer.weights and layer.weights['bias'] is not None:
                b_t = _ptype(layer.weights['bias'].type, 'bias type', layer, partition)
                B = _fmt_weight_values(layer.weights['bias'].data, b_t)
            else:
                B = np.zeros(W.shape[-1])
            B_acc = _const_to_type(B, acc_t)
            if acc_t[4] in _SATURATING:
                bound = _type_max_abs(in_t) * np.abs(W).reshape(-1, W.shape[-1]).sum(axis=0) + np.abs(B_acc)
                if not all(_sat_safe(float(b) + math.ldexp(1.0, -type_frac(acc_t)), acc_t) for b in bound):
                    raise _layer_error(f'accumulator type {type_str(acc_t)} saturates and may overflow during '
                                       'accumulation (order-dependent, not reproducible exactly)', layer, partition,
                                       hint='use a WRAP accumulator type or a wider one')
            ent.update(kind='dense' if cls == 'Dense' else 'conv', w_t=w_t, acc_t=acc_t, weight=W, bias_acc=B_acc)
            if cls == 'Dense':
                n_in = int(layer.get_attr('n_in'))
                in_size = int(np.prod(var_shapes[in_names[0]]))
                if in_size != n_in:
                    raise _layer_error(f'Dense on a multi-dimensional input ({var_shapes[in_names[0]]}) is not '
                                       'supported', layer, partition)
                ent['weight'] = W.reshape(n_in, -1)
            else:
                two_d = '2D' in cls
                dil = [int(_attr(layer, a, 1)) for a in ('dilation', 'dilation_height', 'dilation_width')]
                if any(d != 1 for d in dil):
                    raise _layer_error('dilated convolutions are not supported', layer, partition)
                if two_d:
                    ent.update(
                        in_hw=(int(layer.get_attr('in_height')), int(layer.get_attr('in_width'))),
                        n_chan=int(layer.get_attr('n_chan')), n_filt=int(layer.get_attr('n_filt')),
                        filt=(int(layer.get_attr('filt_height')), int(layer.get_attr('filt_width'))),
                        stride=(int(layer.get_attr('stride_height')), int(layer.get_attr('stride_width'))),
                        pad=(int(_attr(layer, 'pad_top', 0)), int(_attr(layer, 'pad_left', 0))),
                        out_hw=(int(layer.get_attr('out_height')), int(layer.get_attr('out_width'))))
                else:
                    ent.update(
                        in_hw=(1, int(layer.get_attr('in_width'))),
                        n_chan=int(layer.get_attr('n_chan')), n_filt=int(layer.get_attr('n_filt')),
                        filt=(1, int(layer.get_attr('filt_width'))),
                        stride=(1, int(layer.get_attr('stride_width'))),
                        pad=(0, int(_attr(layer, 'pad_left', 0))),
                        out_hw=(1, int(layer.get_attr('out_width'))))
                fh, fw = ent['filt']
                ent['weight'] = W.reshape(fh * fw * ent['n_chan'], ent['n_filt'])
                if str(_attr(layer, 'data_format', 'channels_last')) != 'channels_last':
                    raise _layer_error('channels_first data format is not supported', layer, partition)
        elif cls == 'Activation':
            act = str(layer.get_attr('activation')).lower()
            if act not in ('relu', 'linear'):
                raise _layer_error(f'activation {act!r} is not supported (it needs a lookup table or a '
                                   'non-linear function hls4ml approximates)', layer, partition)
            ent.update(kind=act)
        elif cls == 'LeakyReLU' or (cls == 'ParametrizedActivation' and
                                    str(layer.get_attr('activation')).lower() == 'leakyrelu'):
            p_t = _ptype(layer.get_attr('param_t'), 'parameter type', layer, partition)
            alpha = float(str(layer.get_attr('activ_param')))
            ent.update(kind='leaky_relu', alpha=math.ldexp(_quantize_scalar(alpha, p_t), -type_frac(p_t)))
        elif cls == 'BatchNormalization':
            s_t = _ptype(layer.weights['scale'].type, 'scale type', layer, partition)
            b_t = _ptype(layer.weights['bias'].type, 'bias type', layer, partition)
            ent.update(kind='batchnorm', scale=_fmt_weight_values(layer.weights['scale'].data, s_t),
                       bias=_fmt_weight_values(layer.weights['bias'].data, b_t), n_filt=int(_attr(layer, 'n_filt', -1)))
        elif cls == 'Merge':
            op = str(layer.get_attr('op')).lower()
            if op not in _MERGE_OPS or len(in_names) != 2:
                raise _layer_error(f'merge operation {op!r} is not supported (only add and subtract)', layer, partition)
            ent.update(kind=op)
        elif cls == 'Concatenate':
            if len(in_names) != 2:
                raise _layer_error('only two-input concatenation is supported', layer, partition)
            ent.update(kind='concat', axis=int(_attr(layer, 'axis', -1)))
        elif cls in ('Reshape', 'Flatten'):
            ent.update(kind='reshape')
        elif cls == 'Transpose':
            perm = [int(p) for p in layer.get_attr('perm')]
            ent.update(kind='transpose', perm=perm)
        elif cls in _POOL_CLASSES or cls in ('Pooling1D', 'Pooling2D'):
            two_d = '2D' in cls
            if two_d:
                geo = dict(in_hw=(int(layer.get_attr('in_height')), int(layer.get_attr('in_width'))),
                           pool=(int(layer.get_attr('pool_height')), int(layer.get_attr('pool_width'))),
                           stride=(int(layer.get_attr('stride_height')), int(layer.get_attr('stride_width'))),
                           pad=(int(_attr(layer, 'pad_top', 0)), int(_attr(layer, 'pad_left', 0))),
                           out_hw=(int(layer.get_attr('out_height')), int(layer.get_attr('out_width'))))
            else:
                geo = dict(in_hw=(1, int(layer.get_attr('n_in'))), pool=(1, int(layer.get_attr('pool_width'))),
                           stride=(1, int(layer.get_attr('stride_width'))), pad=(0, int(_attr(layer, 'pad_left', 0))),
                           out_hw=(1, int(layer.get_attr('n_out'))))
            acc_t = _ptype(layer.get_attr('accum_t'), 'accumulator type', layer, partition)
            pool_op = str(_attr(layer, 'pool_op', 'Average' if cls.startswith('Average') else 'Max'))
            if pool_op not in ('Max', 'Average'):
                raise _layer_error(f'pooling operation {pool_op!r} is not supported', layer, partition)
            is_avg = pool_op == 'Average'
            count_pad = str(_attr(layer, 'count_pad', 'False')).lower() == 'true'
            if is_avg and acc_t[4] in _SATURATING:
                n = geo['pool'][0] * geo['pool'][1]
                if not _sat_safe(n * _type_max_abs(in_t) + 1e-300, acc_t):
                    raise _layer_error(f'saturating accumulator {type_str(acc_t)} may overflow', layer, partition,
                                       hint='use a WRAP or wider accumulator type')
            if str(_attr(layer, 'data_format', 'channels_last')) != 'channels_last':
                raise _layer_error('channels_first data format is not supported', layer, partition)
            ent.update(kind='avgpool' if is_avg else 'maxpool', acc_t=acc_t, count_pad=count_pad,
                       n_filt=int(layer.get_attr('n_filt')), **geo)
        else:
            raise _layer_error('layer type is not supported by the RTL flow', layer, partition)

        var_types[out_name], var_shapes[out_name] = res_t, out_shape
        layers.append(ent)

    outputs = []
    for n in hls_model.outputs:
        if n not in var_types:
            raise FxsplitError(f'RTL flow: output {n!r} is not produced by a supported layer', partition=partition)
        outputs.append({'var': n, 'shape': var_shapes[n], 'type': var_types[n]})
    if input_names is not None:
        if len(input_names) != len(inputs):
            raise FxsplitError(f'RTL flow: {len(input_names)} input names for {len(inputs)} inputs', partition=partition)
        for ent, n in zip(inputs, input_names):
            ent['port'] = n
    if output_names is not None:
        if len(output_names) != len(outputs):
            raise FxsplitError(f'RTL flow: {len(output_names)} output names for {len(outputs)} outputs',
                               partition=partition)
        for ent, n in zip(outputs, output_names):
            ent['port'] = n
    for ent in inputs + outputs:
        ent.setdefault('port', ent['var'])
    vnames = [verilog_name(e['port']) for e in inputs + outputs]
    if len(set(vnames)) != len(vnames):
        # the same tensor may be both an input and an output, or listed twice: disambiguate outputs
        seen: set[str] = set()
        for e in inputs + outputs:
            v = verilog_name(e['port'])
            if v in seen:
                raise FxsplitError(f'RTL flow: port {e["port"]!r} appears twice in the partition interface',
                                   partition=partition)
            seen.add(v)
    return {'version': 1, 'partition': partition, 'inputs': inputs, 'outputs': outputs, 'layers': layers}


def check_rtl_supported(hls_model, partition: str) -> None:
    """Raise FxsplitError (naming layer, class and partition) if ``hls_model`` cannot be lowered
    exactly by the RTL flow.  Fast; runs in the main process before any build."""
    extract_program(hls_model, partition=partition)


def port_layout(program: dict) -> dict:
    """Bus layout of every port: ``{'inputs': [...], 'outputs': [...]}``, each entry with name
    (tensor), verilog (identifier), shape, precision, width (bits per element), size, bits."""
    def one(e):
        t = e['type']
        size = _n_elements(e['shape'])
        return {'name': e['port'], 'verilog': verilog_name(e['port']), 'shape': list(e['shape']),
                'precision': type_str(t), 'width': t[1], 'size': size, 'bits': size * t[1]}
    return {'inputs': [one(e) for e in program['inputs']], 'outputs': [one(e) for e in program['outputs']]}


# ----------------------------------------------------------------------------------------------
# Tracing (worker process)
# ----------------------------------------------------------------------------------------------

def _tree_sum(terms: list):
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    while len(terms) > 1:
        nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def _q(v, t: tuple, overflow: str | None = None, rounding: str | None = None):
    k, i, f = type_kif(t)
    if not hasattr(v, 'quantize'):
        from da4ml.trace import FixedVariable

        return FixedVariable.from_const(math.ldexp(_quantize_scalar(float(v), t), -f), hwconf=_HWCONF[0])
    return _quantize_var(v, k, i, f, overflow or t[4], rounding or t[3])


def _q_round_only(v, t: tuple):
    """Quantize the fractional part to type ``t`` (t's rounding) without any overflow handling."""
    _k, _i, _f = v.kif
    f = type_frac(t)
    if _f <= f:
        return v
    return _quantize_var(v, 1, max(_i, 0) + 2, f, 'WRAP', t[3])


def _quantize_var(v, k: int, i: int, f: int, overflow: str, rounding: str):
    """da4ml's ``quantize`` plus RND_CONV (round half to even), which da4ml lacks: with ``ulp`` the input's own
    last bit and ``lsb`` the kept part's last bit, ``TRN(v + 2**-(f+1) - ulp + lsb * ulp)`` rounds ties to the even
    neighbour and everything else to the nearest one (an exact identity on v's grid)."""
    if rounding != 'RND_CONV':
        return v.quantize(k, i, f, overflow, rounding)
    _k, _i, _f = v.kif
    if _f <= f:
        return v.quantize(k, i, f, overflow, 'TRN')
    n = v.quantize(_k, _i, f, 'WRAP', 'TRN') * math.ldexp(1.0, f)      # the kept part, as an integer
    lsb = n.quantize(0, 1, 0, 'WRAP', 'TRN')                            # its parity: 0 or 1
    ulp = math.ldexp(1.0, -_f)
    return (v + (math.ldexp(1.0, -f - 1) - ulp) + lsb * ulp).quantize(k, i, f, overflow, 'TRN')


def _cmul(v, c: float):
    """Exact ``v * c`` for a constant c: canonical-signed-digit shift-and-add without the
    intermediate re-wrapping da4ml's ``FixedVariable.__mul__`` does (which we found to produce
    wrong values for some scaled operands)."""
    from da4ml.trace.fixed_variable import to_csd_powers

    c = float(c)
    if c == 0:
        return 0.0
    if v.low == v.high:
        return float(v.low) * c
    terms = [v * p for p in to_csd_powers(c)]  # powers of two: pure re-scaling, no logic
    return _tree_sum(terms)


def _const_frac(w: float) -> int:
    if w == 0:
        return 0
    m, e = math.frexp(abs(w))  # w = m * 2**e, 0.5 <= m < 1
    f = 0
    while m != int(m):
        m *= 2
        f += 1
    return f - e


def _matvec(xs: list, W: np.ndarray, bias_acc: np.ndarray, x_t: tuple, acc_t: tuple, res_t: tuple,
            hwconf, solver_options):
    """hls4ml dense_latency semantics: acc = (accum_t)bias + sum_i (accum_t)(x_i * w_ij); res = (res_t)acc."""
    from da4ml.trace import FixedVariable, FixedVariableArray

    n_in, n_out = W.shape
    f_acc = type_frac(acc_t)
    f_x = type_frac(x_t)
    acc_wrap_ok = True  # SAT accumulators were proven not to overflow in extract_program
    # products that are exact in accum_t (and fit in float32 for the CMVM solver) go through CMVM
    lin = np.zeros_like(W)
    nonlin: list[tuple[int, int, float]] = []
    for i in range(n_in):
        for j in range(n_out):
            w = float(W[i, j])
            if w == 0:
                continue
            fw = _const_frac(w)
            exact = (f_x + fw <= f_acc) and float(np.float32(w)) == w and acc_wrap_ok
            if exact:
                lin[i, j] = w
            else:
                nonlin.append((i, j, w))
    cols: list[list] = [[] for _ in range(n_out)]
    if np.any(lin != 0):
        rows = np.nonzero(np.any(lin != 0, axis=1))[0]
        xa = FixedVariableArray(np.array([xs[r] for r in rows], dtype=object), solver_options, hwconf=hwconf)
        y = xa @ lin[rows]
        for j in range(n_out):
            if np.any(lin[rows, j] != 0):
                cols[j].append(y._vars[j])
    for i, j, w in nonlin:
        p = _cmul(xs[i], w)
        cols[j].append(_q_round_only(p, acc_t))
    out = []
    for j in range(n_out):
        s = _tree_sum(cols[j])
        b = float(bias_acc[j])
        if s is None:
            s = FixedVariable.from_const(b, hwconf=hwconf)
        elif b != 0:
            s = s + b
        s = _q(s, acc_t, overflow='WRAP') if acc_t[4] == 'WRAP' else _q(s, acc_t)
        out.append(_q(s, res_t))
    return out


def reciprocal_constant(n: int, hi: int, s: int | None = None) -> tuple[int, int]:
    """(m, s) with floor(x*m / 2^s) == floor(x / n) for every integer 0 <= x <= hi.

    Exact when the error e = m*n - 2^s (0 <= e < n) satisfies e*hi < 2^s (Granlund-Montgomery);
    checked, never assumed: a constant that would not be exact raises."""
    if s is None:
        s = max(1, hi.bit_length()) + math.ceil(math.log2(n))
    m = -(-(1 << s) // n)
    if (m * n - (1 << s)) * hi >= (1 << s):
        raise FxsplitError(f'internal: no exact reciprocal constant for division by {n} over [0, {hi}] '
                           f'(m={m}, s={s})', hint='please report this model; the RTL would not match hls4ml')
    return m, s


def _floor_div_const(v, n: int, hwconf):
    """floor(v / n) for a non-negative integer-valued FixedVariable ``v`` (exact)."""
    if n == 1:
        return v
    if n & (n - 1) == 0:
        return (v * (1.0 / n)).quantize(0, 64, 0, 'WRAP', 'TRN')
    m, s = reciprocal_constant(n, int(v.high))
    return (_cmul(v, float(m)) * math.ldexp(1.0, -s)).quantize(0, 64, 0, 'WRAP', 'TRN')


def _trunc_div_const(v, n: int, hwconf):
    """C integer division (toward zero) of an integer-valued FixedVariable by constant n > 0."""
    from da4ml.trace import FixedVariable

    if n == 1 or (v.low == v.high):
        if v.low == v.high:
            val = int(v.low)
            q = abs(val) // n * (1 if val >= 0 else -1)
            return FixedVariable.from_const(float(q), hwconf=hwconf)
        return v
    if v.low >= 0:
        return _floor_div_const(v, n, hwconf)
    pos = _floor_div_const(v.relu(), n, hwconf)
    neg = -_floor_div_const((-v).relu(), n, hwconf)
    return v.msb_mux(neg, pos)


def _pool(arr, ent, in_t, hwconf):
    """arr: object array (H, W, C) of FixedVariables.  hls4ml pooling{1,2}d_cl semantics."""

    H, Wd = ent['in_hw']
    ph, pw = ent['pool']
    sh, sw = ent['stride']
    pt, pl = ent['pad']
    OH, OW = ent['out_hw']
    C = ent['n_filt']
    acc_t, res_t = ent['acc_t'], ent['res_t']
    out = np.empty((OH, OW, C), dtype=object)
    for oy in range(OH):
        for ox in range(OW):
            for c in range(C):
                vals = []
                for ky in range(ph):
                    for kx in range(pw):
                        y, x = oy * sh + ky - pt, ox * sw + kx - pl
                        if 0 <= y < H and 0 <= x < Wd:
                            vals.append(arr[y, x, c])
                if ent['kind'] == 'maxpool':
                    # padded cells hold the most negative value of data_T: never above a real value
                    m = vals[0]
                    for v in vals[1:]:
                        m = m.max_of(v)
                    r = _q(m, acc_t)
                else:
                    n = ph * pw if ent['count_pad'] else len(vals)
                    s = _tree_sum([_q_round_only(v, acc_t) for v in vals])
                    s = _q(s, acc_t, overflow='WRAP')
                    f = type_frac(acc_t)
                    si = s * math.ldexp(1.0, f)  # integer-valued
                    if acc_t[0]:
                        q = _trunc_div_const(si, n, hwconf)
                    else:
                        q = _floor_div_const(si, n, hwconf)
                    r = _q(q * math.ldexp(1.0, -f), acc_t)
                out[oy, ox, c] = _q(r, res_t)
    return out


def _concat(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    nd = a.ndim
    if nd == 1:
        ax = 0
    elif nd == 2:
        ax = 1 if axis in (2, -1) else 0
    elif nd == 3:
        ax = 2 if axis in (3, -1) else (1 if axis in (2, -2) else 0)
    else:
        raise NotImplementedError('concatenation of >3-d tensors')
    return np.concatenate([a, b], axis=ax)


_HWCONF: list = [None]


def trace_program(program: dict, hwconf=None, solver_options=None):
    """Trace ``program`` with da4ml.  Returns (input FixedVariables flat list, output list, env)."""
    from da4ml.trace import FixedVariable, HWConfig

    hwconf = hwconf or HWConfig(1, -1, -1)
    _HWCONF[0] = hwconf
    env: dict[str, np.ndarray] = {}
    types: dict[str, tuple] = {}
    inp_vars = []
    for e in program['inputs']:
        k, i, f = type_kif(e['type'])
        shape = tuple(e['shape'])
        arr = np.empty(int(np.prod(shape)) if shape else 1, dtype=object)
        for n in range(arr.size):
            arr[n] = FixedVariable.from_kif(k, i, f, hwconf=hwconf)
        inp_vars.extend(arr.tolist())
        env[e['var']] = arr.reshape(shape)
        types[e['var']] = e['type']

    for ent in program['layers']:
        kind = ent['kind']
        x = env[ent['inputs'][0]]
        x_t = types[ent['inputs'][0]]
        res_t = ent['res_t']
        if kind == 'dense':
            y = np.array(_matvec(list(x.ravel()), ent['weight'], ent['bias_acc'], x_t, ent['acc_t'], res_t, hwconf,
                                 solver_options), dtype=object)
        elif kind == 'conv':
            H, Wd = ent['in_hw']
            C, F = ent['n_chan'], ent['n_filt']
            fh, fw = ent['filt']
            sh, sw = ent['stride']
            pt, pl = ent['pad']
            OH, OW = ent['out_hw']
            xi = x.reshape(H, Wd, C)
            Wm = ent['weight'].reshape(fh, fw, C, F)
            y = np.empty((OH, OW, F), dtype=object)
            for oy in range(OH):
                for ox in range(OW):
                    xs, rows = [], []
                    for ky in range(fh):
                        for kx in range(fw):
                            yy, xx = oy * sh + ky - pt, ox * sw + kx - pl
                            if 0 <= yy < H and 0 <= xx < Wd:
                                for c in range(C):
                                    xs.append(xi[yy, xx, c])
                                    rows.append(Wm[ky, kx, c])
                    y[oy, ox] = _matvec(xs, np.array(rows).reshape(len(rows), F), ent['bias_acc'], x_t,
                                        ent['acc_t'], res_t, hwconf, solver_options)
        elif kind == 'relu':
            y = np.array([_q(v.relu(), res_t) for v in x.ravel()], dtype=object)
        elif kind == 'linear':
            y = np.array([_q(v, res_t) for v in x.ravel()], dtype=object)
        elif kind == 'leaky_relu':
            a = ent['alpha']
            y = np.array([v.msb_mux(_q(_cmul(v, a), res_t), _q(v, res_t)) if v.low < 0 else _q(v, res_t)
                          for v in x.ravel()], dtype=object)
        elif kind == 'batchnorm':
            flat = x.ravel()
            nf = ent['n_filt']
            s, b = ent['scale'].ravel(), ent['bias'].ravel()
            y = np.empty(flat.size, dtype=object)
            for n, v in enumerate(flat):
                idx = n if nf == -1 else n % nf
                y[n] = _q(_cmul(v, float(s[idx])) + float(b[idx]), res_t)
        elif kind in ('add', 'subtract'):
            a = x.ravel()
            b = env[ent['inputs'][1]].ravel()
            n = int(np.prod(ent['out_shape']))
            y = np.empty(n, dtype=object)
            for m in range(n):
                va, vb = a[m % a.size], b[m % b.size]
                y[m] = _q(va + vb if kind == 'add' else va - vb, res_t)
        elif kind == 'concat':
            b = env[ent['inputs'][1]]
            y = _concat(x, b, ent['axis'])
            y = np.array([_q(v, res_t) for v in y.ravel()], dtype=object)
        elif kind == 'reshape':
            y = np.array([_q(v, res_t) for v in x.ravel()], dtype=object)
        elif kind == 'transpose':
            y = np.array([_q(v, res_t) for v in np.transpose(x, ent['perm']).ravel()], dtype=object)
        elif kind in ('maxpool', 'avgpool'):
            H, Wd = ent['in_hw']
            y = _pool(x.reshape(H, Wd, ent['n_filt']), ent, x_t, hwconf)
        else:
            raise NotImplementedError(kind)
        y = np.asarray(y, dtype=object)
        # constants produced as python floats are turned into FixedVariables
        flat = y.ravel()
        for n, v in enumerate(flat):
            if not isinstance(v, FixedVariable):
                flat[n] = FixedVariable.from_const(float(v), hwconf=hwconf)
        env[ent['output']] = flat.reshape(tuple(ent['out_shape']))
        types[ent['output']] = res_t

    out_vars = []
    for e in program['outputs']:
        out_vars.extend(env[e['var']].ravel().tolist())
    return inp_vars, out_vars, env


# ----------------------------------------------------------------------------------------------
# Verilog emission (worker process)
# ----------------------------------------------------------------------------------------------

def _field_layout(qints) -> list[tuple[int, int, int, int]]:
    """For each element: (offset, width, k, f) in da4ml's packed bus."""
    from da4ml.types import minimal_kif

    out, off = [], 0
    for q in qints:
        k, i, f = minimal_kif(q)
        w = int(k) + int(i) + int(f)
        w = max(w, 0)
        out.append((off, w, int(k), int(f)))
        off += w
    return out


def _wrapper_verilog(module_name: str, core_name: str, program: dict, inp_fields, out_fields,
                     latency: int, pipelined: bool) -> str:
    lines = [f'// Generated by fxsplit (RTL flow, da4ml). Partition: {program.get("partition")}',
             '// Every element is the raw two\'s-complement integer of its hls4ml type, element 0 in the LSBs.',
             '`timescale 1 ns / 1 ps', f'module {module_name} (', '    input clk,', '    input in_valid,',
             '    output out_valid,']
    decls = []
    for e in program['inputs']:
        w = e['type'][1] * _n_elements(e['shape'])
        decls.append(f'    input [{w - 1}:0] {verilog_name(e["port"])}')
    for e in program['outputs']:
        w = e['type'][1] * _n_elements(e['shape'])
        decls.append(f'    output [{w - 1}:0] {verilog_name(e["port"])}')
    lines.append(',\n'.join(decls))
    lines.append(');')
    inp_bits = sum(f[1] for f in inp_fields)
    out_bits = sum(f[1] for f in out_fields)
    lines.append(f'    wire [{max(inp_bits, 1) - 1}:0] fxs_core_inp;')
    lines.append(f'    wire [{max(out_bits, 1) - 1}:0] fxs_core_out;')
    # inputs: hls raw -> da4ml packed field (drop bits below da4ml's lsb; same type => plain copy)
    for name, W, F, el, (off, w, k, f) in _port_elements(program['inputs'], inp_fields):
        if w == 0:
            continue
        lsb = el * W + (F - f)
        if F - f < 0 or (F - f) + w > W:
            raise AssertionError('input field does not fit the hls4ml type')
        lines.append(f'    assign fxs_core_inp[{off + w - 1}:{off}] = {name}[{lsb + w - 1}:{lsb}];')
    if inp_bits == 0:
        lines.append("    assign fxs_core_inp = 1'b0;")
    # outputs: da4ml packed field -> hls raw (shift to the type's lsb, sign/zero-extend)
    for name, W, F, el, (off, w, k, f) in _port_elements(program['outputs'], out_fields):
        hi, lo = el * W + W - 1, el * W
        if w == 0:
            lines.append(f"    assign {name}[{hi}:{lo}] = {W}'d0;")
            continue
        s = F - f
        if s < 0:
            raise AssertionError(f'output element {el} of {name} is finer than its hls4ml type')
        field = f'fxs_core_out[{off + w - 1}:{off}]'
        parts = []
        ext = W - w - s
        if ext < 0:
            # keep the low W - s bits of the field (value fits the type by construction)
            field = f'fxs_core_out[{off + (W - s) - 1}:{off}]' if W - s > 0 else None
            ext = 0
        if ext > 0:
            msb = f'fxs_core_out[{off + w - 1}]' if k else "1'b0"
            parts.append(f'{{{ext}{{{msb}}}}}')
        if field:
            parts.append(field)
        if s > 0:
            parts.append(f"{s}'d0")
        lines.append(f'    assign {name}[{hi}:{lo}] = {{{", ".join(parts)}}};')
    clk = '.clk(clk), ' if pipelined else ''
    lines.append(f'    {core_name} fxs_core ({clk}.model_inp(fxs_core_inp), .model_out(fxs_core_out));')
    if latency > 0:
        lines += valid_shift_register('fxs_valid_sr', latency)
        lines.append(f'    assign out_valid = fxs_valid_sr[{latency - 1}];')
    else:
        lines.append('    assign out_valid = in_valid;')
    lines.append('endmodule')
    return '\n'.join(lines) + '\n'


def emit_verilog(program: dict, workdir: str, module_name: str, latency_cutoff: float | None = 5.0,
                 solver_options: dict | None = None) -> dict:
    """Trace ``program`` with da4ml and write Verilog into ``workdir`` (only there).

    ``latency_cutoff`` is da4ml's pipelining cutoff (in da4ml's adder-delay units; None or <= 0:
    purely combinational, latency 0).  Returns JSON-able metadata: ``top`` (module name),
    ``files`` (Verilog files relative to workdir, dependencies first), ``latency`` (cycles),
    ``ports`` (bus layout, see :func:`port_layout`), ``cost`` (da4ml's LUT estimate) and more.
    """
    import time

    from da4ml.codegen.rtl.verilog import comb_logic_gen, pipeline_logic_gen
    from da4ml.codegen.rtl.verilog.comb import table_mem_gen
    from da4ml.trace import HWConfig, comb_trace, to_pipeline

    t0 = time.time()
    if not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', module_name):
        raise FxsplitError(f'RTL flow: invalid Verilog module name {module_name!r}',
                           partition=program.get('partition'))
    os.makedirs(workdir, exist_ok=True)
    hwconf = HWConfig(1, -1, -1)
    inp, out, _ = trace_program(program, hwconf, solver_options)
    comb = comb_trace(inp, out, keep_dead_inputs=True)
    t_trace = time.time() - t0
    core = f'{module_name}_core'
    pipelined = latency_cutoff is not None and latency_cutoff > 0
    files: list[str] = []
    srcdir = os.path.join(workdir, 'src')
    os.makedirs(srcdir, exist_ok=True)
    if pipelined:
        pipe = to_pipeline(comb, float(latency_cutoff), verbose=False)
        codes = pipeline_logic_gen(pipe, core, print_latency=False)
        mem: dict[str, str] = {}
        for s in pipe.solutions:
            mem.update(table_mem_gen(s))
        n_stages = len(pipe.solutions)
        latency = n_stages + 1  # stage input registers + output register
        inp_q, out_q = pipe.inp_qint, pipe.out_qint
        for name in sorted(codes, key=lambda s: (s == core, s)):
            fn = f'src/{name}.v'
            with open(os.path.join(workdir, fn), 'w') as fh:
                fh.write(codes[name])
            files.append(fn)
        cost = float(pipe.cost)
    else:
        code = comb_logic_gen(comb, core, print_latency=False, timescale='`timescale 1 ns / 1 ps')
        mem = table_mem_gen(comb)
        n_stages, latency = 1, 0
        inp_q, out_q = comb.inp_qint, comb.out_qint
        fn = f'src/{core}.v'
        with open(os.path.join(workdir, fn), 'w') as fh:
            fh.write(code)
        files.append(fn)
        cost = float(comb.cost)
    if mem:
        raise FxsplitError('RTL flow: the traced design needs lookup tables, which the stitched flow does not '
                           'support', partition=program.get('partition'))
    # da4ml's primitive modules (shared by every partition, identical content)
    import da4ml.codegen.rtl as _rtl

    static_dir = os.path.join(os.path.dirname(_rtl.__file__), 'verilog', 'source')
    static = []
    for p in sorted(os.listdir(static_dir)):
        if p.endswith('.v'):
            os.makedirs(os.path.join(workdir, 'src', 'static'), exist_ok=True)
            shutil.copy(os.path.join(static_dir, p), os.path.join(workdir, 'src', 'static', p))
            static.append(f'src/static/{p}')
    inp_fields = _field_layout(inp_q)
    out_fields = _field_layout(out_q)
    wrapper = _wrapper_verilog(module_name, core, program, inp_fields, out_fields, latency, pipelined)
    wfn = f'src/{module_name}.v'
    with open(os.path.join(workdir, wfn), 'w') as fh:
        fh.write(wrapper)
    meta = {
        'top': module_name,
        'files': static + files + [wfn],
        'wrapper': wfn,                 # the file holding module ``top`` alone (its interface, for black boxes)
        'static_files': static,
        'latency': latency,
        'pipeline_stages': n_stages if pipelined else 0,
        'latency_cutoff': latency_cutoff if pipelined else None,
        'ports': port_layout(program),
        'cost': cost,
        'trace_seconds': round(t_trace, 3),
        'emit_seconds': round(time.time() - t0, 3),
        'partition': program.get('partition'),
    }
    import json

    with open(os.path.join(workdir, f'{module_name}.rtl.json'), 'w') as fh:
        json.dump(meta, fh, indent=1)
    return meta
