"""TLS probes held by uprobe_multi links (capture/tls/links.py): a private copy of the system's
libssl (no other tool has probes on it) is linked, curl's plaintext through it reaches the BPF
side, closing the attacher removes every probe at once and quickly (a perf-event uprobe takes a
grace period each), and the copy is probed no more afterwards."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.live import ebpf_or_skip, free_port
from support.ports import wait_port

pytestmark = pytest.mark.ebpf


def curl(port: int, lib: Path) -> str:
    r = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{port}/x"],
                       env=dict(os.environ, LD_PRELOAD=str(lib)), capture_output=True, text=True, timeout=30)
    return r.stdout


def test_probes_of_a_file_are_linked_and_removed_together(tmp_path, certs):
    ebpf_or_skip()
    from capture.loader import Loader
    from capture.tls import procmaps
    from capture.tls.attach import TlsAttacher

    cert, key = certs
    lib = tmp_path / "libssl.so.3"
    shutil.copy(os.path.realpath("/lib/x86_64-linux-gnu/libssl.so.3"), lib)
    port = free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
                               "-key", str(key), "-www", "-quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loader = Loader()
    try:
        wait_port(port)
        loader.load()
        attacher = TlsAttacher(loader.bpf, memo_dir="off")
        attacher._consider(procmaps.file_identity(str(lib)), str(lib))
        (attached,) = attacher.files.values()
        assert attached.probes and not attached.one_by_one, attacher.stats
        # one link per program (and kind: entry or return), not per probe
        assert len(attached.links) == len({(p.fn, p.ret) for p in attached.probes}), attached.probes
        for _ in range(3):
            assert curl(port, lib) == "200"
        seen = attacher.kernel_stats()
        assert seen["plaintext"] >= 6 and seen["bound"] >= 3, seen  # each request and its answer
        start = time.monotonic()
        attacher.close()
        took = time.monotonic() - start
        assert curl(port, lib) == "200"
        assert attacher.kernel_stats()["plaintext"] == seen["plaintext"], "probes left after close"
    finally:
        loader.close()
        server.terminate()
        server.wait(timeout=10)
    assert took < 1.0, f"removing the links took {took:.2f} s"
