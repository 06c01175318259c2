"""The cluster on one machine, end to end: 3 network-namespace nodes, a DNAT ClusterIP, a live
eBPF agent per node (scoped by netns) shipping OTLP to a hub on chDB. Cross-node calls must be
linked right (>= 99 %) and never wrong; the investigator on the hub's store names the fault
injected on the remote node; nothing is left behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support.netsim import leftovers

pytestmark = [pytest.mark.slow, pytest.mark.ebpf]


@pytest.mark.timeout(1200)  # three BCC compiles and a loaded 2-core machine
@pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true", reason="needs root")
def test_three_nodes_one_hub(tmp_path):
    # its own process: chDB allows one data path per process, and this one may have opened another
    code = ("import json, sys; from pathlib import Path; from bench.cluster import simulate; "
            "print(json.dumps(simulate(requests=1200, conns=16, work=Path(sys.argv[1]))))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True,
                         timeout=1150)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    assert r["load"]["failed"] == 0
    assert r["hub_malformed"] == 0
    # the capture saw most calls on both sides (a loaded machine may drop a few)
    assert r["cross_node"] >= 0.9 * 2 * 1200, r
    assert r["linked_wrong"] == 0, r
    # a wrong link is never allowed; a call left unlinked (its other half lost by a starved agent)
    # may happen on a loaded machine: the 99 % target is measured by `python -m bench.cluster --json`
    assert r["linked_correct"] >= 0.97 * r["cross_node"], r
    assert any("conntrack" in m for m in r["link_methods"]), r  # the ClusterIP hop was undone
    assert r["investigate_names_remote_fault"] and r["fault_node"] == "node-3", r
    assert r["leftover_namespaces"] == [] and not leftovers()
