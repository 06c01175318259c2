"""DNS parser, bytes only: UDP and TCP framing, pairing by id, errors, truncation, garbage."""
import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from capture.protocols.base import Side
from capture.protocols.dns import DnsParser, detect
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER


def query(name="svc.test", rdtype="A", qid=0x1234):
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    return q


def answer(q, *addrs, rcode=dns.rcode.NOERROR):
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if addrs:
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN",
                                            dns.rdatatype.to_text(q.question[0].rdtype), *addrs))
    return r.to_wire()


def tcp(wire):
    return struct.pack("!H", len(wire)) + wire


def test_udp_query_and_answer():
    p = DnsParser()
    q = query()
    assert p.feed(C, q.to_wire(), 1_000) == []
    (rec,) = p.feed(S, answer(q, "10.1.2.3"), 4_000)
    assert rec.name == "DNS A svc.test" and rec.status == "UNSET"
    assert (rec.start_ns, rec.end_ns) == (1_000, 4_000)
    a = rec.attributes
    assert a["dns.question.name"] == "svc.test" and a["dns.question.type"] == "A"
    assert a["dns.response_code"] == "NOERROR" and a["dns.answers"] == ["10.1.2.3"]
    assert a["dns.answer.count"] == 1


def test_nxdomain_is_an_error():
    p = DnsParser()
    q = query("missing.test")
    p.feed(C, q.to_wire(), 1)
    (rec,) = p.feed(S, answer(q, rcode=dns.rcode.NXDOMAIN), 2)
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "NXDOMAIN"
    assert rec.attributes["dns.answer.count"] == 0


def test_concurrent_a_and_aaaa_pair_by_id_in_any_order():
    p = DnsParser()
    qa, qaaaa = query("h.test", "A", 1), query("h.test", "AAAA", 2)
    p.feed(C, qa.to_wire(), 1)
    p.feed(C, qaaaa.to_wire(), 2)
    (r1,) = p.feed(S, answer(qaaaa, "fd00::1"), 5)
    (r2,) = p.feed(S, answer(qa, "10.0.0.1"), 7)
    assert (r1.attributes["dns.question.type"], r1.attributes["dns.answers"], r1.start_ns) == ("AAAA", ["fd00::1"], 2)
    assert (r2.attributes["dns.question.type"], r2.attributes["dns.answers"], r2.start_ns) == ("A", ["10.0.0.1"], 1)


def test_tcp_prefix_written_alone_and_pipelined_queries():
    p = DnsParser()
    q1, q2 = query("a.test", qid=10), query("b.test", qid=11)
    w1 = q1.to_wire()
    assert p.feed(C, w1[:0] + struct.pack("!H", len(w1)), 1) == []  # prefix alone
    assert p.feed(C, w1 + tcp(q2.to_wire()), 2) == []  # rest + a pipelined query
    r = tcp(answer(q1, "10.0.0.1")) + tcp(answer(q2, "10.0.0.2"))
    recs = p.feed(S, r[:7], 3) + p.feed(S, r[7:], 4)  # a response split across reads
    assert [x.attributes["dns.question.name"] for x in recs] == ["a.test", "b.test"]
    assert recs[0].start_ns == 1 and recs[0].end_ns == 4


def test_tcp_client_whose_first_prefix_the_kernel_dropped():
    p = DnsParser()
    q1, q2 = query("a.test", qid=1), query("b.test", qid=2)
    p.feed(C, q1.to_wire(), 1)  # bare: its 2-byte prefix came before detection
    p.feed(S, tcp(answer(q1, "10.0.0.1")), 2)
    p.feed(C, struct.pack("!H", len(q2.to_wire())), 3)
    p.feed(C, q2.to_wire(), 3)
    (rec,) = p.feed(S, tcp(answer(q2, "10.0.0.2")), 4)
    assert rec.attributes["dns.question.name"] == "b.test"


