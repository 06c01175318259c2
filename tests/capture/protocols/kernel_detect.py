"""The kernel detectors (bpf/protocols/<name>.h) compiled with gcc into a shared library and called
through ctypes, so tests can check them byte for byte against their userspace mirrors."""
from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from capture import abi

MAX_PAYLOAD = 4096
_NAMES = ("http1", "http2", "postgres", "mysql", "nats", "memcached", "redis")


@functools.cache
def _library() -> ctypes.CDLL:
    if not shutil.which("gcc"):
        raise RuntimeError("gcc is needed to test the kernel detectors (make setup installs it)")
    src = ["#define __always_inline inline __attribute__((always_inline))",
           f"#define MAX_PAYLOAD {MAX_PAYLOAD}", '#include "types.h"']
    src += [f'#include "protocols/{n}.h"' for n in _NAMES]
    # the kernel hands detectors a buffer of 2 * MAX_PAYLOAD bytes holding min(len, MAX_PAYLOAD) of data
    src += [f"int k_{n}(const __u8 *d, __u32 len) {{ static __u8 b[2 * MAX_PAYLOAD];"
            f" __builtin_memset(b, 0, sizeof b); __builtin_memcpy(b, d, len); return detect_{n}(b, len); }}"
            for n in _NAMES]
    tmp = Path(tempfile.mkdtemp(prefix="guardian-detect-"))
    (tmp / "detect.c").write_text("\n".join(src) + "\n")
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", f"-I{abi.BPF_DIR}", "-o", str(tmp / "detect.so"),
                    str(tmp / "detect.c")], check=True, capture_output=True, timeout=60)
    return ctypes.CDLL(str(tmp / "detect.so"))


def kernel_detect(name: str):
    """detect(data) -> "request" | "response" | None, as the kernel detector `detect_<name>` says."""
    fn = getattr(_library(), f"k_{name}")

    def detect(data: bytes):
        data = data[:MAX_PAYLOAD]
        verdict = fn(data, len(data))
        return {0: None, 1: "request", 2: "response"}[verdict]
    return detect


def agrees(name: str, mirror, samples: list[bytes]) -> list[bytes]:
    """Samples on which the kernel detector and the userspace mirror disagree."""
    k = kernel_detect(name)
    want = {"request": 0, "response": 1, None: None}
    return [s for s in samples if want[k(s)] != (None if mirror(s) is None else int(mirror(s)))]
