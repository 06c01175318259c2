"""Eval scenarios: the fault table, writing scenario folders, and loading them back.

A scenario folder holds question.txt, expected.json (root cause service/operation/kind with
accepted aliases, and red herrings) and the recorded window as spans.jsonl[.gz] (the capture
JSON shape, one span per line) or OTLP JSON (*.otlp.json).
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from capture.span import Span
from guardian.evals.generator import Fault, generate

BASE_NS = 1_768_471_200 * 10**9  # 2026-01-15T10:00:00Z: recorded data, far from "now"
DURATION_S = 360
RATE = 1.5
HERRINGS = ["recommendations", "reporting"]

# name -> (fault, question, expected root cause)
SCENARIOS: dict[str, tuple[Fault, str, dict[str, Any]]] = {
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
}


@dataclass
class Scenario:
    name: str
    path: Path
    question: str
    expected: dict[str, Any]
    red_herrings: list[str] = field(default_factory=list)

    def spans(self) -> Iterator[list[Span]]:
        """The recorded window, in batches."""
        yield from read_spans(self.path)


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


def read_spans(d: Path, batch: int = 5000) -> Iterator[list[Span]]:
    """Spans of a scenario folder: spans.jsonl[.gz] or *.otlp.json."""
    files = sorted(d.glob("spans.jsonl*")) + sorted(d.glob("*.otlp.json"))
    if not files:
        raise FileNotFoundError(f"{d}: no spans.jsonl[.gz] or *.otlp.json")
    for p in files:
        if p.name.endswith(".otlp.json"):
            yield from _chunks(otlp_spans(json.loads(p.read_text())), batch)
            continue
        opener = gzip.open if p.suffix == ".gz" else open
        buf: list[Span] = []
        with opener(p, "rt") as f:
            for line in f:
                if line.strip():
                    buf.append(Span.from_dict(json.loads(line)))
                if len(buf) >= batch:
                    yield buf
                    buf = []
        if buf:
            yield buf


def _chunks(spans: list[Span], n: int) -> Iterator[list[Span]]:
    for i in range(0, len(spans), n):
        yield spans[i:i + n]


_OTLP_KIND = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_OTLP_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _otlp_value(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_otlp_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _otlp_attrs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _otlp_value(a.get("value", {})) for a in items or []}


def _enum(v: Any, table: dict[int, str], prefix: str) -> str:
    if isinstance(v, int):
        return table.get(v, table[min(table)])
    return str(v).removeprefix(prefix) if v else table[min(table)]


def otlp_spans(doc: dict[str, Any]) -> list[Span]:
    """OTLP/JSON (ExportTraceServiceRequest: resourceSpans/scopeSpans/spans) -> Spans."""
    out = []
    for rs in doc.get("resourceSpans", []):
        resource = _otlp_attrs(rs.get("resource", {}).get("attributes"))
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                status = s.get("status") or {}
                out.append(Span(
                    name=s["name"], kind=_enum(s.get("kind"), _OTLP_KIND, "SPAN_KIND_"),
                    start_time_unix_nano=int(s["startTimeUnixNano"]),
                    end_time_unix_nano=int(s["endTimeUnixNano"]),
                    status_code=_enum(status.get("code"), _OTLP_STATUS, "STATUS_CODE_"),
                    status_message=status.get("message", ""),
                    attributes=_otlp_attrs(s.get("attributes")), resource=dict(resource),
                    trace_id=s["traceId"].lower(), span_id=s["spanId"].lower(),
                    parent_span_id=(s.get("parentSpanId") or "").lower() or None))
    return out
