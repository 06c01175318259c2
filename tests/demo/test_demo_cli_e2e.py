"""`guardian demo --fault NAME --exit-after-report --json`, as a user runs it: progress on
stderr, the report as JSON on stdout, and nothing left running afterwards."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from guardian.demo.config import Ports, port_conflicts
from guardian.demo.procs import leftovers

pytestmark = [pytest.mark.slow, pytest.mark.ebpf]


@pytest.mark.timeout(600)
def test_demo_json_report_and_clean_exit():
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the demo's agent needs root, and CI runs as root")
        pytest.skip("needs root for eBPF")
    offset = next((o for o in range(9250, 12000, 250) if not port_conflicts(Ports().shifted(o))), None)
    assert offset is not None, "no free block of demo ports"
    workdir = Path(tempfile.mkdtemp(prefix="guardian-demo-cli-"))
    try:
        out = subprocess.run(
            [sys.executable, "-m", "guardian.cli.main", "demo", "--fault", "downstream-5xx",
             "--exit-after-report", "--json", "--baseline", "25", "--detect-timeout", "90",
             "--port-offset", str(offset), "--workdir", str(workdir)],
            capture_output=True, text=True, timeout=560)
        if (out.returncode == 1 and "guardian agent" in out.stderr and "BPF" in out.stderr
                and not os.environ.get("CI")):
            pytest.skip("eBPF cannot load here")
        assert out.returncode == 0, out.stderr[-3000:]
        for step in ("ready    PostgreSQL", "ready    RabbitMQ", "ready    inventory", "ready    guardian agent",
                     "injecting fault downstream-5xx", "detected after", "nothing left running"):
            assert step in out.stderr, (step, out.stderr[-2000:])
        report = json.loads(out.stdout)
        assert report["root_causes"] and report["summary"]
        assert report["root_causes"][0]["evidence"][0]["trace_id"]
        assert not leftovers(workdir)
        assert not port_conflicts(Ports().shifted(offset)), "a demo port is still taken"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
