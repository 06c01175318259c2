"""The investigator per class of fault, on small seeded meshes shaped as the capture emits them
(tests/guardian/investigate/mesh.py): where each class shows, and that nothing is named when
nothing changed."""
from __future__ import annotations

import dataclasses
import random

import pytest

from capture.store.api import TimeWindow
from guardian.evals.variants import internal, no_status, sparse
from guardian.investigate.deterministic import investigate
from capture.span import Span
from tests.guardian.investigate.mesh import MS, T0, Mesh, store_of
from tests.guardian.investigate.worker import T0 as QUEUE_T0
from tests.guardian.investigate.worker import Queue

QUEUE_NOW = TimeWindow(QUEUE_T0 + 60 * 10**9, QUEUE_T0 + 120 * 10**9)


def top(spans, question="Orders are slow, why?", window=None):
    store = store_of(spans)
    try:
        report = investigate(store, question, window)
        for rc in report.root_causes:  # every citation is a span the store holds
            for ev in rc.evidence:
                assert any(s.span_id == ev.span_id for s in store.trace(ev.trace_id)), ev
        return report
    finally:
        store.close()


def test_network_delay_at_a_callee_is_the_callees_network():
    report = top(Mesh("net:bank", seed=3).build())
    rc = report.root_causes[0]
    assert (rc.service, rc.kind) == ("bank", "network"), report.summary
    assert "answers" in rc.description  # says where the time went: between call and answer


def test_lost_replies_are_the_callees_network():
    rc = top(Mesh("loss:bank", seed=4).build()).root_causes[0]
    assert (rc.service, rc.kind) == ("bank", "network")


def test_a_paused_callee_is_named_though_its_own_spans_look_as_before():
    """bank leaves some requests unread for 100-300 ms (stopped, starved of CPU): its own
    spans are as fast as ever, its callers' calls into it are not."""
    rc = top(Mesh("pause:bank", seed=9).build()).root_causes[0]
    assert rc.service == "bank" and rc.kind in ("latency", "saturation"), rc
    assert "p95" in rc.description


def test_a_slow_query_behind_a_closed_loop_client_is_not_a_traffic_drop():
    report = top(Mesh("slowdb", seed=5, strength=2.0).build())
    assert any(a["kind"] == "traffic_drop" for a in report.anomalies)  # the front did slow down
    rc = report.root_causes[0]
    assert rc.service == "postgresql" and rc.kind == "latency", report.summary
    assert all(c.kind != "traffic" for c in report.root_causes)


@pytest.mark.parametrize("fault,callee", [("wrong:stock", "stock"), ("wrong:pay", "pay")])
def test_wrong_value_answered_with_success_blames_the_callee(fault, callee):
    """gateway fails right after a callee answered with success: after stock it used to go on
    calling pay; after pay (its last call) it used to go on working on the answer."""
    rc = top(Mesh(fault, seed=6).build(), "Orders fail, why?").root_causes[0]
    assert (rc.service, rc.kind) == (callee, "error"), rc
    assert "answered with success" in rc.description


def test_wrong_value_of_the_last_call_blames_it_when_the_caller_did_all_its_work():
    """gateway's requests end right after pay's answer (nothing to tell from the time after
    it), but the failing ones made every call they usually make: pay's answer failed them."""
    rc = top(Mesh("wrong:pay", seed=6, tail_ms=0.05).build(), "Orders fail, why?").root_causes[0]
    assert (rc.service, rc.kind) == ("pay", "error"), rc
    assert "answered with success" in rc.description


def test_own_failure_after_a_successful_call_stays_its_own():
    """pay fails after bank answered, as its requests always ended after bank: pay's error."""
    rc = top(Mesh("exception:pay", seed=6).build(), "Orders fail, why?").root_causes[0]
    assert (rc.service, rc.kind) == ("pay", "error"), rc


@pytest.mark.parametrize("fault,want", [("exception:pay", "pay"), ("wrong:stock", "stock")])
def test_failures_without_status_codes_show_in_the_shape_of_traces(fault, want):
    rng = random.Random(1)
    spans = internal(no_status(Mesh(fault, seed=7).build(), rng, {}), rng, {})
    assert not any(s.status_code == "ERROR" for s in spans)
    rc = top(spans, "Orders fail, why?").root_causes[0]
    assert rc.service == want and rc.kind == "error", rc
    assert "requests" in rc.description and "sure" in rc.description  # how sure, on how many


@pytest.mark.parametrize("seed", [6, 7])
def test_a_wrong_value_of_the_last_call_shows_without_status_codes(seed):
    """Nothing says the requests failed; gateway's ended right after pay answered, without the
    work it always did on pay's answer: it quit on that answer."""
    spans = no_status(Mesh("wrong:pay", seed=seed).build(), random.Random(1), {})
    rc = top(spans, "Orders fail, why?").root_causes[0]
    assert (rc.service, rc.kind) == ("pay", "error"), rc
    assert "ends right after pay answered" in rc.description and "sure" in rc.description


