"""The shared tests of change (tools/stats.py) on counts a calm day gives: a drop or a few
failures must beat chance, judged on the number of independent requests."""
from __future__ import annotations

from tools.stats import RedStats, drop_p, traffic_drop


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
