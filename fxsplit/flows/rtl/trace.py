"""Tracing (worker process): a program traced symbolically with ``da4ml.trace``, following the exact arithmetic of
hls4ml's ``nnet_utils`` templates (per-product casts into ``accum_t``, the bias cast into ``accum_t``, the final
cast into ``result_t`` with that type's rounding and overflow, hls4ml's pooling and merge orders)."""

from __future__ import annotations

import math

import numpy as np

from ...errors import FxsplitError
from .rtltype import quantize_scalar as _quantize_scalar, type_frac, type_kif

# da4ml searches every decomposition depth of a constant matrix by default. On the zoo's kernels that search costs
# about 4x the solver's time for about 1 % fewer adders (benchmarks/bench_da4ml_solver.py), and one of ResNet20's
# 576x64 kernels ran for over 18 minutes; above this many nonzero weights da4ml's default depth is taken.
# config['da4ml_solver'] overrides it (and every other da4ml.cmvm.solve setting) for all kernels.
SEARCH_DEPTHS_UP_TO = 4096


def solver_settings(n_weights: int, given: dict | None) -> dict:
    """da4ml.cmvm.solve's settings for a ``n_weights`` kernel: the user's (config['da4ml_solver']) over fxsplit's
    default (search every decomposition depth for kernels up to :data:`SEARCH_DEPTHS_UP_TO` weights)."""
    return {"search_all_decompose_dc": n_weights <= SEARCH_DEPTHS_UP_TO, **(given or {})}


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
        xa = FixedVariableArray(np.array([xs[r] for r in rows], dtype=object),
                                solver_settings(int(np.count_nonzero(lin[rows])), solver_options), hwconf=hwconf)
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
                if ent['kind'] == 'maxpool' and ent.get('cast_each'):
                    # io_stream: every element cast into accum_t first, then the largest
                    m = _q(vals[0], acc_t)
                    for v in vals[1:]:
                        m = m.max_of(_q(v, acc_t))
                    r = m
                elif ent['kind'] == 'maxpool':
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

