"""fxsplit.verify: the exact comparison (compare, Mismatch), the verdict (failure, passed, VerifyResult), the
counts of outputs at their type's limits and the error against PyTorch, on small hand-made arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fxsplit.ir import Port
from fxsplit.verify import (Mismatch, VerifyResult, as_list, compare, failure, outputs_at_limits, passed,
                            torch_err)


def test_compare_equal_outputs_is_bit_exact():
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    b = np.arange(6, dtype=np.int64).reshape(3, 2)
    r = compare("csim", [a, b], [a.copy(), b.copy()], ["y0", "y1"], 0.25)
    assert (r.level, r.n_samples, r.bit_exact, r.mismatches, r.max_abs_error_vs_torch) == ("csim", 3, True, 0, 0.25)
    assert r.details == [] and r.extra == {} and r.at_limits == {}
    assert r.torch_exact is None and r.torch_mismatches is None
    assert bool(r) is True and r.failure() is None


def test_compare_lists_each_mismatch_by_sample_output_and_flat_index():
    got = np.zeros((2, 2, 3), dtype=np.int64)          # two samples of a (2, 3) channels-last output
    ref = got.copy()
    got[0, 1, 2] = 5                                   # sample 0, flat index 1 * 3 + 2
    got[1, 0, 0] = -1                                  # sample 1, flat index 0
    y = np.array([[1, 2], [3, 4]])
    r = compare("rtl", [got, y], [ref, np.array([[1, 2], [3, 7]])], ["a", "b"], 0.0, extra={"tb": "verilator"})
    assert not r.bit_exact and r.mismatches == 3 and r.n_samples == 2
    assert r.details == [Mismatch(0, "a", 5, 5.0, 0.0), Mismatch(1, "a", 0, -1.0, 0.0), Mismatch(1, "b", 1, 4.0, 7.0)]
    assert r.extra == {"tb": "verilator"}
    assert bool(r) is False and r.failure() == "the partitioned design is not bit-exact (3 differing elements)"


def test_compare_decodes_the_values_it_reports():
    """decode[i] turns output i's raw integers into floats for the details; the comparison stays on the raws."""
    got, ref = np.array([[8, 12]]), np.array([[8, 4]])
    other_got, other_ref = np.array([[1]]), np.array([[3]])
    r = compare("csim", [got, other_got], [ref, other_ref], ["q", "r"], 0.0,
                decode=[lambda v: v * 0.25, lambda v: v - 0.5])
    assert r.details == [Mismatch(0, "q", 1, 3.0, 1.0), Mismatch(0, "r", 0, 0.5, 2.5)]
    assert all(isinstance(m.got, float) and isinstance(m.expected, float) for m in r.details)


def test_compare_keeps_the_first_100_mismatches_and_counts_them_all():
    ref = [np.zeros((30, 4), dtype=np.int64), np.zeros((30, 2), dtype=np.int64)]
    got = [np.ones((30, 4), dtype=np.int64), np.ones((30, 2), dtype=np.int64)]
    r = compare("csim", got, ref, ["a", "b"], 0.0)
    assert r.mismatches == 180 and len(r.details) == 100
    assert {m.output for m in r.details} == {"a"}                      # the first output's 120 fill the list
    assert (r.details[0].sample, r.details[0].index) == (0, 0) and (r.details[-1].sample, r.details[-1].index) == (24, 3)
    assert len(r.to_dict()["first_mismatches"]) == 10


def test_compare_refuses_outputs_of_different_shapes():
    with pytest.raises(ValueError, match=r"output 'y': shapes \(2, 3\) and \(2, 4\) differ"):
        compare("csim", [np.zeros((2, 3))], [np.zeros((2, 4))], ["y"], 0.0)


@pytest.mark.parametrize("ver, why", [
    ({"bit_exact": True}, None),
    ({"bit_exact": False, "mismatches": 7}, "the partitioned design is not bit-exact (7 differing elements)"),
    ({}, "the partitioned design is not bit-exact (None differing elements)"),
    ({"bit_exact": True, "torch_exact": True, "torch_mismatches": 0}, None),
    ({"bit_exact": True, "torch_exact": True, "torch_mismatches": 2},
     "2 output elements differ from the brevitas model, whose own arithmetic is exact here"),
    ({"bit_exact": True, "torch_exact": False, "torch_mismatches": 40}, None),     # float32 rounding: reported only
    ({"bit_exact": False, "mismatches": 1, "torch_exact": True, "torch_mismatches": 3},
     "the partitioned design is not bit-exact (1 differing elements)"),
])
def test_failure_and_passed_read_a_stored_result(ver, why):
    assert failure(ver) == why
    assert passed(ver) is (why is None)


