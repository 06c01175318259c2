"""Live connection tracking: ring-buffer events -> Connection objects -> the pipeline.

Fills what the kernel could not (sockets the kernel side could not read, without BTF) from
/proc, applies the --port filter, notices lost events by stream position,
and forgets connections whose process is gone. Idle HTTP/1, Redis, Memcached and PostgreSQL
connections may be held by the compiled path (capture/fastpath.py), which `feed` tries first; it
hands them back in order.
"""
from __future__ import annotations

import os
import struct
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from capture import abi, fastpath, snapshot
from capture.connection import Connection
from capture.enrich.proc import comm_name
from capture.pipeline import Pipeline
from capture.procnet import SocketTable

_PROTO = {p.value: p.name for p in abi.Proto}
_ROLE = {r.value: r.name for r in abi.Role}
_SOURCE = {s.value: s.name.lower() for s in abi.Source}
_SOURCE[abi.Source.GOTLS] = "go"
_EGRESS = abi.Direction.EGRESS
_EV_DATA = abi.EventKind.DATA
_EV_PAIR = abi.EventKind.PAIR
_TLS_HANDSHAKE = abi.Proto.TLS_HANDSHAKE
_UDP = abi.Transport.UDP
_UNPACK = abi.EVENT_STRUCT.unpack_from  # every field: when a connection is first seen
# The fields of abi.EVENT_STRUCT that every data event needs, the others skipped (x): no objects
# made for them. ts conn_id pos | tgid tid fd total copied _pad | kind proto direction role
# msg_type source flags transport (addresses and comm follow).
_HOT = struct.Struct("<QQQ 4x I 4x I I 4x B B B x x B x B")
_ENDS = struct.Struct("<16s16sHHHH16s")  # laddr raddr lport rport family _pad comm
_SAMPLE = bytes(range(abi.EVENT_SIZE))
assert _HOT.unpack_from(_SAMPLE) == tuple(_UNPACK(_SAMPLE)[i] for i in (0, 1, 2, 4, 6, 7, 9, 10, 11, 14, 16))
assert _ENDS.unpack_from(_SAMPLE, _HOT.size) == _UNPACK(_SAMPLE)[17:]
_UNPACK_HOT, _UNPACK_ENDS = _HOT.unpack_from, _ENDS.unpack_from
_U64, _U32 = struct.Struct("<Q").unpack_from, struct.Struct("<I").unpack_from
_HDR = abi.EVENT_SIZE
_COPIED, _KIND = abi.Event.copied_len.offset, abi.Event.kind.offset
_IGNORED = object()  # conn_id filtered out (--port): skip its events cheaply
IDLE_SWEEP_S = 30.0
# Bounds of the connection table (memory stays bounded whatever the host does): a connection
# silent this long is closed as if its process had closed it (a later byte reopens it); past
# MAX_TRACKED, the least recently active tenth goes. Both are counted in stats.
IDLE_TIMEOUT_S = 600.0
MAX_TRACKED = 100_000
MAX_IGNORED = 200_000


@dataclass(slots=True)
class _Tracked:
    conn: Connection
    # next expected stream offset per direction (egress, ingress); both start at 0 (the
    # kernel counts a connection's bytes from when it first saw it), so a first record further
    # on is a gap too: a connection seen first mid-stream (its first records lost, or closed
    # here and reopened) may hold an answered request whose response went missing. Not for
    # TLS plaintext (see on_event)
    pos: list[int]
    fd: int
    held: bool = False  # the compiled path has held it before (a later adoption is a re-adoption)


