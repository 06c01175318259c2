"""OrderedRings (capture/ringbuf.py): the main ring and its spill ring read as one stream in
time order. The rings here are in-memory stand-ins with RingReader's drain contract (records
in ring order, stop at the first one stamped after until_ts); the kernel side is exercised by
tests/capture/live/test_live_http1.py::test_records_the_main_ring_refuses_arrive_in_order."""
from __future__ import annotations

import mmap
import struct

import pytest

from capture import ringbuf
from capture.ringbuf import NEVER, OrderedRings
from support.rings import mapped_ring


@pytest.fixture(autouse=True, params=["c", "python"])
def loops(request, monkeypatch):
    """Every test runs with the C loops (capture/_ring.c) and with their Python specification."""
    if request.param == "python":
        monkeypatch.setattr(ringbuf, "_ring", None)
    elif ringbuf._ring is None:  # make setup builds it (pip install -e . runs setup.py)
        pytest.fail("capture._ring is not built: python setup.py build_ext --inplace")
    return request.param


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

    def read(self, limit=1 << 20, until_ts=NEVER) -> list[bytes]:
        out = []
        while self.queue and len(out) < limit and struct.unpack_from("<Q", self.queue[0])[0] <= until_ts:
            out.append(self.queue.pop(0))
        self.records += len(out)
        return out

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
    assert rings.held <= OrderedRings.MAX_HELD
    while rings.drain(out.append, until_ts=NEVER):
        pass
    assert stamps(out) == [5, *range(10, 10 + 70_000)]


def test_held_back_spill_records_are_bounded_in_bytes():
    """While the main ring lags (every read a full batch), spilled records wait for it: at most
    MAX_HELD_BYTES (and one more read of the spill ring, 1 MiB here) of them, then the spill ring waits."""
    big = b"x" * 4000

    class OneMiB(ListRing):  # what a 1 MiB ring can hold at once
        def read(self, limit=1 << 20, until_ts=NEVER):
            return super().read(min(limit, (1 << 20) // 4008), until_ts)

    main = ListRing([1, *range(2, 2 + 5000)])
    spill = OneMiB()
    spill.queue = [ListRing.record(100_000 + i) + big for i in range(5000)]
    rings = OrderedRings(main, spill, clock=lambda: 10**9)
    out: list[bytes] = []
    most = 0
    while rings.drain(out.append, limit=16):
        most = max(most, rings.held_bytes)
        assert rings.held_bytes == sum(map(len, rings._held[rings._start:]))
    assert OrderedRings.MAX_HELD_BYTES <= most <= OrderedRings.MAX_HELD_BYTES + (1 << 20)
    assert rings.held_bytes == 0
    assert stamps(out) == [1, *range(2, 2 + 5000), *range(100_000, 105_000)]


def test_reading_a_mapped_ring_wraps_skips_discards_and_stops_at_busy_or_new():
    bodies = [struct.pack("<Q", 100 + i) + bytes([i]) * (i * 37 % 300) for i in range(40)]
    records = [(ringbuf.DISCARD_BIT if i % 7 == 3 else 0, b) for i, b in enumerate(bodies)]
    records[30] = (ringbuf.BUSY_BIT, bodies[30])
    reader = mapped_ring([b for _, b in records], size=16384, start=16384 * 3 - 200,  # wraps around the end
                         flags={i: f for i, (f, _) in enumerate(records) if f})
    kept = [b for i, (f, b) in enumerate(records) if i < 30 and not f]
    first = [bytes(r) for r in reader.read(limit=5)]
    assert first == kept[:5] and reader.records == 5
    assert reader.read(until_ts=100 + 20) == [b for b in kept[5:] if struct.unpack_from("<Q", b)[0] <= 120]
    assert reader.read() == [b for b in kept if struct.unpack_from("<Q", b)[0] > 120]  # stops at busy
    assert reader.read() == []
    assert reader.max_backlog > 0
    consumed = struct.unpack_from("<Q", reader._cons)[0]
    assert consumed == 16384 * 3 - 200 + sum((len(b) + 15) & ~7 for b in bodies[:30])


def test_records_that_wrap_around_the_end_of_the_data_area_read_whole():
    """The data area is mapped once (not twice, as the kernel offers): a record whose timestamp
    or bytes meet the end of the area is put together from its two parts."""
    size = 4096
    for start_back in range(8, 700, 8):  # every 8-aligned way of meeting the end
        bodies = [struct.pack("<Q", 1000 + i) + bytes([i + 1]) * (i * 53 % 400) for i in range(12)]
        reader = mapped_ring(bodies, size=size, start=size * 5 - start_back)
        assert len(reader._prod) == mmap.PAGESIZE + size  # the data area once
        assert [bytes(r) for r in reader.read()] == bodies, start_back


@pytest.mark.parametrize("before_end", [8, 16, 24, 200])
def test_a_record_across_the_end_of_the_data_area_reads_whole(before_end):
    """The data area is mapped once: a record whose header is the area's last 8 bytes (its
    timestamp and body at the start), or whose body is cut anywhere, is copied in two pieces."""
    size = 4096
    bodies = [struct.pack("<Q", 7 + i) + bytes(range(i, i + 90)) for i in range(4)]
    reader = mapped_ring(bodies, size=size, start=size * 5 - before_end)
    assert [bytes(r) for r in reader.read()] == bodies
    assert reader.read(until_ts=0) == []