def test_matches_torch_and_the_verdict_of_a_brevitas_model():
    base = dict(level="csim", n_samples=4, bit_exact=True, mismatches=0, max_abs_error_vs_torch=0.0)
    assert VerifyResult(**base).matches_torch is None
    assert VerifyResult(**base, torch_exact=False, torch_mismatches=5).matches_torch is None
    exact = VerifyResult(**base, torch_exact=True, torch_mismatches=0)
    assert exact.matches_torch is True and bool(exact) and exact.to_dict()["passed"] is True
    off = VerifyResult(**base, torch_exact=True, torch_mismatches=2)
    assert off.matches_torch is False and not off and off.to_dict()["passed"] is False
    assert off.failure() == "2 output elements differ from the brevitas model, whose own arithmetic is exact here"


def test_summary_text():
    base = dict(level="csim", n_samples=4, max_abs_error_vs_torch=0.125)
    assert VerifyResult(**base, bit_exact=True, mismatches=0).summary() == (
        "csim: 4 samples, bit-exact; max |design - torch float| = 0.125")
    assert VerifyResult(**base, bit_exact=False, mismatches=3).summary() == (
        "csim: 4 samples, 3 mismatching elements; max |design - torch float| = 0.125")
    limits = {"a": {"min": 1, "max": 2, "of": 8}, "b": {"min": 0, "max": 3, "of": 4}}
    assert VerifyResult(**base, bit_exact=True, mismatches=0, at_limits=limits).summary().endswith(
        "; output elements at their type's minimum 1, maximum 5 (of 12)")
    assert VerifyResult(**base, bit_exact=True, mismatches=0, torch_exact=True, torch_mismatches=0).summary().endswith(
        "= 0.125; equals the brevitas model bit for bit")
    assert VerifyResult(**base, bit_exact=True, mismatches=0, torch_exact=True, torch_mismatches=6).summary().endswith(
        "; 6 elements differ from the brevitas model")
    assert VerifyResult(**base, bit_exact=True, mismatches=0, torch_exact=False, torch_mismatches=1).summary().endswith(
        "; brevitas rounds in float32 (a sum past 24 bits or a float layer), so only the error is reported")


def test_to_dict_holds_optional_parts_only_when_set():
    r = VerifyResult("rtl", 2, False, 1, 0.5, [Mismatch(1, "y", 3, 2.0, 1.5)])
    d = r.to_dict()
    assert d == {"level": "rtl", "n_samples": 2, "bit_exact": False, "passed": False, "mismatches": 1,
                 "max_abs_error_vs_torch": 0.5, "summary": r.summary(),
                 "first_mismatches": [{"sample": 1, "output": "y", "index": 3, "got": 2.0, "expected": 1.5}]}
    full = VerifyResult("csim", 2, True, 0, 0.0, extra={"k": 1}, torch_exact=True, torch_mismatches=0,
                        at_limits={"y": {"min": 0, "max": 1, "of": 6}}).to_dict()
    assert (full["torch_exact"], full["torch_mismatches"], full["matches_torch"]) == (True, 0, True)
    assert full["at_limits"] == {"y": {"min": 0, "max": 1, "of": 6}} and full["extra"] == {"k": 1}
    assert full["passed"] is True and passed(full) and failure(d) == r.failure()
    assert json.loads(json.dumps(full)) == full


def test_outputs_at_limits_counts_raw_values_at_the_type_bounds():
    ports = [Port("s", (3,), (3,), "fixed<8,3>"), Port("u", (2,), (2,), "ufixed<4,2>"), Port("i", (2,), (2,), "int<3>")]
    raw = [np.array([[-128, 127, 0], [-128, -128, 127]]),      # signed 8 bits: -128 .. 127
           np.array([[0, 15], [3, 0]]),                        # unsigned 4 bits: 0 .. 15
           np.array([[-4, 3], [2, 1]])]                        # int<3>: -4 .. 3
    assert outputs_at_limits(raw, ports) == {"s": {"min": 3, "max": 2, "of": 6}, "u": {"min": 2, "max": 1, "of": 4},
                                             "i": {"min": 1, "max": 1, "of": 4}}
    assert outputs_at_limits([np.array([[1, 2]])], [Port("n", (2,), (2,), "fixed<16,6,RND,SAT>")]) == {
        "n": {"min": 0, "max": 0, "of": 2}}


def test_torch_err_is_the_largest_absolute_difference():
    got = [np.array([[0.5, -1.0]]), np.array([[2.0]]), np.zeros((0, 3))]
    ref = [np.array([[0.25, 1.0]]), np.array([[2.5]]), np.zeros((0, 3))]
    e = torch_err(got, ref)
    assert e == 2.0 and type(e) is float
    assert torch_err([np.zeros((0,))], [np.zeros((0,))]) == 0.0


def test_as_list():
    a, b = np.zeros(2), np.ones(2)
    assert as_list([a, b]) == [a, b] and as_list([]) == []
    single = as_list(a)
    assert len(single) == 1 and single[0] is a
    assert as_list((a, b)) == [(a, b)]          # only a list is several outputs
