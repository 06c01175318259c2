"""RED numbers as results, and the tests that say whether now differs from the baseline.

The thresholds here are the one definition of "degraded" that every tool and the
investigator share.
"""
from __future__ import annotations

import math

from pydantic import BaseModel

from capture.span import Span
from capture.store.api import EdgeRow, RedRow

MIN_COUNT = 5  # fewer calls than this: too few to call anything a shift
ERROR_Z = 3.0  # two-proportion z-score for an error-rate shift
ERROR_DELTA = 0.02  # and at least this much more error rate
LATENCY_RATIO = 1.5  # p95 at least this times the baseline
LATENCY_DELTA_MS = 5.0  # and at least this many ms slower
TAIL_ONLY_P50 = 1.3  # a p95 shift counts if p50 moved this much too
TAIL_ONLY_COUNT = 50  # or if it rests on this many calls
TRAFFIC_DROP = 0.5  # rate below this share of the baseline
HEALTH_ORDER = {"failing": 0, "stopped": 1, "degraded": 2, "ok": 3, "idle": 4}  # worst first


class RedStats(BaseModel):
    count: int = 0
    errors: int = 0
    rate_per_s: float = 0.0
    error_rate: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0


def from_row(row: RedRow | EdgeRow | None) -> RedStats:
    if row is None:
        return RedStats()
    return RedStats(count=row.count, errors=row.errors, rate_per_s=round(row.rate_per_s, 4),
                    error_rate=round(row.error_rate, 4), p50_ms=round(row.p50_ms, 3),
                    p95_ms=round(row.p95_ms, 3), p99_ms=round(row.p99_ms, 3))


def _quantile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    i = q * (len(sorted_vals) - 1)
    lo, hi = math.floor(i), math.ceil(i)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (i - lo)


def from_spans(spans: list[Span], seconds: float) -> RedStats:
    """RED of a span sample (for calls red() does not cover, e.g. CLIENT spans)."""
    d = sorted(s.duration_ns / 1e6 for s in spans)
    n = len(d)
    errors = sum(1 for s in spans if s.status_code == "ERROR")
    return RedStats(count=n, errors=errors, rate_per_s=round(n / max(seconds, 1e-9), 4),
                    error_rate=round(errors / n, 4) if n else 0.0,
                    p50_ms=round(_quantile(d, 0.5), 3), p95_ms=round(_quantile(d, 0.95), 3),
                    p99_ms=round(_quantile(d, 0.99), 3))


def error_z(cur: RedStats, base: RedStats) -> float:
    """Two-proportion z-score of cur's error rate over base's (0 when too few calls)."""
    if cur.count < MIN_COUNT:
        return 0.0
    if base.count == 0:
        return 10.0 if cur.errors >= MIN_COUNT else 0.0
    p1, p0 = cur.errors / cur.count, base.errors / base.count
    p = (cur.errors + base.errors) / (cur.count + base.count)
    se = math.sqrt(max(p * (1 - p), 1e-9) * (1 / cur.count + 1 / base.count))
    return (p1 - p0) / se


def error_shift(cur: RedStats, base: RedStats) -> bool:
    return error_z(cur, base) >= ERROR_Z and cur.error_rate - base.error_rate >= ERROR_DELTA


def latency_ratio(cur: RedStats, base: RedStats) -> float:
    return cur.p95_ms / base.p95_ms if base.p95_ms > 0 else 1.0


def latency_shift(cur: RedStats, base: RedStats) -> bool:
    if cur.count < MIN_COUNT or base.count < MIN_COUNT:
        return False
    # A p95 from a few dozen calls is noisy: alone it needs enough calls behind it.
    typical = base.p50_ms > 0 and cur.p50_ms / base.p50_ms >= TAIL_ONLY_P50
    return (latency_ratio(cur, base) >= LATENCY_RATIO
            and cur.p95_ms - base.p95_ms >= LATENCY_DELTA_MS
            and (typical or cur.count >= TAIL_ONLY_COUNT))


def traffic_drop(cur: RedStats, base: RedStats) -> bool:
    return base.count >= 2 * MIN_COUNT and cur.rate_per_s < TRAFFIC_DROP * base.rate_per_s


def health(cur: RedStats, base: RedStats) -> str:
    """'ok' | 'degraded' (latency/traffic shift) | 'failing' (error shift) | 'idle'."""
    if cur.count == 0:
        return "idle" if base.count == 0 else "stopped"
    if error_shift(cur, base):
        return "failing"
    if latency_shift(cur, base) or traffic_drop(cur, base):
        return "degraded"
    return "ok"
