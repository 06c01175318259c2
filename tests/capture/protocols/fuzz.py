"""Shared checks for detectors: random binary and other protocols' first messages must rarely match."""
from __future__ import annotations

import random

# First messages of other protocols a detector must not claim.
OTHER_PROTOCOLS = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"*1\r\n$4\r\nPING\r\n",
    b"+OK\r\n",
    b"\x00\x00\x00\x08\x04\xd2\x16\x2f",  # PostgreSQL SSLRequest
    b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00db\x00\x00",  # PG startup
    b"J\x00\x00\x00\x0a8.0.33\x00" + b"\x00" * 60,  # MySQL greeting
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # TLS ClientHello
    b"INFO {\"server_id\":\"x\"}\r\n",
    b"get key\r\n",
    b"SSH-2.0-OpenSSH_9.2\r\n",
]


def random_match_rate(detect, n: int = 20000, seed: int = 7) -> float:
    rng = random.Random(seed)
    hits = 0
    for _ in range(n):
        buf = rng.randbytes(rng.choice((16, 32, 64, 200, 1000)))
        if detect(buf) is not None:
            hits += 1
    return hits / n


def other_protocol_matches(detect) -> list[bytes]:
    return [m for m in OTHER_PROTOCOLS if detect(m) is not None]
