"""DNS through the pcap source: recorded captures (UDP, TCP, IPv4 and IPv6 fragments, bad EDNS)."""

from capture.sources.pcap import replay
from tests.capture.sources.pcapwriter import CAPTURES



def spans_of(name):
    spans = []
    stats = replay(str(CAPTURES / "dns" / name), lambda b: spans.extend(s.to_dict() for s in b))
    return spans, stats


def test_long_udp_conversation_pairs_every_query():
    spans, _ = spans_of("zeek-long-connection.pcap")
    names = [(s["attributes"]["dns.question.type"], s["attributes"]["dns.question.name"]) for s in spans]
    assert len(spans) == 11 and names[0] == ("MX", "google.com") and ("ANY", "www.isc.org") in names
    bad = [s for s in spans if s["status_code"] == "ERROR"]
    assert [(s["attributes"]["dns.question.name"], s["attributes"]["error.type"]) for s in bad] == \
        [("www.example.notginh", "NXDOMAIN")]
    assert all(s["attributes"]["server.port"] == 53 and s["attributes"]["network.transport"] == "udp"
               for s in spans)


def test_fragmented_udp_and_tcp_responses():
    spans, stats = spans_of("ndpi-dns_fragmented.pcap")
    assert stats["pcap.fragments"] == 14  # IPv4 and IPv6 fragments reassembled
    dnskey = [s["attributes"] for s in spans if s["attributes"]["dns.question.type"] == "DNSKEY"
              and "dns.answer.count" in s["attributes"]]
    assert {a["network.transport"] for a in dnskey} == {"udp", "tcp"}
    assert all(a["dns.answer.count"] == 4 for a in dnskey)  # only whole (reassembled) messages have them
    servfail = [s for s in spans if s["attributes"].get("dns.response_code") == "SERVFAIL"]
    assert [s["attributes"]["dns.question.name"] for s in servfail] == ["sigfail.verteiltesysteme.net"]
    assert servfail[0]["status_code"] == "ERROR"


def test_single_query_with_duplicate_answer():
    spans, stats = spans_of("ndpi-dns.pcap")
    assert [s["name"] for s in spans] == ["DNS AAAA www.example.com"]
    assert stats["pipeline.dns.responses_without_request"] == 1


def test_bad_edns_length_does_not_raise():
    spans, stats = spans_of("zeek-dns-edns-bad-length.pcap")
    assert spans == [] and stats.get("pipeline.parser_exceptions", 0) == 0
    assert stats["pcap.flows.DNS"] == 1
