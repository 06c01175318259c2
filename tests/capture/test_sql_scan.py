"""capture/sql_scan.h's sql_summary (the compiled path's, for ASCII statements) against
capture/protocols/sql.py's, the specification: the same (operation, collection) for statements
written to hit each branch of its regular expressions, and for random ones built from their
pieces (comments, blanks Python counts as such, keywords in any case, quoted names, cut texts)."""
from __future__ import annotations

import random

import pytest

from capture import fastpath
from capture.protocols.sql import sql_summary

pytestmark = pytest.mark.skipif(fastpath._fastpath is None, reason="capture._fastpath not built")

CASES = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 42;", "select * from t", "  \n\tUPDATE a SET x=1",
    "/* hint */ SELECT 1 FROM x", "/* a */ /* b */select 1 from y", "-- c\nINSERT INTO z VALUES (1)",
    "-- no newline SELECT 1 FROM t", "/* unterminated SELECT 1 FROM t", "/*/ SELECT 1 FROM t */ DELETE FROM u",
    "CREATE TABLE IF NOT EXISTS foo (a int)", "create table if exists bar", "CREATE TABLE IF NOT EXISTS",
    "CREATE TABLE IFX NOT EXISTS q", "CREATE TABLE IF NOTEXISTS q", "CREATE TABLE IF EXISTSfoo bar",
    "DROP TABLE \"Quoted\".\"T\"", "ALTER TABLE `m`.`n` ADD c int", "TRUNCATE TABLE t1", "COPY t FROM STDIN",
    "SELECT a FROMAGE b FROM real_t", "SELECT a_from x FROM t2", "SELECT 1 FROM\x1ct3", "\x1f\x0bSELECT 1 FROM t4",
    "SELECT * FROM a JOIN b ON", "SELECT x.y FROM", "WITH q AS (SELECT 1 FROM t) SELECT * FROM q", "BEGIN",
    "", "   ", "123 SELECT", "VACUUM FULL t", "SHOW search_path", "SELECTED FROM t", "SELECT 1 FROM `\"`",
    "SELECT " + "x" * 3000 + " FROM late", "SELECT " + "x" * 2030 + " FROM abcdefghijklmnop",
    "A" * 40 + " FROM t", "/* */ = SELECT/**/NOT)", "UPDATEx SET", "select 1 from _t", "SELECT 1 FROM 9t", "insert\ninto\tq values",
]
WORDS = ["SELECT", "select", "FROM", "from", "FrOm", "INTO", "UPDATE", "update", "TABLE", "IF", "NOT", "EXISTS",
         "JOIN", "join", "t", "a.b", "\"q\"", "`b`", "x_1", "1", "(", ")", ",", "*", "=", "'s'", "/*", "*/", "--",
         "\n", " ", "  ", "\t", "\x1c", "\x0c", "DELETE", "CREATE", "DROP", "ALTER", "TRUNCATE", "COPY", "WITH",
         "é", "\u00a0", "ſ"]


@pytest.mark.parametrize("query", CASES)
def test_each_branch_gives_pythons_summary(query):
    got = fastpath._fastpath.sql_summary(query)
    assert got == sql_summary(query) or got is None and "/*" in query


def test_random_statements_give_pythons_summary_or_are_left_to_python():
    rnd = random.Random(5)
    compared = 0
    for _ in range(30000):
        words = [rnd.choice(WORDS) for _ in range(rnd.randint(0, 12))]
        query = "".join(w + rnd.choice(["", " ", "\n", "/**/"]) for w in words)
        got = fastpath._fastpath.sql_summary(query)
        if got is None:  # left to Python: not ASCII, or a comment then no word (the regex backtracks)
            assert not query.isascii() or "/*" in query
            continue
        assert got == sql_summary(query), query
        compared += 1
    assert compared > 20000
