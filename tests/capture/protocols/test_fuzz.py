"""Every parser and detector, through the registry, against mutated recorded transcripts (bench/fuzz.py).

Bounded here (fixed seed, a few hundred inputs per protocol); `python -m bench.fuzz --inputs N` runs long.
"""
import tracemalloc

import pytest

from bench import fuzz
from capture.protocols import registry
from capture.protocols.base import Side

INPUTS = 300


@pytest.fixture(scope="module")
def pools():
    return fuzz.transcripts()


@pytest.mark.parametrize("protocol", registry.protocols())
def test_no_escaped_exception_and_no_slow_input(protocol, pools):
    # a loaded CI machine gets 3x the per-input budget; a quadratic parser still blows it
    r = fuzz.fuzz(protocol, INPUTS, seed=1, pool=pools.get(protocol), max_input_s=3 * fuzz.MAX_INPUT_S)
    assert r["findings"] == 0, r["first_findings"]


def test_recorded_transcripts_cover_the_registry(pools):
    assert set(registry.protocols()) <= set(pools)


@pytest.mark.parametrize("protocol", registry.protocols())
def test_detector_takes_every_single_byte(protocol):
    """The fuzz loop skips the detector on one-byte chunks (the cost of byte-by-byte feeding): this covers them."""
    detect = registry.detector(protocol)
    if detect is None:
        pytest.skip("no detector")
    for b in range(256):
        detect(bytes((b,)))
    detect(b"")


def test_long_lived_check_finds_a_parser_that_keeps_bytes(pools, monkeypatch):
    import random
    findings: list[dict] = []
    assert fuzz.memory_growth("NATS", random.Random(2), pools["NATS"], 400, findings) < fuzz.MAX_GROWTH
    assert findings == []
    real = registry.parser_class("NATS")

    class Hoarder(real):
        def feed(self, side, data, ts_ns, size=None):
            self.__dict__.setdefault("kept", []).append(bytes(data) * 16)
            return super().feed(side, data, ts_ns, size)
    monkeypatch.setattr(registry, "parser_class", lambda _p: Hoarder)
    fuzz.memory_growth("NATS", random.Random(2), pools["NATS"], 400, findings)
    assert findings and "memory grew" in findings[0]["error"]


def test_mutator_and_chunker_are_seeded(pools):
    import random
    a, b = random.Random(5), random.Random(5)
    pool = pools["REDIS"]
    assert list(fuzz.chunkings(a, fuzz.mutate(a, pool[0], pool))) == \
        list(fuzz.chunkings(b, fuzz.mutate(b, pool[0], pool)))


@pytest.mark.parametrize("protocol", ["REDIS", "POSTGRES", "MYSQL", "HTTP1", "MEMCACHED", "NATS", "KAFKA"])
def test_long_lived_parser_memory_is_flat(protocol, pools):
    """One parser fed thousands of mutated inputs (one connection that never closes) keeps no more."""
    import random
    rng = random.Random(3)
    pool = [t for t in pools[protocol] if sum(len(d) for _, d in t) <= 16 * 1024] or pools[protocol][:1]
    inputs = [list(fuzz.chunkings(rng, fuzz.mutate(rng, rng.choice(pool), pool))) for _ in range(400)]
    parser = registry.parser_class(protocol)()
    tracemalloc.start()
    try:
        for chunks in inputs[:100]:
            fuzz.run_one(protocol, chunks, parser)
        warm = tracemalloc.get_traced_memory()[0]
        for chunks in inputs[100:]:
            fuzz.run_one(protocol, chunks, parser)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - warm < 2 * 1024 * 1024, (warm, after)
    assert sum(len(q) for q in (parser.__dict__.get("_pending") or [],)) <= 4096
    parser.feed(Side.CLIENT, b"", 1)


def test_a_resumed_run_feeds_exactly_the_inputs_an_uninterrupted_one_would(pools, monkeypatch):
    """--resume regenerates the seeded inputs already run instead of running them: the run goes
    on with the same stream, counts and findings carried over."""
    fed: list[int] = []
    monkeypatch.setattr(fuzz, "run_one", lambda proto, chunks, parser=None: fed.append(hash(tuple(chunks))))
    whole = fuzz.fuzz("REDIS", 60, seed=3, pool=pools["REDIS"])
    straight, fed[:] = list(fed), []
    saved = []
    fuzz.fuzz("REDIS", 60, seed=3, pool=pools["REDIS"], checkpoint=saved.append, every=25)
    fed[:] = []
    resumed = fuzz.fuzz("REDIS", 60, seed=3, pool=pools["REDIS"], resume=saved[1])  # after 50 inputs
    assert saved[1]["inputs"] == 50 and not saved[1]["complete"]
    assert fed == straight[50:]
    assert resumed["inputs"] == whole["inputs"] == 60 and resumed["findings"] == whole["findings"] == 0
