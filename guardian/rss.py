"""The agent's resident set by source: what /proc says (by mapping: anonymous, the glibc main heap,
file-backed, the BPF ring buffers) beside what each allocator says it holds (glibc's malloc, Python's
object allocator, DuckDB's buffer pool) and what the agent's own tables hold. Read on demand (a
SIGUSR1 line in the log, gauges at a /metrics scrape); it bounds nothing itself.

Rule: `rss.by_mapping` adds up to the total exactly (every mapping falls in one class); the
allocators' figures are views of the same memory from inside, never added to it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path
from typing import Any

MB = 2 ** 20

# classes of a mapping, by its name in /proc/PID/smaps
RING = "ring"  # anon_inode:bpf-map: the BPF ring buffers (and any other mmapped map)
HEAP = "heap"  # [heap]: glibc's main arena
ANON = "anon"  # unnamed, [anon:...] or shared anonymous (/dev/zero, memfd): other arenas, large mallocs, DuckDB, Arrow, thread stacks
STACK = "stack"
FILE = "file"  # a path: shared libraries, the interpreter, mapped files
OTHER = "other"  # [vdso], [vvar], [vsyscall], other anon_inode or special mappings
CLASSES = (RING, HEAP, ANON, STACK, FILE, OTHER)


def _kind(name: str) -> str:
    if "bpf-map" in name:
        return RING
    if name == "[heap]":
        return HEAP
    if name == "" or name.startswith(("[anon", "/dev/zero", "/memfd:", "/SYSV")):  # private or shared
        return ANON
    if name.startswith("[stack"):
        return STACK
    if name.startswith("/"):
        return FILE
    return OTHER


def _lib(path: str) -> str:
    """A file's group: libLLVM and libbcc apart (loaded for the compile), the rest by base name."""
    base = path.rsplit("/", 1)[-1].replace(" (deleted)", "")
    return base.split(".so")[0] + ".so" if ".so" in base else base


def by_mapping(pid: int | str = "self", top_files: int = 8) -> dict[str, Any]:
    """Resident bytes by class of mapping (their sum: `total`), the anonymous bytes inside
    file-backed mappings (relocations, copy-on-write: `file_anonymous`), and the largest files."""
    rss = dict.fromkeys(CLASSES, 0)
    files: dict[str, int] = {}
    file_anon = 0
    kind, name = OTHER, ""
    with open(f"/proc/{pid}/smaps", "rb") as f:
        for raw in f:
            if raw[:4] == b"Rss:":
                kb = int(raw.split()[1]) * 1024
                rss[kind] += kb
                if kind == FILE:
                    files[name] = files.get(name, 0) + kb
            elif raw[:10] == b"Anonymous:":
                if kind == FILE:
                    file_anon += int(raw.split()[1]) * 1024
            elif b"-" in raw[:20] and raw[:1] in b"0123456789abcdef" and b":" not in raw.split(b" ", 1)[0]:
                head = raw.decode(errors="replace").rstrip("\n").split(None, 5)
                name = head[5] if len(head) > 5 else ""
                kind = _kind(name)
                if kind == FILE:
                    name = _lib(name)
    top = sorted(files.items(), key=lambda kv: -kv[1])[:top_files]
    return {**rss, "total": sum(rss.values()), "file_anonymous": file_anon, "files": dict(top)}


def status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM (the peak so far), RssAnon, RssFile, RssShmem from /proc/PID/status, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(line.split()[1]) * 1024
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2():
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO2 = _mallinfo2()


def malloc() -> dict[str, int]:
    """glibc's heap over all arenas, in bytes: what it got from the system in arenas (`arena`) and
    in blocks mapped on their own (`mmapped`), what is in use, what is free inside the arenas."""
    if _MALLINFO2 is None:
        return {}
    m = _MALLINFO2()
    return {"arena": m.arena, "mmapped": m.hblkhd, "in_use": m.uordblks + m.hblkhd, "free": m.fordblks}


def _pymalloc_stats():
    """CPython's _PyObject_DebugMallocStats written into a memory stream (what sys._debugmallocstats
    prints on stderr), or None where it or open_memstream is missing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        stats = ctypes.pythonapi._PyObject_DebugMallocStats  # PyDLL: called with the GIL held
    except (OSError, AttributeError):
        return None
    libc.open_memstream.restype = ctypes.c_void_p
    libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.free.argtypes = [ctypes.c_void_p]
    stats.argtypes = [ctypes.c_void_p]
    stats.restype = ctypes.c_int

    def read() -> str:
        buf, size = ctypes.c_void_p(), ctypes.c_size_t()
        fp = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        if not fp:
            return ""
        try:
            stats(fp)
        finally:
            libc.fclose(fp)  # sets buf and size
        try:
            return ctypes.string_at(buf, size.value).decode(errors="replace")
        finally:
            libc.free(buf)

    return read


_PYMALLOC = _pymalloc_stats()
_PYMALLOC_LINES = {"# arenas allocated current": "arenas", "# bytes in allocated blocks": "in_use_bytes",
                   "# bytes in available blocks": "free_bytes"}


def python_heap() -> dict[str, int]:
    """Python's allocator: blocks allocated (every object and buffer it gave out), and from
    pymalloc's own statistics (about 0.2 ms; tracemalloc would cost on every allocation) the bytes
    of its arenas (`arena_bytes`: resident once touched, inside `anon`), of the small blocks in use
    (`in_use_bytes`) and free (`free_bytes`) inside them. Objects over 512 bytes come from glibc's malloc (`malloc`)."""
    out = {"blocks": sys.getallocatedblocks()}
    text = _PYMALLOC() if _PYMALLOC is not None else ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        name = _PYMALLOC_LINES.get(key.strip())
        if name:
            out[name] = int(value.strip().replace(",", ""))
        elif "bytes/arena" in key:  # "57 arenas * 1048576 bytes/arena = 59,768,832"
            out["arena_bytes"] = int(value.strip().replace(",", ""))
    return out
