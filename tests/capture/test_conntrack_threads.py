"""The capture thread changes the connection table and its counters without a lock while
/metrics reads them from the API thread: a reader gets a copy, never "dictionary changed size
during iteration" (records built here, both threads real)."""
from __future__ import annotations

import sys
import threading
import time

from capture import abi, snapshot
from tests.capture.test_conntrack_bounds import NOW, request, tracker

SECONDS = 1.0


def close(conn_id: int, ts: int) -> bytes:
    raw = bytearray(request(conn_id, ts)[:abi.EVENT_SIZE])
    raw[abi.Event.kind.offset] = abi.EventKind.CLOSE
    return bytes(raw)


def churn(t, stop: threading.Event, opened: list[int]) -> None:
    """The capture thread's part: a new connection in, the oldest out, over and over."""
    conn_id, oldest = 1000, 1
    while not stop.is_set():
        t.on_event(request(conn_id, NOW))
        t.on_event(close(oldest, NOW))
        t.stats[f"churn{conn_id % 97}"] += 1  # a counter gaining keys, as gaps/evictions do
        conn_id, oldest = conn_id + 1, oldest + 1
    opened.append(conn_id)


def test_a_scrape_reads_the_tables_while_the_capture_thread_changes_them():
    spans: list = []
    t, pipeline = tracker(spans, max_tracked=10**6)
    t.fast = None  # every record through on_event: the Python table is the one that churns
    for conn_id in range(1, 1000):
        t.on_event(request(conn_id, NOW))
    stop, opened, errors = threading.Event(), [], []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # hand the GIL over often: a race shows within the second
    th = threading.Thread(target=churn, args=(t, stop, opened))
    th.start()
    scrapes = 0
    try:
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            try:
                stats = t.parser_stats()
                counters = {f"conntrack.{k}": v for k, v in snapshot.copy(t.stats).items()}
            except RuntimeError as e:
                errors.append(str(e))
            scrapes += 1
    finally:
        stop.set()
        th.join()
        sys.setswitchinterval(old)
    assert opened and opened[0] > 1000 + 100, "the capture thread hardly ran: the race was not tried"
    assert scrapes > 10
    assert not errors, f"{len(errors)} of {scrapes} scrapes failed: {errors[0]}"
    assert isinstance(stats, dict) and counters["conntrack.connections"] >= 999
