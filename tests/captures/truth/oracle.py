"""tshark as the independent decoder of the truth recordings, and Guardian's spans from the same pcap.

Not a test module: the truth tests share these helpers.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from capture.sources.pcap import replay

HERE = Path(__file__).resolve().parent


def tshark(*args: str) -> str:
    if not shutil.which("tshark"):
        pytest.fail("tshark is missing: run `make setup` (scripts/setup.sh installs it)")
    return subprocess.run(["tshark", *args], capture_output=True, text=True, check=True).stdout


def server_port(pcap: Path) -> str:
    return tshark("-r", str(pcap), "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0", "-T", "fields",
                  "-e", "tcp.dstport", "-c", "1").strip()


def frames(pcap: Path, proto: str, port: str, layers: str = "", transport: str = "tcp") -> list[dict]:
    """tshark's JSON of every frame carrying `proto`, its port decoded as `proto`."""
    return json.loads(tshark("-r", str(pcap), "-d", f"{transport}.port=={port},{proto}", "-Y", proto, "-T", "json",
                             "--no-duplicate-keys", "-J", layers or f"{transport} {proto}") or "[]")


def guardian_spans(pcap: Path) -> dict[str, list]:
    """client port -> that connection's spans in start order."""
    spans: list = []
    replay(str(pcap), spans.extend)
    by_conn: dict[str, list] = defaultdict(list)
    for s in sorted(spans, key=lambda s: s.start_time_unix_nano):
        by_conn[str(s.attributes.get("client.port"))].append(s)
    return by_conn


def as_list(x):
    return x if isinstance(x, list) else [] if x is None else [x]


def walk(node, key: str):
    """Every value under `key` anywhere in a tshark JSON tree, in document order."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield from as_list(v)
            else:
                yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)
