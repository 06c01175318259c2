"""What the stream linker keeps of released spans (its context, one window long): their link facts,
not their rows, and not the CLIENT spans their SERVER has answered. At the agent's bound (half of
linker.max_pending_spans as context) whole rows were ~11 MB of the agent's resident set at saturation."""
from __future__ import annotations

import copy
import gc
import random
import tracemalloc

import pytest

from capture.config import LinkerConfig
from capture.rows import Row, to_rows
from capture.traces import linker
from capture.traces.linker import link_all
from capture.traces.stream import StreamLinker
from tests.capture.traces.test_link_c import recorded_spans
from tests.capture.traces.test_linker_rate import background, stream

# bytes the context holds per span of its own, recorded nginx/hey traffic: 765 as whole rows (of
# which the attribute text ~410), ~300 as link facts (the object and its id strings; the Python's
# Held ~370: its times as ints)
MAX_BYTES_PER_HELD = 480


def _agent_linker() -> StreamLinker:
    cfg = LinkerConfig()
    return StreamLinker(cfg.window_s, int(cfg.slack_ms * 1e6), max_pending=cfg.max_pending_spans)


@pytest.mark.parametrize("python", [False, True])
def test_the_context_holds_link_facts_not_rows(python, monkeypatch):
    """Recorded nginx traffic (fresh ids, shifted in time: ~20 s of it) through the agent's linker
    settings; the bytes its context alone holds (freed when it is emptied), per span held."""
    base = recorded_spans("nginx_hey_pair")
    dur = max(s.end_time_unix_nano for s in base) - min(s.start_time_unix_nano for s in base)
    rnd = random.Random(16)
    monkeypatch.setattr(linker, "_link", None if python else linker._link)
    tracemalloc.start()
    try:
        sl = _agent_linker()
        for k in range(10):
            spans = copy.deepcopy(base)
            for s in spans:
                s.start_time_unix_nano += k * (dur + 1000)
                s.end_time_unix_nano += k * (dur + 1000)
                s.span_id, s.trace_id = f"{rnd.getrandbits(64):016x}", f"{rnd.getrandbits(128):032x}"
            rows = sorted(to_rows(spans), key=lambda r: r.end_time_unix_nano)
            del spans
            for i in range(0, len(rows), 256):
                sl.add(rows[i:i + 256])  # (released rows: the store's, dropped here)
            del rows
        gc.collect()
        held = sl._context
        assert len(held) > 2000 and sl.forced == 0
        rows_held = sum(1 for s in held if type(s) is Row)
        before = tracemalloc.get_traced_memory()[0]
        n = len(held)
        sl._context = held = []
        gc.collect()
        per_span = (before - tracemalloc.get_traced_memory()[0]) / n
    finally:
        tracemalloc.stop()
    assert per_span < MAX_BYTES_PER_HELD, f"{per_span:.0f} B per released span held"
    assert rows_held == 0


@pytest.mark.parametrize("python", [False, True])
def test_answered_client_spans_leave_the_context(python, monkeypatch):
    """A CLIENT span answered by its SERVER is not kept (its SERVER is, with the trace); the links
    come out as linking the whole stream at once gives them."""
    spans = background(2.0)
    whole = {s.span_id: s for s in link_all(copy.deepcopy(spans))}
    monkeypatch.setattr(linker, "_link", None if python else linker._link)
    sl = StreamLinker(window_s=0.5, max_pending=30_000)  # (runs every 0.25 s of the 2 s stream)
    rows = sorted(to_rows(spans), key=lambda r: r.end_time_unix_nano)
    out, i = [], 0
    while i < len(rows) and len(sl._context) < 1000:
        out += sl.add(rows[i:i + 200])
        i += 200
    kinds = [s.kind for s in sl._context]
    assert kinds.count("SERVER") > 1000 and kinds.count("CLIENT") == 0, kinds.count("CLIENT")
    out += stream(rows[i:], sl)
    assert len(out) == len(spans)
    assert all(r.parent_span_id == whole[r.span_id].parent_span_id for r in out)
    got = {r.span_id: r for r in out}
    assert all(r.trace_id == got[r.parent_span_id].trace_id for r in out if r.parent_span_id)
