"""Input checks shared by the routers: a bad window or attribute key is a 400, never a 500.

Does not parse times itself (capture.store.window does); it only turns every way that can fail
(huge numbers overflow a float, infinities, odd keys the store cannot quote) into a 400.
"""
from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException

from capture.store.api import SpanStore, TimeWindow
from capture.store.window import WindowError, parse_time, resolve_window

MAX_TIME_CHARS = 64  # an ISO-8601 time with zone and fraction fits easily
# OTel attribute keys: dotted lowercase names; we allow a little more, never quotes or backslashes.
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-:/]{0,127}$")


def _short(name: str, value: Any) -> None:
    if value is not None and len(str(value)) > MAX_TIME_CHARS:
        raise HTTPException(400, f"{name} is too long ({len(str(value))} characters): expected e.g. 15m, "
                                 "an ISO-8601 time or unix seconds")


def window_or_400(store: SpanStore | None, since: Any = None, start: Any = None, end: Any = None) -> TimeWindow:
    for name, v in (("since", since), ("start", start), ("end", end)):
        _short(name, v)
    try:
        return resolve_window(store, since, start, end)
    except (WindowError, ValueError, OverflowError) as e:
        raise HTTPException(400, f"bad time window: {e}") from None


def time_or_400(name: str, value: str) -> int:
    _short(name, value)
    try:
        return parse_time(value)
    except (WindowError, ValueError, OverflowError) as e:
        raise HTTPException(400, f"bad {name}: {e}") from None


def check_attribute_keys(args: dict[str, Any]) -> None:
    """Tool arguments: every key of `attributes` must look like an attribute name."""
    attrs = args.get("attributes")
    if attrs is None:
        return
    if not isinstance(attrs, dict):
        raise HTTPException(400, "attributes must be an object of key: value")
    for k in attrs:
        if not isinstance(k, str) or not ATTRIBUTE_KEY.match(k):
            raise HTTPException(400, f"bad attribute key {k!r}: expected e.g. http.route or db.system "
                                     "(letters, digits, _ . - : /)")
