"""The bar between a cause and nothing found, per class of false alarm: a change that lasted
one burst (a restart, a host's hiccup) names nothing; the same change lasting names its cause;
a quiet service (a handful of calls a minute) is judged by exact tests on its few calls."""
from __future__ import annotations

import random

import pytest

from guardian.evals.variants import sparse
from guardian.investigate import change, deterministic
from tests.guardian.investigate.mesh import Mesh
from tests.guardian.investigate.test_classes import top


@pytest.mark.parametrize("fault, seed", [("exception:pay", 31), ("exception:pay", 32), ("exception:pay", 33)])
def test_one_burst_of_failures_names_no_cause(fault, seed):
    """A service failing for 3 s of a two-minute window, as while it restarts:
    the calls before and after are as in the baseline."""
    report = top(Mesh(fault, seed=seed, burst_s=3).build(), "Is anything wrong?")
    assert report.root_causes == [], report.summary
    assert "one burst" in report.summary, report.summary


@pytest.mark.parametrize("fault, kind", [("exception:pay", "error"), ("slow:pay", "latency")])
def test_the_same_change_lasting_names_its_cause(fault, kind):
    report = top(Mesh(fault, seed=31).build(), "Is anything wrong?")
    rc = report.root_causes[0]
    assert rc.service == "pay" and rc.kind in (kind, "saturation"), report.summary


def test_without_the_bar_the_burst_would_be_named(monkeypatch):
    """The burst case is one the score alone names: the bar is what keeps it quiet."""
    monkeypatch.setattr(deterministic, "_burst", lambda walker, c, covered: None)
    report = top(Mesh("exception:pay", seed=31, burst_s=3).build(), "Is anything wrong?")
    assert report.root_causes and report.root_causes[0].service == "pay", report.summary


def test_closed_connections_retried_at_once_name_no_cause():
    """After a restart of bank, pay's pooled connections to it are closed: each call fails at
    once with no answer, pay asks again on a new connection, and every order succeeds."""
    report = top(Mesh("closed:bank", seed=34).build(), "Is anything wrong?")
    assert not any(rc.service == "bank" for rc in report.root_causes), report.summary


def test_unanswered_calls_that_fail_the_requests_name_the_callee():
    """The same calls failing at once, but pay gives up and the orders fail: that is felt."""
    report = top(Mesh("refused:bank", seed=34).build(), "Is anything wrong?")
    rc = report.root_causes[0]
    assert rc.service == "bank" and rc.kind in ("error", "dependency"), report.summary


def test_without_the_bar_the_closed_connections_would_be_named(monkeypatch):
    monkeypatch.setattr(deterministic, "_absorbed", lambda walker, c: False)
    report = top(Mesh("closed:bank", seed=34).build(), "Is anything wrong?")
    assert report.root_causes and report.root_causes[0].service == "bank", report.summary


def quiet(fault: str | None, seed: int, keep: float = 0.03):
    """The mesh thinned to a handful of requests a minute per service, as a quiet service sees."""
    return sparse(Mesh(fault, seed=seed, duration_s=600).build(), random.Random(seed), {}, keep=keep)


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_a_quiet_service_whose_calls_cross_its_baselines_p99_is_named(seed):
    """Half of pay's calls wait 20-60 ms for CPU (a quota spent), a few dozen calls on each side:
    its p50 stays where it was and a p95 of so few calls is one call's time, but 15 or more of
    ~40 calls above every baseline call has an exact chance far below 1 %."""
    spans = quiet("throttle:pay", seed)
    assert len({s.trace_id for s in spans}) < 80  # a handful of calls a minute
    report = top(spans, "Is anything wrong?")
    rc = report.root_causes[0]
    assert rc.service == "pay" and rc.kind in ("latency", "saturation"), report.summary
    assert "baseline calls' p99" in rc.description and "sure" in rc.description  # how sure, on how many


@pytest.mark.parametrize("fault, seed", [(None, 1), (None, 2), (None, 3), ("wobble", 1), ("wobble", 2),
                                         ("wobble", 6), ("wobble", 7)])
def test_a_quiet_calm_service_names_nothing(fault, seed):
    """The same quiet mesh unchanged, or with a few of bank's calls a few ms late (a busy host):
    some calls cross the baseline's p99 by chance or by a few ms, which is no felt change."""
    report = top(quiet(fault, seed), "Is anything wrong?")
    assert report.root_causes == [], report.summary


