"""Checks that guard bit-exactness must fail loudly, never pass by default."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fxsplit import FxsplitError
from fxsplit.lower import type_width
from fxsplit.fixed import layout, raw_to_words, words_to_raw, raw_to_float
from fxsplit.flows.rtl.lower import reciprocal_constant


@pytest.mark.parametrize("t,w", [("fixed<16,6>", 16), ("ap_fixed<18,8,AP_RND,AP_SAT>", 18), ("uint<8>", 8),
                                 ("ufixed<4,0,RND_CONV,SAT,0>", 4), ("int<60>", 60)])
def test_type_width_reads_fixed_and_integer_types(t, w):
    assert type_width(t) == w


@pytest.mark.parametrize("t", ["float", "auto", "", None, "fixed<0,0>", "fixedpoint<8,3>", "double"])
def test_type_width_refuses_what_it_cannot_read(t):
    # it used to return 0 here, so a width guard passed silently
    with pytest.raises(FxsplitError, match="cannot read as a fixed-point"):
        type_width(t, "the tensor 'x'")


@pytest.mark.parametrize("prec", ["fixed<8,3>", "ufixed<8,3>", "fixed<53,20>", "fixed<54,20>", "int<62>", "uint<63>",
                                  "fixed<64,1>", "ufixed<64,64>", "fixed<65,30,RND_CONV,SAT>", "fixed<130,-3>",
                                  "ap_uint<200>"])
def test_raw_words_round_trip_at_any_width(prec, rng):
    """The bridge's word packing is a bijection on every value of the type, extremes included."""
    lay = layout(prec)
    lo, hi = (-(1 << (lay.width - 1)), (1 << (lay.width - 1)) - 1) if lay.signed else (0, (1 << lay.width) - 1)
    vals = [lo, hi, 0, 1, -1 if lay.signed else 2, lo + 1, hi - 1]
    vals += [int(rng.integers(0, 1 << 62)) * (1 << max(0, lay.width - 63)) % (hi - lo + 1) + lo for _ in range(9)]
    raw = np.array([vals], dtype=object)
    words = raw_to_words(raw, prec)
    assert words.dtype == np.uint64 and words.shape == (1, len(vals) * lay.words)
    back = words_to_raw(words, prec)
    assert [int(v) for v in back.ravel()] == vals
    # one LSB apart stays apart at every width (a double would merge them beyond 53 bits)
    assert not np.array_equal(raw_to_words(np.array([[hi]], dtype=object), prec),
                              raw_to_words(np.array([[hi - 1]], dtype=object), prec))
    assert raw_to_float(np.array([[1]], dtype=object), prec)[0, 0] == 2.0 ** -lay.frac


@pytest.mark.parametrize("n", [3, 5, 6, 7, 9, 25, 49, 100])
@pytest.mark.parametrize("hi", [1, 255, 4095, 65535])
def test_reciprocal_constant_is_exact_over_the_whole_range(n, hi):
    m, s = reciprocal_constant(n, hi)
    assert all((x * m) >> s == x // n for x in range(hi + 1))


def test_reciprocal_constant_refuses_an_inexact_shift():
    # s too small for 8-bit operands: floor(x*m/2^s) != floor(x/3) somewhere in [0, 255]
    m = -(-(1 << 4) // 3)
    assert any((x * m) >> 4 != x // 3 for x in range(256))
    with pytest.raises(FxsplitError, match="no exact reciprocal constant"):
        reciprocal_constant(3, 255, s=4)


def test_checks_survive_python_O():
    """The checks are real code, not asserts: they still raise under python -O."""
    code = ("from fxsplit.flows.rtl.lower import reciprocal_constant\n"
            "from fxsplit.errors import FxsplitError\n"
            "try:\n    reciprocal_constant(3, 255, s=4)\nexcept FxsplitError:\n    print('raised')\n")
    r = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "raised", r.stderr
