"""Import BCC's Python module without mapping its compiler until something needs it.

libbcc.so links LLVM and clang, and loading it relocates them into the process (tens of MB
resident: `python -m bench.capture --only agent` prints the agent's resident set by library).
A start from the compile cache (capture/bpfcache.py) only needs BCC's runtime half, which
Debian ships apart as libbcc_bpf.so (maps, attach/detach, perf and ring buffers). `import_bcc`
gives bcc.libbcc a library that resolves functions from libbcc_bpf.so and loads the whole
libbcc.so at the first call of a function only it has (compiling, symbol look-ups).
Not here: what the agent loads (capture/loader.py) or how programs load from the cache.
"""
from __future__ import annotations

import ctypes
import logging
import sys
import threading

log = logging.getLogger(__name__)

RUNTIME = "libbcc_bpf.so.0"
FULL = "libbcc.so.0"
_full: ctypes.CDLL | None = None
_full_lock = threading.Lock()
_full_reason = ""


def full_library(reason: str = "") -> ctypes.CDLL:
    """libbcc.so itself (LLVM and clang with it), loaded once."""
    global _full, _full_reason
    with _full_lock:
        if _full is None:
            _full = ctypes.CDLL(FULL, use_errno=True)
            _full_reason = reason
            log.debug("libbcc (with LLVM) loaded for %s", reason or "a direct use")
        return _full


def full_loaded() -> str | None:
    """Why libbcc.so was loaded into this process (a function name), or None if it was not."""
    return _full_reason or ("?" if _full is not None else None)


class _Deferred:
    """A libbcc.so function not in libbcc_bpf.so: its declared types are kept until the first
    call loads the library."""

    def __init__(self, name: str) -> None:
        self.__name__ = name
        self.restype = ctypes.c_int
        self.argtypes = None
        self.errcheck = None
        self._fn = None

    def __call__(self, *args):
        if self._fn is None:
            fn = getattr(full_library(self.__name__), self.__name__)
            fn.restype = self.restype
            if self.argtypes is not None:
                fn.argtypes = self.argtypes
            if self.errcheck is not None:
                fn.errcheck = self.errcheck
            self._fn = fn
        return self._fn(*args)


class RuntimeFirst(ctypes.CDLL):
    """libbcc_bpf.so as a CDLL; a name it lacks becomes a _Deferred function of libbcc.so."""

    def __getitem__(self, name):
        try:
            return super().__getitem__(name)
        except AttributeError:
            if isinstance(name, str) and not name.startswith("__"):
                return _Deferred(name)
            raise


def import_bcc():
    """`import bcc` with bcc.libbcc.lib a RuntimeFirst library (when libbcc_bpf.so is there and
    bcc is not imported yet); returns the bcc module. ImportError as `import bcc` raises it."""
    if "bcc.libbcc" not in sys.modules:
        try:
            runtime = RuntimeFirst(RUNTIME, use_errno=True)
        except OSError:  # an install without the split library: the whole one, as BCC does
            runtime = None
        if runtime is not None:
            cdll = ctypes.CDLL

            def first_runtime(name, *args, **kwargs):
                return runtime if name == FULL else cdll(name, *args, **kwargs)

            ctypes.CDLL = first_runtime  # only while bcc.libbcc runs its `ct.CDLL("libbcc.so.0")`
            try:
                import bcc.libbcc  # noqa: F401
            finally:
                ctypes.CDLL = cdll
    import bcc

    return bcc
