"""PostgreSQL through the pcap source: recorded psql sessions, an app's traffic, TLS and bad messages."""

from capture.sources.pcap import replay
from tests.capture.sources.pcapwriter import CAPTURES



def spans_of(name):
    spans = []
    stats = replay(str(CAPTURES / "postgresql" / name), lambda b: spans.extend(s.to_dict() for s in b))
    return spans, stats


def test_psql_session_with_errors():
    spans, _ = spans_of("zeek-psql-insert-fail-drop-fail.pcap")
    got = [(s["attributes"]["db.query.text"], s["status_code"], s["attributes"].get("error.type")) for s in spans]
    assert got == [("DROP TABLE IF EXISTS t;", "UNSET", None),
                   (got[1][0], "UNSET", None),
                   ("INSERT INTO t VALUES (now(), now(), now());", "ERROR", "42804"),
                   ("DROP TABLE t;", "UNSET", None), ("DROP TABLE t;", "ERROR", "42P01")]
    assert all(s["attributes"]["db.namespace"] == "postgres" and s["attributes"]["db.system"] == "postgresql"
               for s in spans)


def test_create_insert_select_delete_drop():
    spans, _ = spans_of("zeek-psql-create-insert-select-delete-drop.pcap")
    assert [s["attributes"]["db.operation.name"] for s in spans] == ["DROP", "CREATE", "INSERT", "INSERT", "SELECT",
                                                                    "DELETE", "DROP"]
    select = spans[4]["attributes"]
    assert select["db.collection.name"] == "t" and select["db.response.returned_rows"] == 2


def test_application_traffic_extended_protocol():
    spans, stats = spans_of("zeek-greenhouse-app.pcap")
    assert len(spans) == 84 and stats.get("pipeline.parser_exceptions", 0) == 0
    plant = [s for s in spans if s["name"] == "SELECT plant"]
    assert len(plant) == 16 and all(s["attributes"]["db.query.text"].upper().startswith("SELECT") for s in plant)


def test_tls_and_bad_messages_give_no_invented_spans():
    for name in ("ndpi-pgsql2.pcapng", "zeek-bad-backend-message-1.pcap", "zeek-bad-startup-message-1.pcap"):
        spans, stats = spans_of(name)
        assert spans == [] and stats.get("pipeline.parser_exceptions", 0) == 0, name
