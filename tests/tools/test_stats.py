"""The shared tests of change (tools/stats.py) on counts a calm day gives: a drop or a few
failures must beat chance, judged on the number of independent requests; the exact tests on
the few calls of a quiet service, checked against values known in closed form."""
from __future__ import annotations

import pytest

from tools.stats import (SURE, RedStats, binom_sf, drop_p, error_p, error_shift, hypergeom_sf,
                         latency_shift, mann_whitney_p, tail_line, tail_p, tail_to_test,
                         traffic_drop)


def rate(count: int, seconds: float) -> RedStats:
    return RedStats(count=count, rate_per_s=count / seconds)


def test_a_handful_of_calls_fewer_is_chance_not_a_drop():
    # 10 -> 4 calls in equal windows: half the rate, but 14 calls split 4:10 happens often
    assert traffic_drop(rate(4, 15), rate(10, 15), tested=False)
    assert drop_p(rate(4, 15), rate(10, 15)) > 0.05
    assert not traffic_drop(rate(4, 15), rate(10, 15))


def test_a_stopped_service_is_a_drop_even_with_few_calls():
    assert drop_p(rate(0, 15), rate(12, 15)) < 0.001
    assert traffic_drop(rate(0, 15), rate(12, 15))
    assert traffic_drop(rate(40, 15), rate(120, 15))


def test_the_rate_compares_time_covered_on_each_side():
    # 30 calls in 10 s against 60 in 20 s is the same rate: no drop, however many calls
    assert drop_p(rate(30, 10), rate(60, 20)) > 0.3
    assert not traffic_drop(rate(30, 10), rate(60, 20))


# -- exact tests on the few calls of a quiet service --------------------------------------------

def test_binomial_tail_is_exact():
    assert binom_sf(3, 10, 0.5) == pytest.approx(968 / 1024, abs=1e-12)  # 1 - (1 + 10 + 45) / 2^10
    assert binom_sf(2, 8, 0.1) == pytest.approx(1 - 0.9 ** 8 - 8 * 0.1 * 0.9 ** 7, abs=1e-12)
    assert binom_sf(0, 5, 0.3) == 1.0 and binom_sf(6, 5, 0.3) == 0.0


def test_hypergeometric_tail_is_fishers_exact_test():
    # the lady tasting tea: 8 cups, 4 with milk first, she names 4: all right 1/70, 3 or more 17/70
    assert hypergeom_sf(4, 4, 4, 8) == pytest.approx(1 / 70, abs=1e-12)
    assert hypergeom_sf(3, 4, 4, 8) == pytest.approx(17 / 70, abs=1e-12)
    assert hypergeom_sf(0, 4, 4, 8) == 1.0 and hypergeom_sf(5, 4, 4, 8) == 0.0


def test_the_tail_line_is_the_largest_baseline_call_below_a_hundred_calls():
    assert tail_line([3.0, 1.0, 2.0]) == 3.0
    assert tail_line([float(i) for i in range(1, 201)]) == 198.0  # 2 of 200 above: 1 %


def test_k_of_n_calls_above_anything_the_baseline_saw_has_an_exact_chance():
    base = [float(i) for i in range(1, 10)]  # 9 calls, 1..9 ms
    # 3 of 6 calls above 9 ms: the 3 largest of 15 calls all fall in the window, 6*5*4 / (15*14*13)
    p, k = tail_p([1.0, 2.0, 3.0, 20.0, 30.0, 40.0], base)
    assert k == 3 and p == pytest.approx(6 * 5 * 4 / (15 * 14 * 13), abs=1e-12)
    assert tail_p([1.0, 2.0, 3.0], base) == (1.0, 0)
    assert tail_p([], base) == (1.0, 0)


def test_one_straggler_among_a_few_calls_is_chance_several_are_not():
    base = [5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5]
    # the largest of 16 calls falls in the window half the time
    assert tail_p([6.0, 6.1, 6.2, 6.3, 6.4, 6.5, 6.6, 300.0], base)[0] == pytest.approx(0.5, abs=1e-12)
    # 4 of 8 above every baseline call: 8*7*6*5 / (16*15*14*13), about 1 in 26: not yet sure
    assert tail_p([6.0, 6.1, 6.2, 6.3, 60.0, 70.0, 80.0, 90.0], base)[0] == pytest.approx(
        1680 / 43680, abs=1e-12)
    # 6 of 8: about 1 in 290
    assert tail_p([6.0, 6.1, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0], base)[0] < 1 - SURE


