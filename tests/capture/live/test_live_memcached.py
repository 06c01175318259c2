"""Live eBPF capture of memcached, text and binary protocols, against a real memcached."""
from __future__ import annotations

import os
import socket
import struct

import pytest

from support.live import live_capture

pytestmark = pytest.mark.ebpf


def _binary(op: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"", opaque: int = 0) -> bytes:
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0, len(body), opaque, 0) + body


def _read_binary(sock: socket.socket) -> tuple[int, int]:
    head = b""
    while len(head) < 24:
        head += sock.recv(24 - len(head))
    _, _, _, _, _, status, body, opaque, _ = struct.unpack(">BBHBBHIIQ", head)
    left = body
    while left:
        left -= len(sock.recv(left))
    return status, opaque


def _text(sock: socket.socket, cmd: bytes, end: bytes) -> bytes:
    sock.sendall(cmd)
    out = b""
    while not out.endswith(end):
        out += sock.recv(65536)
    return out


@pytest.fixture(scope="module")
def traffic(memcached_server):
    port = memcached_server["port"]
    with live_capture(port=port, extra=("--no-tls",)) as cap:
        with socket.create_connection(("127.0.0.1", port)) as s:
            assert _text(s, b"set k1 0 0 5\r\nhello\r\n", b"\r\n") == b"STORED\r\n"
            assert _text(s, b"get k1\r\n", b"END\r\n").startswith(b"VALUE k1")
            assert _text(s, b"get nope\r\n", b"END\r\n") == b"END\r\n"
            big = b"b" * 200_000
            assert _text(s, b"set big 0 0 %d\r\n" % len(big) + big + b"\r\n", b"\r\n") == b"STORED\r\n"
            _text(s, b"get big k1\r\n", b"END\r\n")
            assert _text(s, b"delete k1\r\n", b"\r\n") == b"DELETED\r\n"
            assert _text(s, b"delete k1\r\n", b"\r\n") == b"NOT_FOUND\r\n"
            assert _text(s, b"incr big 1\r\n", b"\r\n").startswith(b"CLIENT_ERROR")
            # pipelined: three commands in one write
            _text(s, b"set p 0 0 1\r\nx\r\nget p\r\ndelete p\r\n", b"DELETED\r\n")
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(_binary(0x01, b"bk", extras=struct.pack(">II", 0, 0), value=b"val", opaque=1))
            assert _read_binary(s) == (0, 1)
            s.sendall(_binary(0x00, b"bk", opaque=2))
            assert _read_binary(s) == (0, 2)
            s.sendall(_binary(0x00, b"bnope", opaque=3))
            assert _read_binary(s) == (1, 3)
            s.sendall(_binary(0x04, b"bk", opaque=4))
            assert _read_binary(s) == (0, 4)
    return cap


def client_spans(cap):
    return [s for s in cap.spans if s["kind"] == "CLIENT" and s["resource"].get("process.pid") == os.getpid()]


def test_every_text_command_is_one_span_with_hit_or_miss(traffic):
    got = [(s["attributes"]["db.operation.name"], s["attributes"].get("db.query.text"),
            s["attributes"].get("memcached.hit"), s["attributes"].get("db.response.status_code"), s["status_code"])
           for s in client_spans(traffic) if s["attributes"]["db.operation.name"] in ("set", "get", "delete", "incr")
           and s["attributes"].get("db.query.text", "").split(" ")[-1] not in ("bk", "bnope")]  # text protocol only
    assert got == [
        ("set", "set k1", None, "STORED", "UNSET"),
        ("get", "get k1", True, "END", "UNSET"),
        ("get", "get nope", False, "END", "UNSET"),
        ("set", "set big", None, "STORED", "UNSET"),
        ("get", "get big k1", True, "END", "UNSET"),
        ("delete", "delete k1", None, "DELETED", "UNSET"),
        ("delete", "delete k1", None, "NOT_FOUND", "UNSET"),
        ("incr", "incr big", None, "CLIENT_ERROR", "ERROR"),
        ("set", "set p", None, "STORED", "UNSET"),
        ("get", "get p", True, "END", "UNSET"),
        ("delete", "delete p", None, "DELETED", "UNSET"),
    ], traffic.stats


def test_binary_protocol_pairs_by_opaque(traffic):
    got = [(s["attributes"]["db.operation.name"], s["attributes"].get("memcached.hit"),
            s["attributes"]["db.response.status_code"]) for s in client_spans(traffic)
           if s["attributes"].get("db.query.text", "").split(" ")[-1] in ("bk", "bnope")]
    assert got == [("set", None, "ok"), ("get", True, "ok"), ("get", False, "key_not_found"), ("delete", None, "ok")]


def test_server_side_sees_the_same_commands(traffic, memcached_server):
    server = [s for s in traffic.spans if s["kind"] == "SERVER"
              and s["resource"].get("process.pid") == memcached_server["pid"]]
    assert len(server) == len(client_spans(traffic)) == 15
    for s in server + client_spans(traffic):
        assert s["attributes"]["db.system"] == "memcached"
        assert s["attributes"]["server.port"] == memcached_server["port"]
