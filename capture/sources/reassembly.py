"""TCP stream reassembly for one direction of a recorded connection (RFC 9293 sequence space).

Rule 1: bytes come out in stream order, each segment once: retransmits and overlaps are
        trimmed, out-of-order segments wait for the hole to fill.
Rule 2: a hole that will never fill (the receiver acknowledged past it, too much is waiting,
        or the capture ended) comes out as a gap: a chunk with no data and `size` = the
        missing byte count, so the parser resynchronises instead of mis-framing.
Rule 3: without a SYN (capture started mid-connection) the first data segment sets the start.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_PENDING_SEGMENTS = 256
MAX_PENDING_BYTES = 4 * 1024 * 1024
MAX_HELD_BYTES = 64 * 1024 * 1024  # copied bytes waiting in all streams sharing one stats Counter
HELD = "reassembly_held_bytes"  # the stats key that carries that total


def seq_diff(a: int, b: int) -> int:
    """a - b in 32-bit sequence space (serial number arithmetic, RFC 1982)."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


@dataclass(slots=True)
class Chunk:
    """Stream bytes ready for a parser; `data` is a prefix of `size` bytes (empty for a gap)."""

    ts_ns: int
    data: bytes
    size: int


@dataclass(slots=True)
class Stream:
    stats: Counter[str]
    next_seq: int | None = None
    acked: int | None = None  # highest ack the peer sent: it holds everything before this
    pending: dict[int, tuple[int, bytes, int]] = field(default_factory=dict)  # seq -> (ts, data, size)
    pending_bytes: int = 0

    def syn(self, seq: int) -> None:
        """A SYN starts the sequence space; a new one (port reuse) restarts it."""
        self.next_seq = (seq + 1) & 0xFFFFFFFF
        self.release()

    def segment(self, seq: int, data: bytes, size: int, ts_ns: int) -> list[Chunk]:
        """One captured segment carrying `size` stream bytes of which `data` were captured."""
        if size <= 0:
            return []
        if self.next_seq is None:
            self.next_seq = seq
        ahead = seq_diff(seq, self.next_seq)
        if ahead < 0:  # starts before what we delivered: retransmit or overlap
            if size + ahead <= 0:
                self.stats["retransmits"] += 1
                return []
            self.stats["overlaps"] += 1
            data, size, seq = data[-ahead:], size + ahead, self.next_seq
            ahead = 0
        if ahead > 0:
            if seq not in self.pending:
                self.pending[seq] = (ts_ns, data, size)
                self.pending_bytes += size
                self.stats[HELD] += len(data)
                self.stats["out_of_order"] += 1
            if self._hole_is_lost(seq):
                return self._drain(ts_ns, force=True)
            return []
        out = [self._deliver(ts_ns, data, size)]
        if self.pending:
            out += self._drain(ts_ns, force=False)
        return out

    def ack(self, ack: int, ts_ns: int) -> list[Chunk]:
        """The peer acknowledged up to `ack`: a hole below it was lost by the capture, not the network."""
        if self.acked is None or seq_diff(ack, self.acked) > 0:
            self.acked = ack
        if self.pending and self.next_seq is not None and seq_diff(ack, self.next_seq) > 0:
            return self._drain(ts_ns, force=True)
        return []

    def finish(self, ts_ns: int) -> list[Chunk]:
        """The connection or the capture ended: whatever waits comes out, with gaps."""
        return self._drain(ts_ns, force=True) if self.pending else []

    def release(self) -> None:
        """Drop whatever waits (a flow evicted or restarted): its bytes leave the shared total."""
        self.stats[HELD] -= sum(len(d) for _, d, _ in self.pending.values())
        self.pending.clear()
        self.pending_bytes = 0

    # -- internals -----------------------------------------------------------------------
    def _hole_is_lost(self, seq: int) -> bool:
        if len(self.pending) > MAX_PENDING_SEGMENTS or self.pending_bytes > MAX_PENDING_BYTES:
            return True
        if self.stats[HELD] > MAX_HELD_BYTES:
            self.stats["reassembly_held_limit"] += 1
            return True
        return self.acked is not None and seq_diff(self.acked, self.next_seq) > 0

    def _deliver(self, ts_ns: int, data: bytes, size: int) -> Chunk:
        self.next_seq = (self.next_seq + size) & 0xFFFFFFFF
        return Chunk(ts_ns, data, size)

    def _drain(self, ts_ns: int, force: bool) -> list[Chunk]:
        """Deliver waiting segments in order; with `force`, jump holes as gaps."""
        out: list[Chunk] = []
        while self.pending:
            seq = min(self.pending, key=lambda s: seq_diff(s, self.next_seq))
            ahead = seq_diff(seq, self.next_seq)
            if ahead > 0 and not force:
                break
            seg_ts, data, size = self.pending.pop(seq)
            self.pending_bytes -= size
            self.stats[HELD] -= len(data)
            if ahead > 0:
                self.stats["gaps"] += 1
                out.append(self._deliver(ts_ns, b"", ahead))
            elif ahead < 0:  # overlaps what was delivered meanwhile
                if size + ahead <= 0:
                    continue
                data, size = data[-ahead:], size + ahead
            out.append(self._deliver(seg_ts, data, size))
        return out
