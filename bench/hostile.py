"""Hostile captures replayed through the pcap source: peak RSS and the bounds that were hit.

Four inputs: many flows that never close, PostgreSQL queries that announce 63 MiB each but
carry a few bytes, an HTTP/2 peer growing its HPACK table to 2^30, and Memcached binary SETs of
60 MiB values captured whole. Each replay runs in a
child process so its peak RSS is its own (the target: <= 300 MB).

Run: .venv/bin/python -m bench.hostile [--flows 200000] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpack import Encoder
from hyperframe.frame import HeadersFrame, SettingsFrame
from support import results as bench_results

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet link type


class FastPcap:
    """Ethernet/IPv4/TCP packets written with struct (no checksums: the reader does not check them)."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "wb")
        self.f.write(_PCAP_HEADER)
        self.t = 1_700_000_000.0

    def tcp(self, src: tuple[int, int], dst: tuple[int, int], seq: int, flags: int, data: bytes = b"",
            claimed: int | None = None) -> None:
        """`claimed`: the payload length the IP header says (the capture holds only `data`)."""
        size = len(data) if claimed is None else claimed
        tcp = struct.pack(">HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, 0, 5 << 4, flags, 65535, 0, 0)
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, min(20 + 20 + size, 65535), 0, 0, 64, 6, 0,
                         struct.pack(">I", src[0]), struct.pack(">I", dst[0]))
        frame = b"\x04" * 6 + b"\x02" * 6 + b"\x08\x00" + ip + tcp + data
        self.t += 0.00001
        sec = int(self.t)
        self.f.write(struct.pack("<IIII", sec, int((self.t - sec) * 1e6), len(frame), len(frame)) + frame)

    def close(self) -> None:
        self.f.close()


SYN, ACK, PSH = 0x02, 0x10, 0x08


def unclosed_flows(path: Path, n: int) -> None:
    """`n` connections that each send one Redis command and never close."""
    w = FastPcap(path)
    server = (0x0A000002, 6379)
    for i in range(n):
        client = (0x0A000000 | (i >> 16) + 0x010000, 1024 + (i & 0xFFFF) % 60000)
        w.tcp(client, server, 1000, SYN)
        w.tcp(client, server, 1001, ACK | PSH, b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n")
    w.close()


def announced_queries(path: Path, count: int = 8, size: int = 63 << 20) -> None:
    """PostgreSQL Query messages announcing `size` bytes each, with only their first bytes captured."""
    w = FastPcap(path)
    client, server = (0x0A000001, 40000), (0x0A000002, 5432)
    w.tcp(client, server, 999, SYN)
    params = b"user\0app\0database\0shop\0\0"
    startup = struct.pack(">II", 8 + len(params), 196608) + params
    w.tcp(client, server, 1000, ACK | PSH, startup)
    seq = 1000 + len(startup)
    for _ in range(count):
        head = b"Q" + struct.pack(">I", size + 4) + b"SELECT '" + b"x" * 64
        w.tcp(client, server, seq, ACK | PSH, head, claimed=len(head))
        seq += len(head)
        # the rest of the message travels in segments the capture cut to a few bytes
        left = size + 5 - len(head)  # type byte + length field (counts itself) + body
        while left > 0:
            n = min(left, 65000)
            w.tcp(client, server, seq, ACK, b"y" * 8, claimed=n)
            seq += n
            left -= n
    w.close()


def hpack_growth(path: Path, streams: int = 1000) -> None:
    """An HTTP/2 client allowing 2^30 of table and a server filling it with large headers."""
    w = FastPcap(path)
    client, server = (0x0A000001, 40001), (0x0A000002, 8080)
    w.tcp(client, server, 999, SYN)
    w.tcp(server, client, 4999, SYN | ACK)
    enc_c = Encoder()
    pre = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0, settings={0x1: 1 << 30}).serialize()
    w.tcp(client, server, 1000, ACK | PSH, pre)
    cseq, sseq = 1000 + len(pre), 5000
    enc_s = Encoder()
    enc_s.header_table_size = 1 << 30
    for sid in range(1, 2 * streams + 1, 2):
        req = HeadersFrame(sid, data=enc_c.encode([(":method", "GET"), (":scheme", "http"), (":path", f"/{sid}"),
                                                   (":authority", "a")]), flags=["END_HEADERS", "END_STREAM"])
        b = req.serialize()
        w.tcp(client, server, cseq, ACK | PSH, b)
        cseq += len(b)
        block = enc_s.encode([(":status", "200")] + [(f"x-{sid}-{i}", "v" * 4000) for i in range(3)])
        b = HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize()
        w.tcp(server, client, sseq, ACK | PSH, b)
        sseq += len(b)
    w.close()


def memcached_values(path: Path, count: int = 4, size: int = 60 << 20) -> None:
    """Memcached binary SETs of `size`-byte values, every byte captured, in 64 KiB segments."""
    w = FastPcap(path)
    client, server = (0x0A000001, 40001), (0x0A000002, 11211)
    w.tcp(client, server, 999, SYN)
    noop = struct.pack(">BBHBBHIIQ", 0x80, 0x0A, 0, 0, 0, 0, 0, 99, 0)  # a first message the detector knows
    w.tcp(client, server, 1000, ACK | PSH, noop)
    seq, chunk = 1000 + len(noop), b"v" * 65000
    for i in range(count):
        key = b"big%d" % i
        w.tcp(client, server, seq, ACK | PSH, struct.pack(">BBHBBHIIQ", 0x80, 0x01, len(key), 8, 0, 0,
                                                          8 + len(key) + size, i, 0) + b"\0" * 8 + key)
        seq += 24 + 8 + len(key)
        left = size
        while left > 0:
            n = min(left, len(chunk))
            w.tcp(client, server, seq, ACK, chunk[:n])
            seq, left = seq + n, left - n
    w.close()


INPUTS = {"unclosed_flows": unclosed_flows, "announced_queries": announced_queries, "hpack_growth": hpack_growth,
          "memcached_values": memcached_values}


def replay_child(path: str) -> dict:
    """Replay in this process and report counters, spans and peak RSS (run as a child)."""
    from capture.sources.pcap import replay

    spans = [0]
    t = time.process_time()
    stats = replay(path, lambda b: spans.__setitem__(0, spans[0] + len(b)))
    return {"spans": spans[0], "cpu_s": round(time.process_time() - t, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "stats": {k: v for k, v in stats.items() if any(w in k for w in (
                "evicted", "flows", "lost", "capped", "skipped", "held", "garbage", "resync"))}}


def run(flows: int, workdir: Path) -> list[dict]:
    out = []
    for name, make in INPUTS.items():
        path = workdir / f"{name}.pcap"
        make(path, flows) if name == "unclosed_flows" else make(path)
        proc = subprocess.run([sys.executable, "-m", "bench.hostile", "--child", str(path)],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout)
        r.update(input=name, pcap_kb=round(path.stat().st_size / 1024))
        out.append(r)
        print(json.dumps(r), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=200_000)
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(replay_child(args.child)))
        return 0
    with tempfile.TemporaryDirectory() as d:
        results = run(args.flows, Path(d))
    if args.json:
        bench_results.write(args.json, results)
    return 0 if all(r["peak_rss_mb"] <= 300 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
