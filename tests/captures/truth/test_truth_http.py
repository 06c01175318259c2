"""HTTP/1, HTTP/2 and gRPC: Guardian's spans against tshark on the same recordings (record.py, clients.py).

Per connection, tshark's requests (method, target) paired in order (HTTP/1) or by stream (HTTP/2) with
their status (and gRPC's grpc-status) must equal Guardian's spans; differences are named in
docs/protocol-truth.md.
"""
from __future__ import annotations

from collections import defaultdict

from tests.captures.truth.oracle import HERE, as_list, frames, guardian_spans, server_port, tshark


def _target(span) -> str:
    a = span.attributes
    return a["url.path"] + ("?" + a["url.query"] if a.get("url.query") else "")


def http1_oracle(pcap) -> dict[str, list[tuple[str, str, int]]]:
    port = server_port(pcap)
    rows = tshark("-r", str(pcap), "-d", f"tcp.port=={port},http", "-Y", "http", "-T", "fields",
                  "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "http.request.method", "-e", "http.request.uri",
                  "-e", "http.response.code", "-E", "occurrence=a", "-E", "aggregator=|")
    requests: dict[str, list[list]] = defaultdict(list)
    answered: dict[str, int] = defaultdict(int)
    for line in rows.splitlines():
        src, dst, methods, uris, codes = (line.split("\t") + [""] * 5)[:5]
        if dst == port:
            for m, u in zip(methods.split("|"), uris.split("|")):
                requests[src].append([m, u, 0])
        else:
            for c in filter(None, codes.split("|")):  # pipelined answers come in request order
                requests[dst][answered[dst]][2] = int(c)
                answered[dst] += 1
    return {k: [tuple(x) for x in v] for k, v in requests.items()}


def test_http1_requests_targets_and_status_match_tshark():
    pcap = HERE / "http" / "curl-nginx.pcap"
    oracle = http1_oracle(pcap)
    spans = guardian_spans(pcap)
    assert oracle and set(oracle) == set(spans)
    for conn, want in oracle.items():
        got = [(s.attributes["http.request.method"], _target(s), s.attributes.get("http.response.status_code", 0))
               for s in spans[conn]]
        assert got == want, conn
        # a client span is an error from 400 on (OpenTelemetry HTTP semantic conventions)
        assert [s.status_code == "ERROR" for s in spans[conn]] == [code >= 400 for _, _, code in want], conn
    everything = [x for v in oracle.values() for x in v]
    assert ("POST", "/api/orders", 200) in everything and ("HEAD", "/index.html", 200) in everything
    assert sum(x == ("GET", "/api/load", 200) for x in everything) == 40  # hey -n 40
    assert [x[2] for x in oracle[max(oracle, key=lambda c: "/api/p1" in str(oracle[c]))]] == [200, 200, 404]


def http2_oracle(pcap) -> dict[str, dict[int, dict]]:
    """client port -> stream id -> method, path, status and grpc-status from tshark's HPACK decoding."""
    port = server_port(pcap)
    out: dict[str, dict[int, dict]] = defaultdict(dict)
    for f in frames(pcap, "http2", port):
        layers = f["_source"]["layers"]
        from_client = layers["tcp"]["tcp.dstport"] == port
        conn = layers["tcp"]["tcp.srcport" if from_client else "tcp.dstport"]
        for stream in walk_streams(layers["http2"]):
            if stream.get("http2.type") != "1":
                continue
            headers = {h["http2.header.name"]: h.get("http2.header.value", "")
                       for h in as_list(stream.get("http2.header"))}
            ex = out[conn].setdefault(int(stream["http2.streamid"]), {})
            if from_client:
                ex.update(method=headers.get(":method"), path=headers.get(":path"))
            else:
                if ":status" in headers:
                    ex["status"] = int(headers[":status"])
                if "grpc-status" in headers:
                    ex["grpc_status"] = int(headers["grpc-status"])
    return out


def walk_streams(http2):
    for x in as_list(http2):
        if isinstance(x, dict):
            yield from as_list(x.get("http2.stream"))


def _h2_test(pcap):
    oracle = http2_oracle(pcap)
    spans = guardian_spans(pcap)
    assert oracle and set(oracle) == set(spans)
    for conn, streams in oracle.items():
        got = {s.attributes["http2.stream_id"]: dict(method=s.attributes["http.request.method"], path=_target(s),
                                                     status=s.attributes.get("http.response.status_code"),
                                                     **({"grpc_status": s.attributes["rpc.grpc.status_code"]}
                                                        if "rpc.grpc.status_code" in s.attributes else {}))
               for s in spans[conn]}
        assert got == streams, conn
    return oracle, spans


def test_http2_streams_methods_paths_and_status_match_tshark():
    oracle, spans = _h2_test(HERE / "http2" / "h2c-nginx.pcap")
    statuses = sorted(ex["status"] for v in oracle.values() for ex in v.values())
    assert statuses.count(503) == 2 and 404 in statuses and len(statuses) == 7 + 30  # h2load -n 30
    assert sum(ex["path"] == "/api/load" for v in oracle.values() for ex in v.values()) == 30
    assert all(s.status_code == "ERROR" for v in spans.values() for s in v if s.attributes["url.path"] == "/fail")


def test_grpc_methods_and_grpc_status_match_tshark():
    oracle, spans = _h2_test(HERE / "http2" / "grpcio.pcap")
    (conn,) = oracle
    assert [ex["grpc_status"] for _, ex in sorted(oracle[conn].items())] == [0, 0, 0, 5, 0]
    fail = [s for s in spans[conn] if s.attributes["rpc.method"] == "Fail"]
    assert fail[0].status_code == "ERROR" and fail[0].attributes["error.type"] == "NOT_FOUND"
