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
ERROR_DELTA = 0.02  # an error-rate shift: at least this much more error rate (and error_p sure)
EXACT_ERRORS = 500  # failed calls (both windows) up to which error_p sums the exact tail
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


def error_p(cur: RedStats, base: RedStats) -> float:
    """One-sided p-value that cur's error rate is above base's. Under no change the calls of
    both windows are exchangeable: of all failed calls, the number among cur's is
    hypergeometric (Fisher's exact test), so 2 failures in 9 calls against none in 40 has its
    exact chance (about 3 %), which a z-score on so few calls overstates. Above EXACT_ERRORS
    failures the normal tail of the same test (the two-proportion z-score) is as good."""
    k1, n1, k0, n0 = cur.errors, cur.count, base.errors, base.count
    if n1 == 0 or n0 == 0 or k1 == 0:
        return 1.0
    if k1 + k0 <= EXACT_ERRORS:
        return hypergeom_sf(k1, n1, k1 + k0, n1 + n0)
    p = (k1 + k0) / (n1 + n0)
    se = math.sqrt(max(p * (1 - p), 1e-12) * (1 / n1 + 1 / n0))
    return 0.5 * math.erfc((k1 / n1 - k0 / n0) / se / math.sqrt(2))


def error_shift(cur: RedStats, base: RedStats) -> bool:
    """The error rate grew by ERROR_DELTA and error_p is SURE of it, on MIN_COUNT calls at least.
    An operation with no baseline calls at all has nothing to be tested against: it counts
    when MIN_COUNT of its calls failed."""
    if cur.count < MIN_COUNT or cur.error_rate - base.error_rate < ERROR_DELTA:
        return False
    if base.count == 0:
        return cur.errors >= MIN_COUNT
    return error_p(cur, base) < 1 - SURE


def latency_ratio(cur: RedStats, base: RedStats) -> float:
    return cur.p95_ms / base.p95_ms if base.p95_ms > 0 else 1.0


def latency_shift(cur: RedStats, base: RedStats, tail_sure: float = 0.0) -> bool:
    """p95 grew by LATENCY_RATIO and LATENCY_DELTA_MS. A p95 from a few dozen calls is one or
    two calls' time: alone it needs enough calls behind it, or `tail_sure`, how sure a test on
    the calls themselves (tail_p) is that more of them cross the baseline's p99 than chance."""
    if cur.count < MIN_COUNT or base.count < MIN_COUNT:
        return False
    typical = base.p50_ms > 0 and cur.p50_ms / base.p50_ms >= TAIL_ONLY_P50
    return (latency_ratio(cur, base) >= LATENCY_RATIO
            and cur.p95_ms - base.p95_ms >= LATENCY_DELTA_MS
            and (typical or cur.count >= TAIL_ONLY_COUNT or tail_sure >= SURE))


def tail_to_test(cur: RedStats, base: RedStats) -> bool:
    """Whether a latency shift hangs on the tail of a quiet operation alone: only a test on its
    calls can tell (latency_shift's tail_sure), its percentiles cannot."""
    return latency_shift(cur, base, tail_sure=1.0) and not latency_shift(cur, base)


def traffic_drop(cur: RedStats, base: RedStats, tested: bool = True) -> bool:
    """The rate fell below TRAFFIC_DROP of the baseline's and, when tested, fewer calls came
    than chance allows: a few calls a minute come and go unevenly (drop_p)."""
    if base.count < 2 * MIN_COUNT or cur.rate_per_s >= TRAFFIC_DROP * base.rate_per_s:
        return False
    return not tested or drop_p(cur, base) < 1 - SURE


def drop_p(cur: RedStats, base: RedStats) -> float:
    """One-sided p-value that cur's calls are fewer than the baseline's rate gives, exact:
    of all calls in both windows, the share falling in cur's time is binomial under no change."""
    if base.rate_per_s <= 0:
        return 1.0
    t0 = base.count / base.rate_per_s
    t1 = cur.count / cur.rate_per_s if cur.count and cur.rate_per_s > 0 else t0
    n = cur.count + base.count
    # P(X <= cur.count) for X ~ Binomial(n, t1 / (t0 + t1))
    return 1.0 - binom_sf(cur.count + 1, n, t1 / (t0 + t1))


def health(cur: RedStats, base: RedStats) -> str:
    """'ok' | 'degraded' (latency/traffic shift) | 'failing' (error shift) | 'idle'."""
    if cur.count == 0:
        return "idle" if base.count == 0 else "stopped"
    if error_shift(cur, base):
        return "failing"
    if latency_shift(cur, base) or traffic_drop(cur, base):
        return "degraded"
    return "ok"


# -- tests that hold for small samples ---------------------------------------------------------
MIN_SAMPLE = 5  # fewer observations on a side than this: a test may say "changed", never rank alone
SURE = 0.99  # confidence (1 - p) at which a change counts as shown
TAIL_Q = 0.99  # the baseline quantile a tail test counts calls above


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(_log_comb(n, i) + i * lp + (n - i) * lq) for i in range(k, n + 1)))


