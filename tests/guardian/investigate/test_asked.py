"""A question about failures (guardian/investigate/asked.py): a failure a test showed grew ranks
above the slowdowns ranked over it; a slowdown alone, a saturation, or a question about slowness
keep their places."""
from __future__ import annotations

from guardian.investigate.asked import failures_asked, failures_first
from guardian.investigate.rank import Candidate


def _cands() -> list[Candidate]:
    db = Candidate(key=("postgres", "SELECT items"), kind="latency", score=3.0)
    net = Candidate(key=("catalog", ""), kind="network", score=1.5)
    tax = Candidate(key=("tax", "GET /rate"), kind="error", score=0.6, shown=True)
    ads = Candidate(key=("ads", "GET /banner"), kind="error", score=0.3)
    return [db, net, tax, ads]


def _order(cands: list[Candidate]) -> list[str]:
    return [c.key[0] for c in cands]


def test_questions_about_failures():
    assert failures_asked("Ordering is failing since 17:03, why?")
    assert failures_asked("Users get errors on checkout since about 10:54. What is broken?")
    assert failures_asked("Why does the shop fail since 9:00?")
    assert not failures_asked("Why is checkout slower than usual since 10:54?")
    assert not failures_asked("The home page is slow since 12:00, why?")


def test_a_shown_failure_ranks_above_slowdowns_when_failures_are_asked_about():
    cands = _cands()
    failures_first("Ordering is failing since 17:03, why?", cands)
    assert _order(cands) == ["tax", "postgres", "catalog", "ads"]
    assert sorted(c.score for c in cands) == [0.3, 0.6, 1.5, 3.0]  # the same scores, moved
    assert "question is about failures" in cands[1].change


def test_slowness_asked_or_no_failure_shown_or_a_saturation_above_keep_the_order():
    cands = _cands()
    failures_first("Why is ordering slower than usual since 17:03?", cands)
    assert _order(cands) == ["postgres", "catalog", "tax", "ads"]
    cands = _cands()
    cands[2].shown = False  # no test is sure the failures grew: a few failures of a calm day
    failures_first("Ordering is failing since 17:03, why?", cands)
    assert _order(cands) == ["postgres", "catalog", "tax", "ads"]
    cands = _cands()
    cands[0].kind = "saturation"  # a pool that ran out fails requests: it answers the question
    failures_first("Ordering is failing since 17:03, why?", cands)
    assert _order(cands) == ["postgres", "catalog", "tax", "ads"]
