"""Live eBPF capture of PostgreSQL: psycopg (extended protocol, named and unnamed statements) and psql
(simple query) against a real postgres with cleartext password auth."""
from __future__ import annotations

import json
import os
import subprocess

import psycopg
import pytest

from support.servers import PG_BIN
from support.live import live_capture

pytestmark = pytest.mark.ebpf


@pytest.fixture(scope="module")
def traffic(postgres_server):
    pg = postgres_server
    dsn = f"host=127.0.0.1 port={pg['port']} user={pg['user']} password={pg['password']} dbname={pg['dbname']}"
    long_query = "SELECT " + " + ".join(["1"] * 3000)  # ~12 kB: several syscalls, truncated copy
    with live_capture(port=pg["port"], extra=("--no-tls",)) as cap:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, name text)")
            for i in range(10):
                conn.execute("INSERT INTO accounts VALUES (%s, %s)", (i, f"n{i}"))
            assert len(conn.execute("SELECT * FROM accounts WHERE id < %s", (5,)).fetchall()) == 5
            for i in range(3):  # a named prepared statement, reused
                conn.execute("SELECT name FROM accounts WHERE id = %s", (i,), prepare=True).fetchone()
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute("SELECT * FROM missing_table")
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("INSERT INTO accounts VALUES (%s, %s)", (1, "dup"))
            assert conn.execute(long_query).fetchone()[0] == 3000
        env = dict(os.environ, PGPASSWORD=pg["password"])
        out = subprocess.run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(pg["port"]), "-U", pg["user"],
                              "-d", pg["dbname"], "-Atc", "SELECT count(*) FROM accounts"],
                             env=env, capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "10", out.stderr
    return cap, long_query


def client_spans(cap, pid=None):
    return [s for s in cap.spans if s["kind"] == "CLIENT" and (pid is None or s["resource"].get("process.pid") == pid)]


def test_every_psycopg_statement_is_one_span(traffic):
    cap, long_query = traffic
    spans = client_spans(cap, os.getpid())
    texts = [s["attributes"].get("db.query.text", "") for s in spans]
    assert texts.count("CREATE TABLE accounts (id int PRIMARY KEY, name text)") == 1
    assert texts.count("INSERT INTO accounts VALUES ($1, $2)") == 11, texts
    assert texts.count("SELECT * FROM accounts WHERE id < $1") == 1
    assert texts.count("SELECT name FROM accounts WHERE id = $1") == 3  # named statement: text on every Execute
    assert texts.count("SELECT * FROM missing_table") == 1
    assert sum(1 for t in texts if t.startswith("SELECT 1 + 1")) == 1
    assert len(spans) == 1 + 11 + 1 + 3 + 1 + 1, texts


def test_attributes_status_and_rows(traffic):
    cap, _ = traffic
    spans = client_spans(cap, os.getpid())
    by_text = {}
    for s in spans:
        by_text.setdefault(s["attributes"].get("db.query.text"), []).append(s)
    sel = by_text["SELECT * FROM accounts WHERE id < $1"][0]
    a = sel["attributes"]
    assert a["db.system"] == "postgresql" and a["db.namespace"] == "guardian"
    assert a["db.operation.name"] == "SELECT" and a["db.collection.name"] == "accounts"
    assert a["db.response.returned_rows"] == 5 and sel["status_code"] == "UNSET"
    missing = by_text["SELECT * FROM missing_table"][0]
    assert missing["status_code"] == "ERROR" and missing["attributes"]["db.response.status_code"] == "42P01"
    assert "missing_table" in missing["status_message"]
    dups = [s for s in by_text["INSERT INTO accounts VALUES ($1, $2)"] if s["status_code"] == "ERROR"]
    assert len(dups) == 1 and dups[0]["attributes"]["error.type"] == "23505"
    for s in spans:
        assert s["end_time_unix_nano"] >= s["start_time_unix_nano"]


def test_psql_simple_query_and_server_side(traffic, postgres_server):
    cap, _ = traffic
    psql = [s for s in client_spans(cap) if s["attributes"].get("db.query.text") == "SELECT count(*) FROM accounts"]
    assert len(psql) == 1 and psql[0]["attributes"]["db.response.returned_rows"] == 1
    server = [s for s in cap.spans if s["kind"] == "SERVER"]
    assert len(server) == len(client_spans(cap)), (len(server), len(client_spans(cap)))


def test_password_never_reaches_spans(traffic):
    cap, _ = traffic
    assert "s3cr3t-Pa55" not in json.dumps(cap.spans)
