"""A small seeded mesh of spans shaped as the capture emits them, with one fault at a time,
for the investigator's per-class tests (not a test module itself).

loadgen (closed loop: next request when the answer is back) -> gateway `POST /order`
gateway -> stock `GET /stock` -> postgresql `SELECT items` (unlinked: a database peer)
gateway -> pay `POST /pay` -> bank `POST /auth`
"""
from __future__ import annotations

import random

from capture.span import Span

MS = 1_000_000
T0 = 1_790_000_000 * 10**9


class Mesh:
    def __init__(self, fault: str | None = None, seed: int = 1, duration_s: float = 240,
                 fault_at: float = 0.5, strength: float = 1.0, status: bool = True,
                 tail_ms: float = 3.0, burst_s: float | None = None):
        self.rng = random.Random(seed)
        self.fault, self.strength, self.status = fault, strength, status
        self.tail_ms = tail_ms  # gateway's work after its last call's answer
        self.fault_start = T0 + int(duration_s * fault_at * 1e9)
        # the fault lasts this long only (a restart, a hiccup), else to the end
        self.fault_end = self.fault_start + int(burst_s * 1e9) if burst_s else None
        self.end = T0 + int(duration_s * 1e9)
        self.spans: list[Span] = []
        self.n = 0
        self.active = False
        self.locked = False

    def sid(self) -> str:
        self.n += 1
        return f"{self.n:016x}"

    def add(self, trace, parent, svc, name, kind, t, d, attrs=None, error=None, span_id=None) -> Span:
        s = Span(name=name, kind=kind, start_time_unix_nano=t, end_time_unix_nano=t + d,
                 status_code=("ERROR" if error else "OK") if self.status else "UNSET",
                 attributes=dict(attrs or {}), resource={"service.name": svc},
                 trace_id=trace, span_id=span_id or self.sid(), parent_span_id=parent,
                 status_message=(error or "") if self.status else "")
        self.spans.append(s)
        return s

    def on(self, name: str) -> bool:
        return self.active and self.fault == name

    def ms(self, m: float) -> int:
        return int(m * self.rng.uniform(0.8, 1.25) * MS)

    def http(self, trace, parent, caller, callee, name, t, body) -> tuple[int, int]:
        """CLIENT in caller, SERVER in callee; the reply leg grows under a network fault."""
        if self.on(f"closed:{callee}") or self.on(f"refused:{callee}"):
            # its pooled connection was closed (a restart): the call fails at once, unanswered;
            # on "closed" the caller opens a new connection and asks again, on "refused" it gives up
            self.add(trace, parent, caller, name, "CLIENT", t, int(0.1 * MS),
                     {"server.address": callee, "server.port": 8080}, "connection closed before a response")
            if self.on(f"refused:{callee}"):
                return int(0.1 * MS), 599
            t += int(0.2 * MS)
        cid = self.sid()
        before, after = self.ms(0.1), self.ms(0.1)
        if self.on(f"net:{callee}"):
            after += int(self.rng.uniform(40, 120) * self.strength * MS)
        if self.on(f"pause:{callee}") and self.rng.random() < 0.3:
            before += int(self.rng.uniform(100, 300) * self.strength * MS)  # waits unread
        if self.on(f"loss:{callee}") and self.rng.random() < 0.3:
            after += 200 * MS  # a retransmission timeout
        sid = self.sid()
        d, status = body(trace, sid, t + before)
        self.add(trace, cid, callee, name, "SERVER", t + before, d,
                 {"http.response.status_code": status}, f"HTTP {status}" if status >= 500 else None,
                 span_id=sid)
        self.add(trace, parent, caller, name, "CLIENT", t, before + d + after,
                 {"http.response.status_code": status, "server.address": callee, "server.port": 8080},
                 f"HTTP {status}" if status >= 500 else None, span_id=cid)
        return before + d + after, status

    def stock(self, trace, sid, t):
        own = self.ms(1)
        q = self.ms(2) + (int(300 * self.strength * MS) if self.on("slowdb") else 0)
        if self.on("lock") and not self.locked:  # waits once on a row lock held elsewhere
            q += int(20_000 * self.strength * MS)
            self.locked = True
        self.add(trace, sid, "stock", "SELECT items", "CLIENT", t + own, q,
                 {"db.system": "postgresql", "db.query.text": "SELECT * FROM items WHERE id = $1",
                  "server.address": "db", "server.port": 5432})
        return own + q + self.ms(0.5), 200

    def bank(self, trace, sid, t):
        if self.on("wobble") and self.rng.random() < 0.15:  # a busy host: a few calls a few ms late
            return self.ms(4) + int(self.rng.uniform(4, 12) * MS), 200
        return self.ms(4), 200

    def pay(self, trace, sid, t):
        own = self.ms(2) + (int(150 * self.strength * MS) if self.on("slow:pay") else 0)
        if self.on("throttle:pay") and self.rng.random() < 0.5:  # its CPU quota spent: some calls wait
            own += int(self.rng.uniform(20, 60) * self.strength * MS)
        if self.on("exception:pay"):  # raised before its call to bank: it answers at once
            return self.ms(0.5), 500
        d, st = self.http(trace, sid, "pay", "bank", "POST /auth", t + own, self.bank)
        return own + d + self.ms(0.5), 200 if st < 500 else 502

    def gateway(self, trace, sid, t):
        cur = t + self.ms(0.5)
        d, st = self.http(trace, sid, "gateway", "stock", "GET /stock", cur, self.stock)
        cur += d
        if self.on("wrong:stock"):  # stock answered 200 with a wrong value: gateway fails on it
            return cur - t + self.ms(0.2), 500
        d, st = self.http(trace, sid, "gateway", "pay", "POST /pay", cur, self.pay)
        if self.on("wrong:pay") and st < 500:  # the last call's answer is wrong: no work after it
            return cur + d - t + self.ms(min(0.1, self.tail_ms)), 500
        cur += d + self.ms(self.tail_ms)  # builds the answer from what it was given
        return cur - t, 200 if st < 500 else 502

    def batch(self, t: int) -> None:
        """A report job nobody ran before asks bank for heavy work: slow answers to new work."""
        trace = f"{self.rng.getrandbits(128):032x}"
        self.http(trace, None, "batch-job", "bank", "POST /auth", t,
                  lambda tr, sid, t0: (self.ms(600), 200))

    def build(self) -> list[Span]:
        t = T0
        while t < self.end:
            self.active = self.fault is not None and t >= self.fault_start and (
                self.fault_end is None or t < self.fault_end)
            trace = f"{self.rng.getrandbits(128):032x}"
            sid = self.sid()
            d, st = self.gateway(trace, sid, t)
            self.add(trace, None, "gateway", "POST /order", "SERVER", t, d,
                     {"http.response.status_code": st}, f"HTTP {st}" if st >= 500 else None, span_id=sid)
            if self.on("batch") and self.rng.random() < 0.3:  # a job started in the window
                self.batch(t)
            t += d + int(self.rng.uniform(100, 400) * MS)  # closed loop: think, then ask again
        return self.spans


def store_of(spans: list[Span]):
    from capture.store.factory import open_store

    store = open_store(None)
    store.append(spans)
    return store
