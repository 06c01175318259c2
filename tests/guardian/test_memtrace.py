"""The agent's memory debug mode (guardian/memtrace.py): a report names the line and the type that
grew since the last one, and not what was freed; `guardian agent` with log.memory_trace_frames logs
it on SIGUSR2 (the setting is off by default)."""
from __future__ import annotations

import json
import signal
import time
import tracemalloc

import pytest

from capture.config import AgentConfig
from guardian.memtrace import MemTrace
from support.agent_proc import scraping
from tests.guardian.test_agent import replayed_agent


class _Kept:
    pass


@pytest.mark.skipif(tracemalloc.is_tracing(), reason="the process traces already (python -X tracemalloc)")
def test_a_report_names_what_grew_since_the_last_one():
    m = MemTrace(frames=2)
    m.start()
    try:
        kept = [_Kept() for _ in range(20_000)]  # the line below is this test's
        first = m.report()
        top = first["lines"][0]
        assert top["at"][-1].endswith(f"test_memtrace.py:{kept_line()}") and top["bytes"] > 500_000, first["lines"][:3]
        assert first["types"]["_Kept"] == 20_000 and first["traced_bytes"] >= top["size"]
        del kept
        second = m.report()  # since the first: freed, nothing of it grew
        assert "_Kept" not in second["types"]
        assert not any(line["at"][-1].endswith(f":{kept_line()}") and line["bytes"] > 0 for line in second["lines"])
    finally:
        m.stop()
    assert not tracemalloc.is_tracing()


def kept_line() -> int:
    import inspect

    src, start = inspect.getsourcelines(test_a_report_names_what_grew_since_the_last_one)
    return start + next(i for i, line in enumerate(src) if "kept = [" in line)


def test_the_debug_mode_is_off_by_default():
    assert AgentConfig().log.memory_trace_frames == 0


def test_agent_logs_growth_on_sigusr2_in_the_debug_mode(tmp_path):
    agent = replayed_agent(tmp_path, {"GUARDIAN_LOG__MEMORY_TRACE_FRAMES": "3"})
    try:
        line = agent.signal_and_wait_line(signal.SIGUSR2, '"memory growth {')
        g = json.loads(json.loads(line)["msg"].split(" ", 2)[2])
        assert g["traced_bytes"] > 0 and g["lines"] and all(len(x["at"]) <= 3 for x in g["lines"])
        assert isinstance(g["types"], dict) and g["malloc"]["in_use"] > 0
    finally:
        assert agent.stop(signal.SIGTERM) == 0, "".join(agent.stderr)


@pytest.mark.skipif(tracemalloc.is_tracing(), reason="the process traces already (python -X tracemalloc)")
def test_a_report_after_stop_is_empty_and_does_not_trace_again():
    m = MemTrace(frames=1)
    m.start()
    m.stop()
    assert m.report() == {"traced_bytes": 0, "lines": [], "types": {}, "stopped": True}
    assert not tracemalloc.is_tracing()  # the agent's worker may report while the agent exits


def test_the_agent_in_the_debug_mode_exits_promptly_on_sigterm_under_scrapes(tmp_path):
    """With tracing on to the end, the interpreter's last collection took close to a minute under a
    soak's load (Agent.run turns it off first now)."""
    agent = replayed_agent(tmp_path, {"GUARDIAN_LOG__MEMORY_TRACE_FRAMES": "4"}, requests=600)
    try:
        agent.signal_and_wait_line(signal.SIGUSR2, '"memory growth {', timeout=60)
        with scraping(agent):
            time.sleep(1.0)
            t0 = time.monotonic()
            assert agent.stop(signal.SIGTERM, timeout=60) == 0, "".join(agent.stderr)
            took = time.monotonic() - t0
    finally:
        agent.kill()
    assert any('"memory trace off"' in line for line in agent.stderr)
    # 5 s on an idle host; a loaded one (load 18) took 6-7 s with the debug mode off too
    assert took < 20, f"{took:.1f} s after SIGTERM"
