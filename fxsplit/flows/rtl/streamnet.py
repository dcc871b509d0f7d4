"""Streaming networks of the open RTL flow: an hls4ml io_stream ModelGraph as Verilog units joined by AXI4-Stream
handshakes, one hls4ml stream word per beat, bit-exact against hls4ml's io_stream C simulation.

A tensor of shape ``(..., C)`` travels as beats of its last dimension (one pixel, all channels, row by row, as
hls4ml's io_stream does); a 1-D tensor as one beat. The graph (:func:`stream_graph`) maps every hls4ml layer to a
unit:

- **window** (:func:`~fxsplit.flows.rtl.streamconv.window_stream_verilog`): a line buffer and an ``fh x fw``
  window feeding one da4ml kernel per output beat. A convolution (hls4ml's per-pixel dense kernel; a pointwise
  convolution with its stride), a max or average pooling window (pool equal to stride, no padding; each element cast
  into ``accum_t`` and reduced as hls4ml's io_stream pooling does), a Dense on a 1-D tensor, and a per-pixel layer
  that has no kernel to join (BatchNorm, an activation: a 1x1 window).
- **join**: two streams beat by beat into one kernel (Add, Subtract, Concatenate on the channels).
- The per-pixel layers that follow a kernel's unit as its only consumer (BatchNorm, ReLU, linear, LeakyReLU) run in
  that unit's kernel, after its own layer: one pipeline, the same casts as hls4ml's separate layers.
- **zeropad**: hls4ml's ZeroPadding2D/1D, zero beats inserted around the frame (the type is kept).
- **fork**: hls4ml's Clone, one FIFO per output, its depth from the beats one path must hold while the other
  reaches the join they meet at (:func:`fork_depths`).
- **repack**: a Reshape/Flatten/Transpose that keeps the element order, regrouping beats (the whole tensor as one
  beat for a Dense that reads it).

Every unit's outputs come from registers or FIFOs except a zero pad's (whose valid follows its input's), so
joining units makes no combinational loop. Pins of every unit and of the top: ``clk``, ``rst_n`` (active-low,
synchronous; clears the counters, credits and FIFOs; frames follow each other without a reset), and per stream
``<name>_TDATA`` (element 0 in the LSBs, raw two's complement), ``<name>_TVALID``, ``<name>_TREADY``.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import numpy as np

from ...errors import FxsplitError
from .names import verilog_name
from .program import _ptype, layer_entry
from .streamconv import (FIFO_EXTRA, _clog2, check_module_names, shell_back_end, shell_declarations,
                         window_stream_verilog)

ELEMENTWISE = ('relu', 'linear', 'leaky_relu', 'batchnorm')
FORK_SLACK = 2          # beats a fork's FIFO holds beyond the computed need


def _err(msg: str, layer, partition, hint: str | None = None) -> FxsplitError:
    return FxsplitError(f'streaming RTL flow: layer {layer.name!r} ({layer.class_name}): {msg}', partition=partition,
                        hint=hint)


def _tensor(shape, t) -> dict:
    shape = tuple(int(d) for d in shape)
    beat = shape[-1] if shape else 1
    n = int(np.prod(shape)) if shape else 1
    return {'shape': shape, 'type': tuple(t), 'beat': beat, 'beats': n // beat}


def _spatial(shape) -> tuple[int, int, int]:
    """(H, W, C) of a channels-last tensor of 1, 2 or 3 dimensions."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return 1, 1, shape[0]


def stream_graph(hls_model, partition: str | None = None, input_names: list[str] | None = None,
                 output_names: list[str] | None = None) -> dict:
    """The streaming network of an io_stream ``hls_model``: ``{'inputs', 'outputs'`` (``{'var', 'port'}``),
    ``'tensors'`` (name -> shape, type, beat, beats), ``'units'`` (in dataflow order)``}``. Every layer the flow
    cannot stream bit for bit is refused here, naming it and the partition."""
    if str(hls_model.config.get_config_value('IOType')) != 'io_stream':
        raise FxsplitError('streaming RTL flow: the model is not io_stream', partition=partition,
                           hint='convert with io_type="io_stream"')
    tensors: dict[str, dict] = {}
    var_types: dict[str, tuple] = {}
    var_shapes: dict[str, tuple] = {}
    units: list[dict] = []
    producer: dict[str, dict] = {}        # tensor -> the unit producing it
    inputs: list[str] = []
    layers = list(hls_model.get_layers())
    users: dict[str, int] = {}
    for layer in layers:
        for n in layer.inputs:
            users[n] = users.get(n, 0) + 1
    for n in hls_model.outputs:
        users[n] = users.get(n, 0) + 1

    def add(unit: dict) -> None:
        units.append(unit)
        for o in unit['outs']:
            producer[o] = unit

    for layer in layers:
        cls = layer.class_name
        out_var = layer.get_output_variable()
        if cls in ('Input', 'InputLayer'):
            name = layer.outputs[0]
            t = _ptype(out_var.type, 'input type', layer, partition)
            tensors[name] = _tensor(out_var.shape, t)
            var_types[name], var_shapes[name] = t, tensors[name]['shape']
            inputs.append(name)
            continue
        for n in layer.inputs:
            if n not in tensors:
                raise _err(f'input {n!r} is produced by a layer the streaming flow does not support', layer, partition)
            if users.get(n, 0) > 1:
                raise _err(f'tensor {n!r} has {users[n]} consumers without an hls4ml Clone', layer, partition)
        src = tensors[layer.inputs[0]]
        if cls == 'Clone':
            outs = list(layer.outputs)
            for o in outs:
                tensors[o] = dict(src)
                var_types[o], var_shapes[o] = src['type'], src['shape']
            add({'op': 'fork', 'name': layer.name, 'ins': [layer.inputs[0]], 'outs': outs})
            continue
        out = layer.outputs[0]
        res_t = _ptype(out_var.type, 'result type', layer, partition)
        if cls in ('ZeroPadding1D', 'ZeroPadding2D'):
            if tuple(res_t) != tuple(src['type']):
                raise _err('a zero padding that changes the type is not hls4ml io_stream\'s', layer, partition)
            pads = tuple(int(layer.get_attr(a, 0) or 0) for a in ('pad_top', 'pad_bottom', 'pad_left', 'pad_right'))
            tensors[out] = _tensor(out_var.shape, res_t)
            H, W, C = _spatial(src['shape'])
            OH, OW, _ = _spatial(tensors[out]['shape'])
            if (OH, OW) != (H + pads[0] + pads[1], W + pads[2] + pads[3]):
                raise _err(f'padded size {(OH, OW)} is not {(H, W)} plus the padding {pads}', layer, partition)
            add({'op': 'zeropad', 'name': layer.name, 'ins': [layer.inputs[0]], 'outs': [out], 'H': H, 'W': W,
                 'C': C, 'pad': pads})
        elif cls in ('Reshape', 'Flatten', 'Transpose'):
            shape = tuple(int(d) for d in out_var.shape)
            order = None
            if cls == 'Transpose':
                perm = [int(p) for p in layer.get_attr('perm')]
                order = np.transpose(np.arange(int(np.prod(src['shape']))).reshape(src['shape']), perm).ravel()
                if np.array_equal(order, np.arange(order.size)):
                    order = None          # only dimensions of size 1 move
            if tuple(res_t) != tuple(src['type']):
                raise _err('a reshape that changes the type is not supported', layer, partition)
            tensors[out] = _tensor(shape, res_t)
            add({'op': 'repack', 'name': layer.name, 'ins': [layer.inputs[0]], 'outs': [out],
                 'order': None if order is None else order.tolist()})
        else:
            ent = layer_entry(layer, var_types, var_shapes, partition)
            kind = ent['kind']
            tensors[out] = _tensor(out_var.shape, res_t)
            prev = producer.get(layer.inputs[0])
            if (kind in ELEMENTWISE and prev is not None and prev['op'] in ('window', 'join')
                    and users.get(layer.inputs[0], 0) == 1 and layer.inputs[0] not in hls_model.outputs):
                _fuse(prev, ent, tensors[out])          # runs in the kernel before it
                producer[out] = prev
            elif kind in ('conv', 'avgpool', 'maxpool', 'dense') or kind in ELEMENTWISE:
                ins = [layer.inputs[0]]
                if kind == 'dense' and src['beats'] != 1:
                    # hls4ml's dense_stream reads the whole vector: gather it into one beat first
                    g = f'{layer.inputs[0]}__whole'
                    tensors[g] = {**src, 'shape': (int(np.prod(src['shape'])),), 'beat': src['beat'] * src['beats'],
                                  'beats': 1}
                    add({'op': 'repack', 'name': f'{layer.name}_gather', 'ins': ins, 'outs': [g], 'order': None})
                    ins = [g]
                add(_window_unit(layer, ent, ins, out, tensors, partition))
            elif kind in ('add', 'subtract', 'concat'):
                add(_join_unit(layer, ent, out, tensors, partition))
            else:
                raise _err(f'{kind} is not supported on streams', layer, partition)
        var_types[out], var_shapes[out] = res_t, tensors[out]['shape']

    outputs = list(hls_model.outputs)
    for n in outputs:
        if n not in tensors:
            raise FxsplitError(f'streaming RTL flow: output {n!r} is not produced by a supported layer',
                               partition=partition)
    _fold_repacks(units, tensors, set(inputs) | set(outputs))
    ports_in = list(input_names or inputs)
    ports_out = list(output_names or outputs)
    if len(ports_in) != len(inputs) or len(ports_out) != len(outputs):
        raise FxsplitError('streaming RTL flow: port names do not match the inputs and outputs', partition=partition)
    net = {'version': 1, 'partition': partition, 'tensors': tensors, 'units': units,
           'inputs': [{'var': v, 'port': p} for v, p in zip(inputs, ports_in)],
           'outputs': [{'var': v, 'port': p} for v, p in zip(outputs, ports_out)]}
    fork_depths(net)
    return net


