"""Benchmark results on disk (bench/results/): one JSON document per run, read and written here.

A document over BIG bytes of text is stored gzipped as NAME.json.gz (a 5-minute run's per-second
series is ~240 kB of JSON, ~12 kB gzipped: every user clones the repository). `read` and `find`
take either name, NAME.json or NAME.json.gz, and open whichever of the two is on disk.
"""
from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

DIR = Path(__file__).resolve().parents[1] / "bench" / "results"
BIG = 50_000


def twin(path: str | Path) -> Path:
    """The other name of the same result: NAME.json <-> NAME.json.gz."""
    p = Path(path)
    return p.with_name(p.name[:-3]) if p.name.endswith(".gz") else p.with_name(p.name + ".gz")


def find(path: str | Path) -> Path:
    """`path` if it is on disk, else its twin (a result gzipped since it was cited by its .json name)."""
    p = Path(path)
    if p.exists() or not twin(p).exists():
        return p
    return twin(p)


def read(path: str | Path) -> Any:
    """The document of a result, plain or gzipped, by either of its names."""
    p = find(path)
    with gzip.open(p, "rt") if p.name.endswith(".gz") else open(p) as f:
        return json.load(f)


def write(path: str | Path, doc: Any, indent: int | None = 1, sort_keys: bool = False) -> Path:
    """Write `doc` to `path`, gzipped (as path + '.gz') when its text is over BIG or `path` ends in .gz;
    returns the path written. A file is replaced at once (a reader never sees half of it: long runs
    rewrite theirs as they go), and its twin is removed so one run has one file; a stream (a pipe,
    /dev/stdout) gets the text as it is."""
    text = json.dumps(doc, indent=indent, sort_keys=sort_keys) + "\n"
    p = Path(path)
    if p.exists() and not p.is_file():  # /dev/stdout, a pipe: written to as they are
        with open(p, "wb") as f:
            f.write(gzip.compress(text.encode(), mtime=0) if p.name.endswith(".gz") else text.encode())
        return p
    if not p.name.endswith(".gz") and len(text) > BIG:
        p = twin(p)
        print(f"{path}: over {BIG:,} bytes, written gzipped as {p}", file=sys.stderr)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    if p.name.endswith(".gz"):
        with open(tmp, "wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as f:  # no name, no time
            f.write(text.encode())
    else:
        tmp.write_text(text)
    os.replace(tmp, p)
    twin(p).unlink(missing_ok=True)
    return p
