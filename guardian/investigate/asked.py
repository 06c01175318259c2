"""What the question asks about: a question that says requests fail ("ordering is failing",
"users get errors") asks what makes them fail. A slowdown found beside a failure that a test
showed grew (rank.Candidate.shown on an error or dependency candidate) does not answer it:
the failure ranks first. A slowdown alone still answers (timeouts fail requests too), and so
does a saturation (a pool that ran out fails requests waiting for it).
"""
from __future__ import annotations

import re

from guardian.investigate.rank import FAMILY, Candidate

FAILING = re.compile(r"\b(fail\w*|errors?|broken|5\d\d)\b", re.IGNORECASE)
SLOWDOWN = ("latency", "network")  # kinds that make requests slower, not fail


def failures_asked(question: str) -> bool:
    return bool(FAILING.search(question))


def failures_first(question: str, cands: list[Candidate]) -> None:
    """When the question is about failures and only slowdowns rank above the best shown failure,
    it takes the first place and its score; they each move down one (the scores stay the same
    set, so does every confidence's size). cands are sorted by score, and stay so."""
    if not failures_asked(question):
        return
    shown = next((c for c in cands if FAMILY[c.kind] == 0 and c.shown), None)
    if shown is None:
        return
    above = cands[:cands.index(shown)]
    if not above or any(c.kind not in SLOWDOWN for c in above):
        return
    scores = [c.score for c in above] + [shown.score]
    shown.score = scores[0]
    for c, score in zip(above, scores[1:]):
        c.score = score
        c.change += "; the question is about failures, and a test showed a failure grew elsewhere"
    cands.sort(key=lambda c: -c.score)
