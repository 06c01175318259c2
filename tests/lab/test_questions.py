"""The lab's questions never name their target, and no-fault windows carry their red herrings in turn."""
from __future__ import annotations

import random
from pathlib import Path

from lab.questions import QUESTIONS, leaks, names_target, question
from lab.record import calm_schedule

REPO = Path(__file__).resolve().parents[2]


def test_no_tuning_question_names_its_target():
    assert leaks(REPO / "evals" / "lab") == []
    assert leaks(REPO / "evals" / "heldout") == []


def test_a_name_inside_a_word_or_a_shared_stem_names_the_target():
    assert names_target("Are order fulfilment being processed?", ["fulfil"])
    assert names_target("Users get errors on the payment page", ["payments", "payments:18081"])
    assert names_target("The partner feed is slow since 10:02, why?", ["partner-api"])
    assert names_target("Why does ordering fail since 11:03?", ["orders"])
    assert names_target("Is inventory:8443 down?", ["inventory"])
    # a port alias never reads as a word; unrelated words of five letters do not match
    assert not names_target("Checkout is slow since 10:42, why?", ["payments", "127.0.0.1:18081"])
    assert not names_target("Product pages are slow", ["postgres", "postgresql"])
    assert not names_target("The home page is slow", ["redis", "redis-server", "redis-check-rdb"])


def test_a_feature_that_names_the_target_becomes_the_site():
    rng = random.Random(3)
    for _ in range(20):
        q = question(rng, "failing", "order fulfilment", 0.0, ["fulfil"])
        assert not names_target(q, ["fulfil"]) and "the site" in q.lower(), q
        q = question(rng, "backlog", "orders", 0.0, ["order-worker"])
        assert not names_target(q, ["order-worker"]) and "background" in q.lower(), q
    # a feature that does not name it is kept
    assert "checkout" in question(rng, "slow", "checkout", 0.0, ["payments"]).lower()


def test_calm_questions_name_no_cause():
    for symptom in ("calm", "calm-errors"):
        for t in QUESTIONS[symptom]:
            q = t.format(F="Checkout", f="checkout", t="10:42")
            assert "why" not in q.lower(), q  # asked whether, not why: nothing is known broken


def test_calm_kinds_are_taken_in_turn_and_cold_is_the_first_window():
    kinds = ["plain", "batch", "restart", "load-up", "cold"]
    todo = [object()] + [None] * 8 + [object()]
    got = calm_schedule(random.Random(1), todo, kinds)
    assert todo[0] is None and got[0] == "cold"
    assert 9 not in got and set(got) == set(range(9))
    rest = [got[i] for i in range(1, 9)]
    assert "cold" not in rest
    # two full turns of the four other kinds: each exactly twice
    assert sorted(rest) == sorted(["plain", "batch", "restart", "load-up"] * 2)
    assert calm_schedule(random.Random(1), [None, None], []) == {}
