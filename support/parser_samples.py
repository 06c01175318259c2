"""One realistic round trip per protocol, as bytes: what bench/parsers.py feeds each parser.

The bytes live in parser_samples.json (made from the protocol tests' builders and checked
against them by tests/capture/protocols/test_parser_samples.py, which also rewrites the file).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from capture.protocols.base import Side

PATH = Path(__file__).with_name("parser_samples.json")
SIDES = {"C": Side.CLIENT, "S": Side.SERVER}


def load() -> dict[str, tuple[list[tuple[Side, bytes]], int]]:
    """protocol -> ([(side, bytes), ...], records the chunks complete)."""
    raw = json.loads(PATH.read_text())
    return {proto: ([(SIDES[side], base64.b64decode(data)) for side, data in s["chunks"]], s["records"])
            for proto, s in raw.items()}


def dump(samples: dict[str, tuple[list[tuple[Side, bytes]], int]]) -> str:
    """The file's text for `samples` (sorted, one protocol per block, stable across runs)."""
    out = {proto: {"records": records, "chunks": [["C" if side == Side.CLIENT else "S",
                                                   base64.b64encode(data).decode()] for side, data in chunks]}
           for proto, (chunks, records) in sorted(samples.items())}
    return json.dumps(out, indent=1) + "\n"