def _window_geometry(layer, ent: dict, src: dict, partition) -> dict:
    kind = ent['kind']
    H, W, C = _spatial(src['shape'])
    if kind == 'conv':
        if tuple(ent['pad']) != (0, 0) or any(int(layer.get_attr(a, 0) or 0) for a in ('pad_bottom', 'pad_right')):
            raise _err('padding inside an io_stream convolution; hls4ml pads in a ZeroPadding layer before it',
                       layer, partition)
        (fh, fw), (sh, sw) = ent['filt'], ent['stride']
        if fh == 1 and sh != 1 and ent['class_name'] != 'PointwiseConv2D':
            raise _err('a 1-row filter with a vertical stride is not reproduced', layer, partition,
                       hint='use stride 1 for 1xN filters')
        F = int(ent['n_filt'])
    elif kind in ('avgpool', 'maxpool'):
        (fh, fw), (sh, sw) = ent['pool'], ent['stride']
        if (fh, fw) != (sh, sw) or tuple(ent['pad']) != (0, 0):
            raise _err('io_stream pooling needs the stride equal to the pool and no padding (as hls4ml asserts)',
                       layer, partition)
        F = C
    elif kind == 'dense':
        H, W, C, fh, fw, sh, sw = 1, 1, src['beat'], 1, 1, 1, 1
        F = int(ent['out_shape'][-1])
    else:                                       # a per-pixel layer
        fh = fw = sh = sw = 1
        F = C
    OH, OW = (H - fh) // sh + 1, (W - fw) // sw + 1
    return dict(H=H, W=W, C=C, F=F, fh=fh, fw=fw, sh=sh, sw=sw, OH=OH, OW=OW)


def _window_unit(layer, ent: dict, ins: list[str], out: str, tensors: dict, partition) -> dict:
    src = tensors[ins[0]]
    g = _window_geometry(layer, ent, src, partition)
    n_in = g['fh'] * g['fw'] * g['C']
    kind = ent['kind']
    head = copy.deepcopy(ent)
    head.update(inputs=['win'], output='y0', out_shape=(g['F'],))
    if kind == 'conv':
        head.update(kind='dense', class_name='Dense', weight=np.asarray(ent['weight']).reshape(n_in, g['F']))
        for k in ('in_hw', 'filt', 'stride', 'pad', 'out_hw', 'n_chan', 'n_filt'):
            head.pop(k, None)
    elif kind in ('avgpool', 'maxpool'):
        head.update(in_hw=(g['fh'], g['fw']), out_hw=(1, 1), stride=(g['fh'], g['fw']), pad=(0, 0),
                    n_filt=g['C'], cast_each=True)
    elif kind == 'batchnorm':
        _per_channel(layer, head, src, partition)
    exp = tensors[out]
    if tuple(exp['shape'][:-1]) and (g['OH'], g['OW']) != _spatial(exp['shape'])[:2]:
        raise _err(f'output {exp["shape"]} is not the streamed window output {(g["OH"], g["OW"], g["F"])}',
                   layer, partition)
    return {'op': 'window', 'name': layer.name, 'ins': ins, 'outs': [out], 'geometry': g,
            'program': {'version': 1, 'partition': layer.name,
                        'inputs': [{'var': 'win', 'shape': (n_in,), 'type': tuple(src['type']), 'port': 'win'}],
                        'outputs': [{'var': 'y0', 'shape': (g['F'],), 'type': tuple(ent['res_t']), 'port': 'pix'}],
                        'layers': [head]}}


