"""Markers for what a test needs, so `make test-fast` (no root, no servers) can leave those out.

`root`: the test needs root (eBPF, runuser, network namespaces). Without root it is skipped, except
with CI=true, where it fails: CI runs as root, so a skip there would hide a test that never ran.
`servers`: the test starts real servers (databases, brokers, nginx, the demo) from Debian packages.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# Folders whose tests start real servers or the eBPF capture.
SERVER_DIRS = ("capture/live/", "capture/tls/test_tls_", "demo/test_demo_cli_e2e", "demo/test_demo_faults_e2e",
               "llm/", "guardian/test_agent_live")

# Fixtures that need root: creating cgroups (tests/capture/enrich/conftest.py).
ROOT_FIXTURES = {"cgroup_process"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(HERE).as_posix()
        if rel.startswith(SERVER_DIRS):
            item.add_marker(pytest.mark.servers)
        if item.get_closest_marker("ebpf") or set(item.fixturenames) & ROOT_FIXTURES:
            item.add_marker(pytest.mark.root)


def pytest_runtest_setup(item):
    if item.get_closest_marker("root") and os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this test needs root and CI runs as root: run the tests as root")
        pytest.skip("needs root (make test runs as root; make test-fast leaves these out)")
