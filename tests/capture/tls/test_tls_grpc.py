"""Live gRPC over TLS from grpcio, whose BoringSSL has no symbols (capture/tls/boringssl.py).

grpc's TSI layer drives SSL_write/SSL_read over a BIO pair (memory BIOs): the plaintext is tied
to the socket by the memory-BIO path of bpf/guardian.bpf.c, from the thread that sends a
handshake step's output. A secure server in its own process, secure channels in this one (one,
then several at once: grpc's threads serve many connections); the certificate is made by the test.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from support.tls_targets import wait_for_log
from support.process import process
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf

CALLS = 6  # on one channel, then CHANNELS x PER_CHANNEL concurrent ones
CHANNELS, PER_CHANNEL = 4, 3
BIG = 6000  # bytes per concurrent message: grpc batches frames past MAX_PAYLOAD into one SSL call
SAYS = CALLS + CHANNELS * PER_CHANNEL
CYGRPC = os.path.realpath(grpc._cython.cygrpc.__file__)

SECURE_SERVER = textwrap.dedent('''
    import sys
    from concurrent import futures
    import grpc
    def say(req, ctx):
        return b"echo:" + req
    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    cert, key, port = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read(), sys.argv[3]
    handlers = {"Say": grpc.unary_unary_rpc_method_handler(say), "Fail": grpc.unary_unary_rpc_method_handler(fail)}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("guardian.Echo", handlers),))
    server.add_secure_port("127.0.0.1:" + port, grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    server.wait_for_termination()
''')


def make_cert(d) -> tuple[bytes, object, object]:
    """A self-signed certificate for localhost (grpc checks the subjectAltName)."""
    cert, key = d / "grpc-cert.pem", d / "grpc-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert.read_bytes(), cert, key


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpctls")
    pem, cert, key = make_cert(d)
    port = free_port()
    env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="0")
    server_cmd = [sys.executable, "-c", SECURE_SERVER, str(cert), str(key), str(port)]
    with process(server_cmd, port, env=env) as server:
        with live_capture(port=port) as cap:
            wait_for_log(cap, f"probes on {CYGRPC}")
            creds = grpc.ssl_channel_credentials(root_certificates=pem)
            with grpc.secure_channel(f"localhost:{port}", creds) as channel:
                say = channel.unary_unary("/guardian.Echo/Say")
                for i in range(CALLS):
                    assert say(b"hi-%d" % i, timeout=10) == b"echo:hi-%d" % i
                with pytest.raises(grpc.RpcError) as err:
                    channel.unary_unary("/guardian.Echo/Fail")(b"?", timeout=10)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND

            def channel_of_its_own(c: int) -> None:  # distinct args: no shared subchannel
                with grpc.secure_channel(f"localhost:{port}", creds, options=[("guardian.test", c)]) as ch:
                    say = ch.unary_unary("/guardian.Echo/Say")
                    with ThreadPoolExecutor(PER_CHANNEL) as calls:
                        assert all(calls.map(lambda i: say(b"%d" % i * BIG, timeout=10), range(PER_CHANNEL)))

            with ThreadPoolExecutor(CHANNELS) as pool:
                list(pool.map(channel_of_its_own, range(CHANNELS)))
    return cap, server.pid


def test_client_spans_are_plaintext_from_boringssl(traffic):
    cap, _ = traffic
    mine = [s for s in cap.spans if s["kind"] == "CLIENT" and s["resource"].get("process.pid") == os.getpid()]
    assert sorted(s["name"] for s in mine) == ["guardian.Echo/Fail"] + ["guardian.Echo/Say"] * SAYS, cap.stats
    assert {s["attributes"].get("tls.library") for s in mine} == {"boringssl"}
    fail = next(s for s in mine if s["name"] == "guardian.Echo/Fail")
    assert fail["status_code"] == "ERROR" and fail["attributes"]["rpc.grpc.status_code"] == 5
    assert all(s["attributes"]["rpc.grpc.status_code"] == 0 for s in mine if s is not fail)


def test_server_spans_are_plaintext_from_boringssl(traffic):
    cap, server_pid = traffic
    server = [s for s in cap.spans if s["kind"] == "SERVER" and s["resource"].get("process.pid") == server_pid]
    assert sorted(s["attributes"]["rpc.method"] for s in server) == ["Fail"] + ["Say"] * SAYS, cap.stats
    assert {s["attributes"].get("tls.library") for s in server} == {"boringssl"}
    assert sorted(s["attributes"]["rpc.grpc.status_code"] for s in server) == [0] * SAYS + [5]


def test_ciphertext_makes_no_spans(traffic):
    cap, _ = traffic
    assert len(cap.spans) == 2 * (SAYS + 1), [(s["kind"], s["name"]) for s in cap.spans]
    assert cap.stats.get("conntrack.gaps", 0) == 0
    lost = {k: v for k, v in cap.stats.items() if k.startswith("pipeline.http2.") and v and k.rsplit(".", 1)[1]
            in ("lost_bytes", "resyncs", "degraded_header_blocks", "responses_without_request")}
    assert lost == {}, cap.stats
    assert cap.stderr.count(f"probes on {CYGRPC}") == 1  # server and client map one file

