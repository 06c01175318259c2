"""Connections opened and busy before the capture starts: every query sent after it is ready is one
CLIENT and one SERVER span with its own answer, and no span pairs a request with another's answer.

The programs attach one after the other, seconds apart on a busy host; data is followed only once
all are attached and the older sockets seeded (Loader.arm). Followed earlier, a server's requests
went up without their answers for those seconds, and the FIFO then paired each later answer with
a request that many places older (PostgreSQL extended protocol: spans seconds long, then
"connection closed before a response"). A client whose statement was prepared before the start
sends Bind first: detected, its spans (without the text it never showed) have their own answers."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest
import redis

from support.live import live_capture

pytestmark = pytest.mark.ebpf

GAP_S = 0.01  # between two queries of one connection: the start's attach window holds many


class Load:
    """Clients on connections opened before the capture, querying until stopped; each query's tag,
    its expected answer and when it was sent."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.sent: list[tuple[str, int, int]] = []  # (tag, expected rows or 0, sent at ns)
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def run(self, target, *args) -> None:
        def loop() -> None:
            try:
                target(*args)
            except BaseException as e:  # noqa: BLE001 — reported by the test, not lost in a thread
                self.errors.append(e)
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert not self.errors, self.errors


def pg_client(load: Load, dsn: str, name: str, extended: bool, prepared: bool = False) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        i = 0
        while not load.stop.is_set():
            n, tag = i % 7 + 1, f"{name}{i}"
            t = time.time_ns()
            if prepared:  # prepared at the first call, then Bind/Execute/Sync: no text after the start
                rows = conn.execute("SELECT g FROM generate_series(1, %s) g /* prepared */", (n,),
                                    prepare=True).fetchall()
            elif extended:  # Parse/Bind/Describe/Execute/Sync in one write
                rows = conn.execute(f"SELECT g FROM generate_series(1, %s) g /* {tag} */", (n,)).fetchall()
            else:
                rows = conn.execute(f"SELECT g FROM generate_series(1, {n}) g /* {tag} */").fetchall()
            assert len(rows) == n
            load.sent.append((tag, n, t))
            i += 1
            time.sleep(GAP_S)


def redis_client(load: Load, port: int, password: str) -> None:
    r = redis.Redis(host="127.0.0.1", port=port, password=password)
    r.ping()
    i = 0
    while not load.stop.is_set():
        t = time.time_ns()
        r.set(f"older:{i}", "v")
        load.sent.append((f"older:{i}", 0, t))
        i += 1
        time.sleep(GAP_S)


def check(sent: list[tuple[str, int, int]], ready_ns: int, end_ns: int, spans: list[dict], tag_of) -> None:
    """Queries sent while the capture ran (`ready_ns` to `end_ns`, the last 0.2 s left out: the
    capture stops soon after) each have their spans."""
    after = {tag: n for tag, n, t in sent if ready_ns < t < end_ns - 2e8}
    assert len(after) >= 20, len(after)
    for kind in ("CLIENT", "SERVER"):
        got: dict[str, list[dict]] = {}
        for s in spans:
            tag = tag_of(s)
            if s["kind"] == kind and tag is not None:
                got.setdefault(tag, []).append(s)
        missing = sorted(set(after) - set(got))
        assert not missing, (kind, len(missing), len(after), missing[:10])
        for tag, found in got.items():  # before the start too: none may carry another's answer
            assert len(found) == 1, (kind, tag, found)
            s = found[0]
            if s["start_time_unix_nano"] > end_ns - 2e8:
                continue  # in flight when the capture stopped: closed before a response
            assert s["status_code"] != "ERROR", (kind, s)
            assert s["end_time_unix_nano"] - s["start_time_unix_nano"] < 2e9, (kind, s)
            rows = s["attributes"].get("db.response.returned_rows")
            want = dict((t, n) for t, n, _ in sent).get(tag)
            if want:
                assert rows == want, (kind, tag, rows, want, s)


def capture_beside(load: Load, port: int):
    """A capture started 0.5 s into `load` (its connections older than the capture), kept 2 s
    after it is ready; the capture, when it was ready and when it ended (ns)."""
    time.sleep(0.5)
    try:
        with live_capture(port=port, extra=("--no-tls",)) as cap:
            ready_ns = time.time_ns()
            time.sleep(2.0)
            end_ns = time.time_ns()
    finally:
        load.join()
    return cap, ready_ns, end_ns


def test_postgres_connections_older_than_the_capture(postgres_server):
    pg = postgres_server
    dsn = f"host=127.0.0.1 port={pg['port']} user={pg['user']} password={pg['password']} dbname={pg['dbname']}"
    load = Load()
    load.run(pg_client, load, dsn, "s", False)
    load.run(pg_client, load, dsn, "x", True)
    load.run(pg_client, load, dsn, "p", True, True)
    cap, ready_ns, end_ns = capture_beside(load, pg["port"])

    def tag_of(s: dict) -> str | None:
        text = s["attributes"].get("db.query.text", "")
        return text.rsplit("/* ", 1)[1][:-3] if "/* " in text and "prepared" not in text else None
    check([x for x in load.sent if not x[0].startswith("p")], ready_ns, end_ns,
          [s for s in cap.spans if s["attributes"].get("db.query.text")], tag_of)

    # statements prepared before the start: their Bind is the first thing seen (no text). In start
    # order, their row counts are the run the client asked for while the capture ran, nothing
    # paired with another query's answer
    asked = [n for tag, n, _ in load.sent if tag.startswith("p")]
    during = [n for tag, n, t in load.sent if tag.startswith("p") and ready_ns < t < end_ns - 2e8]
    assert len(during) >= 10, len(during)
    for kind in ("CLIENT", "SERVER"):
        in_order = sorted(cap.spans, key=lambda s: s["start_time_unix_nano"])
        got = [s["attributes"].get("db.response.returned_rows") for s in in_order
               if s["kind"] == kind and "db.query.text" not in s["attributes"]
               and s["start_time_unix_nano"] < end_ns - 2e8]
        assert runs_within(during, got) and runs_within(got, asked), (kind, got, during, asked)


def runs_within(part: list, whole: list) -> bool:
    """`part` is a contiguous run of `whole`."""
    return any(whole[i:i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def test_redis_connection_older_than_the_capture(redis_server):
    load = Load()
    load.run(redis_client, load, redis_server["port"], redis_server["password"])
    cap, ready_ns, end_ns = capture_beside(load, redis_server["port"])

    def tag_of(s: dict) -> str | None:
        text = s["attributes"].get("db.query.text", "")
        return text.split()[1] if text.startswith("SET older:") else None
    check(load.sent, ready_ns, end_ns, cap.spans, tag_of)
