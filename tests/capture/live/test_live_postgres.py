"""Live eBPF capture of PostgreSQL: psycopg (extended protocol, named and unnamed statements) and psql
(simple query) against a real postgres with cleartext password auth."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

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


IDLE_S = 1.5  # a pooled connection's wait between two fast queries


def test_idle_pooled_connections_do_not_stretch_spans(postgres_server):
    """Connections held idle between fast queries (a pool shared by threads, a transaction left
    open, LISTEN with a notification arriving while idle; simple and extended protocol): every
    span, CLIENT and SERVER, lasts its query, never up to the connection's next use (postgres.py
    Rule 4). The bound is a third of the idle wait so that a loaded host does not fail it."""
    import queue
    import threading
    import time

    pg = postgres_server
    dsn = f"host=127.0.0.1 port={pg['port']} user={pg['user']} password={pg['password']} dbname={pg['dbname']}"
    asked: dict[str, int] = {}

    def run(conn, n: int, tag: str, params: bool = False) -> None:
        sql = f"SELECT g FROM generate_series(1, {n}) g /* {tag} */"
        if params:
            sql = sql.replace(f"1, {n}", "1, %s::int")
        rows = conn.execute(sql, (n,) if params else None).fetchall()
        assert len(rows) == n
        asked[tag] = n

    with live_capture(port=pg["port"], extra=("--no-tls",)) as cap:
        pool: queue.Queue = queue.Queue()
        pool.put(psycopg.connect(dsn, autocommit=True))

        def pooled(k: int) -> None:
            conn = pool.get()
            try:
                run(conn, 1 + k, f"pool{k}")
                run(conn, 3 + k, f"pool{k}x", params=True)
            finally:
                pool.put(conn)
        for k in range(3):
            t = threading.Thread(target=pooled, args=(k,))
            t.start()
            t.join()
            time.sleep(IDLE_S)
        with psycopg.connect(dsn) as tx:  # a transaction left idle between its statements
            run(tx, 2, "tx1")
            time.sleep(IDLE_S)
            run(tx, 5, "tx2")
        with psycopg.connect(dsn, autocommit=True) as lis, psycopg.connect(dsn, autocommit=True) as other:
            lis.execute("LISTEN guardian_ch")
            other.execute("NOTIFY guardian_ch, 'x'")  # reaches `lis` while it is idle
            time.sleep(IDLE_S)
            run(lis, 4, "listen")
        pool.get().close()
    spans = [s for s in cap.spans if "/* " in s["attributes"].get("db.query.text", "")]
    for kind in ("CLIENT", "SERVER"):
        got = {s["attributes"]["db.query.text"].rsplit("/* ", 1)[1][:-3]: s for s in spans if s["kind"] == kind}
        assert set(got) == set(asked), (kind, sorted(got), sorted(asked))
        for tag, s in got.items():
            assert s["attributes"].get("db.response.returned_rows") == asked[tag], s
            assert s["end_time_unix_nano"] - s["start_time_unix_nano"] < IDLE_S / 3 * 1e9, s


PQPOOL = Path(__file__).with_name("pqpool")


def build_pqpool(out: Path) -> Path:
    """tests/capture/live/pqpool with Debian's Go and lib/pq (GOPATH mode: offline, as the lab builds);
    Go's build cache in the tree's build/ (lib/pq compiled once, ~25 s at load 20)."""
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "CGO_ENABLED": "0",
           "GOCACHE": str(Path(__file__).resolve().parents[3] / "build" / "gocache"), "GOFLAGS": ""}
    subprocess.run(["go", "build", "-o", str(out), "main.go"], cwd=PQPOOL, env=env, check=True, capture_output=True,
                   timeout=240)
    return out


@pytest.mark.slow
def test_go_pool_spans_last_no_longer_than_the_client_waited(postgres_server, tmp_path):
    """The fault lab's Go services' pattern (database/sql pool over lib/pq shared by goroutines,
    simple and extended queries, idle waits): every query is one CLIENT and one SERVER span, the
    SERVER span inside the CLIENT one, and neither longer than the client's own wait for its
    answer (a span stretched to the connection's next use would be)."""
    pg = postgres_server
    binary = build_pqpool(tmp_path / "pqpool")
    dsn = f"host=127.0.0.1 port={pg['port']} user={pg['user']} dbname={pg['dbname']} sslmode=disable"
    env = dict(os.environ, PGPASSWORD=pg["password"])  # not on the command line
    with live_capture(port=pg["port"], extra=("--no-tls",)) as cap:
        out = subprocess.run([str(binary), dsn, "4", "40", "60"], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
    waited = {}
    for line in out.stdout.splitlines():
        q = json.loads(line)
        waited[q["tag"]] = (q["ns"], q["rows"])
    assert len(waited) == 4 * 40
    by_kind: dict[str, dict[str, list]] = {"CLIENT": {}, "SERVER": {}}
    for s in cap.spans:
        text = s["attributes"].get("db.query.text", "")
        if s["kind"] in by_kind and "/* q" in text:
            by_kind[s["kind"]].setdefault(text.rsplit("/* ", 1)[1][:-3], []).append(s)
    for kind, got in by_kind.items():
        assert {t: len(v) for t, v in got.items()} == {t: 1 for t in waited}, (kind, cap.stats)
    wrong = []
    for tag, (ns, rows) in waited.items():
        c, s = by_kind["CLIENT"][tag][0], by_kind["SERVER"][tag][0]
        assert c["attributes"].get("db.response.returned_rows") == rows == s["attributes"].get("db.response.returned_rows")
        c_ns = c["end_time_unix_nano"] - c["start_time_unix_nano"]
        s_ns = s["end_time_unix_nano"] - s["start_time_unix_nano"]
        nested = c["start_time_unix_nano"] <= s["start_time_unix_nano"] <= s["end_time_unix_nano"] <= c["end_time_unix_nano"]
        if not nested or c_ns > ns or s_ns > ns:  # the capture's stamps lie inside the client's own
            wrong.append((tag, ns, c_ns, s_ns, nested))
    assert not wrong, wrong  # (tag, client waited ns, CLIENT span ns, SERVER span ns, nested)


def test_result_sets_larger_than_the_copy_end_with_their_answer(postgres_server):
    """Result sets of ~12 kB (the lab's reporting job), more than the capture copies of one write or
    read, on one connection with idle waits, extended and simple protocol: each is one CLIENT and
    one SERVER span, not an error, no longer than the client waited (postgres.py Rule 5; before,
    the first was lost and each later one lasted until the connection closed, as an ERROR)."""
    import time

    pg = postgres_server
    dsn = f"host=127.0.0.1 port={pg['port']} user={pg['user']} password={pg['password']} dbname={pg['dbname']}"
    waited = {}
    with live_capture(port=pg["port"], extra=("--no-tls",)) as cap:
        with psycopg.connect(dsn, autocommit=True) as conn:
            simple = psycopg.ClientCursor(conn)  # client-side binding: the simple query protocol
            for i in range(8):
                tag = f"big{i}"
                sql = f"SELECT g, repeat('x', 20) FROM generate_series(1, 400) g /* {tag} */"
                t0 = time.monotonic_ns()
                rows = (simple.execute(sql) if i % 2 else conn.execute(sql)).fetchall()
                waited[tag] = time.monotonic_ns() - t0
                assert len(rows) == 400
                time.sleep(0.3)
    for kind in ("CLIENT", "SERVER"):
        got: dict[str, list] = {}
        for s in cap.spans:
            text = s["attributes"].get("db.query.text", "")
            if s["kind"] == kind and "/* big" in text:
                got.setdefault(text.rsplit("/* ", 1)[1][:-3], []).append(s)
        assert {t: len(v) for t, v in got.items()} == {t: 1 for t in waited}, (kind, cap.stats)
        for tag, (s,) in got.items():
            assert s["status_code"] == "UNSET", s
            assert s["end_time_unix_nano"] - s["start_time_unix_nano"] <= waited[tag], (s, waited[tag])
