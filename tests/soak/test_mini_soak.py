"""A mini-soak (python -m bench.soak, short): a small mixed load (HTTP/1, HTTP/2, Redis,
Memcached, NATS) and hostile input, baseline first, then `guardian agent` killed with
SIGKILL once and restarted. No request may fail because of the agent, nothing of the
killed agent may stay attached, and the restarted agent must capture again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardian.demo.procs import leftovers
from support.live import ebpf_or_skip

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.ebpf
def test_kill_9_and_restart_under_mixed_load(tmp_path):
    ebpf_or_skip()
    out, workdir = tmp_path / "soak.json", tmp_path / "work"
    cmd = [sys.executable, "-m", "bench.soak", "--no-shop", "--minutes", "0.75", "--baseline-minutes", "0.25",
           "--kills", "1", "--min-last-s", "20", "--rate", "5", "--sigterm-wait", "20", "--workdir", str(workdir), "--out", str(out),
           "--json"]
    cp = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert cp.returncode == 0, cp.stderr[-3000:]
    r = json.loads(cp.stdout)
    assert json.loads(out.read_text()) == r
    why = json.dumps({k: r[k] for k in ("failure_kinds", "requests", "kill_leftovers")}, indent=1)

    # the load ran in both phases, every client, and no request failed because of the agent
    for phase in ("baseline", "agent"):
        clients = r["requests"][phase]["by_client"]
        assert set(clients) == {"http1", "http2", "redis", "memcached", "nats"}, why
        assert all(c["ok"] > 0 for c in clients.values()), why
    assert r["failed_by_agent"] == 0, why
    assert sum(r["hostile"]["sent"].values()) > 10

    # the killed agent had probes attached, and none are left
    killed, restarted = r["agents"]
    assert killed["end"] == "killed" and killed["attached"]["prog_count"] > 0
    assert sum(killed["attached"]["perf_probes"].values()) > 0
    assert r["probes_left_after_kill"] == [0], why

    # the restarted agent captured the soak's servers again
    assert restarted["spans_received"] and restarted["spans_received"] > 0
    assert r["captured_after_last_restart"].get("soak-redis", 0) > 0, r["captured_after_last_restart"]
    assert restarted["rss_mb"]["max"] and restarted["rss_mb"]["max"] > 0
    assert leftovers(workdir) == []
