"""Remove uprobe events left in tracefs by BCC processes that died (kill -9).

BCC attaches uprobes through the perf `uprobe` PMU when the kernel has it (no tracefs entry,
freed with the fd when the process dies); older kernels make it write uprobe_events, named
`…_bcc_<pid>`, which outlive a killed process. Those of dead pids are removed here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from capture.prereqs import tracefs_root

_BCC_EVENT = re.compile(r"^[pr]:(\S+/)?(\S+_bcc_(\d+))\s")


def leftover_probes(events_text: str) -> list[str]:
    """Event names (group/name) in uprobe_events text made by BCC processes no longer alive."""
    out = []
    for line in events_text.splitlines():
        m = _BCC_EVENT.match(line)
        if m and not os.path.exists(f"/proc/{m[3]}"):
            out.append(f"{m[1] or 'uprobes/'}{m[2]}")
    return out


def remove_dead_bcc_probes() -> int:
    root = tracefs_root()
    events = root / "uprobe_events" if root else Path("/sys/kernel/tracing/uprobe_events")
    try:
        names = leftover_probes(events.read_text())
    except OSError:
        return 0
    if not names:
        return 0
    # O_APPEND without the seek to the end that open(..., "a") makes: tracefs refuses that
    # seek with EINVAL, so no event was ever removed that way.
    try:
        fd = os.open(events, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return 0
    removed = 0
    try:
        for name in names:
            try:
                os.write(fd, f"-:{name}\n".encode())
                removed += 1
            except OSError:
                pass  # still enabled somewhere, or already gone
    finally:
        os.close(fd)
    return removed
