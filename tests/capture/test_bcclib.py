"""BCC without its compiler: importing bcc maps no LLVM until a function only libbcc.so has is
called; a start from the compile cache (and a cold start, whose compile runs in a child) never
maps it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.live import ebpf_or_skip

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=600).stdout.strip()


def _bcc_or_skip() -> None:
    if os.environ.get("CI") == "true":
        return
    try:
        import bcc  # noqa: F401
    except ImportError:
        pytest.skip("bcc is not installed")


def test_importing_bcc_maps_llvm_only_when_a_compiler_function_is_called():
    """What a start from the cache calls (maps, attach, and the symbol look-up capture/tls
    attaches through) is in libbcc_bpf.so; a compiler function loads libbcc.so."""
    _bcc_or_skip()
    out = _python(
        "from capture.bcclib import import_bcc, full_loaded\n"
        "bcc = import_bcc()\n"
        "from bcc import BPF, table\n"
        "maps = lambda: open('/proc/self/maps').read()\n"
        "path, offset = BPF._check_path_symbol(b'/lib/x86_64-linux-gnu/libc.so.6', b'malloc', None, -1)\n"
        "print('libbcc_bpf' in maps(), 'libLLVM' in maps(), full_loaded(), offset > 0)\n"
        "bcc.libbcc.lib.bpf_module_rw_engine_enabled()\n"
        "print('libLLVM' in maps(), full_loaded())\n")
    assert out.splitlines() == ["True False None True", "True bpf_module_rw_engine_enabled"]


@pytest.mark.ebpf
@pytest.mark.slow
def test_cold_and_warm_starts_never_map_llvm(tmp_path):
    ebpf_or_skip()
    code = ("import resource\n"
            "from capture.loader import Loader\n"
            f"l = Loader(port=1, cache_dir={str(tmp_path)!r})\n"
            "l.load()\n"
            "print(l.started_from, 'libLLVM' in open('/proc/self/maps').read())\n"
            "l.close()\n")
    assert _python(code) == "compile False"  # compiled in a child process, loaded from its image
    assert _python(code) == "cache False"
