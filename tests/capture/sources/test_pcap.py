"""The pcap source: recorded HTTP captures and synthetic ones with loss, reordering and mid-stream starts."""
import json
import subprocess
import sys

import dpkt
import pytest

from capture.sources.pcap import replay
from tests.capture.sources.pcapwriter import CAPTURES, ROOT, PcapWriter


def spans_of(path, port=None):
    spans = []
    stats = replay(str(path), lambda batch: spans.extend(s.to_dict() for s in batch), port=port)
    return spans, stats


def req(path):
    return f"GET {path} HTTP/1.1\r\nHost: example\r\n\r\n".encode()


def resp(body=b"ok", status="200 OK"):
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body




def test_recorded_pipelined_requests():
    spans, stats = spans_of(CAPTURES / "http" / "zeek-pipelined-requests.pcap")
    assert [s["attributes"]["url.path"] for s in spans] == [
        "/style/enhanced.css", "/script/urchin.js", "/images/template/screen/bullet_utility.png",
        "/images/template/screen/key-point-top.png", "/projects/calendar/images/header-sunbird.png"]
    for s in spans:
        a = s["attributes"]
        assert s["kind"] == "CLIENT" and s["resource"] == {"service.name": "pcap"}
        assert (a["client.port"], a["server.port"], a["http.response.status_code"]) == (1673, 80, 200)
        assert a["network.transport"] == "tcp"
        # packet times of November 2009, in order
        assert 1258570000e9 < s["start_time_unix_nano"] < s["end_time_unix_nano"] < 1258580000e9
    assert stats["pcap.flows_detected"] == 1


def test_recorded_capture_starting_with_a_reply_pcapng():
    spans, stats = spans_of(CAPTURES / "http" / "ndpi-http_starting_with_reply.pcapng")
    got = [(s["name"], s["attributes"]["http.response.status_code"], s["status_code"]) for s in spans]
    assert got == [("GET /icons/ubuntu-logo.png", 200, "UNSET"), ("GET /favicon.ico", 404, "ERROR")]
    assert stats["pipeline.http1.responses_without_request"] == 1  # the reply the capture starts with
    assert spans[0]["attributes"]["server.port"] == 80


def test_recorded_100_continue_latency_from_packet_times():
    (span,), _ = spans_of(CAPTURES / "http" / "zeek-100-continue.pcap")
    assert span["name"] == "POST /" and span["attributes"]["http.response.status_code"] == 200
    assert 1.0 < (span["end_time_unix_nano"] - span["start_time_unix_nano"]) / 1e9 < 1.1


def test_handshake_on_a_non_standard_port(tmp_path):
    w = PcapWriter(tmp_path / "a.pcap", server=("10.0.0.2", 31337))
    w.handshake()
    w.tcp(w.client, req("/one"))
    w.tcp(w.server, resp(), dt=0.25)
    w.tcp(w.client, req("/two"))
    w.tcp(w.server, resp(b"", "503 Service Unavailable"))
    w.fin()
    spans, stats = spans_of(w.write())
    assert [(s["name"], s["status_code"]) for s in spans] == [("GET /one", "UNSET"), ("GET /two", "ERROR")]
    a = spans[0]["attributes"]
    assert (a["client.address"], a["client.port"], a["server.address"], a["server.port"]) == \
        ("10.0.0.1", 40000, "10.0.0.2", 31337)
    assert spans[0]["end_time_unix_nano"] - spans[0]["start_time_unix_nano"] == 250_000_000
    assert stats["pcap.flows"] == 1


def test_reordered_and_retransmitted_segments(tmp_path):
    w = PcapWriter(tmp_path / "b.pcap")
    w.handshake()
    r = req("/split")
    base = w.next[w.client]
    w.tcp(w.client, r[10:20], rel_seq=base + 10, ack=True)
    w.tcp(w.client, r[:10], rel_seq=base)
    w.tcp(w.client, r[:10], rel_seq=base)  # retransmit
    w.tcp(w.client, r[20:], rel_seq=base + 20)
    w.next[w.client] += len(r)
    w.tcp(w.server, resp())
    w.fin()
    spans, stats = spans_of(w.write())
    assert [s["name"] for s in spans] == ["GET /split"]
    assert stats["pcap.retransmits"] == 1 and stats["pcap.out_of_order"] == 1


