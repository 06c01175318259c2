"""psql and psycopg with sslmode=require against PostgreSQL with ssl=on: SQL spans from the plaintext."""
from __future__ import annotations

import subprocess

import psycopg
import pytest

from support import tls_targets as targets
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf


def test_psql_and_psycopg_over_tls(certs):
    psycopg.pq.version()  # load psycopg's own libpq/libssl now: found in our maps at capture start
    port = free_port()
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"
    with targets.postgres_tls(port, *certs):
        with live_capture(port=port) as cap:
            out = subprocess.run([str(targets.PG_BIN / "psql"), dsn, "-Atc", "SELECT 'via psql', 41 + 1"],
                                 capture_output=True, text=True, timeout=60)
            assert out.stdout.strip() == "via psql|42", out.stderr
            with psycopg.connect(dsn) as conn:
                assert conn.info.pgconn.ssl_in_use
                assert conn.execute("SELECT 'via psycopg', 2 * 21").fetchone() == ("via psycopg", 42)
    queries = {s["attributes"].get("db.query.text"): s for s in cap.spans if s["kind"] == "SERVER"}
    assert "SELECT 'via psql', 41 + 1" in queries, [s["name"] for s in cap.spans]
    assert "SELECT 'via psycopg', 2 * 21" in queries
    for text in ("SELECT 'via psql', 41 + 1", "SELECT 'via psycopg', 2 * 21"):
        s = queries[text]
        assert s["attributes"]["db.system"] == "postgresql"
        # no tls.library here: the connection began in plaintext (SSLRequest), and conntrack
        # names a connection's source after its first event (integrator note in the report)
    clients = {s["attributes"].get("db.query.text") for s in cap.spans if s["kind"] == "CLIENT"}
    assert {"SELECT 'via psql', 41 + 1", "SELECT 'via psycopg', 2 * 21"} <= clients
    assert cap.stats.get("conntrack.gaps", 0) == 0
