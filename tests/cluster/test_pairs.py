"""The cross-node linker's pairing in C (capture/traces/_pairs.c) makes the links its Python
specification (crossnode.pairs) makes, in the same order, on keep-alive connections with lost
halves, clock offsets, stand-ins, frontiers and ties."""
from __future__ import annotations

import random

import pytest

from capture.traces import crossnode

try:
    from capture.traces import _pairs
except ImportError:
    _pairs = None

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def test_the_extension_is_built():
    assert _pairs is not None, "capture.traces._pairs is not built: python setup.py build_ext --inplace"
    assert crossnode._pairs_run is _pairs.pairs


def case(rnd: random.Random) -> tuple:
    n = rnd.randrange(0, 40)
    gap = rnd.choice([MS // 2, MS, 3 * MS, 20 * MS])  # back to back, or far apart
    offset = rnd.choice([0, 0, 3 * MS, -2 * MS, 30 * MS])
    cs, ss = [], []
    t = T0
    for _ in range(n):
        dur = rnd.randrange(MS // 10, 4 * MS)
        work = rnd.randrange(0, dur)
        lead = rnd.randrange(0, dur - work + 1)
        if rnd.random() < 0.15:  # equal times: ties
            lead, work = 0, dur
        if rnd.random() > 0.2:
            cs.append((t, t + dur))
        if rnd.random() > 0.2:
            ss.append((t + lead + offset, t + lead + work + offset))
        t += dur + rnd.randrange(0, gap)
    rnd.shuffle(ss)  # servers come sorted by start in the linker; any order must do alike
    ss.sort(key=lambda x: x[0])
    late = rnd.random() < 0.4
    c_late = [rnd.random() < 0.3 for _ in cs] if late else None
    s_late = [rnd.random() < 0.3 for _ in ss] if late else None
    horizon = None if rnd.random() < 0.5 else (t - rnd.randrange(0, 30 * MS), t - rnd.randrange(0, 10 * MS))
    history = [rnd.randrange(0, 2 * MS) for _ in range(rnd.randrange(0, 70))]
    measured = offset if rnd.random() < 0.6 else 0
    slack = rnd.choice([MS, 2 * MS, 50 * MS])
    return ([c[0] for c in cs], [c[1] for c in cs], [s[0] for s in ss], [s[1] for s in ss],
            c_late, s_late, measured, slack, min(MS, slack), horizon, history)


@pytest.mark.skipif(_pairs is None, reason="extension not built")
def test_c_pairs_as_the_specification_does():
    rnd = random.Random(21)
    made = ambiguous = 0
    for _ in range(3000):
        args = case(rnd)
        want = crossnode.pairs(*args)
        got = _pairs.pairs(*args)
        assert got == want, args
        made += len(want[0])
        ambiguous += want[1]
    assert made > 10_000 and ambiguous > 100  # both passes and refusals were exercised
    assert {how for how in range(3)} == {
        how for args in [case(random.Random(k)) for k in range(300)] for _, _, how, _ in crossnode.pairs(*args)[0]}
