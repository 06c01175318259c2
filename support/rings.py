"""BPF ring buffers laid out in memory as the kernel maps them, for reading records without a
kernel: tests of capture.ringbuf and bench.events' replay through the ring."""
from __future__ import annotations

import mmap
import struct

from capture.ringbuf import HEADER, RingReader

PAGE = mmap.PAGESIZE


def mapped_ring(records: list[bytes], size: int | None = None, start: int = 0,
                flags: dict[int, int] | None = None) -> RingReader:
    """A RingReader over anonymous mappings (consumer page; producer page + the data area once,
    as RingReader maps it) holding `records` from ring position `start` on; `flags`: record index ->
    BUSY_BIT / DISCARD_BIT set in its header. `size` (a power of two) defaults to one that
    holds them all."""
    total = sum((len(r) + HEADER + 7) & ~7 for r in records)
    size = size or 1 << max(total, PAGE).bit_length()
    prod, cons = mmap.mmap(-1, PAGE + size), mmap.mmap(-1, PAGE)
    pos = start
    for i, body in enumerate(records):
        blob = struct.pack("<II", len(body) | (flags or {}).get(i, 0), 0) + body
        at = pos & (size - 1)
        first = min(len(blob), size - at)
        prod[PAGE + at:PAGE + at + first] = blob[:first]
        if first < len(blob):  # wrapped: the rest at the start of the area
            rest = blob[first:]
            prod[PAGE:PAGE + len(rest)] = rest
        pos += (len(body) + HEADER + 7) & ~7
    struct.pack_into("<Q", prod, 0, pos)
    struct.pack_into("<Q", cons, 0, start)
    reader = object.__new__(RingReader)  # no BPF map behind it: only the mappings
    reader.size, reader.mask, reader._data_at = size, size - 1, PAGE
    reader._prod, reader._cons = prod, cons
    reader.records = reader.max_backlog = reader.wakeups = 0
    return reader
