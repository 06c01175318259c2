"""Live differential test of HTTP/1 exchange pairing: two captures attached at once to the same
traffic, one unpaired (the reference) and one with capture.options.pair, give the same spans
(ids masked, timestamps within a tolerance: each capture's programs stamp for themselves),
while the paired one sends fewer ring records; likewise the compiled path (capture/_fastpath.c)
unpaired and paired against the Python path. Traffic: a Python keep-alive server (bodies in
separate writes, chunked replies, large bodies, 4xx/5xx, HEAD, 204, 304, pipelined requests,
Connection: close) and nginx under curl and hey; Redis (redis-benchmark, redis-py), Memcached and
PostgreSQL simple queries (pgbench -S -M simple) on the compiled path.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest

from capture.live import CaptureOptions, LiveCapture
from support.http_servers import nginx_server
from support.live import ebpf_or_skip, free_port
from support.process import process

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

TOLERANCE_NS = 5_000_000  # the two captures' stamps of one syscall: two programs apart

SERVER = textwrap.dedent('''
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a): pass
        def _body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""
        def do_GET(self, head=False):
            self._body()
            path = self.path.split("?")[0]
            code = 200
            if path.startswith("/status/"):
                code = int(path[8:])
                body = b"status %d\\n" % code
            elif path == "/nocontent":
                self.send_response(204); self.end_headers(); return
            elif path == "/etag" and self.headers.get("If-None-Match") == "v1":
                self.send_response(304); self.send_header("ETag", "v1"); self.end_headers(); return
            elif path == "/chunked":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for part in (b"alpha", b"beta" * 300, b"gamma"):
                    self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(part), part)); self.wfile.flush()
                self.wfile.write(b"0\\r\\n\\r\\n")
                return
            elif path == "/big":
                body = b"b" * 300_000
            else:
                body = b"hello " + path.encode() + b"\\n"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
        def do_HEAD(self):
            self.do_GET(head=True)
        def do_POST(self):
            body = self._body()
            out = b"got %d\\n" % len(body)
            self.send_response(201)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
''')

CLIENT = textwrap.dedent('''
    import http.client, socket, sys
    port, rounds = int(sys.argv[1]), int(sys.argv[2])
    c = http.client.HTTPConnection("127.0.0.1", port)
    def call(method, path, headers={}, body=None, split=False):
        if split:  # the body as a second write, as services often send it
            c.putrequest(method, path)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                c.putheader(k, v)
            c.endheaders()
            c.send(body)
        else:
            c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        return r.status
    seen = []
    for i in range(rounds):
        seen += [call("GET", f"/item/{i}?q=1"), call("GET", "/status/404"), call("GET", "/status/503"),
                 call("HEAD", "/head"), call("GET", "/nocontent"), call("GET", "/etag", {"If-None-Match": "v1"}),
                 call("GET", "/chunked"), call("GET", "/big"),
                 call("POST", "/items", {"Content-Type": "application/json"}, b'{"a": 1}', split=True),
                 call("POST", "/items", {}, b"x" * 3000)]
    c.close()
    # pipelined: three requests in one write on a fresh connection
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"".join(b"GET /pipe/%d HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % k for k in range(3)))
    got = b""
    while got.count(b"HTTP/1.1 200") < 3 or not got.endswith(b"\\n"):
        got += s.recv(65536)
    s.close()
    # Connection: close
    c = http.client.HTTPConnection("127.0.0.1", port)
    seen.append(call("GET", "/bye", {"Connection": "close"}))
    c.close()
    print(len(seen), *sorted(set(seen)))
''')


@contextmanager
def two_captures(port: int, variants: dict | None = None):
    """The unpaired and the paired capture (or `variants`: key -> CaptureOptions fields, TLS probes
    off unless they say), all attached and running, filtered to `port`."""
    ebpf_or_skip()
    variants = variants or {False: {"pair": False}, True: {"pair": True}}
    caps, spans, stops, threads = {}, {key: [] for key in variants}, {}, []
    try:
        for key, fields in variants.items():
            cap = caps[key] = LiveCapture(CaptureOptions(**{"port": port, "tls": False, **fields}))
            cap.start()
        for pair, cap in caps.items():
            stops[pair] = threading.Event()
            threads.append(threading.Thread(target=cap.run, args=(spans[pair].extend, stops[pair])))
            threads[-1].start()
        result = {"spans": spans}
        yield result
        # the last records through the ring buffers: a loaded host's captures may be seconds
        # behind, and a stop reads what is left for a bounded time only (capture/live.py)
        time.sleep(1.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(c.ring.pending_bytes() for c in caps.values()):
            time.sleep(0.2)
    finally:
        for ev in stops.values():
            ev.set()
        for t in threads:
            t.join(30)
        result["stats"] = {pair: cap.stats() for pair, cap in caps.items()}
        for cap in caps.values():
            cap.close()


CLIENT_END = ("client.address", "client.port")


def _key(span, ends: bool = True) -> str:
    d = span.to_dict()  # its attributes and resource are the span's own: copied before any change
    d["attributes"], d["resource"] = dict(d["attributes"]), dict(d["resource"])
    for k in ("trace_id", "span_id", "start_time_unix_nano", "end_time_unix_nano"):
        d.pop(k)
    # each capture reads a short-lived client's /proc/PID/cmdline for itself, which can catch
    # curl before exec or after exit: the process's identity (pid, name) is compared, not this
    d["resource"].pop("process.command_line", None)
    if not ends:
        for k in CLIENT_END:
            d["attributes"].pop(k, None)
    return json.dumps(d, sort_keys=True)


def _groups(spans: list, ends: bool = True) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in spans:
        out.setdefault(_key(s, ends), []).append(s)
    for group in out.values():
        group.sort(key=lambda s: s.start_time_unix_nano)
    return out


def assert_same_spans(result: dict, port: int, keys: tuple = (False, True)) -> tuple[int, int, int]:
    """Same spans from both captures (`keys`: the reference's and the other's; by default the
    unpaired and the paired); returns (spans, ring records of the one, of the other)."""
    old, new = ([s for s in result["spans"][p] if s.attributes.get("server.port") == port] for p in keys)
    stats = result["stats"]
    for p in keys:
        assert stats[p].get("kernel.ringbuf_drops", 0) == 0, "records lost: the comparison would mean nothing"
        assert not stats[p].get("ring.unread_at_stop_bytes"), "records left unread at the stop"
    if keys == (False, True):
        assert stats[True]["kernel.pair_paired"] > 0, "the paired capture paired nothing"
        assert stats[False]["kernel.pair_paired"] == 0
    assert len(new) == len(old), (len(old), len(new))
    matched, rest_old, rest_new = [], [], []
    old_groups, new_groups = _groups(old), _groups(new)
    for k in old_groups.keys() | new_groups.keys():
        a, b = old_groups.get(k, []), new_groups.get(k, [])
        m = min(len(a), len(b))
        matched += zip(a[:m], b[:m])
        rest_old += a[m:]
        rest_new += b[m:]
    # What is left may differ only by a client end one capture could not learn: where the kernel
    # did not learn a socket's ends, each capture asks /proc when it first sees the connection,
    # and a short-lived client may be gone by then (capture/conntrack.py)
    only_old = Counter(_key(s, False) for s in rest_old) - Counter(_key(s, False) for s in rest_new)
    only_new = Counter(_key(s, False) for s in rest_new) - Counter(_key(s, False) for s in rest_old)
    assert not only_old and not only_new, f"unpaired only: {list(only_old)[:3]}\npaired only: {list(only_new)[:3]}"
    unresolved = sum("client.port" not in s.attributes for s in rest_old + rest_new)
    assert unresolved >= len(rest_old), "spans that differ in a client end both captures learned"
    assert len(rest_old) <= max(2, len(old) // 100), len(rest_old)
    for a, b in matched:
        assert abs(a.start_time_unix_nano - b.start_time_unix_nano) < TOLERANCE_NS, _key(a)
        if a.attributes.get("error.type") != "no_response":  # it ends when each capture saw the close
            assert abs(a.end_time_unix_nano - b.end_time_unix_nano) < TOLERANCE_NS, _key(a)
    return len(old), stats[keys[0]]["kernel.events"], stats[keys[1]]["kernel.events"]


def test_python_server_and_client_same_spans_paired_and_unpaired(tmp_path):
    port = free_port()
    rounds = 8
    with process([sys.executable, "-c", SERVER, str(port)], port):
        with two_captures(port) as result:
            out = subprocess.run([sys.executable, "-c", CLIENT, str(port), str(rounds)], capture_output=True,
                                 text=True, timeout=120, check=True).stdout.split()
            curl = subprocess.run(["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} ",
                                   f"http://127.0.0.1:{port}/curl/1", f"http://127.0.0.1:{port}/status/500",
                                   "-X", "GET"], capture_output=True, text=True, timeout=30).stdout
    assert out == [str(rounds * 10 + 1), "200", "201", "204", "304", "404", "503"], out
    assert curl.split() == ["200", "500"]
    n, old_records, new_records = assert_same_spans(result, port)
    # each exchange seen from both ends: http.client's, the pipelined three, Connection: close, curl's two
    assert n == 2 * (rounds * 10 + 3 + 1 + 2), n
    names = {json.loads(_key(s))["name"] for s in result["spans"][True]}
    assert {"GET /pipe/{id}", "HEAD /head", "GET /chunked", "POST /items", "GET /etag"} <= names
    assert new_records < 0.8 * old_records, (old_records, new_records)


def test_nginx_under_curl_and_hey_same_spans_paired_and_unpaired():
    with nginx_server() as (port, _):
        with two_captures(port) as result:
            for path in ("/", "/missing", "/fail", "/big.html"):
                subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}{path}"], timeout=30,
                               check=True)
            hey = subprocess.run(["hey", "-n", "2000", "-c", "10", f"http://127.0.0.1:{port}/"],
                                 capture_output=True, text=True, timeout=120, check=True).stdout
    assert "[200]\t2000 responses" in hey
    n, old_records, new_records = assert_same_spans(result, port)
    assert n == 2 * (2000 + 4)
    # one record per exchange and side where the old path sent two
    assert new_records < 0.6 * old_records, (old_records, new_records)


HANG_SERVER = textwrap.dedent('''
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(64)
    held = []
    while True:  # reads each request and never answers
        c, _ = s.accept()
        c.recv(65536)
        held.append(c)
''')

HANG_CLIENT = textwrap.dedent('''
    import os, socket, sys, time
    port, n = int(sys.argv[1]), int(sys.argv[2])
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    for i, c in enumerate(socks):
        c.sendall(b"GET /hang/%d HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % i)
    time.sleep(0.3)
    os._exit(0)  # the kernel closes the sockets at exit: no close() record releases a held request
''')


def test_requests_held_in_the_kernel_when_their_process_exits_are_reported_unanswered():
    """A request the kernel's pairing holds for a response that never comes, from a process that
    exits without close(): taken from the kernel's map at the stop (and at sweeps, for processes
    gone), so the paired capture reports it unanswered, as the unpaired capture does."""
    port, n = free_port(), 5
    with process([sys.executable, "-c", HANG_SERVER, str(port)], port):
        with two_captures(port) as result:
            subprocess.run([sys.executable, "-c", HANG_CLIENT, str(port), str(n)], timeout=60, check=True)
            time.sleep(0.5)
    assert result["stats"][True]["kernel.pair_held"] >= 2 * n
    for pair in (False, True):
        spans = [s for s in result["spans"][pair] if s.name == "GET /hang/{id}"]
        kinds = Counter((s.kind, s.status_code, s.status_message) for s in spans)
        assert kinds == {("CLIENT", "ERROR", "connection closed before a response"): n,
                         ("SERVER", "ERROR", "connection closed before a response"): n}, (pair, kinds)


PYTHON_PATH = {"python": {"pair": False, "compiled": False}, "c": {"pair": False}, "c paired": {"pair": True}}


def test_compiled_path_gives_the_python_paths_spans_live():
    """The compiled path (capture/_fastpath.c), unpaired and paired, against the Python path on
    the same traffic: the Python server's awkward cases (which the C path hands back) and nginx
    under hey (which it takes)."""
    port = free_port()
    with process([sys.executable, "-c", SERVER, str(port)], port):
        with two_captures(port, PYTHON_PATH) as result:
            out = subprocess.run([sys.executable, "-c", CLIENT, str(port), "3"], capture_output=True, text=True,
                                 timeout=120, check=True).stdout.split()
            hey = subprocess.run(["hey", "-n", "2000", "-c", "10", f"http://127.0.0.1:{port}/hey"],
                                 capture_output=True, text=True, timeout=120, check=True).stdout
    assert out[0] == str(3 * 10 + 1) and "[200]\t2000 responses" in hey
    for key in ("c", "c paired"):
        n, _, _ = assert_same_spans(result, port, ("python", key))
        assert n == 2 * (3 * 10 + 3 + 1 + 2000), n
        stats = result["stats"][key]
        # the C path made the spans of the keep-alive exchanges; the awkward ones went back to Python
        assert stats["fastpath.spans"] >= 0.9 * 2 * 2000, (key, stats["fastpath.spans"])
        assert stats["fastpath.handed_over"] > 0
    assert "fastpath.spans" not in result["stats"]["python"]


def test_redis_same_spans_paired_and_unpaired(redis_server):
    import redis

    port, pw = redis_server["port"], redis_server["password"]
    with two_captures(port) as result:
        r = redis.Redis(host="127.0.0.1", port=port, password=pw)
        for i in range(30):
            r.set(f"k{i}", "v")
            r.get(f"k{i}")
        r.get("missing")
        with pytest.raises(redis.ResponseError):
            r.incr("k1")  # an error reply
        pipe = r.pipeline(transaction=False)
        for i in range(20):
            pipe.set(f"p{i}", "x" * 10)
        pipe.execute()
        r.set("big", b"z" * 100_000)  # over several syscalls, truncated by the capture
        assert len(r.get("big")) == 100_000
        sub = r.pubsub()  # pushes that answer no request on the subscriber's connection
        sub.subscribe("news")
        deadline = time.monotonic() + 5
        while sub.get_message(timeout=0.2) is None and time.monotonic() < deadline:
            pass
        r.publish("news", "hello")
        while sub.get_message(timeout=0.2) is None and time.monotonic() < deadline:
            pass
        sub.close()
        r.close()
        for pipeline in ("1", "16"):
            subprocess.run(["redis-benchmark", "-p", str(port), "-a", pw, "-n", "2000", "-c", "4", "-P", pipeline,
                            "-t", "get,set", "-q"], capture_output=True, timeout=120, check=True)
    n, old_records, new_records = assert_same_spans(result, port)
    # both ends of nearly every command (a pipelined read longer than the copied prefix loses a
    # few replies on either path alike)
    assert n >= 0.99 * 2 * (60 + 20 + 2 * 4000), n
    assert new_records < 0.8 * old_records, (old_records, new_records)


def test_postgres_same_spans_paired_and_unpaired(postgres_server):
    import psycopg

    from support.servers import PG_BIN

    pg = postgres_server
    dsn = f"host=127.0.0.1 port={pg['port']} user={pg['user']} password={pg['password']} dbname={pg['dbname']}"
    env = dict(__import__("os").environ, PGPASSWORD=pg["password"])
    bench = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(pg["port"]), "-U", pg["user"]]
    subprocess.run(bench + ["-i", "-s", "1", "-q", pg["dbname"]], env=env, capture_output=True, timeout=120, check=True)
    with two_captures(pg["port"]) as result:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE pairs (id int PRIMARY KEY, name text)")
            for i in range(20):
                conn.execute("INSERT INTO pairs VALUES (%s, %s)", (i, f"n{i}"))
            for i in range(5):
                conn.execute("SELECT name FROM pairs WHERE id = %s", (i,), prepare=True).fetchone()
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("INSERT INTO pairs VALUES (%s, %s)", (1, "dup"))
            assert conn.execute("SELECT " + " + ".join(["1"] * 3000)).fetchone()[0] == 3000  # a long query
        for mode in ("simple", "extended"):
            subprocess.run(bench + ["-S", "-c", "4", "-t", "300", "-M", mode, pg["dbname"]], env=env,
                           capture_output=True, timeout=120, check=True)
        # the TPC-B-like mix: transactions of seven statements, updates contending on rows
        subprocess.run(bench + ["-c", "4", "-t", "100", "-M", "extended", pg["dbname"]], env=env,
                       capture_output=True, timeout=120, check=True)
    n, old_records, new_records = assert_same_spans(result, pg["port"])
    assert n >= 0.99 * 2 * (20 + 5 + 1 + 1 + 2 * 4 * 300 + 7 * 4 * 100), n  # both ends of (nearly) every statement
    assert new_records < 0.8 * old_records, (old_records, new_records)


MYSQL_CLIENT = textwrap.dedent('''
    import sys
    import pymysql
    port, user, password, database = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    conn = pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, database=database,
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE pairs (id INT PRIMARY KEY, name VARCHAR(40))")
        for i in range(30):
            cur.execute("INSERT INTO pairs VALUES (%s, %s)", (i, f"u{i}"))
        for i in range(30):
            cur.execute("SELECT * FROM pairs WHERE id < %s", (i,))
            assert len(cur.fetchall()) == i
        for sql, error in (("INSERT INTO pairs VALUES (1, 'dup')", pymysql.err.IntegrityError),
                           ("SELECT * FROM missing_table", pymysql.err.ProgrammingError)):
            try:
                cur.execute(sql)
            except error:
                pass
            else:
                raise SystemExit("no error from " + sql)
    conn.close()
''')

MEMCACHED_CLIENT = textwrap.dedent('''
    import socket, sys
    with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s:
        f = s.makefile("rb")
        for i in range(40):
            s.sendall(b"set k%d 0 0 5\\r\\nhello\\r\\n" % i)
            assert f.readline() == b"STORED\\r\\n"
            s.sendall(b"get k%d missing\\r\\n" % i)
            assert f.readline().startswith(b"VALUE") and f.readline() == b"hello\\r\\n"
            assert f.readline() == b"END\\r\\n"
        s.sendall(b"".join(b"get k%d\\r\\n" % i for i in range(5)))  # pipelined
        ends = 0
        while ends < 5:
            ends += f.readline() == b"END\\r\\n"
        s.sendall(b"incr k1 1\\r\\n")  # not a number: an error reply
        assert f.readline().startswith(b"CLIENT_ERROR")
''')


def run_client(*argv: str) -> int:
    """A client in its own process (the agent never observes its own pid, so an in-process client
    would give SERVER spans only); returns its pid."""
    proc = subprocess.Popen([sys.executable, "-c", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return proc.pid


def sides(result: dict, port: int, server_pid: int, client_pid: int) -> tuple[int, int]:
    """(SERVER spans of the server process, CLIENT spans of the client process) of the unpaired
    capture (assert_same_spans checked the paired one gives the same); nothing else on the port."""
    spans = [s for s in result["spans"][False] if s.attributes.get("server.port") == port]
    server = sum(s.kind == "SERVER" and s.resource.get("process.pid") == server_pid for s in spans)
    client = sum(s.kind == "CLIENT" and s.resource.get("process.pid") == client_pid for s in spans)
    assert server + client == len(spans), Counter((s.kind, s.resource.get("process.pid")) for s in spans)
    return server, client


def test_mysql_same_spans_paired_and_unpaired(mariadb_server):
    m = mariadb_server
    with two_captures(m["port"]) as result:
        client_pid = run_client(MYSQL_CLIENT, str(m["port"]), m["user"], m["password"], m["database"])
    n, old_records, new_records = assert_same_spans(result, m["port"])
    server, client = sides(result, m["port"], m["pid"], client_pid)
    # both ends of every statement (pymysql's own statements on connect included)
    assert server == client >= 1 + 30 + 30 + 2 and n == server + client, (server, client, n)
    assert new_records < 0.8 * old_records, (old_records, new_records)


def test_memcached_same_spans_paired_and_unpaired(memcached_server):
    port = memcached_server["port"]
    with two_captures(port) as result:
        client_pid = run_client(MEMCACHED_CLIENT, str(port))
    n, old_records, new_records = assert_same_spans(result, port)
    server, client = sides(result, port, memcached_server["pid"], client_pid)
    assert server == client == 80 + 5 + 1, (server, client)  # both ends of every command
    assert new_records < 0.8 * old_records, (old_records, new_records)


def test_compiled_redis_gives_the_python_paths_spans_live(redis_server):
    """Redis in the compiled path, unpaired and paired, against the Python path on one redis-server:
    redis-benchmark GET/SET at -P 1 and 16 (taken in C) and redis-py's misses, error, pipelines,
    MULTI/EXEC, a 100 kB value and pub/sub (partly handed back)."""
    from bench.events import REDIS_PY

    port, pw = redis_server["port"], redis_server["password"]
    with two_captures(port, PYTHON_PATH) as result:
        run_client(REDIS_PY, str(port), pw)
        for pipeline in ("1", "16"):
            subprocess.run(["redis-benchmark", "-p", str(port), "-a", pw, "-n", "2000", "-c", "4", "-P", pipeline,
                            "-r", "1000", "-t", "get,set", "-q"], capture_output=True, timeout=120, check=True)
    for key in ("c", "c paired"):
        n, _, _ = assert_same_spans(result, port, ("python", key))
        assert n >= 0.99 * 2 * (2 * 4000 + 150 + 80), n
        stats = result["stats"][key]
        assert stats["fastpath.spans"] >= 0.9 * n, (key, stats["fastpath.spans"], n)
        assert stats["fastpath.handed_over"] > 0
    assert "fastpath.spans" not in result["stats"]["python"]


def test_compiled_memcached_gives_the_python_paths_spans_live(memcached_server):
    """Memcached text commands in the compiled path, unpaired and paired, against the Python path."""
    port = memcached_server["port"]
    with two_captures(port, PYTHON_PATH) as result:
        client_pid = run_client(MEMCACHED_CLIENT, str(port))
    for key in ("c", "c paired"):
        n, _, _ = assert_same_spans(result, port, ("python", key))
        assert n == 2 * (80 + 5 + 1), n  # both ends of every command
        stats = result["stats"][key]
        assert stats["fastpath.spans"] >= 0.9 * n, (key, stats["fastpath.spans"], n)
    assert client_pid and "fastpath.spans" not in result["stats"]["python"]


def test_compiled_postgres_simple_queries_give_the_python_paths_spans_live(postgres_server):
    """PostgreSQL simple queries (pgbench -S -M simple) in the compiled path, unpaired and paired,
    against the Python path; the extended protocol (pgbench -M extended) handed back throughout."""
    from support.servers import PG_BIN

    pg = postgres_server
    env = dict(__import__("os").environ, PGPASSWORD=pg["password"])
    bench = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(pg["port"]), "-U", pg["user"]]
    subprocess.run(bench + ["-i", "-s", "1", "-q", pg["dbname"]], env=env, capture_output=True, timeout=120, check=True)
    with two_captures(pg["port"], PYTHON_PATH) as result:
        for mode in ("simple", "extended"):
            subprocess.run(bench + ["-S", "-c", "4", "-t", "300", "-M", mode, pg["dbname"]], env=env,
                           capture_output=True, timeout=120, check=True)
    for key in ("c", "c paired"):
        n, _, _ = assert_same_spans(result, pg["port"], ("python", key))
        assert n >= 0.99 * 2 * 2 * 4 * 300, n
        stats = result["stats"][key]
        assert stats["fastpath.spans"] >= 0.9 * 2 * 4 * 300, (key, stats["fastpath.spans"], n)


def test_compiled_mysql_gives_the_python_paths_spans_live(mariadb_server):
    """MySQL/MariaDB text queries (pymysql: inserts, selects of 0 to 29 rows, a duplicate key, a
    missing table) in the compiled path, unpaired and paired, against the Python path."""
    m = mariadb_server
    with two_captures(m["port"], PYTHON_PATH) as result:  # its own table: the server is the module's
        run_client(MYSQL_CLIENT.replace("pairs", "pairs_c"), str(m["port"]), m["user"], m["password"], m["database"])
    for key in ("c", "c paired"):
        n, _, _ = assert_same_spans(result, m["port"], ("python", key))
        assert n >= 2 * (1 + 30 + 30 + 2), n
        stats = result["stats"][key]
        assert stats["fastpath.spans"] >= 0.8 * n, (key, stats["fastpath.spans"], n)
