"""A small seeded queue topology of spans shaped as the capture emits them, for the tests of
silences (a stopped process) (not a test module itself).

front `POST /order` (open loop, Poisson) -> broker `publish orders`
worker: broker `deliver orders` -> db `INSERT orders` -> broker `ack orders` per message

The worker serves nothing: its CLIENT spans are its work, its deliveries say which queue they
take from (unless queue=False: then it looks like a client that takes no work). Stopped from
stop_s to resume_s, it takes nothing; on resuming it drains the backlog at once (a catch-up).
"""
from __future__ import annotations

import random

from capture.span import Span

MS = 1_000_000
T0 = 1_790_000_000 * 10**9


class Queue:
    def __init__(self, seed: int = 1, duration_s: float = 120, rate: float = 2.0,
                 stop_s: float | None = None, resume_s: float | None = None,
                 idle_s: tuple[float, float] | None = None, hold_s: tuple[float, float] | None = None,
                 queue: bool = True):
        self.rng = random.Random(seed)
        self.duration_s, self.rate = duration_s, rate
        self.stop = T0 + int(stop_s * 1e9) if stop_s is not None else None
        self.resume = T0 + int(resume_s * 1e9) if resume_s is not None else None
        # front gets no orders in this stretch (nothing offered: the worker is idle, not stopped)
        self.idle = tuple(T0 + int(x * 1e9) for x in idle_s) if idle_s else None
        # the worker's INSERT waits on the database for this stretch (the database is slow, or
        # a row lock is held elsewhere; past the data's end: it never answered)
        self.hold = tuple(T0 + int(x * 1e9) for x in hold_s) if hold_s else None
        self.spans: list[Span] = []
        self.n = 0
        self.queue = queue

    def sid(self) -> str:
        self.n += 1
        return f"{self.n:016x}"

    def add(self, trace, parent, svc, name, kind, t, d, span_id=None) -> Span:
        attrs: dict = {"server.port": 5672 if svc == "broker" else 5432}
        if self.queue and name in ("deliver orders", "publish orders"):
            attrs.update({"messaging.system": "rabbitmq", "messaging.rabbitmq.destination.routing_key": "orders",
                          "messaging.operation.type": "receive" if name.startswith("deliver") else "publish"})
        s = Span(name=name, kind=kind, start_time_unix_nano=t, end_time_unix_nano=t + d,
                 status_code="OK", attributes=attrs,
                 resource={"service.name": svc}, trace_id=trace, span_id=span_id or self.sid(),
                 parent_span_id=parent)
        self.spans.append(s)
        return s

    def call(self, trace, parent, caller, callee, name, t, d) -> int:
        cid = self.sid()
        self.add(trace, cid, callee, name, "SERVER", t + MS // 10, d)
        self.add(trace, parent, caller, name, "CLIENT", t, d + MS // 5, span_id=cid)
        return d + MS // 5

    def build(self) -> list[Span]:
        t, end, work_free = T0, T0 + int(self.duration_s * 1e9), T0
        while True:
            t += int(self.rng.expovariate(self.rate) * 1e9)
            if t >= end:
                break
            if self.idle and self.idle[0] <= t < self.idle[1]:
                continue
            trace = f"{self.rng.getrandbits(128):032x}"
            sid = self.sid()
            d = self.call(trace, sid, "front", "broker", "publish orders", t + MS, 2 * MS)
            self.add(trace, None, "front", "POST /order", "SERVER", t, d + 2 * MS, span_id=sid)
            # the worker takes it when it runs and is free: at once, or when it resumes
            w = max(t + 5 * MS, work_free)
            if self.stop is not None and self.stop <= w and (self.resume is None or w < self.resume):
                if self.resume is None:
                    continue
                w = max(self.resume, work_free)
            wt = f"{self.rng.getrandbits(128):032x}"
            d1 = self.call(wt, None, "worker", "broker", "deliver orders", w, MS // 10)
            q = 3 * MS
            if self.hold and self.hold[0] <= w < self.hold[1]:
                q = self.hold[1] - w  # waits on the database through the stretch
            d2 = self.call(wt, None, "worker", "db", "INSERT orders", w + d1, q)
            d3 = self.call(wt, None, "worker", "broker", "ack orders", w + d1 + d2, MS // 10)
            work_free = w + d1 + d2 + d3
        # the capture emits a call once it is answered: one still waiting when the data ends
        # (held past it) leaves no span
        return [s for s in self.spans if s.end_time_unix_nano <= end]
