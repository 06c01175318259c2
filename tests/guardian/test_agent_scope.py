"""guardian agent's capture.scope.cgroup: decided in the kernel when it names a cgroup v2 directory,
else judged in userspace as before (a v1-only host, a cgroup not created yet), never a failed start."""
from __future__ import annotations

import logging
import os

import pytest

from capture.scope import V2_ROOTS
from guardian.cli.agent import _kernel_scope


def test_a_v2_cgroup_goes_to_the_kernel_and_a_missing_one_stays_in_userspace(caplog):
    if not any(os.path.exists(f"{r}/cgroup.controllers") for r in V2_ROOTS):
        pytest.skip("no cgroup v2 hierarchy")
    assert _kernel_scope("/") == "/"
    with caplog.at_level(logging.WARNING):
        assert _kernel_scope("/guardian-test-no-such-cgroup") is None
    assert "userspace only" in caplog.text
