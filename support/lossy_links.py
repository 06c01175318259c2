"""Keep-alive connections between two nodes, each side losing whole spans independently, as the
hub's cross-node linker receives them; with the epochs the agents would ship (losses seen
before each span on its connection, capture/connection.py) or without. Scored against the truth.

Each exchange: the client waits, the server works inside that wait; the next request on the
connection follows after a pause. `skew_ms` puts the server's clock ahead.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from capture.connection import EPOCH
from capture.span import Span
from capture.traces.crossnode import CrossNodeLinker

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


@dataclass
class Score:
    both: int  # exchanges whose two spans reached the hub
    right: int
    wrong: int
    across_loss: int  # links the linker refused by the epochs (Rule 7)

    @property
    def linked_share(self) -> float:
        return round(self.right / self.both, 4) if self.both else 1.0


def exchanges(loss: float, seed: int, conns: int = 8, per_conn: int = 150, skew_ms: float = 0.0,
              pause_ms: tuple[float, float] = (0.05, 3.0), epochs: bool = True) -> tuple[list[Span], dict]:
    """The spans that reached the hub (by end time) and the truth: server span id -> client's."""
    rng = random.Random(seed)
    spans, truth = [], {}
    front = {"service.name": "front", "host.name": "node-a", "process.pid": 1}
    back = {"service.name": "back", "host.name": "node-b", "process.pid": 2}
    skew = int(skew_ms * MS)
    for k in range(conns):
        t = rng.uniform(0, 5) * MS
        lost = [0, 0]  # losses each side saw so far on this connection
        ends = {"client.address": "10.1.0.2", "client.port": 40000 + k, "server.address": "10.1.0.3",
                "server.port": 8080, "network.transport": "tcp"}
        for _ in range(per_conn):
            there, work, back_ms = (rng.uniform(0.05, 0.5) * MS for _ in range(3))
            c0, s0 = t, t + there
            s1 = s0 + work
            c1 = s1 + back_ms
            made = []
            for side, (kind, start, end, res, shift) in enumerate(
                    (("CLIENT", c0, c1, front, 0), ("SERVER", s0, s1, back, skew))):
                if rng.random() < loss:
                    lost[side] += 1
                    made.append(None)
                    continue
                attrs = dict(ends)
                if epochs and lost[side]:
                    attrs[EPOCH] = lost[side]
                made.append(Span("GET /x", kind, T0 + int(start) + shift, T0 + int(end) + shift,
                                 attributes=attrs, resource=res))
            spans += [s for s in made if s is not None]
            if made[0] is not None and made[1] is not None:
                truth[made[1].span_id] = made[0].span_id
            t = c1 + rng.uniform(*pause_ms) * MS
    spans.sort(key=lambda s: s.end_time_unix_nano)
    return spans, truth


def link(spans: list, step_ms: float = 200.0, window_s: float = 1.0) -> tuple[list, CrossNodeLinker]:
    """Through the hub's linker in steps of stream time, as batches arrive (by end time)."""
    upto = spans[0].end_time_unix_nano if spans else 0
    lk = CrossNodeLinker(window_s=window_s, slack_ns=50 * MS, clock=lambda: upto / 1e9)
    out, i, step = [], 0, int(step_ms * MS)
    while i < len(spans):
        j = i
        while j < len(spans) and spans[j].end_time_unix_nano < upto:
            j += 1
        out += lk.add(spans[i:j])
        i, upto = j, upto + step
    return out + lk.flush(), lk


def score(out: list, truth: dict, lk: CrossNodeLinker) -> Score:
    servers = [s for s in out if s.kind == "SERVER"]
    right = sum(1 for s in servers if s.parent_span_id and truth.get(s.span_id) == s.parent_span_id)
    wrong = sum(1 for s in servers if s.parent_span_id and truth.get(s.span_id) != s.parent_span_id)
    return Score(len(truth), right, wrong, lk.stats["across_loss"])


def run(loss: float, seed: int = 1, window_s: float = 0.05, step_ms: float = 10.0, **kw) -> Score:
    """Linked in rounds: a window far shorter than the traffic (as the hub's, in stream time)."""
    spans, truth = exchanges(loss, seed, **kw)
    out, lk = link(spans, step_ms, window_s)
    return score(out, truth, lk)
