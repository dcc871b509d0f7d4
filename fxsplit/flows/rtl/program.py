"""Program extraction (main process, fast): an hls4ml ModelGraph (io_parallel, Vivado backend) as a plain picklable
dict of layers, numpy weights and types (:func:`extract_program`), refusing up front anything the lowering cannot
reproduce bit for bit (:func:`check_rtl_supported`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import FxsplitError
from .names import _n_elements, verilog_name
from .rtltype import SATURATING as _SATURATING, UnsupportedType, parse_precision, quantize_scalar as _quantize_scalar, type_frac, type_raw_range, type_str

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


def layer_entry(layer, var_types: dict, var_shapes: dict, partition: str | None = None) -> dict:
    """One hls4ml layer (not an input) as a program entry: its kind, inputs, output, types, weights and geometry;
    ``var_types``/``var_shapes``: the types and shapes of the variables before it. Raises FxsplitError naming the
    layer, its class and the partition for anything the lowering cannot reproduce bit for bit."""
    cls = layer.class_name
    out_var = layer.get_output_variable()
    out_name = layer.outputs[0]
    out_shape = tuple(int(d) for d in out_var.shape)
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

    return ent


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
        ent = layer_entry(layer, var_types, var_shapes, partition)
        var_types[out_name], var_shapes[out_name] = ent['res_t'], out_shape
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

