"""Which connections the compiled path (capture/_fastpath.c) holds, and what it is told of them.

A connection is held while it is an HTTP/1 connection over TCP whose parser has nothing buffered
or waiting: its exchanges (paired in the kernel or not) then become spans in C. Everything else, and every
record the C path does not take, goes through ConnTracker.on_event in order; a held connection is
handed back before any of its records does. Without the extension (not built), there is no table.
"""
from __future__ import annotations

from capture import scrub
from capture.connection import Connection
from capture.protocols import http1
from capture.span import Span

try:
    from capture import _fastpath
except ImportError:  # not built (setup.py): the Python path handles every record
    _fastpath = None

DONE = PYTHON = RELEASED = UNKNOWN = -1
if _fastpath is not None:
    DONE, PYTHON, RELEASED, UNKNOWN = _fastpath.DONE, _fastpath.PYTHON, _fastpath.RELEASED, _fastpath.UNKNOWN


def table(offset_ns: int):
    """A compiled connection table whose spans are stamped `offset_ns` after the ring's clock,
    or None when the extension is not built."""
    if _fastpath is None:
        return None
    return _fastpath.Table(Span, http1._request_line, http1._request_line.__wrapped__,
                           http1._status_of, http1._status_of.__wrapped__, scrub.record, offset_ns)


def adopt(fast, conn_id: int, tracked, conn: Connection) -> bool:
    """Hand `conn` to the table `fast` when its exchanges can be made there (record_to_span's
    view of the connection is fixed while it is held); False: Python keeps it."""
    parser = conn.parser
    pos = tracked.pos
    if not (pos[0] and pos[1]):
        return False  # the C table reads a position 0 as not known: a lost first record would pass
    if (conn.protocol != "HTTP1" or conn.transport != "tcp" or type(parser) is not http1.Http1Parser
            or not parser.idle() or type(conn.resource) is not dict):
        return False
    server = conn.role == "SERVER"
    client_end, server_end = (conn.remote, conn.local) if server else (conn.local, conn.remote)
    return fast.adopt(conn_id, tracked, conn, pos[0], pos[1], conn.last_seen_ns, conn.request_tid, server,
                      conn.source == "syscall", "SERVER" if server else "CLIENT", conn.resource,
                      server_end or None, client_end or None, conn.transport,
                      conn.source if conn.source not in ("syscall", "pcap") else None, conn.epoch or None)
