"""OrderedRings (capture/ringbuf.py): the main ring and its spill ring read as one stream in
time order. The rings here are in-memory stand-ins with RingReader's drain contract (records
in ring order, stop at the first one stamped after until_ts); the kernel side is exercised by
tests/capture/live/test_live_http1.py::test_records_the_main_ring_refuses_arrive_in_order."""
from __future__ import annotations

import struct

from capture.ringbuf import NEVER, OrderedRings


class ListRing:
    def __init__(self, stamps=()):
        self.queue = [self.record(ts) for ts in stamps]
        self.records = 0
        self.max_backlog = 0
        self.size = 1 << 20

    @staticmethod
    def record(ts: int) -> bytes:
        return struct.pack("<Q", ts) + b"payload"

    def pending(self) -> int:
        return len(self.queue)

    def wait(self, timeout_s: float) -> bool:
        return bool(self.queue)

    def drain(self, handle, limit=1 << 20, until_ts=NEVER) -> int:
        n = 0
        while self.queue and n < limit and struct.unpack_from("<Q", self.queue[0])[0] <= until_ts:
            handle(self.queue.pop(0))
            n += 1
        self.records += n
        return n

    def close(self) -> None:
        pass


def stamps(out: list[bytes]) -> list[int]:
    return [struct.unpack_from("<Q", r)[0] for r in out]


def test_spilled_records_take_their_place_in_time():
    main, spill = ListRing([10, 20, 40, 50]), ListRing([15, 30, 45])
    rings = OrderedRings(main, spill, clock=lambda: 10**9)
    out: list[bytes] = []
    while rings.drain(out.append, limit=2):
        pass
    assert stamps(out) == [10, 15, 20, 30, 40, 45, 50]


def test_records_newer_than_the_horizon_wait():
    now = [100 + OrderedRings.HOLD_NS]
    main, spill = ListRing([50, 90, 150]), ListRing([120])
    rings = OrderedRings(main, spill, clock=lambda: now[0])
    out: list[bytes] = []
    rings.drain(out.append)
    assert stamps(out) == [50, 90]  # 120 and 150 are younger than the horizon (100)
    spill.queue.append(ListRing.record(95))  # spilled after the first read, stamped before 120
    now[0] = 200 + OrderedRings.HOLD_NS
    rings.drain(out.append)
    assert stamps(out) == [50, 90, 95, 120, 150]


def test_held_back_spill_records_are_bounded():
    main, spill = ListRing([5]), ListRing(range(10, 10 + 70_000))
    rings = OrderedRings(main, spill, clock=lambda: 10**9)
    out: list[bytes] = []
    rings.drain(out.append)
    assert len(rings._held) <= OrderedRings.MAX_HELD
    while rings.drain(out.append, until_ts=NEVER):
        pass
    assert stamps(out) == [5, *range(10, 10 + 70_000)]