def test_truncated_copy_of_a_large_response_keeps_header_and_question():
    p = DnsParser()
    q = query("big.test", "TXT", 5)
    p.feed(C, q.to_wire(), 1)
    wire = answer(q, *[f'"{"x" * 200}"' for _ in range(10)])
    (rec,) = p.feed(S, wire[:60], 2, size=len(wire))
    assert rec.attributes["dns.question.name"] == "big.test"
    assert rec.attributes["dns.response_code"] == "NOERROR"


def test_garbage_and_mid_stream_response_do_not_break_pairing():
    p = DnsParser()
    q0 = query("old.test", qid=99)
    assert p.feed(S, answer(q0, "10.9.9.9"), 1) == []  # answer to a query sent before we started
    assert p.feed(C, b"\xff" * 40, 2) == []
    q = query("new.test", qid=3)
    p.feed(C, q.to_wire(), 3)
    (rec,) = p.feed(S, answer(q, "10.0.0.3"), 4)
    assert rec.attributes["dns.question.name"] == "new.test"
    assert p.stats["responses_without_request"] == 1


def test_unanswered_query_is_reported_on_close():
    p = DnsParser()
    p.feed(C, query("lost.test").to_wire(), 1_000)
    (rec,) = p.close(9_000)
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "timeout" and rec.end_ns == 9_000


def test_detect_sides_and_framings():
    q = query()
    assert detect(q.to_wire()) == C
    assert detect(answer(q, "10.0.0.1")) == S
    assert detect(tcp(q.to_wire())) == C
    assert detect(tcp(answer(q))) == S


def test_detect_rejects_random_bytes_and_other_protocols():
    assert random_match_rate(detect) < 0.002
    assert other_protocol_matches(detect) == []


def bench_sample():
    """One UDP query and its answer (bench/parsers.py)."""
    q = query("inventory.shop.local")
    return [(C, q.to_wire()), (S, answer(q, "10.0.0.7"))], 1


def test_pending_queries_are_bounded_oldest_dropped_and_counted():
    from capture.protocols import dns as dns_proto

    p = DnsParser()
    for i in range(dns_proto.MAX_PENDING + 10):
        p.feed(C, query(f"h{i}.test", qid=i % 65536).to_wire(), 1_000 + i)
    assert len(p._pending) == dns_proto.MAX_PENDING and p.stats["pending_overflow"] == 10
    assert p.feed(S, answer(query("h0.test", qid=0), "10.0.0.1"), 5_000) == []  # dropped: the oldest
    last = dns_proto.MAX_PENDING + 9
    (rec,) = p.feed(S, answer(query(f"h{last}.test", qid=last), "10.0.0.2"), 6_000)
    assert rec.attributes["dns.question.name"] == f"h{last}.test"


def test_retransmissions_share_a_key_bounded_and_pair_oldest_first():
    from capture.protocols import dns as dns_proto

    p = DnsParser()
    q = query("retry.test", qid=5)
    for i in range(dns_proto.MAX_RETRIES + 3):
        p.feed(C, q.to_wire(), 100 + i)
    assert len(p._pending) == 1 and p.stats["pending_overflow"] == 3
    (rec,) = p.feed(S, answer(q, "10.0.0.5"), 1_000)
    assert rec.start_ns == 103  # the oldest query kept
    rest = p.close(2_000)
    assert len(rest) == dns_proto.MAX_RETRIES - 1 and all(r.status == "ERROR" for r in rest)


def test_expiry_walks_from_the_oldest_and_stops_at_one_in_time():
    from capture.protocols import dns as dns_proto

    p = DnsParser()
    p.feed(C, query("a.test", qid=1).to_wire(), 0)
    p.feed(C, query("b.test", qid=2).to_wire(), dns_proto.QUERY_TIMEOUT_NS // 2)
    out = p.feed(C, query("c.test", qid=3).to_wire(), dns_proto.QUERY_TIMEOUT_NS + 1)
    assert [r.attributes["dns.question.name"] for r in out] == ["a.test"] and len(p._pending) == 2
    (rec,) = p.feed(S, answer(query("b.test", qid=2), "10.0.0.2"), dns_proto.QUERY_TIMEOUT_NS + 2)
    assert rec.status == "UNSET"
