"""TLS handshake parser, bytes only: real OpenSSL handshakes (memory BIOs) that fail and succeed,
Go-style encrypted TLS 1.3 alerts, closes mid-handshake, splits, truncation, garbage, hostile
lengths; the kernel detector (gcc) agrees with its userspace mirror."""
from __future__ import annotations

import ctypes
import random
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from capture import abi
from capture.protocols.base import Side
from capture.protocols.tls_handshake import TlsHandshakeParser, detect
from tests.capture.protocols.fuzz import OTHER_PROTOCOLS, other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER
V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tlscert")
    c, k = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(k), "-out", str(c),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return str(c), str(k)


def transcript(cert, version, trusted: bool) -> list[tuple[Side, bytes]]:
    """A real OpenSSL handshake (+ one request/response when it succeeds), as each side wrote it."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(*cert)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if trusted:
        cctx.load_verify_locations(cert[0])
    for ctx in (sctx, cctx):
        ctx.maximum_version = version
    ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(ci, co, server_hostname="localhost")
    server = sctx.wrap_bio(si, so, server_side=True)
    chunks: list[tuple[Side, bytes]] = []

    def pump() -> bool:
        moved = False
        for src, dst, side in ((co, si, C), (so, ci, S)):
            b = src.read()
            if b:
                chunks.append((side, b))
                dst.write(b)
                moved = True
        return moved

    failed = False
    for _ in range(20):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                failed = True
        if not pump():
            break
    assert failed != trusted
    if trusted:
        client.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        pump()
        server.read()
        server.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        pump()
        client.read()
    return chunks


def run(chunks, close: bool = True, split: int | None = None):
    p = TlsHandshakeParser()
    out = []
    for i, (side, data) in enumerate(chunks):
        if split:
            for j in range(0, len(data), split):
                out += p.feed(side, data[j:j + split], i + 1)
        else:
            out += p.feed(side, data, i + 1)
    if close:
        out += p.close(1000)
    return p, out


def record(rtype: int, body: bytes, version: int = 0x0303) -> bytes:
    return bytes([rtype]) + version.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


@pytest.mark.parametrize("version,name", [(V12, "1.2"), (V13, "1.3")])
def test_untrusted_certificate_is_one_error_span_with_the_alert(cert, version, name):
    chunks = transcript(cert, version, trusted=False)
    p, out = run(chunks)
    (r,) = out
    assert r.name == "TLS handshake" and r.status == "ERROR" and r.kind is None
    a = r.attributes
    assert a["error.type"] == "tls alert: unknown_ca" and a["tls.alert.sent_by"] == "client"
    assert a["tls.protocol.version"] == name and a["tls.server_name"] == "localhost"
    assert a["tls.cipher"].startswith("TLS_")
    assert a["tls.client.supported_versions"] == ("1.3,1.2" if version == V13 else "1.2")
    assert r.start_ns == 1 and r.end_ns == len(chunks)
    assert p.stats["handshakes_failed"] == 1 and p.stats["handshakes_ok"] == 0


@pytest.mark.parametrize("version", [V12, V13])
def test_successful_handshake_gives_no_span_and_counts(cert, version):
    chunks = transcript(cert, version, trusted=True)
    for split in (None, 1, 5, 7):  # reads of any size, header alone (OpenSSL), byte by byte
        p, out = run(chunks, split=split)
        assert out == [] and p.stats["handshakes_ok"] == 1, (split, p.stats)


def test_plaintext_from_the_uprobes_ends_the_handshake(cert):
    chunks = transcript(cert, V13, trusted=True)
    p, out = run(chunks[:2], close=False)
    p.established()
    assert p.feed(C, b"\x15\x03\x03\x00\x02\x02\x28", 9) == []  # nothing after a decision
    assert out == [] and p.close(10) == [] and p.stats["handshakes_ok"] == 1


def _go_style_13(cert, client_tail: list[bytes]) -> list[tuple[Side, bytes]]:
    """The real hellos of a TLS 1.3 handshake, then the client's records given (Go encrypts alerts)."""
    chunks = transcript(cert, V13, trusted=False)
    return chunks[:2] + [(C, b"".join(client_tail))]


def test_tls13_encrypted_alert_instead_of_finished(cert):
    chunks = _go_style_13(cert, [record(20, b"\x01"), record(23, bytes(19))])
    p, out = run(chunks)
    (r,) = out
    assert r.attributes["error.type"] == "tls alert: encrypted" and r.end_ns == 3  # the alert, not the close
    assert "client" in r.status_message and r.attributes["tls.protocol.version"] == "1.3"


def test_tls13_server_rejecting_the_client_after_its_finished(cert):
    chunks = _go_style_13(cert, [record(20, b"\x01"), record(23, bytes(53))]) + [(S, record(23, bytes(19)))]
    (r,) = run(chunks)[1]
    assert r.attributes["error.type"] == "tls alert: encrypted" and "server" in r.status_message


