"""Live differential test of exchange pairing on TLS plaintext: an unpaired capture (the reference)
and one with capture.options.pair, both with the TLS uprobes, attached at once to the same HTTPS
traffic, give the same spans (ids masked, stamps within a tolerance) while the paired one sends
fewer ring records. Servers: nginx (OpenSSL: SSL_read/SSL_write) and a Go crypto/tls server;
clients: curl, wrk (OpenSSL) and Python's ssl module (the _ex calls), all started after the
captures so both probe them from their first request.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from support import tls_targets as targets
from support.live import free_port
from tests.capture.live.test_live_pairing import assert_same_spans, two_captures

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

# wrk at saturation through two captures' uprobes fills a default ring in bursts (records lost
# would void the comparison): a 64 MiB ring each
RING = 16384
TLS_BOTH = {False: {"pair": False, "tls": True, "ringbuf_pages": RING},
            True: {"pair": True, "tls": True, "ringbuf_pages": RING}}

PY_CLIENT = textwrap.dedent('''
    import http.client, ssl, sys
    port, n = int(sys.argv[1]), int(sys.argv[2])
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context())
    codes = []
    for i in range(n):
        c.request("GET", f"/py/{i}" if i % 3 else "/missing")
        r = c.getresponse()
        r.read()
        codes.append(r.status)
        c.request("POST", f"/py/post/{i}", body=b"x" * (100 + 700 * i), headers={"Content-Type": "text/plain"})
        r = c.getresponse()
        r.read()
        codes.append(r.status)
    c.close()
    print(len(codes))
''')


def traffic(port: int, rounds: int) -> None:
    """curl (new connection each), Python keep-alive with bodies in separate writes, wrk keep-alive."""
    for path in ("/curl/a", "/missing", "/curl/b"):
        assert targets.curl(port, path) in ("200", "404")
    out = subprocess.run([sys.executable, "-c", PY_CLIENT, str(port), str(rounds)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.split() == [str(2 * rounds)]
    subprocess.run(["wrk", "-t1", "-c4", "-d2s", f"https://127.0.0.1:{port}/wrk"], capture_output=True,
                   timeout=60, check=True)


@pytest.mark.parametrize("server", ["nginx", "go"])
def test_https_same_spans_paired_and_unpaired(server, tmp_path, go_binary, certs):
    cert, key = certs
    port = free_port()
    start = (lambda: targets.nginx_tls(port, cert, key, tmp_path)) if server == "nginx" else (
        lambda: targets.go_server(go_binary, port, cert, key))
    with start():
        with two_captures(port, TLS_BOTH) as result:
            traffic(port, 12)
    n, old_records, new_records = assert_same_spans(result, port)
    # both ends of curl's three, Python's 24 and wrk's requests (at least a few hundred in 2 s)
    assert n >= 2 * (3 + 24 + 200), n
    spans = result["spans"][True]
    assert {s.attributes.get("tls.library") for s in spans if s.attributes.get("server.port") == port} >= {
        "openssl", "go" if server == "go" else "openssl"}
    assert result["stats"][True]["kernel.pair_paired"] >= n // 2 * 0.9
    # one record per exchange and side where the unpaired path sends two
    assert new_records < 0.6 * old_records, (old_records, new_records)
