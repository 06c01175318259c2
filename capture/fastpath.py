"""Which connections the compiled path (capture/_fastpath.c) holds, and what it is told of them.

A connection is held while it is an HTTP/1, Redis, Memcached, PostgreSQL or MySQL connection over TCP
whose parser has nothing buffered or waiting: its exchanges (paired in the kernel or not; PostgreSQL's
simple queries, MySQL's COM_QUERY and COM_PING only) then become spans in C. Everything else, and every record the C path does not
take, goes through ConnTracker.on_event in order; a held connection is handed back before any of its
records does. Without the extension (not built), there is no table.
"""
from __future__ import annotations

from capture import abi, scrub
from capture.connection import Connection
from capture.protocols import http1, memcached, mysql, postgres, redis
from capture.protocols.sql import sql_summary
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
                           http1._status_of, http1._status_of.__wrapped__, scrub.record, offset_ns,
                           redis_shape, redis._operation, redis._query_text, memcached_shape,
                           sql_summary, scrub.enabled)


# commands whose replies are not one per command in order (pushes, a stream, replication): Python's
_REDIS_PYTHON = redis._SUBSCRIBE | {"MONITOR", "SYNC", "PSYNC"}


def redis_shape(name: bytes) -> tuple[str, bool, bool, int | None, bool, bool]:
    """What the C path needs to know of a Redis command name, asked once per name: its
    db.operation.name (redis._operation's), whether a second word joins it, whether its arguments
    are secret (redis._query_text), the words of its query text scrubbing keeps (scrub.redis_kept),
    whether Python must parse it, whether it publishes (messaging.* attributes)."""
    op = name.decode("latin-1", "replace").upper()
    return (op, op in redis._TWO_WORD, op in redis._SECRET_COMMANDS, scrub.redis_kept(op),
            op in _REDIS_PYTHON, op in ("PUBLISH", "SPUBLISH"))


def memcached_shape(word: bytes) -> tuple[str, int, int, bool, bool, bool] | None:
    """What the C path needs to know of a Memcached text command word, asked once per word (None:
    not a command): its name, the word giving its value's length (0: none), where its keys are
    (2: words[2:], 0: words[1:], 1: words[1:2], as memcached._text_request takes them), whether
    its reply counts values, whether it is quit, whether scrub.record may change its spans."""
    if word not in memcached._COMMANDS:
        return None
    op = word.decode()
    length = 2 if word == b"ms" else 4 if word in memcached._STORAGE else 0
    keys = 2 if word in (b"gat", b"gats") else 0 if word in memcached._RETRIEVAL else 1
    return op, length, keys, memcached._retrieves(op), op == "quit", scrub.may_change("memcached")


def adopt(fast, conn_id: int, tracked, conn: Connection) -> bool:
    """Hand `conn` to the table `fast` when its exchanges can be made there (record_to_span's
    view of the connection is fixed while it is held); False: Python keeps it."""
    parser = conn.parser
    if conn.protocol == "HTTP1":
        kind, proto = http1.Http1Parser, abi.Proto.HTTP1
    elif conn.protocol == "REDIS":
        kind, proto = redis.RedisParser, abi.Proto.REDIS
    elif conn.protocol == "MEMCACHED":
        kind, proto = memcached.MemcachedParser, abi.Proto.MEMCACHED
    elif conn.protocol == "POSTGRES":
        kind, proto = postgres.PostgresParser, abi.Proto.POSTGRES
    elif conn.protocol == "MYSQL":
        kind, proto = mysql.MysqlParser, abi.Proto.MYSQL
    else:
        return False
    pos = tracked.pos
    if not (pos[0] and pos[1]):
        return False  # the C table reads a position 0 as not known: a lost first record would pass
    if conn.transport != "tcp" or type(parser) is not kind:
        return False
    # protocols the C path would hand back at every message: PostgreSQL's extended one, Memcached's
    # binary one; MySQL's query attributes (typed values before the text)
    if kind is postgres.PostgresParser and (parser._statements or parser._portals) or \
            kind is memcached.MemcachedParser and parser.binary or kind is mysql.MysqlParser and parser._query_attributes:
        return False
    if not parser.idle() or type(conn.resource) is not dict:
        return False
    server = conn.role == "SERVER"
    client_end, server_end = (conn.remote, conn.local) if server else (conn.local, conn.remote)
    return fast.adopt(conn_id, tracked, conn, pos[0], pos[1], conn.last_seen_ns, conn.request_tid, server,
                      conn.source == "syscall", "SERVER" if server else "CLIENT", conn.resource,
                      server_end or None, client_end or None, conn.transport,
                      conn.source if conn.source not in ("syscall", "pcap") else None, conn.epoch or None, int(proto),
                      parser._database if kind in (postgres.PostgresParser, mysql.MysqlParser) else None,
                      parser._system if kind is mysql.MysqlParser else None)