def test_tls13_close_notify_after_a_complete_handshake_is_not_a_failure(cert):
    # a health check: handshake, then close_notify (alert-sized) and close, no data
    chunks = _go_style_13(cert, [record(23, bytes(53)), record(23, bytes(19))])
    p, out = run(chunks)
    assert out == [] and p.stats["handshakes_ok"] == 1
    # tickets, data, then close_notify
    chunks = _go_style_13(cert, [record(23, bytes(53))]) + [(S, record(23, bytes(250)) * 2),
                                                            (C, record(23, bytes(60))), (S, record(23, bytes(40))),
                                                            (C, record(23, bytes(19)))]
    p, out = run(chunks)
    assert out == [] and p.stats["handshakes_ok"] == 1


def test_alert_sized_record_followed_by_data_was_not_an_alert(cert):
    chunks = _go_style_13(cert, [record(23, bytes(53))]) + [(S, record(23, bytes(19))), (C, record(23, bytes(80))),
                                                            (S, record(23, bytes(80)))]
    p, out = run(chunks)
    assert out == [] and p.stats["alert_sized_records_not_alerts"] == 1


def test_tls12_encrypted_alert_before_completion(cert):
    chunks = transcript(cert, V12, trusted=False)[:2]
    chunks.append((C, record(22, bytes(70)) + record(20, b"\x01") + record(22, bytes(40))))
    chunks.append((S, record(21, bytes(26))))  # the server rejects the client's Finished
    (r,) = run(chunks)[1]
    assert r.attributes["error.type"] == "tls alert: encrypted" and r.attributes["tls.protocol.version"] == "1.2"


def test_closed_without_server_hello_and_non_tls_answer(cert):
    hello = transcript(cert, V13, trusted=False)[0]
    (r,) = run([hello])[1]
    assert r.attributes["error.type"] == "tls handshake: no ServerHello"
    (r,) = run([hello, (S, b"HTTP/1.1 400 Bad Request\r\n\r\n")])[1]
    assert r.attributes["error.type"] == "tls handshake: server did not answer with TLS"


def test_closed_mid_handshake(cert):
    chunks = transcript(cert, V12, trusted=True)[:2]  # hellos, then the connection drops
    (r,) = run(chunks)[1]
    assert r.attributes["error.type"] == "tls handshake: closed before completion"


def test_warning_alerts_do_not_fail_a_tls12_handshake(cert):
    chunks = transcript(cert, V12, trusted=True)
    chunks.insert(2, (S, record(21, b"\x01\x64")))  # warning no_renegotiation
    p, out = run(chunks)
    assert out == [] and p.stats["alerts.no_renegotiation"] == 1


def test_hello_retry_request_waits_for_the_real_server_hello(cert):
    chunks = transcript(cert, V13, trusted=False)
    hrr_random = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
    body = b"\x03\x03" + hrr_random + b"\x00" + b"\x13\x01" + b"\x00" + b"\x00\x06\x00\x2b\x00\x02\x03\x04"
    hrr = record(22, b"\x02" + len(body).to_bytes(3, "big") + body)
    # middlebox compatibility: a ChangeCipherSpec follows the HRR (it encrypts nothing)
    p, out = run([chunks[0], (S, hrr + record(20, b"\x01")), chunks[0], *chunks[1:]])
    assert p.stats["hello_retry_requests"] == 1
    assert [r.attributes["tls.protocol.version"] for r in out] == ["1.3"]


def test_truncated_copies_keep_framing_or_resync(cert):
    chunks = transcript(cert, V12, trusted=False)
    p = TlsHandshakeParser()
    p.feed(C, chunks[0][1], 1)
    flight = chunks[1][1]
    assert p.feed(S, flight[:100], 2, size=len(flight)) == []  # certificate body not copied: skipped
    (r,) = p.feed(C, chunks[2][1], 3)
    assert r.attributes["error.type"] == "tls alert: unknown_ca"
    # lost bytes spanning records: resync at the next chunk that starts with a record
    p = TlsHandshakeParser()
    p.feed(C, chunks[0][1], 1)
    p.feed(S, flight[:100] + record(23, bytes(10))[:3], 2, size=len(flight) + 5000)
    assert p.stats["lost_chunks"] == 1
    p.feed(S, b"garbage!", 3)
    (r,) = p.feed(C, chunks[2][1], 4)
    assert r.attributes["error.type"] == "tls alert: unknown_ca" and p.stats["resync_skipped_chunks"] == 1


