"""A service's own time (tools/own.py): grown in its operations together, alone among the
services, it is named; one operation slower, a changed mix of operations, or many services
slower at once (the host) are not."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from tools.own import own_shifts
from tools.sampling import Sample

MS = 1_000_000
T0 = 1_790_000_000 * 10**9


def requests(rng: random.Random, t0: int, n: int, own_ms: dict) -> list[Span]:
    """n requests per (service, operation) in own_ms: a SERVER span that runs own_ms of its
    own, then calls db `SELECT` (1 ms) as a linked CLIENT -> SERVER pair."""
    out, t = [], t0
    for i in range(n):
        for (svc, op), ms in own_ms.items():
            trace = f"{rng.getrandbits(128):032x}"
            own = int(ms * rng.uniform(0.8, 1.2) * MS)
            root = Span(name=op, kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=t + own + 2 * MS,
                        resource={"service.name": svc}, trace_id=trace, span_id=f"{trace[:12]}01")
            cl = Span(name="SELECT", kind="CLIENT", start_time_unix_nano=t + own,
                      end_time_unix_nano=t + own + MS, resource={"service.name": svc}, trace_id=trace,
                      span_id=f"{trace[:12]}02", parent_span_id=root.span_id)
            sv = Span(name="SELECT", kind="SERVER", start_time_unix_nano=t + own,
                      end_time_unix_nano=t + own + MS, resource={"service.name": "db"}, trace_id=trace,
                      span_id=f"{trace[:12]}03", parent_span_id=cl.span_id)
            out += [root, cl, sv]
        t += 100 * MS
    return out


def shifts(base_ms: dict, now_ms: dict, n: int = 30) -> list[str]:
    rng = random.Random(3)
    base = Sample(TimeWindow(T0, T0 + 60 * 10**9), requests(rng, T0, n, base_ms))
    cur = Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), requests(rng, T0 + 60 * 10**9, n, now_ms))
    return [o.service for o in own_shifts(cur, base)]


BASE = {("pay", "POST /charge"): 4, ("pay", "GET /status"): 2, ("shop", "GET /"): 5, ("cart", "GET /cart"): 3}


def test_a_service_whose_every_operation_slowed_on_its_own_is_named():
    now = {**BASE, ("pay", "POST /charge"): 12, ("pay", "GET /status"): 7}
    assert shifts(BASE, now) == ["pay"]


def test_one_slower_operation_or_nothing_is_not_the_service():
    assert shifts(BASE, BASE) == []
    # half of pay's operations must grow: one of two did, with the other faster
    now = {**BASE, ("pay", "POST /charge"): 12, ("pay", "GET /status"): 1}
    assert shifts(BASE, now) == []


def test_many_services_slower_at_once_is_the_host():
    now = {k: v * 3 for k, v in BASE.items()}
    assert shifts(BASE, now) == []
