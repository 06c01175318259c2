"""Answers a retransmission timeout late (tools/retransmit.py) on calls shaped as the capture
links them: a few lost answers on one callee are its network; a caller slow to read, a queue
that spreads its delays, one lost packet, and a late request are not."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from tools.retransmit import retransmits
from tools.sampling import Sample

MS = 1_000_000
T0 = 1_790_000_000 * 10**9
NOW = T0 + 60 * 10**9


def calls(rng: random.Random, t0: int, n: int, late) -> list[Span]:
    """n traces: app `POST /x` calls cache `GET` and db `SELECT`; late(i, callee) is
    (ms the request waits unread, ms the answer is held on its way back)."""
    out, t = [], t0
    for i in range(n):
        trace = f"{rng.getrandbits(128):032x}"
        root = f"r{i:015x}"
        cur = t + MS
        for j, (callee, name) in enumerate((("cache", "GET"), ("db", "SELECT"))):
            before, after = late(i, callee)
            before = int((before + rng.uniform(0.05, 0.3)) * MS)
            after = int((after + rng.uniform(0.02, 0.3)) * MS)
            d = int(rng.uniform(0.3, 2.0) * MS)
            cid, sid = f"c{i:08x}{j:07x}", f"s{i:08x}{j:07x}"
            out.append(Span(name=name, kind="CLIENT", start_time_unix_nano=cur,
                            end_time_unix_nano=cur + before + d + after, resource={"service.name": "app"},
                            trace_id=trace, span_id=cid, parent_span_id=root, status_code="OK",
                            attributes={"server.address": callee, "server.port": 6000 + j}))
            out.append(Span(name=name, kind="SERVER", start_time_unix_nano=cur + before,
                            end_time_unix_nano=cur + before + d, resource={"service.name": callee},
                            trace_id=trace, span_id=sid, parent_span_id=cid, status_code="OK"))
            cur += before + d + after + MS
        out.append(Span(name="POST /x", kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=cur,
                        resource={"service.name": "app"}, trace_id=trace, span_id=root, status_code="OK"))
        t += 150 * MS
    return out


def found(now, n: int = 300, now_n: int | None = None) -> list:
    rng = random.Random(3)
    # a loaded host: now and then an answer is read a few ms late, once 80 ms late
    noisy = lambda i, callee: (0.0, 80.0 if (i, callee) == (7, "db") else  # noqa: E731
                               rng.uniform(2, 9) if rng.random() < 0.04 else 0.0)
    base = calls(rng, T0, n, noisy)
    cur = calls(rng, NOW, now_n or n, lambda i, callee: now(i, callee, noisy))
    return retransmits(Sample(TimeWindow(NOW, NOW + 60 * 10**9), cur),
                       Sample(TimeWindow(T0, NOW), base))


LOST = {40: 207.0, 120: 204.0, 190: 414.0, 260: 211.0}  # calls whose answer was lost once or twice


def test_a_few_answers_an_rto_late_are_the_callees_network():
    got = found(lambda i, callee, noisy: (0.0, LOST[i]) if callee == "db" and i in LOST else noisy(i, callee))
    assert [(r.server, r.hits) for r in got] == [("db", 4)]
    assert got[0].callers == ["app"] and got[0].sure >= 0.99 and not got[0].few
    assert "retransmission timeout" in got[0].describe()


def test_two_lost_answers_are_named_and_said_to_be_few():
    """2 of 40 calls (a quiet callee) against 600 baseline answers that never came an RTO late;
    2 of 300 calls would be no surer than chance."""
    two = {10: 207.0, 30: 209.0}
    got = found(lambda i, callee, noisy: (0.0, two[i]) if callee == "db" and i in two else noisy(i, callee),
                now_n=40)
    assert [r.server for r in got] == ["db"] and got[0].few
    assert found(lambda i, callee, noisy: (0.0, two[i]) if callee == "db" and i in two
                 else noisy(i, callee)) == []
    assert "few to go on" in got[0].describe()


def test_one_lost_answer_is_one_packet_not_a_fault():
    got = found(lambda i, callee, noisy: (0.0, 206.0) if (i, callee) == (100, "db") else noisy(i, callee))
    assert got == []


def test_a_caller_slow_to_read_every_answer_is_not_a_callees_network():
    """app itself stalls now and then (its CPU): answers from cache and db alike wait."""
    got = found(lambda i, callee, noisy: (0.0, LOST[i]) if i in LOST else noisy(i, callee))
    assert got == []


def test_delays_spread_as_a_queue_spreads_them_are_not_lost_packets():
    r = random.Random(11)
    got = found(lambda i, callee, noisy: (0.0, r.uniform(150, 900)) if callee == "db" and r.random() < 0.05
                else noisy(i, callee))
    assert got == []


def test_a_request_an_rto_late_is_left_to_the_stall_tests():
    """A request read an RTO late looks as a callee that stopped reading: not this rule's."""
    got = found(lambda i, callee, noisy: (LOST[i], 0.0) if callee == "db" and i in LOST else noisy(i, callee))
    assert got == []


def test_calm_finds_nothing():
    assert found(lambda i, callee, noisy: noisy(i, callee)) == []


# ---- on recorded lab cases (evals/lab: real eBPF capture of the fault lab) ----------------

LAB = __import__("pathlib").Path(__file__).resolve().parents[2] / "evals" / "lab"


def recorded(case: str) -> list:
    import json

    import pytest

    from capture.store.window import split_baseline
    from guardian.evals.runner import case_window
    from guardian.evals.scenarios import load_store
    from tools.sampling import sample

    d = LAB / case
    if not d.is_dir():
        pytest.skip(f"{d} not recorded here")
    store = load_store(d)
    try:
        cur, base = split_baseline(store, case_window(json.loads((d / "expected.json").read_text())))
        return retransmits(sample(store, cur), sample(store, base))
    finally:
        store.close()


def test_recorded_loss_at_a_callee_is_found_on_it_alone():
    """nftables dropped a share of inventory's packets: 7 of its answers came 205-209 ms late."""
    got = recorded("shop-s3-015")
    assert [r.server for r in got] == ["inventory"] and got[0].hits >= 5
    assert all(195 <= x <= 235 or 390 <= x <= 470 for x in got[0].excess_ms[1:])


def test_recorded_late_reads_that_are_no_lost_packets_find_nothing():
    """A dependency timeout (pricing's reads of postgres' answers 60-1000 ms late, spread), a
    throttled caller (profile reads auth's and redis' answers ~0.5 s late alike), a load script
    reading three answers 445 ms late (it calls nothing else), and a paused process."""
    for case in ("mesh12-s13-010", "mesh12-s11-010", "shop-s1-014", "shop-s22-001"):
        assert recorded(case) == [], case