def test_mann_whitney_exact_without_ties():
    # every call now slower than every call before: one arrangement of C(6, 3) = 20
    assert mann_whitney_p([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(1 / 20, abs=1e-12)
    assert mann_whitney_p([6.0, 7.0, 8.0, 9.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(
        1 / 252, abs=1e-12)  # C(10, 5)
    assert mann_whitney_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(1.0, abs=1e-12)


def lat(count: int, p50: float, p95: float) -> RedStats:
    return RedStats(count=count, rate_per_s=count / 30, p50_ms=p50, p95_ms=p95)


def test_a_quiet_operations_tail_alone_needs_a_test_on_its_calls():
    base, cur = lat(20, 6.0, 7.0), lat(20, 6.5, 60.0)  # p95 x8.6, p50 as before, 20 calls
    assert tail_to_test(cur, base)
    assert not latency_shift(cur, base)  # a p95 of 20 calls is one call's time
    assert latency_shift(cur, base, tail_sure=0.995)
    assert not latency_shift(cur, base, tail_sure=0.9)
    # a typical call that moved, or a p95 on many calls, needs no test; nor does no shift pass one
    assert not tail_to_test(lat(20, 9.0, 60.0), base) and latency_shift(lat(20, 9.0, 60.0), base)
    assert not tail_to_test(lat(80, 6.5, 60.0), base) and latency_shift(lat(80, 6.5, 60.0), base)
    assert not tail_to_test(lat(20, 6.0, 8.0), base) and not latency_shift(lat(20, 6.0, 8.0), base, 1.0)


def test_calls_no_slower_than_the_services_other_calls_were_are_not_new_slowness():
    base = [0.2, 0.3, 0.25, 0.3, 0.2, 0.3, 0.28, 0.22]
    cur = [0.2, 900.0, 1400.0, 1600.0, 2000.0, 3000.0, 4100.0, 0.3]
    assert tail_p(cur, base)[0] < 1 - SURE  # 6 of 8 far above this operation's every call
    # but its service's other operations already took seconds (a busy database): within that
    assert tail_p(cur, base, floor_ms=5000.0) == (1.0, 0)


# -- error-rate shifts: Fisher's exact test on the few calls of a quiet service -----------------

def errors(k: int, n: int) -> RedStats:
    return RedStats(count=n, errors=k, error_rate=k / n if n else 0.0)


def test_error_p_is_fishers_exact_test():
    # 2 failures in 9 calls, none in 40: both failures fall among the 9 of 49, C(9,2) / C(49,2)
    assert error_p(errors(2, 9), errors(0, 40)) == pytest.approx(36 / 1176, abs=1e-12)
    # 5 of 5 against none of 40: one arrangement of C(45, 5)
    assert error_p(errors(5, 5), errors(0, 40)) == pytest.approx(1 / 1221759, rel=1e-9)
    # 1 of 4 against 1 of 4: P(X >= 1) = 1 - C(4,0) C(4,2) / C(8,2) = 1 - 6/28
    assert error_p(errors(1, 4), errors(1, 4)) == pytest.approx(22 / 28, abs=1e-12)
    assert error_p(errors(0, 9), errors(0, 40)) == 1.0


def test_a_couple_of_failures_on_a_quiet_service_is_not_a_shift():
    # the z-score said 3.0 here (a shift); the exact chance is 3 %: not sure
    assert not error_shift(errors(2, 9), errors(0, 40))
    assert error_shift(errors(5, 9), errors(0, 40))  # C(9,5) / C(49,5), about 6.6e-5
    assert error_shift(errors(30, 300), errors(3, 300))


def test_many_failures_use_the_normal_tail_of_the_same_test():
    # 700 of 10000 against 300 of 10000: far past any doubt either way
    assert error_p(errors(700, 10000), errors(300, 10000)) < 1e-20
    assert error_p(errors(300, 10000), errors(700, 10000)) > 0.999
    # near the cut the two agree: 260 of 5000 vs 240 of 5000 (exact) and 261 vs 240 (normal)
    exact, normal = error_p(errors(260, 5000), errors(240, 5000)), error_p(errors(261, 5000), errors(240, 5000))
    assert 0.1 < normal < exact < 0.3


def test_an_operation_without_baseline_calls_shifts_on_enough_failures():
    assert error_shift(errors(5, 8), RedStats())
    assert not error_shift(errors(4, 8), RedStats())
