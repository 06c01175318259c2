"""capture.batchqueue: bounded in spans and in batches, never blocking the producer."""
from __future__ import annotations

import queue
import threading

import pytest

from capture.batchqueue import BatchQueue


def test_span_bound_refuses_and_taken_frees_room():
    q = BatchQueue(max_batches=10, max_spans=5)
    assert q.offer([1, 2, 3])
    assert not q.offer([4, 5, 6])  # 6 spans > 5
    assert q.spans == 3
    assert q.offer([4, 5])
    assert q.get() == [1, 2, 3]
    assert not q.offer([6])  # got but not yet taken: still counted
    q.taken(3)
    assert q.offer([6]) and q.spans == 3


def test_batch_bound_refuses_without_leaking_the_span_count():
    q = BatchQueue(max_batches=2, max_spans=100)
    assert q.offer([1]) and q.offer([2])
    assert not q.offer([3])  # queue full: the spans it counted are given back
    assert q.spans == 2 and q.qsize() == 2


def test_stop_sentinel_reaches_a_waiting_consumer():
    q = BatchQueue(max_batches=1, max_spans=10)
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    q.put(None)
    t.join(5)
    assert got == [None]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get_nowait()
