"""Checks that guard bit-exactness must fail loudly, never pass by default."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fxsplit import FxsplitError
from fxsplit.lower import MAX_EXACT_BITS, type_width
from fxsplit.flows.rtl.lower import reciprocal_constant


@pytest.mark.parametrize("t,w", [("fixed<16,6>", 16), ("ap_fixed<18,8,AP_RND,AP_SAT>", 18), ("uint<8>", 8),
                                 ("ufixed<4,0,RND_CONV,SAT,0>", 4), ("int<60>", 60)])
def test_type_width_reads_fixed_and_integer_types(t, w):
    assert type_width(t) == w


@pytest.mark.parametrize("t", ["float", "auto", "", None, "fixed<0,0>", "fixedpoint<8,3>", "double"])
def test_type_width_refuses_what_it_cannot_read(t):
    # it used to return 0 here, so the 53-bit bridge guard (width > 53) passed silently
    with pytest.raises(FxsplitError, match="cannot read as a fixed-point"):
        type_width(t, "the tensor 'x'")


def test_bridge_guard_sees_wide_types():
    assert type_width("fixed<54,20>") > MAX_EXACT_BITS >= type_width("fixed<53,20>")


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
