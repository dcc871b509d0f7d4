"""Types of the open RTL flow: an hls4ml type as the tuple ``(signed 0/1, W, I, rounding, overflow)`` the lowering
works on, parsed by fxsplit's one type parser (:func:`fxsplit.fixed.parse_type`) and limited to the modes the
lowering reproduces exactly."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...fixed import (FixedType, parse_type, quantize_raw, quantize_scalar, raw_to_float, raw_to_unsigned, to_raw,
                      unsigned_to_raw)

SUPPORTED_ROUNDING = ('TRN', 'RND', 'RND_CONV')      # RND_CONV: half to even (brevitas' round)
SUPPORTED_OVERFLOW = ('WRAP', 'SAT', 'SAT_SYM')      # SAT_SYM: a narrow signed range (min = -max)
SATURATING = ('SAT', 'SAT_SYM')


class UnsupportedType(ValueError):
    pass


def parse_precision(s: Any) -> tuple[int, int, int, str, str]:
    """An hls4ml precision (object or string) as ``(signed, W, I, rounding, overflow)``; :class:`UnsupportedType`
    for a type the RTL lowering cannot reproduce (not fixed point, a rounding other than TRN/RND/RND_CONV, an
    overflow other than WRAP/SAT/SAT_SYM, saturation bits)."""
    text = str(s).strip()
    try:
        t = parse_type(text)
    except ValueError as e:
        raise UnsupportedType(f'type {text!r} is not a fixed-point or integer type ({e})') from None
    if t.rounding not in SUPPORTED_ROUNDING:
        raise UnsupportedType(f'type {text!r}: rounding mode {t.rounding} is not supported (only TRN, RND and RND_CONV)')
    if t.overflow not in SUPPORTED_OVERFLOW:
        raise UnsupportedType(f'type {text!r}: overflow mode {t.overflow} is not supported (only WRAP, SAT and SAT_SYM)')
    if t.sat_bits != 0:
        raise UnsupportedType(f'type {text!r}: saturation bits N={t.sat_bits} are not supported')
    return tuple(t[:5])


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
    return FixedType(*t).raw_range()


def from_raw(raw: Any, precision: Any) -> np.ndarray:
    """Raw integers of ``precision`` -> float64 values (raw * 2**-frac)."""
    return raw_to_float(raw, type_str(precision) if isinstance(precision, tuple) else precision)


__all__ = ['SUPPORTED_ROUNDING', 'SUPPORTED_OVERFLOW', 'SATURATING', 'UnsupportedType', 'parse_precision', 'type_str',
           'type_kif', 'type_frac', 'type_raw_range', 'quantize_scalar', 'quantize_raw', 'to_raw', 'from_raw',
           'raw_to_unsigned', 'unsigned_to_raw']
