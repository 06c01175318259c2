"""Fuzzing of every parser and detector through the registry, with mutated real transcripts.

Transcripts come from the recorded captures (each TCP/UDP flow replayed by the pcap source,
recorded as the (side, bytes, size) chunks a parser would get). Each input is a transcript
mutated (bit flips, big length fields, splices, cuts) and re-chunked (byte by byte, random
sizes, gaps where `size` > len(data)), fed to a fresh parser, then closed; then a 50th as many
go through one parser that is never closed. A finding is an escaped exception, an input slower
than MAX_INPUT_S, or that long-lived parser holding more memory at its end than after its first
quarter (MAX_GROWTH). Seeded: a run repeats exactly.

Run: .venv/bin/python -m bench.fuzz [--inputs 1000000] [--protocol REDIS] [--seed 1] [--jobs 2]
     [--json out.json.gz]   (`make fuzz`: 1M inputs per parser, result under bench/results/)
"""
from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
import tracemalloc
import traceback
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from capture.protocols import registry
from capture.protocols.base import Side
from support import results as bench_results

ROOT = Path(__file__).resolve().parent.parent
MAX_INPUT_S = 0.1
SEED_BYTES = 16 * 1024  # a recorded flow is cut to its first chunks up to this many bytes
BYTEWISE = 512  # "byte by byte" feeds this many bytes of a transcript singly (chunk heads first), the rest in pieces
HEAD_BYTES = 128  # ... at most this many of each chunk's head
LONG_LIVED_MAX = 20000  # inputs fed to one never-closed parser after the run (a 50th of the run, up to this)
MAX_GROWTH = 2 * 1024 * 1024  # bytes a long-lived parser may gain after its first quarter
Transcript = list[tuple[Side, bytes]]
# seeds for protocols with no recorded flow (first messages as a client and a server send them)
_BUILTIN: dict[str, Transcript] = {
    "TLS_HANDSHAKE": [(Side.CLIENT, b"\x16\x03\x01\x00\x31\x01\x00\x00\x2d\x03\x03" + bytes(32)
                       + b"\x00\x00\x02\x13\x01\x01\x00\x00\x02\x00\x00"),
                      (Side.SERVER, b"\x16\x03\x03\x00\x2a\x02\x00\x00\x26\x03\x03" + bytes(32)
                       + b"\x00\x13\x01\x00"), (Side.SERVER, b"\x15\x03\x03\x00\x02\x02\x28")],
    "HTTP1": [(Side.CLIENT, b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
              (Side.SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")],
}


def capture_dirs() -> list[Path]:
    """Where recorded captures live: in the repository, else next to it (the shared set)."""
    return [p for p in (ROOT / "tests" / "captures", ROOT.parent / "shared" / "captures",
                        Path("/work/shared/captures")) if p.is_dir()]


class _Recorder:
    """Stands in for the Pipeline: keeps each connection's chunks instead of parsing them."""

    def __init__(self) -> None:
        self.flows: dict[int, tuple[str, Transcript]] = {}

    def data(self, conn, egress: bool, data: bytes, ts_ns: int, size: int | None = None, tid: int = 0) -> None:
        _, chunks = self.flows.setdefault(conn.conn_id, (conn.protocol, []))
        chunks.append((Side.CLIENT if egress else Side.SERVER, bytes(data)))

    def close(self, conn, ts_ns: int) -> None:
        pass

    def flush(self) -> None:
        pass


def transcripts(dirs: list[Path] | None = None) -> dict[str, list[Transcript]]:
    """protocol -> recorded transcripts (and the built-in seeds)."""
    from capture.sources.pcap import PcapSource

    out: dict[str, list[Transcript]] = defaultdict(list)
    for proto, t in _BUILTIN.items():
        out[proto].append(t)
    for d in dirs if dirs is not None else capture_dirs():
        for path in sorted(p for p in d.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap", ".gz")):
            rec = _Recorder()
            try:
                PcapSource(rec).run(str(path))
            except Exception:  # a capture the reader cannot open is not a parser finding
                continue
            for proto, chunks in rec.flows.values():
                if chunks and len(out[proto]) < 64:
                    out[proto].append(_head(chunks[:200], SEED_BYTES))
    return dict(out)


def _head(chunks: Transcript, budget: int) -> Transcript:
    """The first chunks of a flow up to `budget` bytes (at least one): a long flow re-tests the same
    paths at the cost of its length (bench.parsers and test_linear measure throughput instead)."""
    out: Transcript = []
    for side, data in chunks:
        if out and budget < len(data):
            break
        out.append((side, data))
        budget -= len(data)
    return out


_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x3FFFFFFF, 1 << 30, 65535, 65536)


def mutate(rng: random.Random, t: Transcript, pool: list[Transcript]) -> Transcript:
    """A few random edits of a transcript: bytes, length fields, splices, dropped or repeated chunks."""
    t = list(t)
    for _ in range(rng.randint(1, 4)):
        if not t:
            break
        i = rng.randrange(len(t))
        side, data = t[i]
        b = bytearray(data)
        op = rng.randrange(9)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x0D, 0x0A, 0x2A, 0x24))
        elif op == 2 and len(b) >= 4:
            pos = rng.randrange(len(b) - 3)
            fmt = rng.choice(("<I", ">I", "<i", ">i"))
            v = rng.choice(_INTERESTING)
            b[pos:pos + 4] = struct.pack(fmt, v if fmt[1] == "I" else v - (1 << 32) * (v >= 1 << 31))
        elif op == 3:
            b[rng.randrange(len(b) + 1):0] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and b:
            a = rng.randrange(len(b))
            del b[a:a + rng.randint(1, 64)]
        elif op == 5 and b:
            a = rng.randrange(len(b))
            b[a:a] = b[a:a + rng.randint(1, 256)] * rng.randint(1, 8)
        elif op == 6 and pool:
            other = rng.choice(pool)
            if other:
                t.insert(i, rng.choice(other))
        elif op == 7 and len(t) > 1:
            del t[i]
            continue
        elif op == 8:
            t.insert(i, (side, bytes(b)))
        t[i] = (side, bytes(b))
    return t


def chunkings(rng: random.Random, t: Transcript) -> list[tuple[Side, bytes, int | None]]:
    """(side, data, size) chunks: whole, byte by byte, random sizes, or with gaps."""
    mode = rng.randrange(4)
    rand = rng.random  # one float per draw: randint costs several calls each, and chunking ran per piece
    out: list[tuple[Side, bytes, int | None]] = []
    singles = BYTEWISE
    for side, data in t:
        n = len(data)
        if mode == 0 or n < 2:
            out.append((side, data, None))
            continue
        pos = 0
        if mode == 1 and singles > 0:
            # byte by byte where messages start (a chunk's head), within a budget: a whole long
            # transcript so fed would measure the per-call cost, not the parser
            pos = min(HEAD_BYTES, singles, n)
            singles -= pos
            out += [(side, data[i:i + 1], None) for i in range(pos)]
        half = max(1, n // 2)
        while pos < n:
            piece = data[pos:pos + int(rand() * half) + 1]
            pos += len(piece)
            if mode == 3 and rand() < 0.3:
                cut = int(rand() * (len(piece) + 1))  # the capture copied only a prefix
                size = len(piece) if rand() < 0.8 else len(piece) + rng.choice((1, 4096, 1 << 26))
                out.append((side, piece[:cut], size))
            else:
                out.append((side, piece, None))
    return out


def run_one(protocol: str, chunks, parser=None) -> None:
    """Feed one input to `parser` (a fresh one if None) and the detector, as capture does.
    Single bytes skip the detector: test_fuzz tries every detector on every one-byte input once."""
    detect = registry.detector(protocol)
    p = parser if parser is not None else registry.parser_class(protocol)()
    feed = p.feed
    ts = 1
    for side, data, size in chunks:
        ts += 1000
        if detect is not None and len(data) > 1:
            detect(data)
        feed(side, data, ts, size)
    if parser is None:
        p.close(ts + 1)


def fuzz(protocol: str, inputs: int, seed: int = 1, pool: list[Transcript] | None = None,
         max_input_s: float = MAX_INPUT_S, checkpoint=None, every: int = 20000, resume: dict | None = None) -> dict:
    """Run `inputs` mutated inputs; returns counts, the slowest input and the findings (first 20).
    `checkpoint(result so far)` is called every `every` inputs (a long run interrupted keeps its count).
    `resume`: such a checkpoint of the same protocol and seed: its inputs are generated again
    (the seeded stream) but not run, and the run goes on from there with its findings and times."""
    rng = random.Random(f"{protocol}:{seed}")
    pool = pool or _BUILTIN.get(protocol) or [[(Side.CLIENT, b"\0")]]
    findings: list[dict] = []
    slowest = 0.0
    start = time.process_time()
    first = 0
    if resume:
        first = min(int(resume["inputs"]), inputs)
        findings = list(resume.get("first_findings", [])) + [{}] * max(0, resume["findings"] - 5)
        slowest = resume["slowest_ms"] / 1000
        start -= resume["cpu_s"]
        for _ in range(first):
            chunkings(rng, mutate(rng, rng.choice(pool), pool))
    for n in range(first, inputs):
        chunks = chunkings(rng, mutate(rng, rng.choice(pool), pool))
        t0 = time.process_time()
        try:
            run_one(protocol, chunks)
        except Exception as e:  # a finding: every escaped exception is one
            if len(findings) < 20:
                findings.append({"input": n, "error": repr(e)[:200],
                                 "where": traceback.extract_tb(e.__traceback__)[-1].line,
                                 "chunks": [(int(s), d[:64].hex(), z) for s, d, z in chunks[:8]]})
            else:
                findings.append({"input": n})
            continue
        dt = time.process_time() - t0
        slowest = max(slowest, dt)
        if dt > max_input_s and len(findings) < 20:
            findings.append({"input": n, "error": f"slow: {dt * 1000:.0f} ms"})
        if checkpoint is not None and (n + 1) % every == 0 and n + 1 < inputs:
            checkpoint(_result(protocol, n + 1, pool, findings, slowest, start, complete=False))
    long_lived = min(inputs // 50, LONG_LIVED_MAX)
    growth = memory_growth(protocol, rng, pool, long_lived, findings) if long_lived >= 400 else None
    return _result(protocol, inputs, pool, findings, slowest, start, long_lived=long_lived, growth=growth)


def memory_growth(protocol: str, rng: random.Random, pool: list[Transcript], inputs: int,
                  findings: list[dict]) -> int:
    """One parser fed `inputs` mutated inputs as one connection that never closes: bytes it
    still holds at the end over what it held after the first quarter (a finding past MAX_GROWTH)."""
    parser = registry.parser_class(protocol)()
    warm = 0
    tracemalloc.start()
    try:
        for n in range(inputs):
            if n == inputs // 4:
                warm = tracemalloc.get_traced_memory()[0]
            chunks = chunkings(rng, mutate(rng, rng.choice(pool), pool))
            try:
                run_one(protocol, chunks, parser)
            except Exception as e:
                findings.append({"long_lived_input": n, "error": repr(e)[:200],
                                 "where": traceback.extract_tb(e.__traceback__)[-1].line})
                return 0
        growth = tracemalloc.get_traced_memory()[0] - warm
    finally:
        tracemalloc.stop()
    if growth > MAX_GROWTH:
        findings.append({"long_lived_inputs": inputs, "error": f"memory grew {growth >> 10} KiB"})
    return growth


def _result(protocol, inputs, pool, findings, slowest, start, complete: bool = True,
            long_lived: int = 0, growth: int | None = None) -> dict:
    return {"protocol": protocol, "inputs": inputs, "complete": complete, "seeds": len(pool),
            "findings": len(findings), "first_findings": findings[:5], "slowest_ms": round(slowest * 1000, 2),
            "cpu_s": round(time.process_time() - start, 1), "long_lived_inputs": long_lived,
            "long_lived_growth_kib": None if growth is None else growth >> 10}


def _fuzz_job(proto: str, inputs: int, seed: int, parts: str | None, resume: dict | None = None) -> dict:
    """One protocol in a worker process: its own transcript pool, its own seeded run; its progress
    goes to `parts`/<protocol>.json so an interrupted run still records how far each got (and
    --resume goes on from there)."""
    def save(r: dict) -> None:
        if parts:
            tmp = Path(parts, f".{proto}.tmp")
            tmp.write_text(json.dumps({**r, "seed": seed}))
            tmp.replace(Path(parts, f"{proto}.json"))  # a kill mid-write keeps the last whole checkpoint
    r = fuzz(proto, inputs, seed, transcripts().get(proto), checkpoint=save, resume=resume)
    save(r)
    return r


def _resumable(parts: Path | None, proto: str, inputs: int, seed: int) -> dict | None:
    """The checkpoint of `proto` under `parts` a run with these settings can go on from."""
    try:
        r = json.loads(Path(parts, f"{proto}.json").read_text()) if parts else None
    except (OSError, ValueError):
        return None
    if not r or r.get("seed") != seed or r.get("inputs", 0) > inputs:
        return None
    return r


def _print(r: dict) -> None:
    print(f"{r['protocol']:14} inputs={r['inputs']} seeds={r['seeds']} findings={r['findings']} "
          f"slowest={r['slowest_ms']} ms cpu={r['cpu_s']} s long-lived={r.get('long_lived_inputs')} inputs "
          f"+{r.get('long_lived_growth_kib')} KiB", flush=True)
    for f in r["first_findings"]:
        print("   ", json.dumps(f)[:400], flush=True)


def _write(path: str, results: list[dict], meta: dict) -> None:
    bench_results.write(path, {**meta, "results": sorted(results, key=lambda r: r["protocol"])})


def _gather(parts: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(parts.glob("*.json"))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=10000, help="inputs per protocol")
    ap.add_argument("--protocol", action="append", help="only these (registry names); default all")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="protocols fuzzed in parallel processes")
    ap.add_argument("--json", help="write the results to this file (.gz: compressed), rewritten as each ends")
    ap.add_argument("--resume", action="store_true",
                    help="go on from an interrupted run's progress (same --json, --seed): finished "
                         "protocols are kept, the others continue from their last checkpoint")
    ap.add_argument("--collect", action="store_true",
                    help="write --json from an interrupted run's progress (its .parts directory), then exit")
    args = ap.parse_args(argv)
    protos = args.protocol or registry.protocols()
    parts = Path(args.json + ".parts") if args.json else None
    meta = {"inputs_per_protocol": args.inputs, "seed": args.seed, "max_input_ms": MAX_INPUT_S * 1000,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.collect:
        results = _gather(parts)
        _write(args.json, results, {**meta, "interrupted": any(not r.get("complete") for r in results)})
        for r in results:
            _print(r)
        return 0
    if parts:
        parts.mkdir(exist_ok=True)
    results: list[dict] = []
    with ProcessPoolExecutor(max(1, args.jobs)) as ex:
        futs = []
        for proto in protos:
            prior = _resumable(parts, proto, args.inputs, args.seed) if args.resume else None
            if prior and prior.get("complete") and prior["inputs"] == args.inputs:
                results.append(prior)
                _print(prior)
                continue
            futs.append(ex.submit(_fuzz_job, proto, args.inputs, args.seed, str(parts) if parts else None, prior))
        for fut in as_completed(futs):
            results.append(fut.result())
            _print(results[-1])
            if args.json:
                _write(args.json, results, meta)
    if args.json:
        meta["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write(args.json, results, meta)
        for p in parts.glob("*.json"):
            p.unlink()
        parts.rmdir()
    return 1 if any(r["findings"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
