"""MySQL through the pcap source: the mysql client, caching_sha2_password, query attributes (8.0)."""

from capture.sources.pcap import replay
from tests.capture.sources.pcapwriter import CAPTURES



def spans_of(name):
    spans = []
    stats = replay(str(CAPTURES / "mysql" / name), lambda b: spans.extend(s.to_dict() for s in b))
    return spans, stats


def test_client_session():
    spans, _ = spans_of("zeek-mysql.pcap")
    texts = [s["attributes"].get("db.query.text") for s in spans if s["attributes"]["mysql.command"] == "QUERY"]
    assert texts[:2] == ["select @@version_comment limit 1", "SELECT DATABASE()"]
    assert texts.count("select * from foo") == 2
    sel = next(s for s in spans if s["attributes"].get("db.query.text") == "select count(*) from foo")
    assert sel["attributes"]["db.namespace"] == "test" and sel["attributes"]["db.response.returned_rows"] == 1
    assert all(s["attributes"]["db.system"] == "mysql" and s["status_code"] == "UNSET" for s in spans)


def test_query_attributes_and_sha2_auth():
    spans, _ = spans_of("zeek-caching_sha2_password.pcap")
    texts = sorted(s["attributes"]["db.query.text"] for s in spans if s["attributes"]["mysql.command"] == "QUERY")
    assert texts == sorted(["select @@version_comment limit 1", "show databases", "show tables"] * 2)
    assert [s["attributes"]["mysql.command"] for s in spans].count("FIELD_LIST") == 2  # answered up to its EOF


def test_selects_with_new_protocol():
    spans, _ = spans_of("zeek-selects_with_new_proto.pcap")
    assert [s["attributes"]["db.operation.name"] for s in spans].count("SHOW") == 3