@pytest.mark.parametrize("seed", [11, 12])
def test_nothing_changed_without_status_codes_names_no_cause(seed):
    report = top(no_status(Mesh(None, seed=seed).build(), random.Random(1), {}), "Is anything wrong?")
    assert report.root_causes == [], report.summary


def test_own_slowness_in_sparse_data_is_still_found():
    spans = sparse(Mesh("slow:pay", seed=8, duration_s=900).build(), random.Random(2), {}, keep=0.04)
    assert 30 < len({s.trace_id for s in spans}) < 150  # a handful of calls a minute
    rc = top(spans).root_causes[0]
    assert rc.service == "pay" and rc.kind in ("latency", "saturation")


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_nothing_changed_names_no_cause(seed):
    report = top(Mesh(None, seed=seed).build(), "Is anything wrong?")
    assert report.root_causes == [], report.summary
    assert "No significant change" in report.summary or "nothing" in report.summary.lower()


def test_a_window_running_past_the_data_is_no_traffic_drop():
    spans = Mesh(None, seed=14).build()
    end = max(s.end_time_unix_nano for s in spans)
    window = TimeWindow(T0 + (end - T0) // 2, end + (end - T0))  # twice as long as the data left
    report = top(spans, "Is anything wrong?", window)
    assert not any(a["kind"] == "traffic_drop" for a in report.anomalies), report.anomalies
    assert report.root_causes == []


@pytest.mark.parametrize("status", [True, False])
def test_a_call_stuck_on_a_lock_names_the_database_operation(status):
    """One query waits 20 s on a row lock another session holds, where it never took more
    than a few ms: the closed-loop front sends nothing meanwhile, but the stuck call is the
    cause, at the database (seen only by its client) and in that operation."""
    report = top(Mesh("lock", seed=7, status=status).build())
    rc = report.root_causes[0]
    assert (rc.service, rc.operation, rc.kind) == ("postgresql", "SELECT items", "latency"), report.summary
    assert "20.0 s" in rc.description


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_a_tail_a_few_ms_longer_on_a_busy_host_names_no_cause(seed):
    """A few of a fast callee's calls come a few ms late while its typical call stays as it
    was: the noise of a loaded host, not a change to blame."""
    spans = Mesh("wobble", seed=seed).build()
    report = top(spans, "Is anything wrong?")
    assert report.root_causes == [], report.summary


def test_one_call_stalled_for_a_moment_names_no_cause():
    """One query stalled 2 s, once, in a window of minutes: a hiccup, where a lock held
    through the fault (the test above) holds its waiter for tens of seconds."""
    report = top(Mesh("lock", seed=7, strength=0.1).build(), "Is anything wrong?")
    assert report.root_causes == [], report.summary


@pytest.mark.parametrize("base, cur, moved", [
    # a sub-ms median that doubled, a tail a few ms longer: a busy host's timer and scheduler
    (dict(p50_ms=0.1, p95_ms=1.6), dict(p50_ms=0.2, p95_ms=10.6), False),
    # a median 50 % up but well inside the baseline's own p50-p95 spread
    (dict(p50_ms=3.5, p95_ms=9.6), dict(p50_ms=6.2, p95_ms=28.7), False),
    # a median that doubled past the spread, one that grew sixfold, a tail a user feels
    (dict(p50_ms=6.9, p95_ms=9.6), dict(p50_ms=14.3, p95_ms=42.3), True),
    (dict(p50_ms=0.7, p95_ms=13.0), dict(p50_ms=4.7, p95_ms=26.8), True),
    (dict(p50_ms=1.4, p95_ms=2.8), dict(p50_ms=1.5, p95_ms=194.0), True),
    # a sub-ms query whose slow calls now take tens of ms: a tail grown tenfold (an index gone)
    (dict(p50_ms=0.2, p95_ms=0.3), dict(p50_ms=0.2, p95_ms=40.0), True),
    # a median tripled by a few tens of ms on a query whose calls already ranged over seconds
    # (a shared database's mix of heavy and light calls), its tail within twice the baseline's
    (dict(p50_ms=4.9, p95_ms=1431.5), dict(p50_ms=94.5, p95_ms=2208.4), False),
    # the same median on an operation whose calls ranged over a fraction of that
    (dict(p50_ms=4.9, p95_ms=200.0), dict(p50_ms=94.5, p95_ms=250.0), True),
])
def test_a_change_must_exceed_the_baselines_own_noise(base, cur, moved):
    from guardian.investigate.change import _tail_moved, _typical_moved
    from tools.stats import RedStats

    b, c = RedStats(count=60, **base), RedStats(count=60, **cur)
    assert (_typical_moved(c, b) or _tail_moved(c, b)) is moved


def test_slow_answers_to_a_job_new_in_the_window_name_no_cause():
    """A batch job that made no request before asks a service for heavy work: that work is
    slow, the service's answers to its usual callers are not. New work is no change of it."""
    report = top(Mesh("batch", seed=8).build(), "Is anything wrong?")
    assert any(a["service"] == "bank" and a["kind"] == "latency" for a in report.anomalies)
    assert report.root_causes == [], report.summary


def _from_a_client(spans, keep_late: float, attrs: dict | None = None, seed: int = 1):
    """Each gateway request made by a pure client (a CLIENT span in `loadgen` that nothing
    answers but gateway); in the second half only keep_late of them are sent."""
    rng = random.Random(seed)
    roots = [s for s in spans if s.parent_span_id is None]
    mid = (min(s.start_time_unix_nano for s in roots) + max(s.end_time_unix_nano for s in roots)) // 2
    dropped = {s.trace_id for s in roots if s.start_time_unix_nano >= mid and rng.random() > keep_late}
    out = [s for s in spans if s.trace_id not in dropped]
    for s in [s for s in roots if s.trace_id not in dropped]:
        c = Span(name=s.name, kind="CLIENT", start_time_unix_nano=s.start_time_unix_nano - MS,
                 end_time_unix_nano=s.end_time_unix_nano + MS, status_code=s.status_code,
                 attributes={**(attrs or {}), "server.address": "gateway", "server.port": 8080},
                 resource={"service.name": "loadgen"}, trace_id=s.trace_id,
                 span_id="c" + s.span_id[1:], parent_span_id=None)
        out.append(c)
        out[out.index(s)] = dataclasses.replace(s, parent_span_id=c.span_id)
    return out


def test_fewer_requests_from_a_load_generator_are_no_cause():
    """The only client sends a fifth of its requests in the second half and every call it
    makes is answered as fast as before: less demand, nothing to name (not the client)."""
    spans = _from_a_client(Mesh(None, seed=31).build(), keep_late=0.2)
    report = top(spans, "Is anything wrong?")
    assert any(a["kind"] == "traffic_drop" and a["service"] == "loadgen" for a in report.anomalies)
    assert all(rc.service != "loadgen" for rc in report.root_causes), report.summary


def test_fewer_deliveries_taken_by_a_worker_can_be_its_cause():
    """The same drop at a client that takes its work from a queue (a worker: deliveries it
    receives) may be the worker stopping: it stays a candidate."""
    spans = _from_a_client(Mesh(None, seed=31).build(), keep_late=0.2,
                           attrs={"messaging.operation.type": "receive", "messaging.system": "rabbitmq"})
    report = top(spans, "Is anything wrong?")
    assert any(rc.service == "loadgen" and rc.kind == "traffic" for rc in report.root_causes), report.summary


def test_a_stopped_worker_is_named_though_its_catch_up_left_its_counts_as_before():
    """worker (it takes deliveries from a queue) stopped from 70 s to 110 s of a 60 s window
    and drained its backlog on resuming: as many calls as in the baseline, no traffic drop;
    its silence while orders went on arriving names it."""
    spans = Queue(seed=1, stop_s=70, resume_s=110).build()
    report = top(spans, "Background work stopped going through, why?", QUEUE_NOW)
    assert not any(a["kind"] == "traffic_drop" and a["service"] == "worker" for a in report.anomalies)
    rc = report.root_causes[0]
    assert (rc.service, rc.kind) == ("worker", "traffic"), report.summary
    assert "no span of worker began" in rc.description


def test_a_worker_stuck_in_a_query_that_never_answered_names_the_database_operation():
    """worker's INSERT waits on a row lock from 70 s past the data's end: no span of it (nor of
    the database's answer) exists, the worker is merely silent. It stopped right after taking
    an order, where it always calls db `INSERT orders`: the database operation is named, not
    the worker."""
    report = top(Queue(seed=2, hold_s=(70, 200)).build(), "Background work stopped going through, why?",
                 QUEUE_NOW)
    rc = report.root_causes[0]
    assert (rc.service, rc.kind, rc.operation) == ("db", "latency", "INSERT orders"), report.summary
    assert all(r.service != "worker" for r in report.root_causes[:1])


def test_a_silent_client_that_takes_no_work_is_no_cause():
    """The same silence at a client whose calls carry no sign of taking work from a queue (a
    load generator pausing) is less demand: nothing is named for it."""
    report = top(Queue(seed=1, stop_s=70, resume_s=110, queue=False).build(), "Is anything wrong?",
                 QUEUE_NOW)
    assert all(rc.service != "worker" for rc in report.root_causes), report.summary
