"""Suggested fixes: a first thing to check and do, by root-cause kind and what the culprit is."""
from __future__ import annotations

from capture.span import Span
from guardian.report import RootCause


def suggest_fix(rc: RootCause, span: Span | None) -> str:
    a = span.attributes if span is not None else {}
    target = f"{rc.service}" + (f" `{rc.operation}`" if rc.operation else "")
    system = str(a.get("db.system") or "")
    if rc.kind == "traffic":
        return (f"{rc.service} stopped handling work: check that its pods are running and consuming"
                " (crash loops, a stuck consumer, lost broker connection), then watch the queue"
                " backlog drain; scale consumers if the backlog is large.")
    if rc.kind == "saturation":
        return (f"{target} is waiting for a scarce resource (connection pool, threads, rate limit):"
                " look for connection leaks or slow holders, raise the pool size or max connections"
                " within what the database allows, and add a timeout with a clear error.")
    if rc.kind == "dependency":
        if "dns.question.name" in a:
            return (f"Name resolution of {a['dns.question.name']} is failing: check the DNS server"
                    f" ({rc.service}) health and its upstreams, and that the record exists.")
        if "tls" in str(a.get("error.type", "")).lower() or "certificate" in (span.status_message if span else ""):
            return (f"TLS to {rc.service} fails ({span.status_message if span else 'handshake'}):"
                    " renew or re-issue its certificate and check the trust chain and clock skew.")
        return (f"Calls to {rc.service} cannot connect: check it is up and reachable (endpoints,"
                " network policy, ports) and that its address is right.")
    if system in ("redis", "memcached"):
        calls = f"{system} calls" + (f" `{rc.operation}`" if rc.operation else "")
        return (f"{calls} got slow or fail: check the cache's SLOWLOG,"
                " CPU and memory (eviction, big keys, blocking commands such as KEYS), and"
                " client connection counts.")
    if system:
        query = str(a.get("db.query.text", rc.operation or ""))[:200]
        if rc.kind == "latency":
            return (f"The query `{query}` on {system} got slow: run EXPLAIN ANALYZE on it; a"
                    " sequential scan means a missing index on its WHERE/ORDER BY columns (add it,"
                    " e.g. CREATE INDEX CONCURRENTLY); also check locks and table bloat.")
        return (f"The statement `{query}` on {system} fails ({span.status_message if span else ''}):"
                " check the database logs around the first failures; for deadlocks, take locks in a"
                " consistent order and retry the transaction.")
    if rc.kind == "latency":
        return (f"{target} spends more of its own time per request than before: check a recent"
                " deploy or config change, CPU throttling and GC; profile the endpoint or roll back.")
    return (f"{target} returns errors that it did not return before: read its logs for the error"
            f" ({span.status_message if span and span.status_message else 'see evidence'}) and roll"
            " back the most recent deploy if it started with it.")
