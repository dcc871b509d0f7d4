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

_TYPE_RE = re.compile(r"^\s*(?:ap_)?(u?)(fixed|int)\s*<\s*([^<>]*)>\s*$")


class FixedType(NamedTuple):
    """An hls4ml fixed-point or integer type, parsed: ``fixed<W,I,Q,O,N>`` (integer types: I = W, TRN, WRAP)."""
    signed: int          # 1 signed, 0 unsigned
    width: int           # W
    integer: int         # I, the sign bit included
    rounding: str = "TRN"     # TRN, RND, RND_CONV, RND_ZERO, ... (hls4ml's names, without AP_)
    overflow: str = "WRAP"    # WRAP, SAT, SAT_SYM, SAT_ZERO, ...
    sat_bits: int = 0         # N of WRAP with saturation bits

    @property
    def frac(self) -> int:
        return self.width - self.integer

    def raw_range(self) -> tuple[int, int]:
        """The smallest and largest raw integer of the type (SAT_SYM's narrower minimum not applied)."""
        if self.signed:
            return -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        return 0, (1 << self.width) - 1


def parse_type(precision: Any) -> FixedType:
    """The one parser of hls4ml's type strings (``fixed<W,I[,Q,O,N]>``, ``ufixed<...>``, ``int<W>``, ``uint<W>``,
    optionally ``ap_``-prefixed, modes with or without ``AP_``; an hls4ml precision object via its ``str``).
    Raises ValueError for anything else (float, auto, xnor, exponent types, a malformed string)."""
    text = str(precision).strip()
    m = _TYPE_RE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a fixed-point or integer type")
    unsigned, kind, args = m.group(1) == "u", m.group(2), [a.strip() for a in m.group(3).split(",")]
    if kind == "int" and len(args) != 1:
        raise ValueError(f"{text!r}: an integer type takes one argument")
    if kind == "fixed" and len(args) < 2:
        raise ValueError(f"{text!r}: a fixed-point type needs its integer bits")
    modes = [a.upper().replace("AP_", "") for a in args[2:4]]
    try:
        width = int(args[0])
        t = (FixedType(0 if unsigned else 1, width, width) if kind == "int" else
             FixedType(0 if unsigned else 1, width, int(args[1]), *modes, *[int(a) for a in args[4:5]]))
    except ValueError as e:
        raise ValueError(f"cannot parse type {text!r}") from e
    if width <= 0:
        raise ValueError(f"{text!r} has no bits")
    return t


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
    t = parse_type(precision)
    return Layout(bool(t.signed), t.width, t.frac)


def quantize_scalar(v: float, t: FixedType | tuple) -> int:
    """Raw integer of the exact value ``v`` (a double) converted to type ``t`` as ``ap_fixed(double)`` does: TRN
    (floor), RND (half up) or RND_CONV (half to even); WRAP, SAT or SAT_SYM (a signed range with min = -max)."""
    t = FixedType(*t)
    x = math.ldexp(v, t.frac)  # exact power-of-two scaling
    if t.rounding == "RND":
        raw = math.floor(x + 0.5) if abs(x) < 2**52 else int(x)
    elif t.rounding == "RND_CONV":
        raw = round(x)                      # Python rounds floats half to even, exactly
    elif t.rounding == "TRN":
        raw = math.floor(x)
    else:
        raise ValueError(f"rounding mode {t.rounding} is not modelled (TRN, RND and RND_CONV are)")
    raw = int(raw)
    lo, hi = t.raw_range()
    if t.overflow == "SAT_SYM" and t.signed:
        lo = -hi
    if t.overflow in ("SAT", "SAT_SYM"):
        raw = min(max(raw, lo), hi)
    elif t.overflow == "WRAP" and not t.sat_bits:
        span = 1 << t.width
        raw = (raw - lo) % span + lo
    else:
        raise ValueError(f"overflow mode {t.overflow} (N={t.sat_bits}) is not modelled (WRAP, SAT and SAT_SYM are)")
    return raw


def _as_type(precision: Any) -> FixedType:
    return FixedType(*precision) if isinstance(precision, tuple) else parse_type(precision)


def quantize_raw(x: Any, precision: Any) -> np.ndarray:
    """Float values -> raw integers of ``precision`` with the type's own rounding and overflow (what
    ``ap_fixed(double)`` does). int64, or an object array of Python ints for types wider than 62 bits."""
    t = _as_type(precision)
    arr = np.asarray(x, dtype=np.float64)
    flat = [quantize_scalar(float(v), t) for v in arr.ravel()]
    return np.array(flat, dtype=np.int64 if t.width <= 62 else object).reshape(arr.shape)


def to_raw(x: Any, precision: Any) -> np.ndarray:
    """Float values that are exactly representable in ``precision`` (e.g. C-simulation outputs) -> raw
    two's-complement integers. Raises ValueError if a value is not on the type's grid or out of its range."""
    t = _as_type(precision)
    arr = np.asarray(x, dtype=np.float64)
    scaled = np.ldexp(arr, t.frac)
    if not np.all(np.isfinite(scaled)) or not np.all(scaled == np.round(scaled)):
        raise ValueError(f"values are not on the grid of {precision}")
    raw = (scaled.astype(np.int64) if t.width <= 62 else
           np.array([int(v) for v in scaled.ravel()], dtype=object).reshape(arr.shape))
    lo, hi = t.raw_range()
    if np.any(raw < lo) or np.any(raw > hi):
        raise ValueError(f"values out of range of {precision}")
    return raw


def raw_to_unsigned(raw: Any, width: int) -> list[int]:
    """Two's-complement bit patterns (as non-negative Python ints) of raw integers."""
    mask = (1 << width) - 1
    return [int(v) & mask for v in np.asarray(raw).ravel()]


def unsigned_to_raw(bits: Any, precision: Any) -> np.ndarray:
    """Bit patterns (non-negative ints of the type's width) -> raw integers of ``precision``."""
    t = _as_type(precision)
    w = t.width
    arr = np.asarray(bits, dtype=object)
    out = []
    for b in arr.ravel():
        b = int(b) & ((1 << w) - 1)
        if t.signed and b >> (w - 1):
            b -= 1 << w
        out.append(b)
    return np.array(out, dtype=np.int64 if w <= 62 else object).reshape(arr.shape)


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
