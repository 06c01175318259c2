"""bench/run.py lists every bench module, and each one can say what it measures."""
from __future__ import annotations

from pathlib import Path

from bench import run

BENCH = Path(run.__file__).resolve().parent


def test_every_bench_module_is_listed_with_a_summary(capsys):
    modules = {p.stem for p in BENCH.glob("*.py")} - {"__init__", "run"}
    assert set(run.BENCHES) == modules
    assert all(run.summary(name) for name in modules)
    assert run.main([]) == 0 and "parsers" in capsys.readouterr().out
    assert run.main(["nope"]) == 2
