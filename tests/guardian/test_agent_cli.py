"""`guardian import FILE --store PATH`, then `guardian traces|trace|services --store PATH`."""
from __future__ import annotations

import json
import os
import socket
import subprocess

from capture.span import Span
from support.agent_proc import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "capture", "importers", "fixtures")


def guardian(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args)


def test_import_otlp_json_then_read_back(tmp_path):
    store = str(tmp_path / "imported.duckdb")
    r = guardian("import", os.path.join(FIX, "collector.jsonl"), "--store", store)
    assert r.returncode == 0, r.stderr
    assert "imported 3 spans (1 traces)" in r.stderr
    out = guardian("traces", "--store", store, "--json")
    [trace] = [json.loads(x) for x in out.stdout.splitlines()]
    assert trace["trace_id"] == "5b8efff798038103d269b633813fc60c"
    names = [(s["kind"], s["name"], s["resource"]["service.name"]) for s in trace["spans"]]
    assert names == [("SERVER", "GET /checkout", "frontend"), ("CLIENT", "POST /pay", "frontend"),
                     ("SERVER", "POST /pay", "payments")]
    for s in trace["spans"]:  # the same JSON shape as `guardian capture --json`
        assert Span.from_dict(s).to_dict() == s
    tree = guardian("trace", trace["trace_id"], "--store", store)
    assert tree.returncode == 0 and tree.stdout.splitlines()[2].startswith("    SERVER payments POST /pay")
    errors = guardian("traces", "--store", store, "--status", "ERROR", "--service", "payments", "--json")
    assert len(errors.stdout.splitlines()) == 1
    none = guardian("traces", "--store", store, "--service", "nobody", "--json")
    assert none.returncode == 0 and none.stdout == ""
    missing = guardian("trace", "0" * 32, "--store", store)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_import_csv_with_mapping_appends_to_the_same_store(tmp_path):
    store = str(tmp_path / "s.duckdb")
    guardian("import", os.path.join(FIX, "collector.jsonl"), "--store", store)
    r = guardian("import", os.path.join(FIX, "spans.csv"), "--store", store,
                 "--map", "trace_id=TraceID,span_id=SpanID,parent_id=ParentID,service=Svc,operation=Endpoint",
                 "--map", "start=Timestamp,duration=DurationMs,status=HttpStatus")
    assert r.returncode == 0 and "imported 5 spans (2 traces)" in r.stderr, r.stderr
    services = {s["name"]: s for s in json.loads(guardian("services", "--store", store, "--json").stdout)}
    assert set(services) == {"frontend", "payments", "gateway", "orders"}
    assert services["orders"]["count"] == 2 and services["orders"]["errors"] == 1
    window = guardian("services", "--store", store, "--json", "--start", "2024-05-01T09:59:00Z",
                      "--end", "2024-05-01T10:01:00Z")
    assert {s["name"] for s in json.loads(window.stdout)} == {"gateway", "orders"}


def test_import_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    r = guardian("import", str(bad), "--store", str(tmp_path / "x.duckdb"))
    assert r.returncode == 2 and "no column 'trace_id'" in r.stderr
    r = guardian("import", str(tmp_path / "nope.json"), "--store", str(tmp_path / "x.duckdb"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = guardian("traces", "--store", str(tmp_path / "absent.duckdb"))
    assert r.returncode != 0 and "no store file" in r.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = guardian("services", "--api", f"http://127.0.0.1:{port}")
    assert r.returncode == 1 and "cannot reach the agent API" in r.stderr


def test_import_captures_of_two_hosts_with_link(tmp_path):
    """`guardian capture --json` files from two hosts: the CLIENT span on one and the SERVER span
    on the other become one trace when imported together with --link."""
    t0 = 1_700_000_000_000_000_000
    conn = {"client.address": "10.0.0.1", "client.port": 40100, "server.address": "10.0.0.2",
            "server.port": 8080, "network.transport": "tcp"}
    client = Span(name="GET /stock", kind="CLIENT", start_time_unix_nano=t0, end_time_unix_nano=t0 + 9_000_000,
                  attributes=dict(conn), resource={"service.name": "shop", "host.name": "a", "process.pid": 7})
    server = Span(name="GET /stock", kind="SERVER", start_time_unix_nano=t0 + 1_000_000,
                  end_time_unix_nano=t0 + 8_000_000, attributes=dict(conn),
                  resource={"service.name": "stock", "host.name": "b", "process.pid": 7})
    (tmp_path / "a.jsonl").write_text(client.to_json() + "\n")
    (tmp_path / "b.jsonl").write_text(server.to_json() + "\n")
    store = str(tmp_path / "s.duckdb")
    r = guardian("import", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--link", "--store", store)
    assert r.returncode == 0 and "imported 2 spans (1 traces)" in r.stderr, r.stderr
    [trace] = [json.loads(x) for x in guardian("traces", "--store", store, "--json").stdout.splitlines()]
    by_kind = {s["kind"]: s for s in trace["spans"]}
    assert by_kind["SERVER"]["parent_span_id"] == client.span_id
    edges = guardian("services", "--store", store, "--json")
    assert [s["name"] for s in json.loads(edges.stdout)] == ["shop", "stock"]
