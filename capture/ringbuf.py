"""Reading a BPF ring buffer straight from its memory mapping, a batch at a time.

libbpf's ring_buffer__poll (what BCC offers) calls back into Python through ctypes once per
record; at tens of thousands of events a second that call is a large share of the agent's
CPU. The kernel's layout is a stable ABI (include/uapi/linux/bpf.h, kernel/bpf/ringbuf.c):

  offset 0          one page, read-write: the consumer position (u64)
  offset page       one page, read-only: the producer position (u64)
  offset 2 * page   the data area; the kernel offers it twice in a row (a record that wraps
                    around the end then reads as one slice), but every page of a mapping counts
                    in the agent's resident set: it is mapped once, and the few records that
                    wrap are copied in two pieces

Each record starts with an 8-byte header: u32 length (bit 31 busy: still being written,
bit 30 discarded) and u32 page offset; records are 8-byte aligned. The consumer owns the
consumer position and moves it past the records it has read; x86 keeps loads and stores in
order, which is all the protocol needs from us (acquire on the producer position and the
header, release on the consumer position).

Every record the capture sends starts with its u64 CLOCK_MONOTONIC timestamp (struct
guardian_event.ts_ns), which OrderedRings uses to merge the main ring with its spill ring.
"""
from __future__ import annotations

import mmap
import select
import struct
import time
from typing import Callable

try:
    from capture import _ring  # the loops below in C (setup.py builds it)
except ImportError:  # not built: the Python loops, same results
    _ring = None

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
NEVER = (1 << 64) - 1  # a timestamp after every record


