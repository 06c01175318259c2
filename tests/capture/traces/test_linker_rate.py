"""The stream linker at line rate, with the agent's settings: a few slow requests (0.5-1.0 s) in
20,000 spans/s of short ones keep their cross-process and in-process links, as linking the whole
stream at once gives them (issue 14: the flood regime released spans after ~0.2 s, before the
parent of a request's early call had ended)."""
from __future__ import annotations

import copy
import random

import pytest

from capture.config import LinkerConfig
from capture.rows import to_rows
from capture.span import Span
from capture.traces import linker
from capture.traces.linker import link_all
from capture.traces.stream import StreamLinker

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
RATE = 20_000  # spans/s: hey at 10k req/s, a CLIENT and a SERVER span each


def _span(kind: str, start: int, end: int, pid: int, client: tuple, server: tuple, thread: int) -> Span:
    return Span("GET /", kind, T0 + start, T0 + end, resource={"host.name": "h", "process.pid": pid},
                attributes={"client.address": client[0], "client.port": client[1], "server.address": server[0],
                            "server.port": server[1], "thread.id": thread})


def background(seconds: float) -> list[Span]:
    """hey (pid 1) -> nginx (pid 2) over 50 keep-alive connections, 1 ms exchanges."""
    out = []
    step = 2 * 1_000_000_000 // RATE
    for i in range(int(seconds * RATE / 2)):
        t = i * step
        conn = ("127.0.0.1", 40000 + i % 50), ("127.0.0.1", 8080)
        out.append(_span("CLIENT", t, t + MS, 1, *conn, thread=7))
        out.append(_span("SERVER", t + MS // 10, t + MS * 9 // 10, 2, *conn, thread=1))
    return out


def slow_request(n: int, t: int, seconds: float) -> tuple[list[Span], dict[str, str]]:
    """A caller (pid 10) -> a front service (pid 11, thread n) that calls a back service (pid 12)
    twice, fast first, then works for most of the request; the parents it must get."""
    dur = int(seconds * 1e9)
    front = ("10.0.0.11", 8000)
    caller = _span("CLIENT", t, t + dur + MS, 10, ("10.0.0.10", 50000 + n), front, thread=1)
    server = _span("SERVER", t + MS // 10, t + dur, 11, ("10.0.0.10", 50000 + n), front, thread=n)
    calls = []
    for k, (a, b) in enumerate([(2 * MS, 12 * MS), (20 * MS, 70 * MS)]):
        conn = ("10.0.0.11", 60000 + 2 * n + k), ("10.0.0.12", 9000)
        c = _span("CLIENT", t + a, t + b, 11, *conn, thread=n)
        s = _span("SERVER", t + a + MS // 10, t + b - MS // 10, 12, *conn, thread=k)
        calls += [(c, s)]
    want = {server.span_id: caller.span_id}
    for c, s in calls:
        want[c.span_id] = server.span_id
        want[s.span_id] = c.span_id
    return [caller, server] + [x for pair in calls for x in pair], want


def stream(spans: list[Span], linker: StreamLinker, batch_s: float = 0.01) -> list:
    """The spans by end time in batches of `batch_s` of stream time, as the agent's worker gets them."""
    spans = sorted(spans, key=lambda s: s.end_time_unix_nano)
    out, i, per = [], 0, int(batch_s * RATE)
    while i < len(spans):
        out += linker.add(spans[i:i + per])
        i += per
    return out + linker.flush()


def test_slow_requests_keep_their_links_at_20k_spans_per_second_with_the_agents_settings():
    rnd = random.Random(14)
    spans, want = background(3.0), {}
    for n in range(12):
        got, links = slow_request(n + 1, int(rnd.uniform(0.2, 1.7) * 1e9), rnd.uniform(0.5, 1.0))
        spans += got
        want.update(links)
    whole = {s.span_id: s for s in link_all(copy.deepcopy(spans))}
    assert all(whole[sid].parent_span_id == p for sid, p in want.items())  # the links are there to find
    cfg = LinkerConfig()
    linker = StreamLinker(cfg.window_s, int(cfg.slack_ms * 1e6), max_pending=cfg.max_pending_spans)
    out = {r.span_id: r for r in stream(to_rows(spans), linker)}
    assert len(out) == len(spans)  # each span released once
    lost = {sid: (p, out[sid].parent_span_id) for sid, p in want.items() if out[sid].parent_span_id != p}
    assert not lost, f"{len(lost)} of {len(want)} slow requests' links lost (forced: {linker.forced})"
    # one trace per slow request, as linking everything at once gives it
    assert all(out[sid].trace_id == out[p].trace_id for sid, p in want.items())
    same = sum(out[s.span_id].parent_span_id == w.parent_span_id and
               (out[s.span_id].trace_id == out[w.parent_span_id].trace_id if w.parent_span_id else True)
               for s, w in ((s, whole[s.span_id]) for s in spans))
    assert same == len(spans)


@pytest.mark.parametrize("python", [False, True])
def test_a_run_links_its_band_as_linking_everything_at_once(python, monkeypatch):
    """A run links only the band that can reach what it releases: with a window of 0.3 s (a run every
    0.15 s of stream) and requests of 50-250 ms, the same parents and trace ids as link_all of the
    whole stream, from the C release and from its Python specification."""
    rnd = random.Random(15)
    spans = background(1.0)
    for n in range(40):
        spans += slow_request(n + 1, int(rnd.uniform(0.0, 0.9) * 1e9), rnd.uniform(0.05, 0.25))[0]
    whole = {s.span_id: s for s in link_all(copy.deepcopy(spans))}
    monkeypatch.setattr(linker, "_link", None if python else linker._link)
    sl = StreamLinker(window_s=0.3, max_pending=100_000)
    out = stream(to_rows(spans), sl)
    monkeypatch.undo()
    assert len(out) == len(spans) and sl.forced == 0
    got = {r.span_id: r for r in out}
    for r in out:
        w = whole[r.span_id]
        assert r.parent_span_id == w.parent_span_id
        assert r.trace_id == got[w.parent_span_id].trace_id if w.parent_span_id else True
    assert sl.linked == sum(1 for w in whole.values() if w.parent_span_id) > 10_000
