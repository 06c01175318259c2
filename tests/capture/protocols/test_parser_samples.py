"""support/parser_samples.json (bench/parsers.py's input) matches the protocol tests' builders and parses clean.

Rewrite the file after changing a builder: python -m tests.capture.protocols.test_parser_samples
"""
import importlib

import pytest

from capture.protocols import registry
from capture.protocols.base import Side
from support import parser_samples

C, S = Side.CLIENT, Side.SERVER
HTTP1 = ([(C, b"GET /api/items?id=7 HTTP/1.1\r\nHost: shop\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"),
          (S, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"id\": 7, \"\"}"),
          (C, b"POST /api/orders HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n"
              b"Content-Length: 11\r\n\r\n{\"item\": 7}"),
          (S, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")], 2)


def built() -> dict:
    """protocol -> its test module's bench_sample() (HTTP/1's is above)."""
    out = {"HTTP1": HTTP1}
    for proto in registry.protocols():
        module = registry.MODULES[proto].rsplit(".", 1)[1]
        try:
            tests = importlib.import_module(f"tests.capture.protocols.test_{module}")
        except ImportError:
            continue
        if hasattr(tests, "bench_sample"):
            out[proto] = tests.bench_sample()
    return out


def test_file_matches_the_builders():
    assert parser_samples.load() == built(), "rewrite it: python -m tests.capture.protocols.test_parser_samples"


@pytest.mark.parametrize("proto", sorted(parser_samples.load()))
def test_sample_completes_its_records_with_no_problems(proto):
    chunks, records = parser_samples.load()[proto]
    parser = registry.parser_class(proto)()
    got = []
    for rnd in range(3):  # one long-lived connection, as the bench feeds it
        for i, (side, data) in enumerate(chunks):
            got += parser.feed(side, data, 1000 * (rnd * len(chunks) + i + 1))
    assert len(got) == 3 * records
    assert not dict(parser.stats)


if __name__ == "__main__":
    parser_samples.PATH.write_text(parser_samples.dump(built()))
    print(f"wrote {parser_samples.PATH}")