def test_hostile_lengths_and_garbage_never_raise():
    p = TlsHandshakeParser()
    p.feed(C, b"\x16\x03\x01\xff\xff" + bytes(100), 1)  # record longer than TLS allows
    assert p.stats["garbage_chunks"] == 1
    p = TlsHandshakeParser()
    huge = b"\x01\xff\xff\xff" + b"\x03\x03" + bytes(40)  # handshake message of 16 MiB
    p.feed(C, record(22, huge, 0x0301), 1)
    assert p.stats["hello_unreadable"] == 1
    p = TlsHandshakeParser()  # ClientHello whose inner lengths run past its end
    p.feed(C, record(22, b"\x01\x00\x00\x26\x03\x03" + bytes(32) + b"\xff" + bytes(3), 0x0301), 1)
    assert p.stats["malformed_hellos"] == 1 and p.close(2) == []
    rng = random.Random(5)
    for _ in range(3000):
        p = TlsHandshakeParser()
        for _ in range(rng.randrange(1, 6)):
            data = rng.randbytes(rng.randrange(0, 300))
            if rng.random() < 0.5:  # plausible headers with random content
                data = bytes([rng.choice((20, 21, 22, 23)), 3, rng.randrange(5)]) + data
            p.feed(rng.choice((C, S)), data, 1, size=len(data) + rng.choice((0, 0, 3, 70000)))
        p.close(2)


def test_fuzzed_real_handshakes_never_raise(cert):
    rng = random.Random(9)
    base = transcript(cert, V13, trusted=False) + transcript(cert, V12, trusted=True)
    for _ in range(400):
        chunks = []
        for side, data in base:
            b = bytearray(data)
            for _ in range(rng.randrange(4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            chunks.append((side, bytes(b)))
        run(chunks, split=rng.choice((None, 3, 100)))


# -- detection -------------------------------------------------------------------------------

def test_detector_claims_hellos_and_rarely_anything_else(cert):
    chunks = transcript(cert, V13, trusted=False)
    assert detect(chunks[0][1]) == C and detect(chunks[1][1]) == S
    assert detect(chunks[0][1][:5]) == C  # the record header read alone (OpenSSL servers)
    assert detect(chunks[2][1]) is None  # an alert is not a hello
    assert detect(record(23, bytes(100))) is None
    tls_hello = [m for m in OTHER_PROTOCOLS if m.startswith(b"\x16\x03")]
    assert other_protocol_matches(detect) == tls_hello
    assert random_match_rate(detect) < 0.0005


@pytest.fixture(scope="module")
def kernel_detect(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.fail("gcc is missing: run `make setup`")
    d = tmp_path_factory.mktemp("tlsdetect")
    (d / "k.c").write_text("#include <linux/types.h>\n#define __always_inline inline\n#include \"types.h\"\n"
                           "#include \"protocols/tls_handshake.h\"\n"
                           "int k(const __u8 *b, __u32 n) { return detect_tls_handshake(b, n); }\n")
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-I", str(abi.BPF_DIR), "-o", str(d / "k.so"), str(d / "k.c")],
                   check=True, capture_output=True, timeout=60)
    fn = ctypes.CDLL(str(d / "k.so")).k
    fn.argtypes = (ctypes.c_char_p, ctypes.c_uint32)
    return lambda data: {0: None, 1: C, 2: S}[fn(data + bytes(8192 - len(data)), len(data))]


def test_kernel_detector_agrees_with_the_mirror(cert, kernel_detect):
    rng = random.Random(3)
    samples = [data for side, data in transcript(cert, V13, trusted=False) + transcript(cert, V12, trusted=True)]
    inputs = list(OTHER_PROTOCOLS)
    for s in samples:
        inputs += [s[:n] for n in range(0, min(len(s), 4096) + 1, 7)]
        for _ in range(200):
            b = bytearray(s[:4096])
            b[rng.randrange(min(len(b), 60))] = rng.randrange(256)
            inputs.append(bytes(b))
    inputs += [rng.randbytes(rng.choice((5, 9, 44, 64, 300))) for _ in range(5000)]
    inputs += [b"\x16\x03" + bytes([rng.randrange(6)]) + rng.randbytes(rng.choice((2, 60))) for _ in range(3000)]
    assert [x for x in inputs if kernel_detect(x) != detect(x)] == []
    assert sum(detect(x) is not None for x in inputs) > 50


def test_every_failure_classifies_as_a_dependency_error(cert):
    """The investigator (tools/errors.py) must see these spans as DNS/connect/TLS trouble."""
    from capture.connection import Connection
    from capture.stitch import record_to_span
    from tools.errors import classify_error

    hello, flight = transcript(cert, V13, trusted=False)[:2]
    cases = [transcript(cert, V12, trusted=False), _go_style_13(cert, [record(23, bytes(19))]), [hello],
             [hello, (S, b"HTTP/1.1 400 Bad Request\r\n\r\n")], [hello, flight]]
    conn = Connection(conn_id=1, pid=1, protocol="TLS_HANDSHAKE", role="CLIENT", local=("10.0.0.1", 40000),
                      remote=("10.0.0.2", 443))
    kinds = set()
    for chunks in cases:
        (r,) = run(chunks)[1]
        kinds.add(r.attributes["error.type"])
        assert classify_error(record_to_span(r, conn)) == "dependency", r.attributes["error.type"]
    assert len(kinds) == 5
