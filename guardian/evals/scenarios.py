"""Eval scenarios: the fault table, writing scenario folders, and loading them back.

A scenario folder holds question.txt, expected.json (root cause service/operation/kind with
accepted aliases, and red herrings) and the recorded window as spans.jsonl[.gz] (the capture
JSON shape, one span per line; `guardian import FILE` turns OTLP JSON into it).
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from capture.sources import spanfile
from capture.span import Span
from guardian.evals.generator import Fault, generate

BASE_NS = 1_768_471_200 * 10**9  # 2026-01-15T10:00:00Z: recorded data, far from "now"
DURATION_S = 360
RATE = 1.5
HERRINGS = ["recommendations", "reporting"]

# name -> (fault, question, expected root cause); kind "none": no cause should be claimed
# with confidence (MAX_CONFIDENCE_WHEN_HEALTHY in runner.py).
SCENARIOS: dict[str, tuple[Fault | None, str, dict[str, Any]]] = {
    "slow_query_missing_index": (
        Fault(slow={"postgresql SELECT orders": (350, 900)}),
        "Checkout got slow a few minutes ago. Why?",
        {"service": "postgresql", "aliases": ["postgres", "postgres:5432"],
         "operation": "SELECT orders", "kind": "latency"}),
    "payments_5xx": (
        Fault(errors={"payments POST /charge": (0.45, 500, "NullPointerException in ChargeHandler.capture", "")}),
        "Users get errors when they check out. What is broken?",
        {"service": "payments", "operation": "POST /charge", "kind": "error"}),
    "inventory_latency": (
        Fault(extra_self_ms={"inventory": 250}),
        "Product pages and checkout are slow since a few minutes.",
        {"service": "inventory", "operation": None, "kind": "latency"}),
    "redis_slow": (
        Fault(slow={"redis GET": (120, 300), "redis HGETALL": (120, 300)}),
        "Cart and checkout requests are slow, what changed?",
        {"service": "redis", "aliases": ["redis:6379"], "operation": None, "kind": "latency"}),
    "consumer_stopped": (
        Fault(consumer_stopped=True),
        "Orders are not being fulfilled anymore, what is going on?",
        {"service": "fulfillment", "operation": "process orders", "kind": "traffic"}),
    "dns_failure": (
        Fault(dns_fail=0.6),
        "Checkout fails for many users right now.",
        {"service": "coredns:53", "aliases": ["coredns", "dns"], "operation": None,
         "kind": "dependency", "kind_aliases": ["error"]}),
    "tls_failure": (
        Fault(tls_fail=1.0),
        "Payments stopped working. Why?",
        {"service": "payments:443", "aliases": ["payments"], "operation": None,
         "kind": "dependency", "kind_aliases": ["error"]}),
    "db_pool_exhaustion": (
        Fault(pool_wait_ms=(300, 2500), pool_timeout=0.2),
        "Checkout is slow and sometimes times out.",
        {"service": "checkout", "operation": "POST /orders", "kind": "saturation"}),
    "payments_latency_noisy_neighbor": (
        Fault(extra_self_ms={"payments": 180}),
        "Why is checkout slower than usual? recommendations is throwing errors too.",
        {"service": "payments", "operation": None, "kind": "latency"}),
    "stock_deadlock": (
        Fault(errors={"postgresql UPDATE stock": (0.3, 0, "deadlock detected", "40P01")}),
        "Some checkouts fail with a 502. Find the cause.",
        {"service": "postgresql", "aliases": ["postgres", "postgres:5432"],
         "operation": "UPDATE stock", "kind": "error"}),
    "payments_low_error_rate": (
        Fault(errors={"payments POST /charge": (0.08, 500, "card processor returned garbage", "")}),
        "A few users report failed payments. Is something wrong?",
        {"service": "payments", "operation": "POST /charge", "kind": "error"}),
    "coincident_herring": (
        Fault(slow={"postgresql SELECT orders": (150, 400)},
              errors={"reporting GET /report": (0.9, 500, "report template missing", "")}),
        "Checkout got slow. Why?",
        {"service": "postgresql", "aliases": ["postgres", "postgres:5432"],
         "operation": "SELECT orders", "kind": "latency"}),
    "healthy": (
        None,
        "Is anything broken right now?",
        {"service": "", "operation": None, "kind": "none"}),
    # A steady 400 ms before inventory's first call: its own slowness, not a queue (saturation
    # from waits needs them to vary).
    "inventory_slow_step": (
        Fault(before_calls_ms={"inventory": 400}),
        "Why are checkouts slow?",
        {"service": "inventory", "operation": None, "kind": "latency"}),
    # Redis seen from both sides stalls: its own spans stay fast, calls wait unread before it
    # reads them. That wait is redis's latency, not the callers' saturation.
    "redis_stalls": (
        Fault(stalls={"redis": (0, 150)}),
        "Why is the shop slow?",
        {"service": "redis", "aliases": ["redis:6379"], "operation": None, "kind": "latency"}),
    # The consumer as eBPF sees one that fetches: only its calls to the broker (deliver, ack)
    # and the database. It stops: the broker's delivery traffic drops, but the consumer stopped.
    "consumer_stopped_fetching": (
        Fault(consumer_stopped=True, broker_seen=True),
        "Are orders being processed?",
        {"service": "fulfillment", "operation": None, "kind": "traffic"}),
}


@dataclass
class Scenario:
    name: str
    path: Path
    question: str
    expected: dict[str, Any]
    red_herrings: list[str] = field(default_factory=list)


def write_scenarios(root: Path, names: list[str] | None = None) -> list[Path]:
    """Generate scenario folders under root (deterministic: same bytes every run)."""
    out = []
    for i, (name, (fault, question, expected)) in enumerate(SCENARIOS.items()):
        if names and name not in names:
            continue
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "question.txt").write_text(question + "\n")
        exp = dict(expected, red_herrings=HERRINGS,
                   fault_start_ns=BASE_NS + i * 3600 * 10**9 + DURATION_S * 10**9 // 2)
        (d / "expected.json").write_text(json.dumps(exp, indent=2) + "\n")
        # mtime=0 keeps the gzip bytes identical across runs.
        with open(d / "spans.jsonl.gz", "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            for batch in generate(fault, 1000 + i, BASE_NS + i * 3600 * 10**9, DURATION_S, RATE):
                f.write("".join(s.to_json() + "\n" for s in batch).encode())
        out.append(d)
    return out


def load_scenarios(root: Path) -> list[Scenario]:
    """Every folder under root that has a question.txt and an expected.json."""
    found = []
    for d in sorted(p for p in Path(root).iterdir() if (p / "expected.json").exists()):
        exp = json.loads((d / "expected.json").read_text())
        found.append(Scenario(name=d.name, path=d, question=(d / "question.txt").read_text().strip(),
                              expected=exp, red_herrings=list(exp.get("red_herrings", []))))
    return found


def load_store(d: Path):
    """An in-memory store holding a scenario folder's spans."""
    from capture.store.factory import open_store

    store = open_store(None)
    for batch in read_spans(d):
        store.append(batch)
    return store


def read_spans(d: Path, batch: int = 5000, pattern: str = "spans.jsonl*") -> Iterator[list[Span]]:
    """Spans of a folder's spans.jsonl[.gz] files (or the files matching pattern), in batches."""
    if not Path(d).is_dir():
        raise FileNotFoundError(f"{d}: no {pattern}")
    return spanfile.read_spans(d, batch, pattern)
