"""Moved to support/live.py (shared with bench/); kept so older imports still resolve."""
from support.live import ROOT, Capture, ebpf_or_skip, free_port, live_capture  # noqa: F401
