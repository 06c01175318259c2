"""Errors the capture reports to users: each carries the fix in its message."""


class CaptureUnavailable(RuntimeError):
    """eBPF capture cannot run here; str(e) says what is missing and how to fix it."""