class RingReader:
    """Consumer side of one BPF_MAP_TYPE_RINGBUF map (data_size: its max_entries, bytes)."""

    def __init__(self, map_fd: int, data_size: int, edge: bool = False) -> None:
        if data_size <= 0 or data_size & (data_size - 1):
            raise ValueError(f"ring buffer size must be a power of two, got {data_size}")
        page = mmap.PAGESIZE
        self.size, self.mask = data_size, data_size - 1
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._prod = mmap.mmap(map_fd, page + data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data_at = page  # the data area's offset inside the producer mapping
        self._epoll = select.epoll()
        # edge-triggered: wait() then sleeps through unread records until the kernel signals
        # (bpf: ringbuf_send wakes only past a mark) or the timeout; level-triggered, it
        # returns at once while anything is unread, records younger than the read horizon too
        self._epoll.register(map_fd, select.EPOLLIN | (select.EPOLLET if edge else 0))
        self.records = 0  # records handed to the handler so far
        self.wakeups = 0  # waits the kernel ended (the others ran out their timeout)
        self.max_backlog = 0  # most bytes found waiting at the start of a drain

    def wait(self, timeout_s: float) -> bool:
        """Block until the kernel signals data (or the timeout); True when there is some."""
        if self._epoll.poll(timeout_s):
            self.wakeups += 1
            return True
        return self.pending() > 0

    def pending(self) -> int:
        """Bytes written by the producer and not yet consumed."""
        return _U64.unpack_from(self._prod, 0)[0] - _U64.unpack_from(self._cons, 0)[0]

    def read(self, limit: int = 1 << 20, until_ts: int = NEVER) -> list[bytes]:
        """Committed records (at most `limit`) in ring order, stopping at the first one
        stamped after `until_ts`; the consumer position moves past them."""
        if _ring is not None:
            records, backlog = _ring.read(self._prod, self._cons, self._data_at, self.mask, limit, until_ts)
        else:
            records, backlog = self._read(limit, until_ts)
        if backlog > self.max_backlog:
            self.max_backlog = backlog
        self.records += len(records)
        return records

    def _read(self, limit: int, until_ts: int) -> tuple[list[bytes], int]:
        """read() without the extension: the specification of capture/_ring.c read()."""
        prod_map, cons_map = self._prod, self._cons
        u32, u64 = _U32.unpack_from, _U64.unpack_from
        base, mask = self._data_at, self.mask
        end = base + mask + 1

        def body(at: int, n: int) -> bytes:  # n bytes from data offset `at`, across the end
            start = base + (at & mask)
            if start + n <= end:
                return prod_map[start:start + n]
            return prod_map[start:end] + prod_map[base:base + n - (end - start)]

        cons = u64(cons_map, 0)[0]
        prod = u64(prod_map, 0)[0]
        backlog = prod - cons
        out: list[bytes] = []
        n = 0
        try:
            while cons < prod and n < limit:
                at = base + (cons & mask)
                length = u32(prod_map, at)[0]
                if length & BUSY_BIT:
                    break  # reserved, not yet submitted: records after it wait too
                size = length & ~(BUSY_BIT | DISCARD_BIT)
                if not length & DISCARD_BIT:
                    if size >= 8 and _U64.unpack(body(cons + HEADER, 8))[0] > until_ts:
                        break  # too recent: an older record may still come through the spill ring
                    out.append(body(cons + HEADER, size))
                    n += 1
                cons += (size + HEADER + 7) & ~7
                if n & 255 == 0:  # give the producer its space back during long batches
                    _U64.pack_into(cons_map, 0, cons)
                if cons >= prod:
                    prod = u64(prod_map, 0)[0]
        finally:
            _U64.pack_into(cons_map, 0, cons)
        return out, backlog

    def drain(self, handle: Callable[[bytes], None], limit: int = 1 << 20,
              until_ts: int = NEVER) -> int:
        """read(), each record handed to `handle`; returns how many."""
        records = self.read(limit, until_ts)
        for raw in records:
            handle(raw)
        return len(records)

    def close(self) -> None:
        self._epoll.close()
        self._prod.close()
        self._cons.close()


class OrderedRings:
    """The main ring and its spill ring, read as one stream in time order.

    A record the main ring refuses goes to the spill ring (bpf/guardian.bpf.c ringbuf_send),
    so a spilled record can be older than records already waiting in the main ring. Records
    are handed over once they are older than a horizon, now - HOLD_NS: a BPF program takes
    its timestamp and commits its record within microseconds, without sleeping, so by then
    every record stamped before the horizon is in one ring or the other, and merging both by
    timestamp up to the horizon gives the order in which things happened (a write is stamped
    at its syscall's entry and committed at its exit: a long write's spilled record can come
    after the horizon passed it, and goes at the head of the next batch). Costs: records
    younger than HOLD_NS wait for the next read, and one timestamp comparison per record.
    """

    # A record's stamp and its commit are one BPF program apart (microseconds; more only if
    # an interrupt lands in between). Kept short: a span handed over late is a span whose
    # process may be gone before /proc tells its connection's addresses.
    HOLD_NS = 200_000
    MAX_HELD = 1 << 16  # spilled records held back at most; beyond, the spill ring waits (and fills)
    # ... and bytes: while the main ring lags behind at saturation, everything spilled meanwhile
    # waits here for the main ring to reach its time (a few times the spill ring's own size)
    MAX_HELD_BYTES = 4 << 20

    def __init__(self, main: RingReader, spill: RingReader,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.main, self.spill, self.clock = main, spill, clock
        # spilled records not yet handed over, sorted by timestamp, from index _start on
        self._held: list[bytes] = []
        self._start = 0
        self.held_bytes = 0  # bytes of the held records

    @property
    def size(self) -> int:
        return self.main.size

    @property
    def max_backlog(self) -> int:
        return self.main.max_backlog

    @property
    def wakeups(self) -> int:
        return self.main.wakeups

    @property
    def spilled(self) -> int:
        return self.spill.records

    @property
    def held(self) -> int:
        """Spilled records read and not yet handed over."""
        return len(self._held) - self._start

    def wait(self, timeout_s: float) -> bool:
        return self.main.wait(timeout_s) or self.spill.pending() > 0 or self.held > 0

    def pending_bytes(self) -> int:
        """Bytes in both rings not read yet (spilled records read and held back not counted)."""
        return self.main.pending() + self.spill.pending()

    def read(self, limit: int = 1 << 20, until_ts: int | None = None) -> list[bytes]:
        """Records stamped up to `until_ts` (default: the horizon) in time order, at most
        about `limit` from the main ring."""
        horizon = self.clock() - self.HOLD_NS if until_ts is None else until_ts
        if self.held < self.MAX_HELD and self.held_bytes < self.MAX_HELD_BYTES and self.spill.pending():
            self._hold(self.spill.read(self.MAX_HELD - self.held, horizon))
        records = self.main.read(limit, horizon)
        if self.held:
            # once the main ring is read up to the horizon, what was spilled before it is due
            start = self._start
            records, self._start = _merge(records, self._held, start, horizon, len(records) < limit)
            self.held_bytes -= sum(map(len, self._held[start:self._start]))
            if self._start > 4096 and 2 * self._start > len(self._held):
                del self._held[:self._start]
                self._start = 0
        return records

    def drain(self, handle: Callable[[bytes], None], limit: int = 1 << 20,
              until_ts: int | None = None) -> int:
        """read(), each record handed to `handle`; returns how many."""
        records = self.read(limit, until_ts)
        for raw in records:
            handle(raw)
        return len(records)

    def _hold(self, spilled: list[bytes]) -> None:
        if not spilled:
            return
        spilled = _sort(spilled)  # a ring is in reservation order: CPUs interleave
        self.held_bytes += sum(map(len, spilled))
        held = self._held
        if self.held and _U64.unpack_from(held[-1])[0] > _U64.unpack_from(spilled[0])[0]:
            self._held, self._start = _sort(held[self._start:] + spilled), 0
        else:
            held.extend(spilled)

    def close(self) -> None:
        self.main.close()
        self.spill.close()


def _ts(raw: bytes) -> int:
    return _U64.unpack_from(raw)[0]


def _sort(records: list[bytes]) -> list[bytes]:
    """Records by timestamp, ring order among equals."""
    return _ring.sort(records) if _ring is not None else sorted(records, key=_ts)


def _merge(main: list[bytes], held: list[bytes], start: int, horizon: int,
           rest: bool) -> tuple[list[bytes], int]:
    """Ring-ordered `main` with the timestamp-sorted held[start:] placed in time: a held
    record goes just before the first main record stamped at or after it; with `rest`, held
    records stamped up to `horizon` follow. Returns the records and the next start."""
    if _ring is not None:
        return _ring.merge(main, held, start, horizon, rest)
    out: list[bytes] = []
    h, n = start, len(held)
    for raw in main:
        ts = _ts(raw)
        while h < n and _ts(held[h]) <= ts:
            out.append(held[h])
            h += 1
        out.append(raw)
    while rest and h < n and _ts(held[h]) <= horizon:
        out.append(held[h])
        h += 1
    return out, h
