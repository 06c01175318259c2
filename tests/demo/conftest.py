"""Shared helpers of the demo tests: free ports for a whole demo, a workdir postgres can use."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from guardian.demo.config import Ports, port_conflicts


def free_ports() -> Ports:
    """The default port set shifted until every port is free (tests may run beside a demo)."""
    for offset in range(1000, 9000, 250):
        ports = Ports().shifted(offset)
        if not port_conflicts(ports):
            return ports
    pytest.fail("no free block of demo ports between 19000 and 27000")


def make_workdir() -> Path:
    """Under /tmp itself: pytest's tmp dirs are 0700 root, which the postgres user can't enter."""
    d = Path(tempfile.mkdtemp(prefix="guardian-demo-test-"))
    os.chmod(d, 0o755)
    return d
