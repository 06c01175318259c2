"""Hostile input for the soak: truncated, garbled and protocol-violating bytes sent to the
soak's real servers and to small listeners of its own (which answer in kind), so that the
capture parses both directions of them. Seeded: the same run sends the same bytes.

Outcomes here are not application failures: servers are expected to refuse these."""
from __future__ import annotations

import random
import socket
import socketserver
import struct
import threading
from collections import Counter


def _h2_frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = bytearray([first | limit]), value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def h2_huge_table() -> bytes:
    """Client preface, SETTINGS_HEADER_TABLE_SIZE = 2^32-1, then a header block that resizes
    the dynamic table to 2^30 and inserts big literal headers into it."""
    block = _hpack_int(1 << 30, 5, 0x20)
    block += bytes([0x82, 0x86, 0x84])  # :method GET, :scheme http, :path /
    for i in range(3):
        name, value = f"x-fill-{i}".encode(), b"v" * 4000
        block += b"\x40" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value
    return (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, struct.pack(">HI", 1, 0xFFFFFFFF))
            + _h2_frame(1, 0x5, 1, block))


def h2_bad_lengths(rng: random.Random) -> bytes:
    """Preface, then frames whose declared lengths lie (beyond the max frame size, past the end)."""
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, b"")
    out += struct.pack(">I", 0xFFFFFF)[1:] + bytes([1, 4]) + struct.pack(">I", 3) + rng.randbytes(64)
    return out


def mongo_kind1_negative() -> bytes:
    """OP_MSG with a kind-0 body and a kind-1 section whose size is -1."""
    body = b"\x00" + struct.pack("<i", 5) + b"\x00"
    seq = b"\x01" + struct.pack("<i", -1) + b"documents\x00" + struct.pack("<i", 5) + b"\x00"
    payload = struct.pack("<I", 0) + body + seq
    return struct.pack("<iiii", 16 + len(payload), 7, 0, 2013) + payload


def mongo_compressed_21() -> bytes:
    return struct.pack("<iiii", 21, 8, 0, 2012) + b"\x01\x02\x03\x04\x05"


def pg_absurd() -> bytes:
    """A startup message claiming 2 GiB, then a query message claiming 2 GiB."""
    return struct.pack(">ii", 0x7FFFFFFF, 196608) + b"user\x00x\x00\x00" + b"Q" + struct.pack(">i", 0x7FFFFFF0) + b"SEL"


RESP_ABSURD = (b"*99999999999999999999\r\n$99999999999999\r\nfoo\r\n",
               b"*3\r\n$3\r\nSET\r\n$9223372036854775807\r\nabc\r\n",
               b"*-5\r\n$-7\r\n:notanumber\r\n",
               b"*2\r\n$3\r\nGET\r\n$2\r\nabcdef\r\n")
HTTP_HOSTILE = (b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nabc",
                b"GET /api/trunc HTTP/1.1\r\nHost: x\r\nX-Half: ",
                b"GET /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
                b"\x16\x03\x01\x02\x00" + b"\x00" * 40)
MEMCACHED_HOSTILE = (b"set k 0 0 4294967295\r\n" + b"x" * 100, b"get " + b"k" * 5000 + b"\r\n",
                     b"\x80\x01\x00\x05\xff\xff\xff\xff" + b"\x00" * 16)
NATS_HOSTILE = (b"PUB s 99999999999999\r\nabc\r\n", b"MSG a b c d e f\r\n", b"CONNECT {{{{\r\n")


class _Echoer(socketserver.BaseRequestHandler):
    """Reads what the client sends and answers with the listener's own hostile reply."""

    def handle(self) -> None:
        self.request.settimeout(2)
        try:
            if self.request.recv(65536):
                self.request.sendall(self.server.reply)  # type: ignore[attr-defined]
            self.request.recv(65536)
        except OSError:
            pass


class Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reply: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Echoer)
        self.reply = reply
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, name="soak-listener", daemon=True).start()


class Hostile:
    """Round-robin over the cases, one connection per case; counts sends per case."""

    def __init__(self, ports: dict[str, int], seed: int = 17) -> None:
        self.rng = random.Random(seed)
        self.listeners = {"mongo": Listener(mongo_kind1_negative() + mongo_compressed_21()),
                          "pg": Listener(b"R" + struct.pack(">i", 0x7FFFFFF0) + b"\x00\x00")}
        self.ports = dict(ports, mongo=self.listeners["mongo"].port, pg=self.listeners["pg"].port)
        self.sent: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.valid = {"redis": b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n",
                      "http1": b"GET /api/ok HTTP/1.1\r\nHost: x\r\n\r\n",
                      "memcached": b"set k 0 0 5\r\nhello\r\n", "nats": b"PUB s 5\r\nhello\r\n",
                      "mongo": mongo_kind1_negative(), "pg": pg_absurd()}
        self.cases = [
            ("mongo_kind1_size_-1", "mongo", lambda: mongo_kind1_negative()),
            ("mongo_op_compressed_21_bytes", "mongo", lambda: mongo_compressed_21()),
            ("pg_2gib_lengths", "pg", pg_absurd),
            ("resp_absurd_lengths", "redis", lambda: self.rng.choice(RESP_ABSURD)),
            ("http_5000_digit_content_length", "http1", lambda: HTTP_HOSTILE[0]),
            ("http_truncated_or_bad_chunk", "http1", lambda: self.rng.choice(HTTP_HOSTILE[1:])),
            ("h2_huge_hpack_table", "http2", h2_huge_table),
            ("h2_lying_frame_lengths", "http2", lambda: h2_bad_lengths(self.rng)),
            ("memcached_absurd", "memcached", lambda: self.rng.choice(MEMCACHED_HOSTILE)),
            ("nats_absurd", "nats", lambda: self.rng.choice(NATS_HOSTILE)),
            ("mutated_transcript", None, self._mutated),
            ("random_bytes", None, lambda: self.rng.randbytes(self.rng.randint(1, 4096))),
            ("byte_by_byte_redis", "redis", lambda: self.valid["redis"]),
        ]
        self.i = 0

    def _mutated(self) -> bytes:
        data = bytearray(self.rng.choice(list(self.valid.values())))
        for _ in range(self.rng.randint(1, 6)):
            data[self.rng.randrange(len(data))] = self.rng.randrange(256)
        return bytes(data[: self.rng.randint(1, len(data))])

    def one(self) -> None:
        name, target, make = self.cases[self.i % len(self.cases)]
        self.i += 1
        target = target or self.rng.choice(sorted(self.ports))
        data = make()
        try:
            with socket.create_connection(("127.0.0.1", self.ports[target]), timeout=2) as s:
                if name.startswith("byte_by_byte"):
                    for b in data:
                        s.send(bytes([b]))
                else:
                    s.sendall(data)
                s.settimeout(0.3)
                try:
                    s.recv(65536)
                except OSError:
                    pass
            self.sent[name] += 1
        except OSError:
            self.refused[name] += 1  # a server that closed early: expected from hostile input

    def run(self, per_s: float, stop: threading.Event) -> None:
        while not stop.is_set():
            self.one()
            stop.wait(1.0 / per_s)

    def close(self) -> None:
        for lst in self.listeners.values():
            lst.shutdown()
            lst.server_close()
