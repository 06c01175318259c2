"""A cause seen on a handful of calls is reported as not sure (guardian/investigate/sparse.py):
its rank stays, its confidence is at most NOT_SURE and its description says how few."""
from __future__ import annotations

import random

from guardian.evals.variants import sparse
from guardian.investigate.rank import Candidate
from guardian.investigate.sparse import NOT_SURE, confidence, few
from tests.guardian.investigate.mesh import Mesh
from tests.guardian.investigate.test_classes import top


def test_a_change_on_a_few_calls_is_not_sure():
    c = Candidate(key=("recs", "GET /recs"), kind="network", calls=(8, 7))
    assert confidence(c, 0.9) == NOT_SURE and "only 7 calls now and 8 before" in few(c)
    many = Candidate(key=("recs", "GET /recs"), kind="network", calls=(80, 70))
    assert confidence(many, 0.9) == 0.9 and few(many) is None
    assert confidence(Candidate(key=("recs", ""), kind="latency"), 0.99) == 0.95  # no count: as before


def test_a_cause_found_in_sampled_traces_says_how_few_calls_it_rests_on():
    spans = sparse(Mesh("slow:pay", seed=8, duration_s=240).build(), random.Random(2), {}, keep=0.03)
    rc = top(spans).root_causes[0]
    assert rc.service == "pay", rc
    assert rc.confidence <= NOT_SURE and "few to go on" in rc.description, rc
