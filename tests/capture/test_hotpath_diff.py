"""Differential test of the capture's hot path on recorded ring-buffer traffic (nginx + hey,
recorded live with `python -m bench.events record`): records read out of a mapped ring by the
C loops (capture/_ring.c), by their Python specification, merged back from a spill ring, or
handed over straight as recorded give the same spans (ids masked)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.events import _Sockets, load
from capture import ringbuf
from capture.conntrack import ConnTracker
from capture.live import BATCH
from capture.pipeline import Pipeline
from capture.ringbuf import NEVER, OrderedRings
from support.rings import mapped_ring

RECORDING = Path(__file__).parent / "fixtures" / "nginx_hey.events.gz"


def spans(header: dict, batches) -> list[str]:
    """Spans the record batches complete (those still open at the end would be stamped with the
    clock), as JSON with their ids masked, in a stable order."""
    out: list = []
    pipeline = Pipeline(out.extend)
    resources = {int(pid): res for pid, res in header["resources"].items()}
    tracker = ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                          sockets=_Sockets(header["port"]), boot_offset_ns=0)
    for batch in batches:
        for raw in batch:
            tracker.on_event(raw)
        pipeline.flush()
    masked = [{**s.to_dict(), "trace_id": "-", "span_id": "-"} for s in out]
    return sorted(json.dumps(d, sort_keys=True) for d in masked)


def ring_batches(reader) -> list[list[bytes]]:
    batches = []
    while batch := reader.read(BATCH, until_ts=NEVER):
        batches.append(batch)
    return batches


@pytest.fixture(scope="module")
def recording():
    header, records = load(str(RECORDING))
    reference = spans(header, [records[i:i + BATCH] for i in range(0, len(records), BATCH)])
    # 3,000 records of keep-alive requests: a response per request, both ends captured
    assert len(reference) > 1000 and {json.loads(s)["kind"] for s in reference} == {"SERVER", "CLIENT"}
    return header, records, reference


@pytest.mark.parametrize("loops", ["c", "python"])
def test_reading_the_ring_gives_the_spans_of_the_records_as_recorded(recording, loops, monkeypatch):
    header, records, reference = recording
    if loops == "python":
        monkeypatch.setattr(ringbuf, "_ring", None)
    else:
        assert ringbuf._ring is not None, "capture._ring is not built: python setup.py build_ext --inplace"
    assert spans(header, ring_batches(mapped_ring(records))) == reference


@pytest.mark.parametrize("loops", ["c", "python"])
def test_records_merged_back_from_the_spill_ring_give_the_same_spans(recording, loops, monkeypatch):
    header, records, reference = recording
    if loops == "python":
        monkeypatch.setattr(ringbuf, "_ring", None)
    spilled = set(range(3, len(records), 5))  # every fifth record refused by the main ring
    rings = OrderedRings(mapped_ring([r for i, r in enumerate(records) if i not in spilled]),
                         mapped_ring([r for i, r in enumerate(records) if i in spilled]))
    assert spans(header, ring_batches(rings)) == reference
    assert rings.spilled == len(spilled) and rings.held == 0
