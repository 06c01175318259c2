"""Pick the importer for a file (by extension, else by its first character)."""
from __future__ import annotations

import os
from typing import Iterator

from capture.importers.csv_traces import read_csv
from capture.importers.otlp_json import read_otlp_json
from capture.span import Span

FORMATS = ("auto", "otlp-json", "csv")


def detect_format(path: str) -> str:
    name = path.lower()
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".json", ".jsonl", ".ndjson")):
        return "otlp-json"
    with open(path, errors="replace") as f:
        head = f.read(4096).lstrip()
    return "otlp-json" if head.startswith("{") else "csv"


def read_spans(path: str, fmt: str = "auto", mapping: dict[str, str] | None = None,
               duration_unit: str = "ms") -> Iterator[Span]:
    """Spans of the file; ValueError with a clear message on content it cannot read."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    with open(path, newline="" if fmt == "csv" else None, encoding="utf-8") as f:
        try:
            if fmt == "csv":
                yield from read_csv(f, mapping, duration_unit)
            else:
                yield from read_otlp_json(f)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
