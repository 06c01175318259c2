"""Live eBPF capture of MariaDB: PyMySQL (COM_QUERY, and COM_STMT_PREPARE/EXECUTE sent through its
packet layer) and the mariadb command-line client, against a real mariadbd with password auth."""
from __future__ import annotations

import json
import os
import struct
import subprocess

import pymysql
import pytest
from pymysql.constants import COMMAND

from support.live import live_capture

pytestmark = pytest.mark.ebpf


def _drain(conn, eofs: int) -> int:
    """Read packets until `eofs` EOF packets went by; return how many non-EOF packets came."""
    n = 0
    while eofs:
        pkt = conn._read_packet()
        if pkt.is_eof_packet():
            eofs -= 1
        else:
            n += 1
    return n


def prepare(conn, sql: str) -> int:
    conn._execute_command(COMMAND.COM_STMT_PREPARE, sql)
    ok = conn._read_packet()
    stmt_id, cols, params = struct.unpack_from("<IHH", ok._data, 1)
    _drain(conn, (params > 0) + (cols > 0))
    return stmt_id


def execute(conn, stmt_id: int, value: int) -> int:
    """COM_STMT_EXECUTE with one BIGINT parameter; returns the number of rows."""
    payload = struct.pack("<IBI", stmt_id, 0, 1) + b"\x00" + b"\x01" + struct.pack("<BB", 8, 0) + struct.pack("<q", value)
    conn._execute_command(COMMAND.COM_STMT_EXECUTE, payload)
    first = conn._read_packet()
    if first.is_ok_packet():
        return 0
    cols = first.read_length_encoded_integer()
    return _drain(conn, 2) - cols  # column definitions, EOF, rows, EOF


@pytest.fixture(scope="module")
def traffic(mariadb_server):
    m = mariadb_server
    with live_capture(port=m["port"], extra=("--no-tls",)) as cap:
        conn = pymysql.connect(host="127.0.0.1", port=m["port"], user=m["user"], password=m["password"],
                               database=m["database"], autocommit=True)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(40))")
            for i in range(8):
                cur.execute("INSERT INTO users VALUES (%s, %s)", (i, f"u{i}"))
            cur.execute("SELECT * FROM users WHERE id < 4")
            assert len(cur.fetchall()) == 4
            with pytest.raises(pymysql.err.ProgrammingError):
                cur.execute("SELECT * FROM no_such_table")
            with pytest.raises(pymysql.err.IntegrityError):
                cur.execute("INSERT INTO users VALUES (1, 'dup')")
            cur.execute("SELECT '" + "x" * 20000 + "' AS big")  # a query larger than the copied payload
        stmt = prepare(conn, "SELECT name FROM users WHERE id = ?")
        rows = [execute(conn, stmt, i) for i in (1, 2, 99)]
        conn._execute_command(COMMAND.COM_STMT_CLOSE, struct.pack("<I", stmt))
        conn.ping()
        conn.close()
        out = subprocess.run(["mariadb", "-h", "127.0.0.1", "-P", str(m["port"]), "-u", m["user"],
                              f"-p{m['password']}", m["database"], "-N", "-e", "SELECT COUNT(*) FROM users"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "8", out.stderr
    return cap, rows


def client_spans(cap, pid=None):
    return [s for s in cap.spans if s["kind"] == "CLIENT" and (pid is None or s["resource"].get("process.pid") == pid)]


def test_every_command_is_one_span(traffic):
    cap, rows = traffic
    assert rows == [1, 1, 0]
    spans = client_spans(cap, os.getpid())
    got = [(s["attributes"]["mysql.command"], s["attributes"].get("db.query.text", "")) for s in spans]
    assert got.count(("QUERY", "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(40))")) == 1
    assert sum(1 for c, t in got if t.startswith("INSERT INTO users VALUES")) == 9
    assert ("QUERY", "SELECT * FROM users WHERE id < 4") in got
    assert got.count(("STMT_PREPARE", "SELECT name FROM users WHERE id = ?")) == 1
    assert got.count(("STMT_EXECUTE", "SELECT name FROM users WHERE id = ?")) == 3  # text on execute
    assert got.count(("STMT_CLOSE", "SELECT name FROM users WHERE id = ?")) == 1
    assert ("PING", "") in got
    # PyMySQL's own SET/SELECT on connect are queries too: everything else above is exact
    assert sum(1 for c, t in got if t.startswith("SELECT 'xxx")) == 1
    assert len(spans) == 1 + 9 + 1 + 1 + 1 + 1 + 3 + 1 + 1 + sum(1 for c, t in got if t.startswith("SET ")), got


def test_attributes_errors_and_rows(traffic):
    cap, _ = traffic
    spans = client_spans(cap, os.getpid())
    sel = next(s for s in spans if s["attributes"].get("db.query.text") == "SELECT * FROM users WHERE id < 4")
    a = sel["attributes"]
    assert a["db.system"] == "mariadb" and a["db.namespace"] == "guardian"
    assert a["db.operation.name"] == "SELECT" and a["db.collection.name"] == "users"
    assert a["db.response.returned_rows"] == 4 and sel["status_code"] == "UNSET"
    missing = next(s for s in spans if "no_such_table" in s["attributes"].get("db.query.text", ""))
    assert missing["status_code"] == "ERROR" and missing["attributes"]["db.response.status_code"] == "1146"
    assert missing["attributes"]["db.mysql.sqlstate"] == "42S02"
    dup = [s for s in spans if s["status_code"] == "ERROR" and s["attributes"]["error.type"] == "1062"]
    assert len(dup) == 1
    big = next(s for s in spans if s["attributes"].get("db.query.text", "").startswith("SELECT 'xxx"))
    assert big["status_code"] == "UNSET" and big["attributes"]["db.response.returned_rows"] == 1


def test_cli_and_server_side(traffic, mariadb_server):
    cap, _ = traffic
    cli = [s for s in client_spans(cap) if s["attributes"].get("db.query.text") == "SELECT COUNT(*) FROM users"]
    assert len(cli) == 1 and cli[0]["resource"]["process.pid"] != os.getpid()
    server = [s for s in cap.spans if s["kind"] == "SERVER"]
    assert {s["resource"].get("process.pid") for s in server} == {mariadb_server["pid"]}
    assert len(server) == len(client_spans(cap)) > 20
    assert [s["attributes"].get("db.query.text") for s in server].count("SELECT COUNT(*) FROM users") == 1


def test_password_never_reaches_spans(traffic):
    cap, _ = traffic
    assert "s3cr3t-Pa55" not in json.dumps(cap.spans)
