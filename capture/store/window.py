"""Time windows from user input: `--since 15m`, `--start/--end` (ISO-8601 or unix), defaults.

Live stores default to the last 15 minutes; stores of recorded data (nothing in the last
15 minutes) default to their own time range. Baselines are the window just before, or the
first third of the window when nothing precedes it (recorded data).
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from capture.store.api import SpanFilter, SpanStore, TimeWindow

DEFAULT_SINCE_S = 15 * 60
_UNITS = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
# Fewer spans than this before the window: no usable baseline there.
MIN_BASELINE_SPANS = 20
MAX_NS = 2**63 - 1  # int64 nanoseconds end in 2262


class WindowError(ValueError):
    """Unparseable or empty window input; the message says what was expected."""


def parse_duration(text: str) -> float:
    """'15m' -> 900.0 seconds; a bare number is seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise WindowError(f"bad duration {text!r}: expected e.g. 90s, 15m, 2h, 1d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_time(text: str | int | float) -> int:
    """ISO-8601 (naive = UTC) or unix seconds/ms/ns -> unix nanoseconds."""
    if isinstance(text, (int, float)) or re.fullmatch(r"\s*\d+(\.\d+)?\s*", str(text)):
        v = float(text)
        # Magnitude tells the unit: seconds ~1e9, ms ~1e12, us ~1e15, ns ~1e18.
        for limit, scale in ((1e11, 1e9), (1e14, 1e6), (1e17, 1e3)):
            if v < limit:
                return int(v * scale)
        return int(v)
    s = str(text).strip().replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(s)
    except ValueError as e:
        raise WindowError(f"bad time {text!r}: expected ISO-8601 or unix seconds") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1e9)


def resolve_window(store: SpanStore | None, since: str | None = None,
                   start: str | int | None = None, end: str | int | None = None,
                   now_ns: int | None = None) -> TimeWindow:
    """The window the user asked for, or the default one for this store."""
    w = _resolve(store, since, start, end, now_ns)
    if not (0 <= w.start_ns < w.end_ns <= MAX_NS):
        raise WindowError("time out of range: expected times between 1970 and 2262")
    return w


def _resolve(store: SpanStore | None, since: str | None, start: str | int | None,
             end: str | int | None, now_ns: int | None) -> TimeWindow:
    now_ns = now_ns if now_ns is not None else time.time_ns()
    if since is not None and (start is not None or end is not None):
        raise WindowError("give either since or start/end, not both")
    if since is not None:
        return TimeWindow(now_ns - int(parse_duration(since) * 1e9), now_ns)
    if start is not None or end is not None:
        lo = parse_time(start) if start is not None else None
        hi = parse_time(end) if end is not None else now_ns
        if lo is None:
            lo = hi - DEFAULT_SINCE_S * 10**9
        if hi <= lo:
            raise WindowError("end must be after start")
        return TimeWindow(lo, hi)
    return default_window(store, now_ns)


def default_window(store: SpanStore | None, now_ns: int | None = None) -> TimeWindow:
    """Last 15 minutes of a live store; the whole range of a recorded one."""
    now_ns = now_ns if now_ns is not None else time.time_ns()
    live = TimeWindow(now_ns - DEFAULT_SINCE_S * 10**9, now_ns)
    rng = store.time_range() if store is not None else None
    if rng is None or rng.end_ns >= live.start_ns:
        return live
    return TimeWindow(rng.start_ns, rng.end_ns + 1)


def split_baseline(store: SpanStore, window: TimeWindow) -> tuple[TimeWindow, TimeWindow]:
    """(current, baseline): baseline is the equal window before, else the first third."""
    before = TimeWindow(window.start_ns - (window.end_ns - window.start_ns), window.start_ns)
    rng = store.time_range()
    if rng is not None and rng.start_ns < window.start_ns:
        got = store.spans(SpanFilter(window=before, limit=MIN_BASELINE_SPANS))
        if len(got) >= MIN_BASELINE_SPANS:
            return window, before
    cut = window.start_ns + (window.end_ns - window.start_ns) // 3
    return TimeWindow(cut, window.end_ns), TimeWindow(window.start_ns, cut)


def fmt_ns(ns: int) -> str:
    """Unix ns -> '2024-05-01T10:00:00Z' for humans."""
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
