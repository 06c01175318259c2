"""ReplaySource is a Source; the one span-file reader reads plain and gzipped files and folders."""
from __future__ import annotations

import gzip
import json
import threading

import pytest

from capture.sources.base import Source
from capture.sources.replay import ReplaySource
from capture.sources.spanfile import read_spans
from capture.span import Span


def _spans(n: int) -> list[Span]:
    return [Span(name=f"GET /{i}", kind="SERVER", start_time_unix_nano=10**18 + i, end_time_unix_nano=10**18 + i + 5,
                 resource={"service.name": "web"}) for i in range(n)]


def test_replay_hands_over_every_span_of_a_gzipped_file_in_batches(tmp_path):
    path = tmp_path / "spans.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for s in _spans(1203):
            f.write(json.dumps(s.to_dict()) + "\n")
    src = ReplaySource(str(path), batch=500)
    assert isinstance(src, Source)
    src.start()
    got: list[list[Span]] = []
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(got.append, stop))
    t.start()
    t.join(timeout=0.5)
    stop.set()
    t.join(timeout=5)
    assert [len(b) for b in got] == [500, 500, 203]
    assert src.stats() == {"replay.spans": 1203}
    assert got[2][-1].name == "GET /1202"


def test_replay_of_a_missing_file_fails_at_start(tmp_path):
    with pytest.raises(FileNotFoundError):
        ReplaySource(str(tmp_path / "nope.jsonl")).start()


def test_reader_reads_a_folder_and_names_the_bad_line(tmp_path):
    (tmp_path / "spans.jsonl").write_text("\n".join(json.dumps(s.to_dict()) for s in _spans(3)) + "\n")
    assert sum(len(b) for b in read_spans(tmp_path)) == 3
    (tmp_path / "spans.jsonl").write_text(json.dumps(_spans(1)[0].to_dict()) + "\n{\"name\": 1}\n")
    with pytest.raises(ValueError, match=r"spans.jsonl:2: not a span"):
        list(read_spans(tmp_path))