def test_without_the_tail_test_the_quiet_service_is_not_found(monkeypatch):
    """The quiet throttled service is found by the tail test, not by its percentiles."""
    from tools import anomalies
    from tools.anomalies import Tail

    monkeypatch.setattr(anomalies, "quiet_tail",
                        lambda *a: Tail(p=1.0, k=0, line_ms=0.0, now=[], before=[]))
    monkeypatch.setattr(change, "_tail_shown", lambda *a: False)
    report = top(quiet("throttle:pay", 1), "Is anything wrong?")
    assert not any(rc.service == "pay" for rc in report.root_causes), report.summary


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_slow_answers_to_a_new_job_at_a_quiet_service_are_no_shift(seed):
    """A report job nobody ran before asks the quiet bank for heavy work: its calls are slow,
    but they are new work, not bank's change (its calls for the orders are as before); counted,
    they would cross bank's baseline p99 more often than chance allows."""
    report = top(quiet("batch", seed, keep=0.02), "Is anything wrong?")
    assert not any(a["service"] == "bank" for a in report.anomalies), report.anomalies
    assert report.root_causes == [], report.summary


def _quiet_op(base_ms: list[float], now_ms: list[float]) -> tuple:
    """pay `POST /pay` answering a few calls a minute: base_ms over a minute, now_ms over the next;
    (walker, candidate, its template span, RED now, RED before) as the investigator has them."""
    from capture.span import Span
    from capture.store.api import TimeWindow
    from guardian.investigate.rank import Candidate
    from guardian.investigate.samples import Walker
    from tests.guardian.investigate.mesh import MS, T0, store_of
    from tools.stats import from_spans

    def calls(durations: list[float], start: int) -> list[Span]:
        step = 60_000 * MS // len(durations)
        return [Span(name="POST /pay", kind="SERVER", start_time_unix_nano=start + i * step,
                     end_time_unix_nano=start + i * step + int(d * MS), status_code="OK",
                     resource={"service.name": "pay"}, trace_id=f"{start + i:032x}",
                     span_id=f"{start + i:016x}"[-16:]) for i, d in enumerate(durations)]

    before, now = calls(base_ms, T0), calls(now_ms, T0 + 60_000 * MS)
    store = store_of(before + now)
    walker = Walker(store, TimeWindow(T0 + 60_000 * MS, T0 + 120_000 * MS),
                    TimeWindow(T0, T0 + 60_000 * MS))
    c = Candidate(key=("pay", "POST /pay"), kind="latency")
    return walker, c, now[0], from_spans(now, 60), from_spans(before, 60)


@pytest.mark.parametrize("base_ms, now_ms, shown", [
    # 6 of 10 calls above all 10 baseline calls, 21 ms more per call: 1 in 185 by chance
    ([5.0 + i / 10 for i in range(10)], [5.0] * 4 + [40.0] * 6, True),
    # 2 calls of 5 far above 50 baseline calls: 1 in 150 by chance, but two calls, the bar cannot
    # tell from one burst
    ([5.0 + i / 100 for i in range(50)], [5.0, 5.0, 5.0, 300.0, 300.0], False),
    # 6 of 10 calls above the baseline, by 2 ms: sure, but no delay a user feels
    ([5.0 + i / 10 for i in range(10)], [5.0] * 4 + [7.0] * 6, False),
    # 8 of 12 calls slow where the baseline had 5: more than twice the calls, more work
    ([5.0, 5.2, 5.4, 5.6, 5.8], [5.0] * 4 + [40.0] * 8, False),
])
def test_a_quiet_operations_tail_is_shown_only_when_the_bar_can_judge_it(base_ms, now_ms, shown):
    walker, c, tmpl, cur, base = _quiet_op(base_ms, now_ms)
    try:
        assert change._tail_shown(walker, c, tmpl, cur, base) is shown
        assert c.shown is shown
        assert ("sure they are slower" in c.change) is shown
    finally:
        walker.store.close()


def test_a_quiet_tail_is_not_alone_when_services_that_do_not_call_it_slowed_too():
    """pay's tail shown by its own test: gateway (which calls pay) slowing too is pay's symptom;
    stock (which does not) slowing too means the host or the load slowed them all."""
    from capture.store.api import TimeWindow
    from guardian.investigate.bar import not_alone
    from guardian.investigate.rank import Candidate
    from guardian.investigate.samples import Walker
    from tests.guardian.investigate.mesh import T0, store_of

    store = store_of(quiet("throttle:pay", 1))
    try:
        walker = Walker(store, TimeWindow(T0 + 300 * 10**9, T0 + 600 * 10**9),
                        TimeWindow(T0, T0 + 300 * 10**9))
        pay = Candidate(key=("pay", "POST /pay"), kind="latency", shown=True)
        gateway = Candidate(key=("gateway", "POST /order"), kind="latency", moved=True)
        stock = Candidate(key=("stock", "GET /stock"), kind="latency", moved=True)
        assert not_alone(walker, pay, [pay, gateway]) == []
        assert not_alone(walker, pay, [pay, gateway, stock]) == ["stock"]
        pay.shown = False  # only a test of its own few calls is judged so
        assert not_alone(walker, pay, [pay, gateway, stock]) == []
    finally:
        store.close()
