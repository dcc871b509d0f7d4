"""Raw fixed-point values, as the C-simulation bridge carries them between partitions.

Every element of a port travels as the bits of its hls4ml type (``ap_fixed``/``ap_int``, any width):
``ceil(W / 64)`` little-endian 64-bit words per element, the low ``W`` bits used. Arrays of words have
shape ``(N, size * words)``. Python sees them as

- *words* (``uint64``): what the C++ bridge reads and writes; equal words = equal values, at any width;
- *raw* integers (signed two's-complement value of the bits; ``int64`` up to 62 bits, Python ints in an
  object array above), value = raw * 2**-F;
- floats (``float64``): exact up to 53 bits; wider values are rounded to the nearest double, for display
  only (every comparison fxsplit makes is on words or raw integers).
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import numpy as np

_LAYOUT_RE = re.compile(r"^\s*(?:ap_)?(u?)(fixed|int)\s*<\s*(\d+)\s*(?:,\s*(-?\d+))?\s*(?:,[^<>]*)?>\s*$")


class Layout(NamedTuple):
    signed: bool
    width: int
    frac: int          # fractional bits: value = raw * 2**-frac

    @property
    def words(self) -> int:
        return (self.width + 63) // 64


def layout(precision: Any) -> Layout:
    """Signedness, width and fractional bits of an hls4ml fixed-point or integer type (rounding and
    overflow modes do not change how a value is stored). Raises ValueError for anything else."""
    m = _LAYOUT_RE.match(str(precision))
    if m is None:
        raise ValueError(f"{precision!r} is not a fixed-point or integer type")
    width = int(m.group(3))
    if width <= 0:
        raise ValueError(f"{precision!r} has no bits")
    if m.group(2) == "int":
        if m.group(4) is not None:
            raise ValueError(f"{precision!r}: an integer type takes one argument")
        return Layout(m.group(1) != "u", width, 0)
    if m.group(4) is None:
        raise ValueError(f"{precision!r}: a fixed-point type needs its integer bits")
    return Layout(m.group(1) != "u", width, width - int(m.group(4)))


def words_to_raw(words: np.ndarray, precision: Any) -> np.ndarray:
    """(N, size * words) uint64 -> (N, size) signed raw integers (int64 up to 62 bits, else Python ints)."""
    lay = layout(precision)
    w = np.ascontiguousarray(words, dtype=np.uint64)
    n = w.shape[0]
    w = w.reshape(n, -1, lay.words)
    if lay.width <= 62:
        u = (w[..., 0] & np.uint64((1 << lay.width) - 1)).astype(np.int64)
        if lay.signed:
            u = np.where(u >= (1 << (lay.width - 1)), u - (1 << lay.width), u)
        return u
    out = np.empty(w.shape[:2], dtype=object)
    mask, top = (1 << lay.width) - 1, 1 << (lay.width - 1)
    for idx in np.ndindex(*w.shape[:2]):
        v = sum(int(x) << (64 * k) for k, x in enumerate(w[idx])) & mask
        out[idx] = v - (1 << lay.width) if lay.signed and v >= top else v
    return out


def raw_to_words(raw: np.ndarray, precision: Any) -> np.ndarray:
    """(N, size) raw integers -> (N, size * words) uint64 (the low W bits of each two's complement)."""
    lay = layout(precision)
    r = np.asarray(raw)
    n = r.shape[0]
    r = r.reshape(n, -1)
    if lay.width <= 62 and r.dtype != object:
        return (r.astype(np.int64) & ((1 << lay.width) - 1)).astype(np.uint64).reshape(n, -1)
    out = np.zeros((n, r.shape[1], lay.words), dtype=np.uint64)
    mask = (1 << lay.width) - 1
    for idx in np.ndindex(*r.shape):
        v = int(r[idx]) & mask
        for k in range(lay.words):
            out[idx + (k,)] = (v >> (64 * k)) & 0xFFFFFFFFFFFFFFFF
    return out.reshape(n, -1)


def raw_to_float(raw: np.ndarray, precision: Any) -> np.ndarray:
    """Raw integers -> float64 (exact up to 53 bits; wider values are rounded to the nearest double)."""
    lay = layout(precision)
    r = np.asarray(raw)
    if r.dtype != object:
        return np.ldexp(r.astype(np.float64), -lay.frac)
    return np.array([math.ldexp(float(int(v)), -lay.frac) for v in r.ravel()], dtype=np.float64).reshape(r.shape)


def words_to_float(words: np.ndarray, precision: Any) -> np.ndarray:
    return raw_to_float(words_to_raw(words, precision), precision)
