"""Reads need no program at their entry only where their exit can find the call's arguments
(bpf: read_exit): x86_64, Linux 5.15+ (bpf_task_pt_regs) and kernel BTF. The spans either way:
the live tests (tests/capture/live/test_live_postgres.py, test_live_redis.py, test_live_http1.py)."""
from __future__ import annotations

import pytest

from capture.loader import reads_at_exit

BTF = {"OFF_TASK_FILES": 2048}


@pytest.mark.parametrize("offsets, machine, release, expected", [
    (BTF, "x86_64", "6.18.44-fc-v1300", True),
    (BTF, "x86_64", "5.15.0-91-generic", True),
    (BTF, "x86_64", "5.14.21", False),  # no bpf_task_pt_regs
    (BTF, "x86_64", "5.4.0-150-generic", False),
    (BTF, "aarch64", "6.8.0", False),  # the return value overwrites the first argument's register
    ({}, "x86_64", "6.18.44", False),  # no kernel BTF: no bpf_get_current_task_btf
    (BTF, "x86_64", "garbage", False),
])
def test_reads_skip_their_entry_only_where_the_exit_can_read_the_arguments(offsets, machine, release, expected):
    assert reads_at_exit(offsets, machine, release) is expected
