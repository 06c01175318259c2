"""The one reader of span files: JSON lines as `guardian capture --json` writes them, plain or .gz.

A path is a file, or a folder whose files matching `pattern` are read in name order (eval scenarios).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

from capture.span import Span


def span_files(path: str | Path, pattern: str = "spans.jsonl*") -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob(pattern))
        if not files:
            raise FileNotFoundError(f"{p}: no {pattern}")
        return files
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    return [p]


def read_spans(path: str | Path, batch: int = 5000, pattern: str = "spans.jsonl*") -> Iterator[list[Span]]:
    """Batches of at most `batch` spans; ValueError naming the file and line on a line that is not a span."""
    for p in span_files(path, pattern):
        opener = gzip.open if p.suffix == ".gz" else open
        buf: list[Span] = []
        with opener(p, "rt") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    buf.append(Span.from_dict(json.loads(line)))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{p}:{n}: not a span ({e})") from None
                if len(buf) >= batch:
                    yield buf
                    buf = []
        if buf:
            yield buf