def test_capture_starting_mid_connection_without_syn(tmp_path):
    w = PcapWriter(tmp_path / "c.pcap")
    w.tcp(w.server, b"tail of an earlier response body")  # no SYN, starts mid-stream
    w.tcp(w.client, req("/after"))
    w.tcp(w.server, resp())
    spans, _ = spans_of(w.write())
    assert [s["name"] for s in spans] == ["GET /after"]
    assert spans[0]["attributes"]["server.port"] == 7777  # client found by its request, not the port


def test_lost_segment_acked_by_the_peer_is_a_gap_and_the_parser_resyncs(tmp_path):
    w = PcapWriter(tmp_path / "d.pcap")
    w.handshake()
    w.tcp(w.client, req("/big"))
    body = b"x" * 3000
    r = resp(body)
    start = w.next[w.server]
    w.tcp(w.server, r[:1000], rel_seq=start)
    # r[1000:2000] never reached the capture
    w.tcp(w.server, r[2000:], rel_seq=start + 2000)
    w.next[w.server] += len(r)
    w.tcp(w.client, req("/next"))  # acknowledges everything the server sent
    w.tcp(w.server, resp())
    w.fin()
    spans, stats = spans_of(w.write())
    assert stats["pcap.gaps"] == 1
    # the gap falls inside a body of known length: both exchanges survive
    assert [s["name"] for s in spans] == ["GET /big", "GET /next"]


def test_garbage_flow_is_not_detected(tmp_path):
    w = PcapWriter(tmp_path / "e.pcap")
    w.handshake()
    for i in range(10):
        w.tcp(w.client, bytes(range(i, i + 40)))
    spans, stats = spans_of(w.write())
    assert spans == [] and stats["pcap.flows_undetected"] == 1


def test_port_filter(tmp_path):
    w = PcapWriter(tmp_path / "f.pcap")
    w.tcp(w.client, req("/x"))
    w.tcp(w.server, resp())
    path = w.write()
    assert len(spans_of(path, port=7777)[0]) == 1
    assert spans_of(path, port=80)[0] == []


def test_pcapng_is_read_too(tmp_path):
    w = PcapWriter(tmp_path / "g.pcap")
    w.tcp(w.client, req("/ng"))
    w.tcp(w.server, resp())
    ng = tmp_path / "g.pcapng"
    with open(ng, "wb") as f:
        out = dpkt.pcapng.Writer(f)
        for ts, frame in w.packets:
            out.writepkt(frame, ts=ts)
    assert [s["name"] for s in spans_of(ng)[0]] == ["GET /ng"]


def test_cli_prints_json_spans_and_exits(tmp_path):
    w = PcapWriter(tmp_path / "h.pcap")
    w.tcp(w.client, req("/cli"))
    w.tcp(w.server, resp())
    p = subprocess.run([sys.executable, "-m", "guardian.cli.main", "capture", "--pcap", str(w.write()),
                        "--json", "--stats"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    (line,) = p.stdout.splitlines()
    span = json.loads(line)
    assert span["name"] == "GET /cli" and span["kind"] == "CLIENT"
    assert json.loads(p.stderr.strip().splitlines()[-1])["pipeline.spans"] == 1


def test_cli_rejects_a_file_that_is_not_a_capture(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    p = subprocess.run([sys.executable, "-m", "guardian.cli.main", "capture", "--pcap", str(bad), "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "guardian capture:" in p.stderr


def test_a_dns_query_that_also_passes_the_kafka_check_is_dns(tmp_path):
    # a first label of 8+ printable bytes makes a query look like a Kafka request header (size,
    # api key 0, version, correlation id, client id): over UDP only DNS is tried, as in the kernel
    import struct

    from capture.protocols import kafka

    name = "u872ea771-0.x.test"
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">2H", 1, 1)
    query = struct.pack(">6H", 1, 0x0100, 1, 0, 0, 0) + question
    answer = struct.pack(">6H", 1, 0x8180, 1, 1, 0, 0) + question + b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([10, 1, 2, 3])
    assert kafka.detect(query) is not None
    w = PcapWriter(tmp_path / "dns.pcap", server=("10.0.0.2", 53))
    w.udp(w.client, w.server, query)
    w.udp(w.server, w.client, answer)
    spans, stats = spans_of(w.write())
    (s,) = spans
    assert s["attributes"]["dns.question.name"] == name and s["attributes"]["dns.answers"] == ["10.1.2.3"], stats