def proportion_p(k1: int, n1: int, k0: int, n0: int, more: bool = True) -> float:
    """One-sided p-value that the share k1/n1 is above (more) or below k0/n0.

    The baseline share is shrunk towards 1/2 by one pseudo-observation so 0 of 40 is not
    read as "never" (a new call seen 2 times in 30 is then unlikely, not impossible)."""
    if n1 == 0 or n0 == 0:
        return 1.0
    p0 = (k0 + 0.5) / (n0 + 1)
    if more:
        return binom_sf(k1, n1, p0)
    return binom_sf(n1 - k1, n1, 1 - p0)


def hypergeom_sf(k: int, n: int, marked: int, total: int) -> float:
    """P(X >= k) for X ~ Hypergeometric: k or more marked ones in n drawn without replacement
    from `total` of which `marked` are marked, exact."""
    lo, hi = max(0, n - (total - marked)), min(n, marked)
    if k <= lo:
        return 1.0
    if k > hi:
        return 0.0
    whole = _log_comb(total, n)
    return min(1.0, sum(math.exp(_log_comb(marked, i) + _log_comb(total - marked, n - i) - whole)
                        for i in range(k, hi + 1)))


def tail_line(base: list[float]) -> float:
    """The baseline's p99 as a line no more than 1 % of its calls crossed: its largest value
    below 100 calls (a p99 interpolated from a few calls is one call's time, not a line)."""
    b = sorted(base)
    return b[max(0, math.ceil(TAIL_Q * len(b)) - 1)] if b else 0.0


def tail_p(cur: list[float], base: list[float], floor_ms: float = 0.0) -> tuple[float, int]:
    """One-sided p-value that more of cur's calls than chance lie above the baseline's p99
    (tail_line, or floor_ms when higher), and how many do. Under no change the calls of both
    windows are exchangeable: of all calls above the line, the number from cur is
    hypergeometric (Fisher's exact test), so k of n calls above anything a baseline of a few
    calls saw has an exact chance. floor_ms: what the service's other calls already took (its
    p99 over every operation): a service already that slow is not new to slowness."""
    if not cur or not base:
        return 1.0, 0
    line = max(tail_line(base), floor_ms)
    k1 = sum(1 for x in cur if x > line)
    k0 = sum(1 for x in base if x > line)
    if k1 == 0:
        return 1.0, 0
    return hypergeom_sf(k1, len(cur), k1 + k0, len(cur) + len(base)), k1


def tied_ranks(ordered: list[float]) -> tuple[list[float], float]:
    """Ranks (from 1) of values in ascending order, tied values sharing their average rank, and
    the tie term (sum of t^3 - t over runs of t equal values) for a rank test's variance."""
    ranks = [0.0] * len(ordered)
    ties, i = 0.0, 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[i]:
            j += 1
        r = (i + j) / 2 + 1
        for t in range(i, j + 1):
            ranks[t] = r
        ties += (j - i + 1) ** 3 - (j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_p(cur: list[float], base: list[float]) -> float:
    """One-sided Mann-Whitney p-value that `cur` tends to be larger than `base`.

    Exact (no ties assumed) when both samples are small, else the normal approximation with
    tie and continuity correction. 1.0 when either sample is empty."""
    n1, n0 = len(cur), len(base)
    if not n1 or not n0:
        return 1.0
    both = sorted([(v, 1) for v in cur] + [(v, 0) for v in base])
    ranks, ties = tied_ranks([v for v, _ in both])
    u = sum(r for r, (_, side) in zip(ranks, both) if side) - n1 * (n1 + 1) / 2
    if n1 * n0 <= 400 and ties == 0:
        return _exact_u_sf(u, n1, n0)
    mu = n1 * n0 / 2
    n = n1 + n0
    var = n1 * n0 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u - mu - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _exact_u_sf(u: float, n1: int, n0: int) -> float:
    """P(U >= u) under the null, by counting arrangements (n1 * n0 small)."""
    # counts[m][k]: arrangements of m "cur" among m + n0 values with U = k, built one cur at a time
    prev = [[1] + [0] * (n1 * n0) for _ in range(n0 + 1)]  # m = 0: U = 0 whatever n0
    for m in range(1, n1 + 1):
        cur = [[0] * (n1 * n0 + 1) for _ in range(n0 + 1)]
        cur[0][0] = 1
        for j in range(1, n0 + 1):
            for k in range(n1 * n0 + 1):
                # largest value is a cur (adds j to U) or a base value
                a = prev[j][k - j] if k >= j else 0
                cur[j][k] = a + cur[j - 1][k]
        prev = cur
    counts = prev[n0]
    total = sum(counts)
    return sum(c for k, c in enumerate(counts) if k >= math.ceil(u - 1e-9)) / total


def confidence(p: float) -> float:
    """How sure a test is that something changed: 1 - p, rounded for reports."""
    return round(max(0.0, min(1.0, 1.0 - p)), 3)


def scaled(stats: RedStats, seconds: float, covered_s: float) -> RedStats:
    """Rates per second of data actually covered (a window running past the data's end)."""
    if covered_s <= 0 or covered_s >= seconds:
        return stats
    return stats.model_copy(update={"rate_per_s": round(stats.count / covered_s, 4)})
