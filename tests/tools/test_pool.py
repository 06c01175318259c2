"""Requests waiting for a pooled connection (tools/pool.py): an operation whose requests skip
their database call and wait seconds calling nothing is its own pool running out; requests
that make the call and wait in it, or stop early, or a few stragglers, are not."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from tools.pool import pool_waits
from tools.sampling import Sample

MS = 1_000_000
T0 = 1_790_000_000 * 10**9


def orders(rng: random.Random, t0: int, n: int, wait_share: float = 0.0, wait_ms: float = 2000.0,
           in_call: bool = False) -> list[Span]:
    """n requests of orders `POST /orders`, each an INSERT on postgresql (a peer that calls
    nothing). wait_share of them wait wait_ms: calling nothing and giving up (a pool out of
    connections), or, in_call, inside a slow INSERT (a database that holds them)."""
    out, t = [], t0
    for i in range(n):
        trace = f"{rng.getrandbits(128):032x}"
        root = f"{rng.getrandbits(64):016x}"
        waits = rng.random() < wait_share
        q = int((wait_ms if waits and in_call else rng.uniform(1, 3)) * MS)
        if waits and not in_call:
            dur = int(wait_ms * rng.uniform(1.0, 1.01) * MS)
        else:
            out.append(Span(name="INSERT orders", kind="CLIENT", start_time_unix_nano=t + MS,
                            end_time_unix_nano=t + MS + q, resource={"service.name": "orders"},
                            trace_id=trace, span_id=f"{rng.getrandbits(64):016x}", parent_span_id=root,
                            attributes={"db.system": "postgresql", "server.address": "postgresql",
                                        "server.port": 5432}))
            dur = q + 2 * MS
        out.append(Span(name="POST /orders", kind="SERVER", start_time_unix_nano=t,
                        end_time_unix_nano=t + dur, resource={"service.name": "orders"},
                        trace_id=trace, span_id=root))
        t += dur + int(rng.uniform(50, 150) * MS)
    return out


def sample(spans: list[Span]) -> Sample:
    return Sample(TimeWindow(min(s.start_time_unix_nano for s in spans),
                             max(s.end_time_unix_nano for s in spans) + 1), spans)


def waits(**now) -> list:
    rng = random.Random(3)
    return pool_waits(sample(orders(rng, T0 + 10**12, 40, **now)), sample(orders(rng, T0, 40)))


def test_requests_that_skip_their_database_call_and_wait_are_a_pool_out_of_connections():
    got = waits(wait_share=0.5)
    assert [(w.service, w.operation, w.call) for w in got] == [
        ("orders", "POST /orders", "postgresql INSERT orders")]
    assert got[0].sure >= 0.99 and got[0].p50_ms[1] >= 2000 and "pooled connection" in got[0].describe()


def test_requests_waiting_inside_their_database_call_are_not_a_pool_wait():
    assert waits(wait_share=0.5, in_call=True) == []  # the database holds them: its slowdown


def test_requests_that_stop_early_or_wait_little_or_a_few_stragglers_are_not_a_pool_wait():
    assert waits(wait_share=0.5, wait_ms=0.5) == []  # skipped the call and ended: an exception
    assert waits(wait_share=0.5, wait_ms=300) == []  # a pool's wait is seconds: a slow step
    assert waits(wait_share=0.1) == []  # a straggler or two
    assert waits() == []
