"""How few calls a candidate's change rests on, for the report: a test may be sure of a change
seen on a handful of calls (a quiet service, sampled traces), but the report says how few and
claims no more than NOT_SURE confidence in it. Ranks nothing: a few calls still beat none.
"""
from __future__ import annotations

from guardian.investigate.rank import Candidate

FEW_CALLS = 10  # fewer calls (or requests) than this on either side: few to go on
NOT_SURE = 0.5  # the most confidence a report gives a cause seen on so few


def few(c: Candidate) -> str | None:
    """What the report says when c's change rests on few calls, else None."""
    if c.calls is None or min(c.calls) >= FEW_CALLS:
        return None
    return (f"only {c.calls[1]} calls now and {c.calls[0]} before behind it: few to go on,"
            " so not sure")


def confidence(c: Candidate, share: float) -> float:
    """The report's confidence in c: its share of the scores, at most NOT_SURE when few calls."""
    got = min(0.95, share)
    return min(got, NOT_SURE) if few(c) else got
