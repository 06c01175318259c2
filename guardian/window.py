"""Moved to capture/store/window.py (beside the store it reads); kept so older imports still resolve."""
from capture.store.window import (DEFAULT_SINCE_S, MAX_NS, MIN_BASELINE_SPANS, WindowError,  # noqa: F401
                                  default_window, fmt_ns, parse_duration, parse_time, resolve_window,
                                  split_baseline)
