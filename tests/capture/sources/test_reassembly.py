"""TCP reassembly of one direction: order, retransmits, overlaps, holes, wraparound."""
from collections import Counter

from capture.sources.reassembly import Stream, seq_diff


def chunks(out):
    return [(c.data, c.size) for c in out]


def new(seq=100):
    s = Stream(Counter())
    s.syn(seq - 1)
    return s


def test_in_order_segments_come_out_as_sent():
    s = new()
    assert chunks(s.segment(100, b"abc", 3, 1)) == [(b"abc", 3)]
    assert chunks(s.segment(103, b"de", 2, 2)) == [(b"de", 2)]


def test_retransmit_is_dropped_and_overlap_trimmed():
    s = new()
    s.segment(100, b"abcd", 4, 1)
    assert s.segment(100, b"abcd", 4, 2) == []
    assert chunks(s.segment(102, b"cdef", 4, 3)) == [(b"ef", 2)]
    assert s.stats["retransmits"] == 1 and s.stats["overlaps"] == 1


def test_out_of_order_waits_for_the_hole():
    s = new()
    assert s.segment(103, b"def", 3, 1) == []
    assert s.segment(106, b"g", 1, 2) == []
    assert chunks(s.segment(100, b"abc", 3, 3)) == [(b"abc", 3), (b"def", 3), (b"g", 1)]


def test_hole_acked_by_the_peer_becomes_a_gap():
    s = new()
    s.segment(100, b"abc", 3, 1)
    assert s.segment(110, b"xyz", 3, 2) == []
    # the receiver acknowledged past the hole: the capture lost it, it will never come
    assert chunks(s.ack(113, 3)) == [(b"", 7), (b"xyz", 3)]
    assert s.stats["gaps"] == 1


def test_segment_after_an_ack_beyond_the_hole_is_delivered_at_once():
    s = new()
    s.segment(100, b"abc", 3, 1)
    s.ack(200, 2)
    assert chunks(s.segment(150, b"q", 1, 3)) == [(b"", 47), (b"q", 1)]


def test_finish_flushes_with_gaps():
    s = new()
    s.segment(100, b"a", 1, 1)
    s.segment(105, b"f", 1, 2)
    assert chunks(s.finish(3)) == [(b"", 4), (b"f", 1)]


def test_mid_stream_start_without_syn():
    s = Stream(Counter())
    assert chunks(s.segment(777, b"xy", 2, 1)) == [(b"xy", 2)]
    assert chunks(s.segment(779, b"z", 1, 2)) == [(b"z", 1)]


def test_sequence_wraparound():
    s = new(0xFFFFFFFE)
    assert chunks(s.segment(0xFFFFFFFE, b"ab", 2, 1)) == [(b"ab", 2)]
    assert chunks(s.segment(0, b"cd", 2, 2)) == [(b"cd", 2)]
    assert seq_diff(1, 0xFFFFFFFF) == 2


def test_truncated_segment_keeps_its_real_size():
    s = new()
    assert chunks(s.segment(100, b"ab", 10, 1)) == [(b"ab", 10)]
    assert chunks(s.segment(110, b"k", 1, 2)) == [(b"k", 1)]