def _per_channel(layer, ent: dict, src: dict, partition) -> None:
    """A BatchNorm run on one beat: its scale and bias per channel."""
    C = src['beat']
    nf = int(ent.get('n_filt', -1))
    if nf not in (-1, C) or (nf == -1 and src['beats'] != 1 and np.asarray(ent['scale']).size != C):
        raise _err('a BatchNorm whose scale is not per channel is not supported on streams', layer, partition)
    ent['n_filt'] = C


def _join_unit(layer, ent: dict, out: str, tensors: dict, partition) -> dict:
    a, b = (tensors[n] for n in layer.inputs)
    if ent['kind'] == 'concat':
        nd = len(a['shape'])
        if ent['axis'] not in (-1, nd) or a['beats'] != b['beats']:
            raise _err('only concatenation along the channels streams', layer, partition)
    elif a['shape'] != b['shape']:
        raise _err('a merge of tensors of different shapes (broadcast) is not supported on streams', layer, partition)
    C = tensors[out]['beat']
    head = copy.deepcopy(ent)
    head.update(inputs=['a', 'b'], output='y0', out_shape=(C,), axis=-1)
    return {'op': 'join', 'name': layer.name, 'ins': list(layer.inputs), 'outs': [out],
            'program': {'version': 1, 'partition': layer.name,
                        'inputs': [{'var': 'a', 'shape': (a['beat'],), 'type': tuple(a['type']), 'port': 'a'},
                                   {'var': 'b', 'shape': (b['beat'],), 'type': tuple(b['type']), 'port': 'b'}],
                        'outputs': [{'var': 'y0', 'shape': (C,), 'type': tuple(ent['res_t']), 'port': 'pix'}],
                        'layers': [head]}}


def _fuse(unit: dict, ent: dict, out: dict) -> None:
    """Append the per-pixel layer ``ent`` to ``unit``'s kernel; the unit now produces ``ent``'s output."""
    prog = unit['program']
    last = prog['outputs'][0]
    k = len(prog['layers'])
    tail = copy.deepcopy(ent)
    C = last['shape'][0]
    tail.update(inputs=[last['var']], output=f'y{k}', out_shape=(C,))
    if tail['kind'] == 'batchnorm':
        nf = int(tail.get('n_filt', -1))
        if nf not in (-1, C):
            raise FxsplitError(f"streaming RTL flow: layer {ent['name']!r}: BatchNorm over {nf} channels on beats of "
                               f'{C}', partition=prog.get('partition'))
        tail['n_filt'] = C
    prog['layers'].append(tail)
    prog['outputs'] = [{'var': f'y{k}', 'shape': (C,), 'type': tuple(ent['res_t']), 'port': 'pix'}]
    unit['outs'] = [ent['output']]
    unit.setdefault('fused', []).append(ent['name'])


def _fold_repacks(units: list[dict], tensors: dict, keep: set) -> None:
    """A repack feeding only another repack is folded into it; a repack between equal beats is a wire (its output
    tensor renamed to its input everywhere)."""
    changed = True
    while changed:
        changed = False
        by_out = {o: u for u in units for o in u['outs']}
        for u in list(units):
            if u['op'] != 'repack':
                continue
            src = u['ins'][0]
            p = by_out.get(src)
            if p is not None and p['op'] == 'repack' and src not in keep:
                # out element e of u is u's input element u[e], which is p's input element p[u[e]]
                po, uo = p.get('order'), u.get('order')
                if po is not None or uo is not None:
                    n = tensors[src]['beat'] * tensors[src]['beats']
                    po = np.arange(n) if po is None else np.asarray(po)
                    uo = np.arange(n) if uo is None else np.asarray(uo)
                    o = po[uo]
                    u['order'] = None if np.array_equal(o, np.arange(n)) else o.tolist()
                u['ins'] = list(p['ins'])
                units.remove(p)
                changed = True
                break
            if (u.get('order') is None and tensors[src]['beat'] == tensors[u['outs'][0]]['beat']
                    and u['outs'][0] not in keep):
                out = u['outs'][0]
                units.remove(u)
                for v in units:
                    v['ins'] = [src if n == out else n for n in v['ins']]
                changed = True
                break


# ----------------------------------------------------------------------------- FIFO depths

