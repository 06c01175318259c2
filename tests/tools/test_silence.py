"""Silences (tools/silence.py): a worker that stopped while work went on arriving is found,
with or without a catch-up burst that leaves its counts as they were; a worker waiting on a
slow database, one nobody gave work, a quiet service's ordinary gaps and a capture that
stopped everywhere are not."""
from __future__ import annotations

import dataclasses

import pytest

from capture.store.api import TimeWindow
from tests.guardian.investigate.mesh import store_of
from tests.guardian.investigate.worker import T0, Queue
from tools.sampling import sample
from tools.silence import silences

BASE = TimeWindow(T0, T0 + 60 * 10**9)
NOW = TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9)


def found(spans, window=NOW) -> list:
    store = store_of(spans)
    try:
        return silences(store, sample(store, window), sample(store, BASE))
    finally:
        store.close()


@pytest.mark.parametrize("resume_s", [None, 110])
def test_a_stopped_worker_is_silent_while_work_goes_on_arriving(resume_s):
    """Stopped at 70 s; resumed at 110 s it drains the backlog in one burst (its calls in the
    window are then about as many as in the baseline: no traffic drop shows it)."""
    got = found(Queue(seed=1, stop_s=70, resume_s=resume_s).build())
    assert [x.service for x in got] == ["worker"]
    x = got[0]
    assert x.sure >= 0.99 and 35 <= x.seconds <= 50, x.describe()
    assert x.last is not None and x.last.service == "worker"
    assert "worker" in x.describe()


def test_a_worker_waiting_on_a_slow_database_is_not_silent():
    """Its INSERT is under way (the database at work on it) through the stretch: it waits."""
    assert found(Queue(seed=2, hold_s=(70, 100)).build()) == []


def test_a_worker_whose_query_never_answered_waits_on_its_database():
    """Its INSERT, under way from 70 s, is still unanswered when the data ends: the call left
    no span, so the worker is silent, but it stopped right where it always calls the database
    after taking an order: it waits on db `INSERT orders`."""
    got = found(Queue(seed=2, hold_s=(70, 200)).build())
    assert [x.service for x in got] == ["worker"]
    assert got[0].waiting == ("db", "INSERT orders"), got[0].describe()


@pytest.mark.parametrize("resume_s", [None, 110])
def test_a_stopped_worker_waits_on_nothing(resume_s):
    """Stopped between two orders (its last span an ack: next it takes work), or resumed
    within the data: it was not inside a call."""
    got = found(Queue(seed=1, stop_s=70, resume_s=resume_s).build())
    assert [x.service for x in got] == ["worker"] and got[0].waiting is None


def test_a_worker_given_no_work_is_idle_not_stopped():
    """No orders arrive for 30 s: the front and the broker are quiet too, nothing was offered."""
    assert [x.service for x in found(Queue(seed=3, idle_s=(70, 100)).build())] == []


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_a_quiet_services_ordinary_gaps_are_no_silence(seed):
    """One order every 5 s on average: gaps of 15-20 s happen by chance."""
    assert found(Queue(seed=seed, rate=0.2).build()) == []


def test_a_silent_client_that_takes_no_work_is_not_stopped():
    """A client whose calls say nothing of a queue (a load generator pausing) is asked for
    nothing: its silence is less demand."""
    assert found(Queue(seed=1, stop_s=70, resume_s=110, queue=False).build()) == []


def test_data_that_stops_everywhere_is_no_silence():
    """The capture (or the host) stopped at 90 s: every service is silent at once."""
    spans = [s for s in Queue(seed=7).build() if s.start_time_unix_nano < T0 + 90 * 10**9]
    spans += [s for s in Queue(seed=8).build() if s.start_time_unix_nano >= T0 + 119 * 10**9]
    assert found(spans) == []


def test_a_service_whose_callers_calls_are_refused_is_down_not_silent():
    """Every call into it fails at once, unanswered: no process took them (it is down, and its
    callers' failures say so); a stopped process leaves its callers waiting."""
    spans = Queue(seed=9).build()
    stretch = (T0 + 70 * 10**9, T0 + 110 * 10**9)
    out = []
    for s in spans:
        inside = stretch[0] <= s.start_time_unix_nano < stretch[1]
        if inside and s.service == "broker":
            continue  # the broker is down: nothing of it
        if inside and s.kind == "CLIENT" and s.name == "publish orders":
            s = dataclasses.replace(s, end_time_unix_nano=s.start_time_unix_nano + 100_000,
                                    status_code="ERROR", status_message="connection refused")
        if inside and s.service == "worker":
            continue  # nothing delivered to it either
        out.append(s)
    assert "broker" not in [x.service for x in found(out)]


def test_no_silence_is_read_into_slices_of_a_busy_store_read_in_part():
    """Each slice of the sample holds only its first spans when the store is busier than the
    sample's bound: the rest of a slice is unread, not silent."""
    store = store_of(Queue(seed=1, stop_s=70, resume_s=110).build())
    try:
        cur, base = sample(store, NOW, total=120), sample(store, BASE, total=120)
        assert cur.cut and base.cut
        assert silences(store, cur, base) == []
    finally:
        store.close()
