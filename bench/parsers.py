"""Parser throughput: records (request + response pairs) per second on one core, per protocol.

Table-driven over the protocol registry: a protocol takes part when support/parser_samples.json
holds a sample for it, one realistic round trip as [(Side, bytes), ...] and how many records it
completes. The sample is fed again and again into one parser instance, as one long-lived
connection would be.

Run: .venv/bin/python -m bench.parsers [--seconds 1] [--json FILE]
"""
from __future__ import annotations

import argparse
import time

from capture.protocols import registry
from support import parser_samples
from support import results as bench_results


def measure(protocol: str, seconds: float, samples: dict) -> dict:
    if protocol not in samples:
        return {"protocol": protocol, "skipped": "no sample in support/parser_samples.json"}
    chunks, per_round = samples[protocol]
    parser = registry.parser_class(protocol)()
    size = sum(len(b) for _, b in chunks)
    records = rounds = 0
    ts = 1
    start = time.process_time()
    deadline = start + seconds
    while time.process_time() < deadline:
        for _ in range(50):
            for side, data in chunks:
                records += len(parser.feed(side, data, ts))
                ts += 1000
        rounds += 50
    elapsed = time.process_time() - start
    expected = rounds * per_round
    return {"protocol": protocol, "records_per_s": round(records / elapsed), "mb_per_s": round(
        rounds * size / elapsed / 1e6, 1), "records": records, "expected_records": expected,
        "parser_problems": dict(parser.stats)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per protocol")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    samples = parser_samples.load()
    results = [measure(p, args.seconds, samples) for p in registry.protocols()]
    print(f"{'protocol':<10} {'records/s':>10} {'MB/s':>7}  check")
    for r in results:
        if "skipped" in r:
            print(f"{r['protocol']:<10} {'-':>10} {'-':>7}  skipped: {r['skipped']}")
            continue
        ok = "ok" if r["records"] == r["expected_records"] and not r["parser_problems"] else \
            f"MISMATCH {r['records']}/{r['expected_records']} {r['parser_problems']}"
        print(f"{r['protocol']:<10} {r['records_per_s']:>10} {r['mb_per_s']:>7}  {ok}")
    if args.json:
        bench_results.write(args.json, results, indent=2)
    return 0 if all("skipped" in r or r["records"] == r["expected_records"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
