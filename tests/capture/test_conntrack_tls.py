"""ConnTracker and TLS handshakes, from ring-buffer records built here: a connection starts as
PROTO_TLS_HANDSHAKE (the hellos' ciphertext), becomes its plaintext's protocol once the TLS
uprobes report plaintext (the handshake counted as a success, no span), and ignores handshake
ciphertext that races that plaintext; a handshake that fails is one span at close."""
from __future__ import annotations

import ssl

from capture import abi
from capture.conntrack import ConnTracker
from capture.pipeline import Pipeline
from tests.capture.protocols.test_tls_handshake import cert, transcript  # noqa: F401 (cert: fixture)

P = abi.Proto
EGRESS, INGRESS = abi.Direction.EGRESS, abi.Direction.INGRESS
IP = b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1])


class Client:
    """One client connection's events, with the kernel's per-direction stream positions."""

    def __init__(self, tracker: ConnTracker, conn_id: int = 7) -> None:
        self.tracker, self.conn_id, self.pos, self.ts = tracker, conn_id, [0, 0], 1_000

    def send(self, proto, direction, data: bytes, source=abi.Source.SYSCALL, kind=abi.EventKind.DATA) -> None:
        self.ts += 1_000
        d = 0 if direction == EGRESS else 1
        hdr = abi.EVENT_STRUCT.pack(self.ts, self.conn_id, self.pos[d], 42, 43, 5, len(data), len(data), 0, kind,
                                    proto, direction, abi.Role.CLIENT, 0, source, 0, abi.Transport.TCP,
                                    IP, IP, 40000, 8443, 2, 0, b"client")
        if kind == abi.EventKind.DATA:
            self.pos[d] += len(data)
        self.tracker.on_event(hdr + data)

    def close(self) -> None:
        self.send(P.TLS_HANDSHAKE, EGRESS, b"", kind=abi.EventKind.CLOSE)


def tracker() -> tuple[ConnTracker, list]:
    spans: list = []
    pipeline = Pipeline(spans.extend)
    return ConnTracker(pipeline, resource_for=lambda pid: {"service.name": "client"}, boot_offset_ns=0), spans


def test_plaintext_hands_the_connection_to_its_protocol(cert):
    t, spans = tracker()
    c = Client(t)
    for side, data in transcript(cert, ssl.TLSVersion.TLSv1_3, trusted=True)[:3]:
        c.send(P.TLS_HANDSHAKE, EGRESS if side == 0 else INGRESS, data)
    c.send(P.HTTP1, EGRESS, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", source=abi.Source.OPENSSL)
    c.send(P.TLS_HANDSHAKE, INGRESS, b"\x17\x03\x03\x00\x20" + bytes(32))  # ciphertext racing the plaintext
    c.send(P.HTTP1, INGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", source=abi.Source.OPENSSL)
    c.close()
    t.pipeline.flush()
    assert [(s.name, s.status_code) for s in spans] == [("GET /x", "UNSET")]
    assert spans[0].attributes["tls.library"] == "openssl"
    assert t.pipeline.stats["tls_handshake.handshakes_ok"] == 1
    assert t.stats["gaps"] == 0  # plaintext positions continue after the handshake's


def test_failed_handshake_is_one_span_at_close(cert):
    t, spans = tracker()
    c = Client(t)
    for side, data in transcript(cert, ssl.TLSVersion.TLSv1_2, trusted=False):
        c.send(P.TLS_HANDSHAKE, EGRESS if side == 0 else INGRESS, data)
    c.close()
    t.pipeline.flush()
    (s,) = spans
    assert (s.name, s.kind, s.status_code) == ("TLS handshake", "CLIENT", "ERROR")
    assert s.attributes["error.type"] == "tls alert: unknown_ca"
    assert (s.attributes["server.address"], s.attributes["server.port"]) == ("127.0.0.1", 8443)
    assert "tls.library" not in s.attributes  # ciphertext seen by the syscall probes


def test_handshake_records_out_of_offset_order_are_no_loss(cert):
    """On a TLS connection the handshake's records and the library's plaintext share the stream
    offsets and need not reach the ring in offset order: a direction's first record past offset
    0 is no gap there (off TLS it is, capture/conntrack.py)."""
    t, spans = tracker()
    c = Client(t)
    hello, server_hello = transcript(cert, ssl.TLSVersion.TLSv1_3, trusted=True)[:2]
    c.send(P.TLS_HANDSHAKE, EGRESS, hello[1])
    c.pos[1] += 100  # an ingress handshake record counted by the kernel, not seen (yet)
    c.send(P.TLS_HANDSHAKE, INGRESS, server_hello[1])
    c.send(P.HTTP1, EGRESS, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", source=abi.Source.OPENSSL)
    c.send(P.HTTP1, INGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", source=abi.Source.OPENSSL)
    c.close()
    t.pipeline.flush()
    assert [s.name for s in spans] == ["GET /x"]
    assert t.stats["gaps"] == 0 and "guardian.connection.epoch" not in spans[0].attributes
