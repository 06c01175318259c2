"""The stream linker under a flood: spans waiting and spans kept as context stay bounded in
count (released early, counted) instead of growing with the traffic of one window."""
from __future__ import annotations

from capture.span import Span
from capture.traces.stream import StreamLinker

MS = 1_000_000


def test_a_flood_within_one_window_keeps_pending_and_context_bounded():
    stream = StreamLinker(window_s=5.0, max_pending=1000)
    released = 0
    for i in range(20_000):  # 20,000 spans within 2 s of stream time: all in one window
        t = i * 100_000
        s = Span(name="GET /", kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=t + MS,
                 attributes={"server.port": 80, "client.port": 40000 + i % 20000})
        released += len(stream.add([s]))
        assert stream.pending <= 1000 and len(stream._context) <= 1000
    assert stream.forced > 0 and stream.context_trimmed > 0
    released += len(stream.flush())
    assert released == 20_000  # every span still comes out, once
