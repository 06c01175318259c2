"""Length-prefixed framing of one direction of a stream, for binary protocols (MongoDB, Kafka, CQL, AMQP, DNS/TCP).

Rule 1: a frame's length comes from its header (`length_of`); frames come out whole, with
        the timestamps of their first and last byte.
Rule 2: bytes the capture did not copy (`size` > len(data)) inside a frame make a truncated
        frame: its copied prefix comes out with `size` = its real length. Lost bytes that
        cross a frame boundary, or a header that does not validate, lose sync.
Rule 3: out of sync, a direction waits for a chunk that starts with a valid header
        (syscalls write whole messages: a message boundary is a chunk boundary).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

MAX_BUFFER = 1 << 20  # bytes of one frame kept for parsing; the rest of a larger frame is skipped


@dataclass(slots=True)
class Frame:
    data: bytes  # the frame, or its first bytes when truncated
    size: int  # real length in the stream
    start_ns: int
    end_ns: int

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.size


class FrameReader:
    """`length_of(header) -> total frame length or None (not a valid header)`, header of `header_len`
    bytes (or `header_len(first byte)` when the first byte says, as CQL's version does)."""

    def __init__(self, header_len: int | Callable[[int], int], length_of: Callable[[bytes], int | None],
                 stats: Counter[str], starts: Callable[[bytes], bool] | None = None,
                 bad_header: str = "bad_header") -> None:
        self._hlen = header_len if callable(header_len) else (lambda _b, n=header_len: n)
        self._fixed = 0 if callable(header_len) else header_len
        self.length_of = length_of
        self.starts = starts  # stricter test of a chunk that may end a resync (e.g. a command packet)
        self.bad_header = bad_header  # the stat a header that does not validate counts under
        self.stats = stats
        self.synced = True
        self._buf = bytearray()
        self._need = 0  # total length of the frame being collected (0: reading a header)
        self._got = 0  # bytes of it seen so far (kept or skipped)
        self._start = 0

    @property
    def idle(self) -> bool:
        """In sync, no frame begun."""
        return self.synced and not self._buf and not self._need and not self._got

    def feed(self, data: bytes, ts_ns: int, size: int | None = None) -> list[Frame]:
        size = len(data) if size is None else max(size, len(data))
        if not self.synced:
            hlen = self._hlen(data[0]) if data else 1
            if len(data) < hlen or self.length_of(data[:hlen]) is None or \
                    (self.starts is not None and not self.starts(data)):
                self.stats["resync_skipped_chunks"] += 1
                return []
            self.synced = True
            self.stats["resyncs"] += 1
        out: list[Frame] = []
        pos = 0
        fixed = self._fixed
        if fixed and not self._need and not self._buf:
            # the common case: whole frames inside this chunk, sliced out without buffering
            length_of, n = self.length_of, len(data)
            while pos + fixed <= n:
                need = length_of(data[pos:pos + fixed])
                if need is None or not fixed <= need <= MAX_BUFFER or pos + need > n:
                    break
                out.append(Frame(data[pos:pos + need], need, ts_ns, ts_ns))
                pos += need
        while pos < len(data):
            pos = self._take(data, pos, ts_ns, out)
            if not self.synced:
                return out
        missing = size - len(data)
        if missing > 0:
            if self._need and self._got + missing <= self._need:
                self._got += missing
                if self._got == self._need:
                    self._emit(ts_ns, out)
            else:
                self.lose("lost_bytes")
        return out

    def lose(self, reason: str) -> None:
        self.stats[reason] += 1
        self.synced = False
        self._buf, self._need, self._got = bytearray(), 0, 0

    def _take(self, data: bytes, pos: int, ts_ns: int, out: list[Frame]) -> int:
        if not self._need:
            if not self._buf and not self._got:
                self._start = ts_ns
            hlen = self._hlen(self._buf[0] if self._buf else data[pos])
            want = hlen - len(self._buf)
            self._buf += data[pos:pos + want]
            pos += min(want, len(data) - pos)
            if len(self._buf) < hlen:
                return pos
            need = self.length_of(bytes(self._buf))
            if need is None or need < hlen:
                self.lose(self.bad_header)
                return len(data)
            self._need, self._got = need, hlen
        take = min(self._need - self._got, len(data) - pos)
        keep = max(0, min(take, MAX_BUFFER - len(self._buf)))
        self._buf += data[pos:pos + keep]
        self._got += take
        pos += take
        if self._got == self._need:
            self._emit(ts_ns, out)
        return pos

    def _emit(self, ts_ns: int, out: list[Frame]) -> None:
        out.append(Frame(bytes(self._buf), self._need, self._start, ts_ns))
        self._buf, self._need, self._got = bytearray(), 0, 0