class ConnTracker:
    def __init__(self, pipeline: Pipeline, resource_for: Callable[[int], dict],
                 port: int | None = None, sockets: SocketTable | None = None,
                 boot_offset_ns: int | None = None, max_tracked: int = MAX_TRACKED,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, compiled: bool = True) -> None:
        self.pipeline = pipeline
        self.resource_for = resource_for
        self.port = port
        self.sockets = sockets or SocketTable()
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC: add this to get Unix time.
        self.offset_ns = boot_offset_ns if boot_offset_ns is not None else time.time_ns() - time.monotonic_ns()
        self.conns: dict[int, _Tracked | object] = {}
        self.stats: Counter[str] = Counter()
        self._last_sweep = time.monotonic()
        self.max_tracked, self.idle_timeout_s = max_tracked, idle_timeout_s
        self.tracked = 0  # entries of self.conns that are connections (not _IGNORED)
        # connections whose paired HTTP/1 exchanges become spans in C (capture/fastpath.py);
        # None: every record takes on_event
        self.fast = fastpath.table(self.offset_ns) if compiled else None
        # request chunks the kernel's pairing still holds (Loader.take_held): taken at a sweep for
        # processes that are gone (they exited without close(): no close record releases them)
        # and at the stop for all, so an unanswered request is reported as on the unpaired path
        self.kernel_held: Callable[[Callable[[int], bool] | None], list[bytes]] | None = None

    def spans_as_rows(self, row_type) -> bool:
        """The HTTP/1 exchanges the compiled path makes leave as `row_type` rows (capture.rows: what
        to_rows would make of their Spans) instead of Span objects: for a sink that stores rows."""
        return self.fast is not None and row_type is not None and self.fast.rows_as(row_type)

    def spans_as_lines(self) -> None:
        """The spans the compiled path makes leave as their `--json` lines (bytes, what
        Span.json_line() gives) instead of Span objects: for a sink that only prints them."""
        if self.fast is not None:
            self.fast.as_lines = True

    # -- record batches -----------------------------------------------------------------
    def feed(self, records: list[bytes]) -> None:
        """Records in ring order: what the compiled path takes becomes spans there, the rest
        goes through on_event in the same order (a connection the compiled path holds is
        handed back, with the records of an exchange it had begun, before any of its records
        goes to on_event)."""
        fast = self.fast
        if fast is None:
            for raw in records:
                self.on_event(raw)
            return
        run, on_event, out = fast.run, self.on_event, self.pipeline.batch
        i, n = 0, len(records)
        while i < n:
            i, verdict, held = run(records, i, out)
            if verdict == fastpath.DONE:
                break
            if held is not None:  # the records of the exchanges it had begun
                self._replay(held)
            raw = records[i]
            if verdict == fastpath.UNKNOWN and self._adopt(raw):
                continue  # the same record, now in C
            on_event(raw)
            i += 1

    def _adopt(self, raw: bytes) -> bool:
        """An HTTP/1 record of a connection the compiled path does not hold: hold the connection
        when it may (opened first as on_event opens it: at the request chunk's record)."""
        conn_id = _U64(raw, 8)[0]
        tracked = self.conns.get(conn_id)
        if tracked is None:
            tracked = self._open(raw[_HDR + _U32(raw, _COPIED)[0]:] if raw[_KIND] == _EV_PAIR else raw)
        if tracked is None or tracked is _IGNORED:
            return False
        conn = tracked.conn
        if conn.parser is None and self.pipeline.new_parser(conn) is None:
            return False
        if not fastpath.adopt(self.fast, conn_id, tracked, conn):
            return False
        # handed back (a gap, a cut message, a case C leaves to Python) and idle again: back in C
        if tracked.held:
            self.stats["fastpath_readoptions"] += 1
        tracked.held = True
        return True

    def hand_back(self) -> None:
        """Every connection the compiled path holds back to the Python table (its state written
        back, the records of exchanges it had begun taken as they came): before anything reads
        or closes connections in bulk."""
        if self.fast is not None and len(self.fast):
            for held in self.fast.release_all():
                self._replay(held)

    def _replay(self, held: list[bytes]) -> None:
        """Records the compiled path had taken since its connection last had nothing waiting,
        through on_event again: the connection's parser (idle all along) gets its state back.
        The spans they make were made in C already (replies of a Redis, Memcached or PostgreSQL
        pipeline still waiting for the rest; an unfinished HTTP/1 exchange makes none), so they
        are dropped."""
        batch = self.pipeline.batch
        made = len(batch)
        for raw in held:
            self.on_event(raw)
        del batch[made:]

    # -- events ------------------------------------------------------------------------
    def on_event(self, raw: bytes) -> None:
        if len(raw) < _HDR:
            self.stats["short_events"] += 1
            return
        ts, conn_id, pos, tid, total, copied, kind, proto, direction, source, transport = _UNPACK_HOT(raw)
        tracked = self.conns.get(conn_id)
        if kind == _EV_PAIR:
            # an exchange (bpf: pairing): its request chunk's own record follows the response
            # chunk's bytes and happened first
            request = raw[_HDR + copied:]
            if tracked is not None and tracked is not _IGNORED and self._exchange(
                    tracked, request, raw, ts, pos, total, copied, proto, direction, source):
                return
            self.on_event(request)
            tracked = self.conns.get(conn_id)
            kind = _EV_DATA
        if tracked is _IGNORED:
            return
        ts += self.offset_ns
        if kind != _EV_DATA:
            if tracked is not None:
                del self.conns[conn_id]
                self.tracked -= 1
                self.pipeline.close(tracked.conn, ts)
            return
        if tracked is None:
            tracked = self._open(raw)
            if tracked is None:
                return
        conn = tracked.conn
        if proto == _TLS_HANDSHAKE and conn.protocol != "TLS_HANDSHAKE":
            # handshake ciphertext racing the plaintext that ended the handshake: its bytes
            # only count in the stream position
            tracked.pos[0 if direction == _EGRESS else 1] = pos + total
            return
        if source and conn.source == "syscall":
            # upgraded to TLS mid-connection (PostgreSQL SSLRequest, STARTTLS): from now on
            # the bytes are the TLS library's plaintext
            conn.source = _SOURCE.get(source, "syscall")
            if conn.protocol == "TLS_HANDSHAKE":
                self._handshake_done(conn, proto, ts)
        egress = direction == _EGRESS
        d = 0 if egress else 1
        stream = tracked.pos
        expected = stream[d]
        if pos > expected and (expected or not (source or conn.protocol == "TLS_HANDSHAKE")):
            # ring buffer dropped events of this stream: tell the parser bytes are missing (on a
            # TLS connection the handshake's records and the library's plaintext share the
            # offsets and need not come in their order: there only a jump after a known offset
            # counts)
            self.stats["gaps"] += 1
            conn.epoch += 1
            self.pipeline.data(conn, egress, b"", ts, pos - expected, tid)
        stream[d] = pos + total
        if transport == _UDP:
            _laddr, raddr, _lport, rport, family, _p2, _comm = _UNPACK_ENDS(raw, _HOT.size)
            if family:
                conn.remote = (abi.ip_text(raddr), rport)
        self.pipeline.data(conn, egress, raw[_HDR:_HDR + copied], ts, total, tid)

    def _exchange(self, tracked: _Tracked, request: bytes, raw: bytes, ts: int, pos: int, total: int,
                  copied: int, proto: int, direction: int, source: int) -> bool:
        """The two chunks of a paired record in one go (Pipeline.exchange), when nothing about
        them needs on_event's other cases: False (nothing done) otherwise. `ts`: not offset yet."""
        if len(request) < _HDR:
            return False
        rts, _cid, rpos, rtid, rtotal, rcopied, _k, _p, rdir, rsource, _t = _UNPACK_HOT(request)
        conn = tracked.conn
        stream = tracked.pos
        rd = 0 if rdir == _EGRESS else 1
        d = 0 if direction == _EGRESS else 1
        if (rd == d or (rd == 0) != (conn.role != "SERVER") or _PROTO.get(proto) != conn.protocol
                or (source and conn.source == "syscall")
                or (rsource and conn.source == "syscall")
                or rpos != stream[rd] or pos != stream[d]):
            return False  # a TLS upgrade, a gap, an unexpected direction: the general path
        stream[rd] = rpos + rtotal
        stream[d] = pos + total
        offset = self.offset_ns
        self.pipeline.exchange(conn, request[_HDR:_HDR + rcopied], rts + offset, rtotal, rtid,
                               raw[_HDR:_HDR + copied], ts + offset, total)
        return True

    def _handshake_done(self, conn: Connection, proto: int, ts: int) -> None:
        """Plaintext flows: the TLS handshake succeeded (no span); parse the plaintext now."""
        if conn.parser is not None:
            conn.parser.established()
            self.pipeline.close(conn, ts)  # rolls its counters up
        conn.protocol = _PROTO.get(proto, "UNKNOWN")
        conn.parser = None

    def _open(self, raw: bytes) -> _Tracked | None:
        (_ts, conn_id, _pos, tgid, _tid, fd, _total, _copied, ino, _kind, proto, _dir, role, _mt,
         source, _fl, transport, laddr, raddr, lport, rport, family, _p2, comm) = _UNPACK(raw)
        local = (abi.ip_text(laddr), lport) if family and lport else None
        remote = (abi.ip_text(raddr), rport) if family and rport else None
        if (self.port is not None and role == abi.Role.CLIENT and remote is not None
                and remote[1] != self.port):
            # --port names a server port: a client connection to another server cannot match
            # through its own (ephemeral) port, so /proc is not read to learn that port
            self.conns[conn_id] = _IGNORED
            return None
        if local is None or remote is None:
            # the kernel reads the socket's addresses at its first record; what it could not
            # (no BTF offsets, a socket not bound or connected then) comes from /proc, by the
            # socket's inode where the kernel gave it (the fd may name another socket by now),
            # by remote address only for accepted sockets (a client's remote is not unique)
            entry = self.sockets.lookup(tgid, fd, remote if role == abi.Role.SERVER else None, inode=ino or None)
            if entry is not None:
                local, remote = entry.local, entry.remote
                self.stats["tuple_from_proc"] += 1
        if self.port is not None and not (
                (local and local[1] == self.port) or (remote and remote[1] == self.port)):
            self.conns[conn_id] = _IGNORED
            return None
        if local is None or remote is None:  # counted for the connections kept (--port)
            self.stats["tuple_unresolved"] += 1
        conn = Connection(
            conn_id=conn_id, pid=tgid, protocol=_PROTO.get(proto, "UNKNOWN"),
            role=_ROLE.get(role, "UNKNOWN"),
            transport="udp" if transport == abi.Transport.UDP else "tcp",
            local=local, remote=remote, resource=self._resource(tgid, comm),
            source=_SOURCE.get(source, "syscall"),
        )
        self.stats["connections"] += 1
        if self.tracked >= self.max_tracked:
            self._evict_least_recent(time.time_ns())
        tracked = _Tracked(conn, [0, 0], fd)
        conn.last_seen_ns = _ts + self.offset_ns
        self.conns[conn_id] = tracked
        self.tracked += 1
        return tracked

    def _resource(self, pid: int, comm: bytes) -> dict:
        res = self.resource_for(pid)
        if "process.executable.name" not in res:
            # the process exited before we looked: the kernel's task name is all there is
            name = comm_name(comm.split(b"\0", 1)[0].decode("utf-8", "replace"))
            res = {**res, "process.executable.name": name}
            if res.get("service.name", "unknown") == "unknown":
                res["service.name"] = name
        return res

    # -- housekeeping ------------------------------------------------------------------
    def sweep(self, force: bool = False) -> None:
        """Close connections whose process exited (exit closes fds without close()) and
        those idle past the timeout; bound the ids remembered as filtered out."""
        now = time.monotonic()
        if not force and now - self._last_sweep < IDLE_SWEEP_S:
            return
        self._last_sweep = now
        self.hand_back()
        if self.kernel_held is not None:
            for raw in self.kernel_held(lambda pid: os.path.exists(f"/proc/{pid}")):
                self.on_event(raw)
        now_ns = time.time_ns()
        idle_before = now_ns - int(self.idle_timeout_s * 1e9)
        for conn_id, tracked in list(self.conns.items()):
            if tracked is _IGNORED:
                continue
            if not os.path.exists(f"/proc/{tracked.conn.pid}"):
                self._forget(conn_id, tracked, "closed_by_exit", now_ns)
            elif tracked.conn.last_seen_ns < idle_before:
                self._forget(conn_id, tracked, "closed_idle", now_ns)
        if len(self.conns) - self.tracked > MAX_IGNORED:  # bound memory if ignored ids pile up
            self.stats["ignored_ids_forgotten"] += len(self.conns) - self.tracked
            self.conns = {k: v for k, v in self.conns.items() if v is not _IGNORED}

    def _forget(self, conn_id: int, tracked: _Tracked, reason: str, now_ns: int) -> None:
        del self.conns[conn_id]
        self.tracked -= 1
        self.stats[reason] += 1
        self.pipeline.close(tracked.conn, now_ns)

    def _evict_least_recent(self, now_ns: int) -> None:
        """The table is full: close the least recently active tenth (one sort per tenth,
        not an LRU reordering on every event)."""
        self.hand_back()
        live = [(t.conn.last_seen_ns, k) for k, t in self.conns.items() if t is not _IGNORED]
        live.sort()
        for _seen, conn_id in live[:max(1, len(live) // 10)]:
            self._forget(conn_id, self.conns[conn_id], "evicted_table_full", now_ns)

    def close_all(self) -> None:
        self.hand_back()
        if self.kernel_held is not None:
            for raw in self.kernel_held(None):
                self.on_event(raw)
        now = time.time_ns()
        for tracked in self.conns.values():
            if tracked is not _IGNORED:
                self.pipeline.close(tracked.conn, now)
        self.conns.clear()
        self.tracked = 0

    def parser_stats(self) -> Counter[str]:
        """The open connections' parser counters by protocol; safe from another thread (a
        /metrics scrape) while the capture thread opens and closes connections."""
        total: Counter[str] = Counter()
        for tracked in snapshot.copy(self.conns).values():
            if tracked is _IGNORED:
                continue
            conn = tracked.conn
            parser = conn.parser  # once: the capture thread may replace it meanwhile
            if parser is not None:
                proto = conn.protocol.lower()
                for k, v in snapshot.copy(parser.stats).items():
                    total[f"{proto}.{k}"] += v
        return total
