"""Benchmark of TLS plaintext capture: HTTPS load with wrk against nginx (OpenSSL)
and against a Go crypto/tls server, each without the agent, with `guardian capture`, and with
bcc's sslsniff (bpfcc-tools) as the reference tool, in one command. Every figure is beside its
baseline: throughput and p99 ratios, and server spans captured per request completed.

Run as root: .venv/bin/python -m bench.tls [--seconds 10] [--connections 8] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench.capture import COMPARE, ROOT, agent, wrk
from support import tls_targets as targets
from support.live import free_port
from support.process import stop

SSLSNIFF = shutil.which("sslsniff-bpfcc") or "/usr/sbin/sslsniff-bpfcc"
READY_S = 600  # BCC compiles at start: minutes on a host shared with other builds
NO_SSLSNIFF = [False]  # --no-sslsniff


@contextmanager
def sslsniff():
    """bcc's sslsniff on every OpenSSL user; yields a dict with its state (it may fail to build)."""
    out = tempfile.NamedTemporaryFile(prefix="bench-sslsniff-", suffix=".out", delete=False)
    proc = subprocess.Popen([SSLSNIFF], stdout=out, stderr=subprocess.STDOUT)
    result: dict = {}
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and b"FUNC" not in Path(out.name).read_bytes():
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        result["running"] = proc.poll() is None
        if not result["running"]:
            result["error"] = Path(out.name).read_text()[-400:]
        yield result
    finally:
        stop(proc, signal.SIGINT, timeout=30)
        result["output_lines"] = sum(1 for _ in open(out.name, "rb"))
        Path(out.name).unlink()


def measure(url: str, port: int, seconds: int, conns: int) -> dict:
    wrk(url, 2, conns)  # warm up: TLS sessions, page cache
    base = wrk(url, seconds, conns)
    runs = {}
    for tree in (*COMPARE, None):
        with agent(port, ready_s=READY_S, tree=tree) as cap:
            guarded = wrk(url, seconds, conns)
        runs[str(tree or ROOT)] = {
            "with_agent": guarded, "agent": cap,
            "agent_throughput_ratio": guarded["rps"] / base["rps"],
            "agent_p99_ratio": guarded["p99_ms"] / base["p99_ms"],
            "server_spans_per_request": cap["server_spans"] / guarded["requests"],
            "client_spans_per_request": cap["client_spans"] / guarded["requests"],
        }
    if NO_SSLSNIFF[0]:
        return {"baseline": base, **runs.pop(str(ROOT)), **({"compare": runs} if runs else {})}
    with sslsniff() as sniff:
        sniffed = wrk(url, seconds, conns) if sniff["running"] else None
    out = {"baseline": base, **runs.pop(str(ROOT)), **({"compare": runs} if runs else {}), "sslsniff": sniff}
    if sniffed:
        out["with_sslsniff"] = sniffed
        out["sslsniff_throughput_ratio"] = sniffed["rps"] / base["rps"]
        out["sslsniff_p99_ratio"] = sniffed["p99_ms"] / base["p99_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--compare", action="append", default=[], metavar="TREE",
                    help="also run the agent from this source tree (e.g. /work/main), same server and baseline")
    ap.add_argument("--only", choices=["go_crypto_tls", "nginx_openssl"])
    ap.add_argument("--no-sslsniff", action="store_true", help="skip the reference tool's run")
    args = ap.parse_args()
    COMPARE[:] = [Path(t).resolve() for t in args.compare]
    NO_SSLSNIFF[0] = args.no_sslsniff
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        d = Path(tmp)
        cert, key = targets.make_certs(d)
        go = targets.build_go(d / "tlstarget")
        servers = {"go_crypto_tls": lambda p: targets.go_server(go, p, cert, key),
                   "nginx_openssl": lambda p: targets.nginx_tls(p, cert, key, d)}
        for name, server in servers.items():
            if args.only and name != args.only:
                continue
            port = free_port()
            try:
                with server(port):
                    results[name] = measure(f"https://127.0.0.1:{port}/bench", port, args.seconds,
                                            args.connections)
            except RuntimeError as e:  # the agent did not start in time on a loaded host
                results[name] = {"error": str(e)[:300]}
            text = json.dumps(results, indent=2)
            if args.json:
                Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
