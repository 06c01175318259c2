"""HTTP/2 through the pcap source (a 5G core's HTTP/2 request)."""

from capture.sources.pcap import replay
from tests.capture.sources.pcapwriter import CAPTURES



def test_recorded_http2_request():
    spans = []
    replay(str(CAPTURES / "http2" / "ndpi-http2.pcapng"), lambda b: spans.extend(s.to_dict() for s in b))
    (s,) = spans
    a = s["attributes"]
    assert s["name"] == "POST /namf-comm/v1/subscriptions" and a["http.response.status_code"] == 201
    assert a["network.protocol.version"] == "2" and "http2.unknown_headers" not in a
