"""ConnTracker's --port filter from ring-buffer records built here: a client connection to
another server is ignored without reading /proc; one whose ends the kernel did not know is
looked up there."""
from __future__ import annotations

from capture import abi
from capture.conntrack import ConnTracker
from capture.pipeline import Pipeline

IP = b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1])
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class CountingSockets:
    """SocketTable stand-in that records lookups and knows one socket."""

    def __init__(self, entry=None) -> None:
        self.lookups, self.entry = 0, entry

    def lookup(self, pid, fd, remote=None, inode=None):
        self.lookups += 1
        return self.entry


def event(conn_id: int, role: int, lport: int, rport: int) -> bytes:
    hdr = abi.EVENT_STRUCT.pack(1_000, conn_id, 0, 42, 43, 5, len(REQUEST), len(REQUEST), 0,
                                abi.EventKind.DATA, abi.Proto.HTTP1, abi.Direction.EGRESS, role, 0,
                                abi.Source.SYSCALL, 0, abi.Transport.TCP, IP, IP, lport, rport, 2, 0,
                                b"client")
    return hdr + REQUEST


def tracker(sockets) -> ConnTracker:
    return ConnTracker(Pipeline(lambda spans: None), lambda pid: {"service.name": "c"}, port=8080,
                       sockets=sockets, boot_offset_ns=0)


def test_client_of_another_server_is_ignored_without_reading_proc():
    sockets = CountingSockets()
    t = tracker(sockets)
    t.on_event(event(1, abi.Role.CLIENT, 0, 5353))  # local port unknown, remote is not 8080
    t.on_event(event(1, abi.Role.CLIENT, 0, 5353))
    assert sockets.lookups == 0 and t.stats["connections"] == 0


def test_client_of_the_filtered_server_is_followed():
    t = tracker(CountingSockets())
    t.on_event(event(2, abi.Role.CLIENT, 41000, 8080))
    assert t.stats["connections"] == 1


def test_server_side_with_unknown_local_port_is_looked_up_in_proc():
    class Entry:
        local, remote = ("127.0.0.1", 8080), ("127.0.0.1", 41000)

    sockets = CountingSockets(Entry())
    t = tracker(sockets)
    t.on_event(event(3, abi.Role.SERVER, 0, 41000))
    assert sockets.lookups == 1 and t.stats["connections"] == 1
    assert t.conns[3].conn.local == ("127.0.0.1", 8080)