def _need_through(unit: dict, tensors: dict, need_in: list[np.ndarray]) -> list[np.ndarray]:
    """Per output of ``unit``, for every beat: the last beat of the stream being followed that it needs, given that
    of each input (-1: none)."""
    op = unit['op']
    out = tensors[unit['outs'][0]]
    if op == 'window':
        g = unit['geometry']
        oy, ox = np.divmod(np.arange(g['OH'] * g['OW']), g['OW'])
        idx = (oy * g['sh'] + g['fh'] - 1) * g['W'] + ox * g['sw'] + g['fw'] - 1
        return [need_in[0][idx]]
    if op == 'join':
        return [np.maximum(need_in[0], need_in[1])]
    if op == 'zeropad':
        H, W = unit['H'], unit['W']
        t, b, left, r = unit['pad']
        OW = W + left + r
        y, x = np.divmod(np.arange((H + t + b) * OW), OW)
        real = (y >= t) & (y < t + H) & (x >= left) & (x < left + W)
        got = np.full(y.size, -1)
        got[real] = need_in[0][(y[real] - t) * W + (x[real] - left)]
        return [np.maximum.accumulate(got)]
    if op == 'repack':
        src = tensors[unit['ins'][0]]
        n = src['beat'] * src['beats']
        if unit.get('order') is not None:        # the whole tensor is gathered before the first beat leaves
            return [np.full(out['beats'], need_in[0][-1])]
        last_elem = np.minimum((np.arange(out['beats']) + 1) * out['beat'], n) - 1
        return [need_in[0][last_elem // src['beat']]]
    if op == 'part':                             # a partition: its own need maps (:func:`need_maps`)
        res = []
        for q in unit['outs']:
            acc = np.full(tensors[q]['beats'], -1)
            for p, nin in zip(unit['ins'], need_in):
                m = np.asarray(unit['maps'][p][q])
                acc = np.maximum(acc, np.where(m >= 0, nin[np.maximum(m, 0)], -1))
            res.append(acc)
        return res
    return [need_in[0]] * len(unit['outs'])          # a fork's outputs: the input's


def _propagate(net: dict, start: str) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """From every beat of tensor ``start``: for each tensor downstream, the last beat of ``start`` each of its beats
    needs, and the units with buffers (kernels, partitions) on the way to it."""
    tensors = net['tensors']
    need = {start: np.arange(tensors[start]['beats'])}
    via: dict[str, list[str]] = {start: []}
    for u in net['units']:
        if any(n in need for n in u['ins']):
            ins = [need.get(n, np.full(tensors[n]['beats'], -1)) for n in u['ins']]
            before = max((via[n] for n in u['ins'] if n in via), key=len)
            for n, r in zip(u['outs'], _need_through(u, tensors, ins)):
                need[n] = r
                via[n] = before + ([u['name']] if u['op'] in ('window', 'join', 'part') else [])
    return need, via


def need_maps(net: dict) -> dict[str, dict[str, list[int]]]:
    """Per input port and output port of a streaming network: for every beat of the output, the last beat of the
    input it needs (-1: none), by port name."""
    port = {e['var']: e['port'] for e in net['inputs'] + net['outputs']}
    out = {}
    for e in net['inputs']:
        need, _ = _propagate(net, e['var'])
        out[e['port']] = {port[o['var']]: (need[o['var']] if o['var'] in need
                                           else np.full(net['tensors'][o['var']]['beats'], -1)).tolist()
                          for o in net['outputs']}
    return out


def buffer_beats(meta: dict) -> int:
    """The beats a streaming network holds in flight in its kernels' pipelines and output FIFOs."""
    return sum(int(u.get('fifo_depth') or 0) for u in meta['units'])


def fork_depths(net: dict, latencies: dict[str, int] | None = None) -> None:
    """Set every fork output's FIFO depth.

    ``unit['min_depths']``: deadlock-free. Where two outputs of a fork meet again (a join, or a partition with an
    input on each path), the beats of the fork that one path needs before an output beat ``j`` of the meeting unit
    can be made, beyond those the other path has taken by then, for the worst ``j`` (``need``), plus
    :data:`FORK_SLACK`; a path that meets no other needs only the slack. Every beat a path needs reaches it while
    the other FIFOs hold the rest.

    ``unit['depths']``: full rate. The other path also holds beats in flight in its kernels' pipelines and output
    FIFOs (``latencies``: unit name -> kernel latency, 3 where not known; a partition's ``capacity``) and falls
    behind by as much again while the zero paddings on it send their rows of zeros, so each FIFO gets ``2 * need``
    plus those, at most one frame beyond the minimum."""
    tensors, units = net['tensors'], net['units']
    lat = latencies or {}
    cap = {u['name']: int(u['capacity']) for u in units if 'capacity' in u}
    for fork in (u for u in units if u['op'] == 'fork'):
        walks = [_propagate(net, o) for o in fork['outs']]
        mins, fulls = [], []
        for i, (mine, _) in enumerate(walks):
            extra, inflight = 0, 0
            for j, (other, via) in enumerate(walks):
                if i == j:
                    continue
                for u in units:
                    if len(u['ins']) < 2 or u['op'] == 'fork':
                        continue
                    # where the two paths meet: an input on each that the other does not reach
                    pi = [n for n in u['ins'] if n in mine and n not in other]
                    pj = [n for n in u['ins'] if n in other and n not in mine]
                    if not pi or not pj:
                        continue

                    def through(side, names):
                        return _need_through(u, tensors, [side[n] if n in names else
                                                          np.full(tensors[n]['beats'], -1) for n in u['ins']])
                    for a, b in zip(through(mine, pi), through(other, pj)):
                        both = (a >= 0) & (b >= 0)
                        if both.any():
                            extra = max(extra, int(np.max((b - a)[both])))
                    held = sum(cap.get(k, int(lat.get(k, 3)) + FIFO_EXTRA) for n in pj for k in via[n])
                    inflight = max(inflight, held)
            need = max(extra, 0)
            mins.append(need + FORK_SLACK)
            fulls.append(need + FORK_SLACK + (min(need + inflight, tensors[fork['ins'][0]]['beats']) if need else 0))
        fork['min_depths'], fork['depths'] = mins, fulls


# ----------------------------------------------------------------------------- Verilog

def _fifo_lines(prefix: str, width: int, depth: int, din: str, push: str, out_data: str, out_valid: str,
                out_ready: str) -> list[str]:
    """A FIFO (first word falls through) of ``depth`` beats: ``push`` writes ``din``; ``<prefix>_room`` high when
    it has a free entry."""
    aw, cw = _clog2(depth), _clog2(depth + 1) + 1
    p = prefix
    return [f'    reg [{width - 1}:0] {p}_mem [0:{depth - 1}];', f'    reg [{aw - 1}:0] {p}_rd = 0;',
            f'    reg [{aw - 1}:0] {p}_wr = 0;', f'    reg [{cw - 1}:0] {p}_n = 0;',
            f'    wire {p}_room = ({p}_n < {depth});',
            f'    wire {p}_pop = {out_valid} && {out_ready};',
            f'    assign {out_valid} = ({p}_n != 0);', f'    assign {out_data} = {p}_mem[{p}_rd];',
            '    always @(posedge clk) begin',
            f'        if (!rst_n) begin {p}_rd <= 0; {p}_wr <= 0; {p}_n <= 0; end',
            '        else begin',
            f'            if ({push}) begin {p}_mem[{p}_wr] <= {din}; '
            f'{p}_wr <= ({p}_wr == {depth - 1}) ? 0 : {p}_wr + 1; end',
            f'            if ({p}_pop) {p}_rd <= ({p}_rd == {depth - 1}) ? 0 : {p}_rd + 1;',
            f'            if ({push} && !{p}_pop) {p}_n <= {p}_n + 1;',
            f'            else if ({p}_pop && !{push}) {p}_n <= {p}_n - 1;',
            '        end', '    end']


def _header(module: str, title: str, ins: list[tuple[str, int]], outs: list[tuple[str, int]]) -> list[str]:
    ports = ['    input clk', '    input rst_n']
    for n, w in ins:
        ports += [f'    input [{w - 1}:0] {n}_TDATA', f'    input {n}_TVALID', f'    output {n}_TREADY']
    for n, w in outs:
        ports += [f'    output [{w - 1}:0] {n}_TDATA', f'    output {n}_TVALID', f'    input {n}_TREADY']
    return [f'// Generated by fxsplit (RTL flow, da4ml): {title}', '`timescale 1 ns / 1 ps', f'module {module} (',
            ',\n'.join(ports), ');']


def join_verilog(module: str, kernel_module: str, a_bits: int, b_bits: int, out_bits: int, latency: int,
                 title: str) -> str:
    """Two streams ``a`` and ``b`` taken beat by beat together into the kernel (ports ``a``, ``b``, ``pix``),
    its results through the credit-guarded output FIFO ``out``. Each input's ready waits for the other's valid
    (never the reverse), so the pair is taken in one cycle."""
    check_module_names(module, kernel_module)
    depth = int(latency) + FIFO_EXTRA
    o = _header(module, title, [('a', a_bits), ('b', b_bits)], [('out', out_bits)])
    o += shell_declarations(depth)
    o += [f'    reg [{a_bits - 1}:0] ka = 0;', f'    reg [{b_bits - 1}:0] kb = 0;',
          '    wire take = rst_n && a_TVALID && b_TVALID && room;',
          '    assign a_TREADY = rst_n && b_TVALID && room;', '    assign b_TREADY = rst_n && a_TVALID && room;',
          '    always @(posedge clk) begin',
          "        fire <= rst_n ? take : 1'b0;",
          '        if (take) begin ka <= a_TDATA; kb <= b_TDATA; end',
          '    end']
    o += shell_back_end(kernel_module, '.a(ka), .b(kb)', out_bits, latency, depth)
    return '\n'.join(o + ['endmodule']) + '\n'


def zeropad_verilog(module: str, unit: dict, bits: int) -> str:
    """hls4ml's io_stream zero padding: the padded frame row by row, zero beats where there is no input pixel."""
    check_module_names(module)
    H, W, C = unit['H'], unit['W'], unit['C']
    t, b, left, r = unit['pad']
    OH, OW = H + t + b, W + left + r
    PW = C * bits
    o = _header(module, f'zero padding {unit["name"]!r}, {H}x{W} to {OH}x{OW}', [('in', PW)], [('out', PW)])
    o += [f'    reg [{_clog2(OW) - 1}:0] qx = 0;', f'    reg [{_clog2(OH) - 1}:0] qy = 0;',
          f'    wire pad = (qy < {t}) || (qy >= {t + H}) || (qx < {left}) || (qx >= {left + W});',
          '    assign out_TVALID = rst_n && (pad || in_TVALID);',
          f"    assign out_TDATA = pad ? {PW}'d0 : in_TDATA;",
          '    assign in_TREADY = rst_n && !pad && out_TREADY;',
          '    always @(posedge clk) begin',
          '        if (!rst_n) begin qx <= 0; qy <= 0; end',
          '        else if (out_TVALID && out_TREADY) begin',
          f'            if (qx == {OW - 1}) begin qx <= 0; qy <= (qy == {OH - 1}) ? 0 : qy + 1; end',
          '            else qx <= qx + 1;', '        end', '    end', 'endmodule']
    return '\n'.join(o) + '\n'


def fork_verilog(module: str, unit: dict, bits: int) -> str:
    """hls4ml's Clone: every input beat into one FIFO per output (depths ``unit['depths']``), taken when all have
    room."""
    check_module_names(module)
    n = len(unit['outs'])
    o = _header(module, f'fork {unit["name"]!r}, FIFO depths {unit["depths"]}', [('in', bits)],
                [(f'o{k}', bits) for k in range(n)])
    o.append('    wire push;')
    for k, d in enumerate(unit['depths']):
        o += _fifo_lines(f'f{k}', bits, d, 'in_TDATA', 'push', f'o{k}_TDATA', f'o{k}_TVALID', f'o{k}_TREADY')
    o.append('    assign in_TREADY = rst_n && ' + ' && '.join(f'f{k}_room' for k in range(n)) + ';')
    o.append('    assign push = in_TVALID && in_TREADY;')
    return '\n'.join(o + ['endmodule']) + '\n'


def repack_verilog(module: str, unit: dict, a: int, b: int, bits: int, n: int) -> str:
    """A tensor of ``n`` elements in beats of ``a`` elements regrouped into beats of ``b``: in order where one divides
    the other (a beat at a time), or in the order ``unit['order']`` (output element ``e`` is input element
    ``order[e]``; the whole tensor is gathered first, then sent)."""
    check_module_names(module)
    o = _header(module, f'repack {unit["name"]!r}, beats of {a} to beats of {b} elements', [('in', a * bits)],
                [('out', b * bits)])
    order = unit.get('order')
    if order is not None or (a % b and b % a):
        order = list(range(n)) if order is None else [int(v) for v in order]
        kin, kout = n // a, n // b
        o += [f'    reg [{n * bits - 1}:0] buf_ = 0;', f'    reg [{_clog2(kin + 1)}:0] cnt = 0;',
              f'    reg [{_clog2(kout + 1)}:0] sent = 0;', '    reg full = 0;',
              f'    reg [{b * bits - 1}:0] beat;', '    assign out_TVALID = full;', '    assign out_TDATA = beat;',
              '    assign in_TREADY = rst_n && !full;',
              '    always @(*) begin', '        case (sent)']
        for j in range(kout):
            parts = [f'buf_[{(order[j * b + e] + 1) * bits - 1}:{order[j * b + e] * bits}]' for e in range(b)]
            o.append(f'            {j}: beat = {{{", ".join(reversed(parts))}}};')
        o += [f"            default: beat = {b * bits}'d0;", '        endcase', '    end',
              '    always @(posedge clk) begin',
              '        if (!rst_n) begin cnt <= 0; sent <= 0; full <= 0; end',
              '        else if (in_TVALID && in_TREADY) begin',
              (f'            buf_ <= {{in_TDATA, buf_[{n * bits - 1}:{a * bits}]}};' if kin > 1 else
               '            buf_ <= in_TDATA;'),
              f'            if (cnt == {kin - 1}) begin cnt <= 0; full <= 1; end else cnt <= cnt + 1;',
              '        end',
              '        else if (out_TVALID && out_TREADY) begin',
              f'            if (sent == {kout - 1}) begin sent <= 0; full <= 0; end else sent <= sent + 1;',
              '        end', '    end']
    elif b % a == 0:                    # gather k input beats
        k = b // a
        o += [f'    reg [{b * bits - 1}:0] buf_ = 0;', f'    reg [{_clog2(k + 1)}:0] cnt = 0;',
              f'    assign out_TVALID = (cnt == {k});', '    assign out_TDATA = buf_;',
              f'    assign in_TREADY = rst_n && (cnt != {k});',
              '    always @(posedge clk) begin',
              '        if (!rst_n) cnt <= 0;',
              '        else if (out_TVALID && out_TREADY) cnt <= 0;',
              '        else if (in_TVALID && in_TREADY) begin',
              f'            buf_ <= {{in_TDATA, buf_[{b * bits - 1}:{a * bits}]}};' if k > 1 else
              '            buf_ <= in_TDATA;',
              '            cnt <= cnt + 1;', '        end', '    end']
    elif a % b == 0:                  # scatter one input beat
        k = a // b
        o += [f'    reg [{a * bits - 1}:0] buf_ = 0;', f'    reg [{_clog2(k + 1)}:0] left = 0;',
              '    assign out_TVALID = (left != 0);', f'    assign out_TDATA = buf_[{b * bits - 1}:0];',
              '    assign in_TREADY = rst_n && (left == 0);',
              '    always @(posedge clk) begin',
              '        if (!rst_n) left <= 0;',
              '        else if (in_TVALID && in_TREADY) begin buf_ <= in_TDATA; left <= ' + str(k) + '; end',
              '        else if (out_TVALID && out_TREADY) begin',
              f'            buf_ <= buf_ >> {b * bits};', '            left <= left - 1;', '        end', '    end']
    return '\n'.join(o + ['endmodule']) + '\n'


def emit_stream_net(net: dict, workdir: str, top: str, latency_cutoff: float | None = 5.0,
                    depths: str = 'full', solver_options: dict | None = None) -> dict:
    """Write every unit of ``net`` (:func:`stream_graph`) and the top ``top`` joining them into ``workdir``.
    ``depths``: the forks' FIFO depths (:func:`fork_depths`), ``'full'`` (full rate), ``'min'`` (the least that
    cannot deadlock) or ``'given'`` (each fork's ``depths`` as set, e.g. to see a network stop).
    Returns JSON-able metadata: ``top``, ``files`` (relative to ``workdir``, dependencies first), ``ports`` (per
    input and output: name, beat and element bits, beats per frame), ``units`` (name, op, latency, FIFO depths,
    kernel cost, fused layers)."""
    from .emit import emit_verilog

    check_module_names(top)
    os.makedirs(os.path.join(workdir, 'src'), exist_ok=True)
    tensors = net['tensors']
    bits = {n: int(t['type'][1]) for n, t in tensors.items()}
    files: list[str] = []
    info: list[dict] = []
    body: list[str] = []
    port_of = {e['var']: verilog_name(e['port']) for e in net['inputs'] + net['outputs']}

    def wire(n: str) -> str:
        return port_of.get(n) or f'w_{verilog_name(n)}'

    declared = set(port_of)

    def declare(n: str) -> None:
        if n not in declared:
            declared.add(n)
            w = tensors[n]['beat'] * bits[n]
            body.extend([f'    wire [{w - 1}:0] {wire(n)}_TDATA;', f'    wire {wire(n)}_TVALID;',
                         f'    wire {wire(n)}_TREADY;'])

    def write(name: str, text: str) -> None:
        fn = f'src/{name}.v'
        with open(os.path.join(workdir, fn), 'w') as fh:
            fh.write(text)
        files.append(fn)

    def conn(port: str, n: str) -> str:
        return f'.{port}_TDATA({wire(n)}_TDATA), .{port}_TVALID({wire(n)}_TVALID), .{port}_TREADY({wire(n)}_TREADY)'

    def module(k: int, u: dict) -> str:
        return f'{top}_u{k}_{verilog_name(u["name"])}'[:120]

    kernels = {}                    # the kernels first: the forks' depths count their latencies
    for k, u in enumerate(net['units']):
        if u['op'] in ('window', 'join'):
            kernels[u['name']] = emit_verilog(u['program'], workdir, f'{module(k, u)}_k', latency_cutoff=latency_cutoff,
                                              solver_options=solver_options)
    if depths not in ('full', 'min', 'given'):
        raise FxsplitError(f"streaming RTL flow: depths={depths!r}: use 'full', 'min' or 'given'")
    if depths != 'given':
        fork_depths(net, {n: int(m['latency']) for n, m in kernels.items()})
        if depths == 'min':
            for u in net['units']:
                if u['op'] == 'fork':
                    u['depths'] = list(u['min_depths'])
    for k, u in enumerate(net['units']):
        for n in u['ins'] + u['outs']:
            declare(n)
        mod = module(k, u)
        op = u['op']
        entry: dict[str, Any] = {'name': u['name'], 'op': op, 'module': mod}
        if op in ('window', 'join'):
            kmeta = kernels[u['name']]
            files.extend(f for f in kmeta['files'] if f not in files)
            lat = int(kmeta['latency'])
            out = u['outs'][0]
            ob = tensors[out]['beat'] * bits[out]
            if op == 'window':
                src = u['ins'][0]
                write(mod, window_stream_verilog(mod, f'{mod}_k', u['geometry'], tensors[src]['beat'] * bits[src], ob,
                                                 lat, f'streaming {u["name"]!r} (+ {u.get("fused", [])})'))
                ports = [conn('in', src)]
            else:
                a, b = u['ins']
                write(mod, join_verilog(mod, f'{mod}_k', tensors[a]['beat'] * bits[a], tensors[b]['beat'] * bits[b], ob,
                                        lat, f'join {u["name"]!r} (+ {u.get("fused", [])})'))
                ports = [conn('a', a), conn('b', b)]
            ports.append(conn('out', out))
            entry.update(latency=lat, fifo_depth=lat + FIFO_EXTRA, cost=kmeta.get('cost'), fused=u.get('fused', []))
        elif op == 'zeropad':
            src = u['ins'][0]
            write(mod, zeropad_verilog(mod, u, bits[src]))
            ports = [conn('in', src), conn('out', u['outs'][0])]
        elif op == 'fork':
            src = u['ins'][0]
            write(mod, fork_verilog(mod, u, tensors[src]['beat'] * bits[src]))
            ports = [conn('in', src)] + [conn(f'o{i}', o) for i, o in enumerate(u['outs'])]
            entry.update(depths=list(u['depths']), min_depths=list(u.get('min_depths', u['depths'])))
        elif op == 'repack':
            src, out = u['ins'][0], u['outs'][0]
            write(mod, repack_verilog(mod, u, tensors[src]['beat'], tensors[out]['beat'], bits[src],
                                      tensors[src]['beat'] * tensors[src]['beats']))
            entry.update(order=u.get('order') is not None)
            ports = [conn('in', src), conn('out', out)]
        else:
            raise FxsplitError(f'streaming RTL flow: unknown unit {op!r}')
        body.append(f'    {mod} u{k} (.clk(clk), .rst_n(rst_n), {", ".join(ports)});')
        info.append(entry)
    # a port tensor passed straight through (an input that is also an output) is a wire
    for e in net['outputs']:
        if e['var'] in [i['var'] for i in net['inputs']]:
            raise FxsplitError(f"streaming RTL flow: input {e['var']!r} is also an output", partition=net['partition'])
    ins = [(port_of[e['var']], tensors[e['var']]['beat'] * bits[e['var']]) for e in net['inputs']]
    outs = [(port_of[e['var']], tensors[e['var']]['beat'] * bits[e['var']]) for e in net['outputs']]
    text = _header(top, f'streaming partition {net["partition"]!r}: {len(net["units"])} units', ins, outs)
    write(top, '\n'.join(text + body + ['endmodule']) + '\n')
    static = sorted({f for m in kernels.values() for f in m.get('static_files', [])})
    meta = {'top': top, 'files': files, 'static_files': static, 'units': info,
            'ports': {'inputs': [{'name': port_of[e['var']], 'var': e['var'], 'beat': tensors[e['var']]['beat'],
                                  'elem_bits': bits[e['var']], 'beats': tensors[e['var']]['beats']}
                                 for e in net['inputs']],
                      'outputs': [{'name': port_of[e['var']], 'var': e['var'], 'beat': tensors[e['var']]['beat'],
                                   'elem_bits': bits[e['var']], 'beats': tensors[e['var']]['beats']}
                                  for e in net['outputs']]}}
    with open(os.path.join(workdir, f'{top}.stream.json'), 'w') as fh:
        json.dump(meta, fh, indent=1)
    meta['workdir'] = workdir
    return meta


def simulate_stream_net(meta: dict, workdir: str, in_raw, exp_raw, simulator: str = 'verilator',
                        runs: list[dict] | None = None, **tb):
    """Simulate a streaming network (:func:`emit_stream_net`) with :func:`~fxsplit.flows.rtl.streamtb.stream_testbench`
    (random input gaps and output backpressure per stream, frames back to back). ``in_raw``/``exp_raw``: per port
    name, the beats (n, elements per beat) of raw integers to drive and to expect; an array where the network has
    one input (output). ``tb``: the run's gaps, backpressure and seed; ``runs``: several of them on one build.
    Returns :func:`~fxsplit.flows.rtl.streamtb.simulate_streams`' result (a list with ``runs``) with ``in_cycles``,
    ``out_cycles``, ``stalls`` and ``extra`` keyed by port name."""
    from .streamtb import simulate_streams

    pin, pout = meta['ports']['inputs'], meta['ports']['outputs']

    def by_name(raw, ports, what):
        if not isinstance(raw, dict):
            if len(ports) != 1:
                raise FxsplitError(f'{meta["top"]} has {len(ports)} {what} streams: give their beats by port name')
            raw = {ports[0]['name']: raw}
        missing = {p['name'] for p in ports} - set(raw)
        if missing:
            raise FxsplitError(f'{meta["top"]}: no beats for the {what} stream(s) {sorted(missing)}')
        return [{'name': p['name'], 'elem_bits': p['elem_bits'], 'raw': np.asarray(raw[p['name']])} for p in ports]

    files = [os.path.join(meta['workdir'], f) for f in meta['files']]
    lat = sum(int(u.get('latency') or 0) for u in meta['units']) + len(meta['units'])
    got = simulate_streams(meta['top'], files, workdir, by_name(in_raw, pin, 'input'),
                           by_name(exp_raw, pout, 'output'), simulator=simulator, latency=lat, runs=runs, **tb)
    for r in (got if runs is not None else [got]):
        for key, ports in (('in_cycles', pin), ('stalls', pin), ('out_cycles', pout), ('extra', pout)):
            r[key] = {p['name']: v for p, v in zip(ports, r[key])}
    return got


def edge_depths(graph: dict, sources: list[str]) -> dict[str, tuple[int, int]]:
    """FIFO depths (deadlock-free, full rate) of the streams into units with several inputs, in a graph of
    partitions (``part`` units with need maps) and forks. For a unit ``M`` that reads the stream ``e`` and others, in
    terms of the beats of a model input ``A`` both come from: before ``M`` can make its output beat ``q``, the
    other streams need ``A`` up to beat ``b_q``; by then ``e``'s producer may have sent every beat of ``e`` that
    needs no more of ``A`` than that, of which ``M`` has taken those it needs for ``q``. The most ``e`` holds
    at once, plus :data:`FORK_SLACK`, is its deadlock-free depth (``e`` may come from a fork inside a partition,
    which the partition's own analysis cannot see meeting the other path). Full rate adds the beats in flight in
    the partitions' kernels on the other streams' way, at most one frame."""
    tensors, units = graph['tensors'], graph['units']
    cap = {u['name']: int(u['capacity']) for u in units if 'capacity' in u}
    out: dict[str, tuple[int, int]] = {}
    for src in sources:
        need, via = _propagate(graph, src)
        for m in units:
            if m['op'] != 'part' or len(m['ins']) < 2:
                continue
            reach = [n for n in m['ins'] if n in need]
            for e in reach:
                others = [n for n in reach if n != e]
                if not others:
                    continue
                a = _need_through(m, tensors, [need[n] if n == e else np.full(tensors[n]['beats'], -1)
                                               for n in m['ins']])
                b = _need_through(m, tensors, [need[n] if n in others else np.full(tensors[n]['beats'], -1)
                                               for n in m['ins']])
                sent_by = np.maximum.accumulate(need[e])          # e's beat k needs A up to sent_by[k]
                held = 0
                for q, aq, bq in zip(m['outs'], a, b):
                    took = np.asarray(m['maps'][e][q])
                    both = (aq >= 0) & (bq >= 0) & (took >= 0)
                    if both.any():
                        sent = np.searchsorted(sent_by, bq[both], side='right')
                        held = max(held, int(np.max(sent - (took[both] + 1))))
                if held <= 0:
                    continue
                inflight = sum(cap.get(k, 0) for n in others for k in via[n] if k != m['name'])
                mn = held + FORK_SLACK
                full = mn + min(inflight, tensors[e]['beats'])
                old = out.get(e, (0, 0))
                out[e] = (max(old[0], mn), max(old[1], full))
    return out


def stitch_stream_nets(parts: list[dict], inputs: list[str], outputs: list[str], workdir: str, top: str,
                       depths: str = 'full') -> dict:
    """The stitched streaming top ``top``: partitions (``parts``, in dataflow order: ``name``, ``net`` from
    :func:`stream_graph` and ``meta`` from :func:`emit_stream_net`, their ports named by the tensors that cross the
    cuts) joined stream to stream. A tensor that several partitions read (a skip across a cut) leaves its producer
    through a fork whose FIFO depths come from the partitions' own need maps and buffers (:func:`fork_depths` over
    the graph of partitions). ``inputs``/``outputs``: the model's port names. Returns metadata like
    :func:`emit_stream_net`'s (``files`` absolute, the partitions' first), with ``forks`` and ``streams`` (per
    partition, the top's signals of the streams into and out of it, with their beats per frame: probes for the
    testbench)."""
    check_module_names(top)
    os.makedirs(os.path.join(workdir, 'src'), exist_ok=True)
    tensors: dict[str, dict] = {}
    bits: dict[str, int] = {}
    producer: dict[str, str] = {}
    for pt in parts:
        for side in ('inputs', 'outputs'):
            for e in pt['meta']['ports'][side]:
                name = next(x['port'] for x in pt['net'][side] if verilog_name(x['port']) == e['name'])
                t = {'beat': int(e['beat']), 'beats': int(e['beats'])}
                if name in tensors and tensors[name] != t:
                    raise FxsplitError(f'stitched stream: port {name!r} is {tensors[name]} on one side of the cut '
                                       f'and {t} on the other', partition=pt['name'])
                tensors[name], bits[name] = t, int(e['elem_bits'])
                if side == 'outputs':
                    producer[name] = pt['name']
    for n in inputs + outputs:
        if n not in tensors:
            raise FxsplitError(f'stitched stream: model port {n!r} is on no partition')
    consumers: dict[str, list[str]] = {}
    for pt in parts:
        for e in pt['net']['inputs']:
            consumers.setdefault(e['port'], []).append(pt['name'])
    for n in outputs:
        consumers.setdefault(n, []).append(top)
    units: list[dict] = []
    feeds: dict[tuple[str, str], str] = {}          # (port, consumer) -> the tensor it reads

    def fork_of(port: str) -> None:
        users = consumers.get(port, [])
        if len(users) < 2:
            for c in users:
                feeds[(port, c)] = port
            return
        outs = [f'{port}__{k}' for k in range(len(users))]
        for o, c in zip(outs, users):
            tensors[o], bits[o] = dict(tensors[port]), bits[port]
            feeds[(port, c)] = o
        units.append({'op': 'fork', 'name': f'fork_{verilog_name(port)}', 'ins': [port], 'outs': outs})

    for n in inputs:
        fork_of(n)
    for pt in parts:
        ins = [feeds[(e['port'], pt['name'])] for e in pt['net']['inputs']]
        maps = need_maps(pt['net'])
        units.append({'op': 'part', 'name': pt['name'], 'ins': ins, 'outs': [e['port'] for e in pt['net']['outputs']],
                      'maps': {i: maps[e['port']] for i, e in zip(ins, pt['net']['inputs'])},
                      'capacity': buffer_beats(pt['meta']), 'meta': pt['meta'], 'net': pt['net']})
        for e in pt['net']['outputs']:
            fork_of(e['port'])
    graph = {'tensors': tensors, 'units': units}
    if depths != 'given':
        edge = edge_depths(graph, inputs)
        for k, u in enumerate(list(units)):
            if u['op'] == 'part':                # a FIFO on every edge into a partition that must hold beats
                for i, n in enumerate(u['ins']):
                    mn, full = edge.get(n, (FORK_SLACK, FORK_SLACK))
                    if n in producer and consumers.get(n, []) == [u['name']] and mn > FORK_SLACK:
                        f = f'{n}__fifo'
                        tensors[f], bits[f] = dict(tensors[n]), bits[n]
                        units.insert(units.index(u), {'op': 'fork', 'name': f'fifo_{verilog_name(n)}', 'ins': [n],
                                                      'outs': [f], 'min_depths': [mn], 'depths': [full]})
                        u['ins'][i] = f
                        u['maps'][f] = u['maps'][n]
        for u in units:
            if u['op'] == 'fork' and 'depths' not in u:
                got = [edge.get(o, (FORK_SLACK, FORK_SLACK)) for o in u['outs']]
                u['min_depths'] = [g[0] for g in got]
                u['depths'] = [g[1] if depths == 'full' else g[0] for g in got]
            elif u['op'] == 'fork' and depths == 'min':
                u['depths'] = list(u['min_depths'])
    port_of = {n: verilog_name(n) for n in inputs}
    port_of.update({feeds[(n, top)]: verilog_name(n) for n in outputs})

    def wire(n: str) -> str:
        return port_of.get(n) or f'w_{verilog_name(n)}'

    body, fork_files, forks, streams = [], [], [], {}
    for n, t in tensors.items():
        if n not in port_of and (n in producer or any(n in u['outs'] for u in units)):
            w = t['beat'] * bits[n]
            body += [f'    wire [{w - 1}:0] {wire(n)}_TDATA;', f'    wire {wire(n)}_TVALID;', f'    wire {wire(n)}_TREADY;']

    def conn(port: str, n: str) -> str:
        return f'.{port}_TDATA({wire(n)}_TDATA), .{port}_TVALID({wire(n)}_TVALID), .{port}_TREADY({wire(n)}_TREADY)'

    for k, u in enumerate(units):
        if u['op'] == 'fork':
            mod = f'{top}_{u["name"]}'[:120]
            fn = os.path.join(workdir, 'src', f'{mod}.v')
            with open(fn, 'w') as fh:
                fh.write(fork_verilog(mod, u, tensors[u['ins'][0]]['beat'] * bits[u['ins'][0]]))
            fork_files.append(fn)
            ports = [conn('in', u['ins'][0])] + [conn(f'o{i}', o) for i, o in enumerate(u['outs'])]
            forks.append({'name': u['name'], 'port': u['ins'][0], 'depths': u['depths'],
                          'min_depths': u.get('min_depths', u['depths'])})
        else:
            m, net = u['meta'], u['net']
            ports = [conn(verilog_name(e['port']), i) for e, i in zip(net['inputs'], u['ins'])]
            ports += [conn(verilog_name(e['port']), e['port']) for e in net['outputs']]
            mod = m['top']
            streams[u['name']] = {'ins': [{'wire': wire(i), 'beats': tensors[i]['beats']} for i in u['ins']],
                                  'outs': [{'wire': wire(e['port']), 'beats': tensors[e['port']]['beats']}
                                           for e in net['outputs']]}
        body.append(f'    {mod} u{k} (.clk(clk), .rst_n(rst_n), {", ".join(ports)});')
    ins = [(verilog_name(n), tensors[n]['beat'] * bits[n]) for n in inputs]
    outs = [(verilog_name(n), tensors[n]['beat'] * bits[n]) for n in outputs]
    text = _header(top, f'stitched streaming design: {len(parts)} partitions, {len(forks)} forks', ins, outs)
    fn = os.path.join(workdir, 'src', f'{top}.v')
    with open(fn, 'w') as fh:
        fh.write('\n'.join(text + body + ['endmodule']) + '\n')
    # the partitions in dataflow order, then the forks and the top
    part_files = [os.path.join(pt['meta']['workdir'], f) for pt in parts for f in pt['meta']['files']]
    meta = {'top': top, 'files': part_files + fork_files + [fn], 'workdir': workdir, 'forks': forks,
            'streams': streams,
            'units': [{'name': u['name'], 'op': u['op'], 'latency': sum(int(x.get('latency') or 0)
                                                                     for x in u['meta']['units']) if 'meta' in u else 0}
                      for u in units],
            'ports': {'inputs': [{'name': verilog_name(n), 'var': n, 'beat': tensors[n]['beat'], 'elem_bits': bits[n],
                                  'beats': tensors[n]['beats']} for n in inputs],
                      'outputs': [{'name': verilog_name(n), 'var': n, 'beat': tensors[n]['beat'], 'elem_bits': bits[n],
                                   'beats': tensors[n]['beats']} for n in outputs]}}
    with open(os.path.join(workdir, f'{top}.stream.json'), 'w') as fh:
        json.dump({k: v for k, v in meta.items() if k != 'workdir'}, fh, indent=1)
    return meta


__all__ = ['stream_graph', 'simulate_stream_net', 'stitch_stream_nets', 'edge_depths', 'need_maps', 'buffer_beats', 'fork_depths', 'emit_stream_net', 'join_verilog', 'zeropad_verilog', 'fork_verilog',
           'repack_verilog', 'ELEMENTWISE', 'FORK_SLACK']
