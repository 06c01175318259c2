"""Cross-node links under record loss: with the epochs agents ship (a connection's losses before
each span), the hub makes no wrong link at any loss level and links every exchange whose two
spans arrived; without them (as before agents shipped epochs) the same spans get wrong links.
Spans and the hub's Rows (decoded from OTLP) alike."""
from __future__ import annotations

import pytest

from capture.export import otlp_wire
from capture.export.otlp_proto import encode
from capture.span import Span
from capture.traces.crossnode import CrossNodeLinker
from capture.traces.losses import epoch_of, within_epochs
from support.lossy_links import MS, exchanges, link, run, score

LOSSES = (0.0, 0.03, 0.3, 0.5, 0.7, 0.93)


@pytest.mark.parametrize("loss", LOSSES)
def test_no_wrong_link_at_any_loss(loss):
    got = run(loss, seed=3)
    assert got.wrong == 0, got
    assert got.right == got.both, got  # exact clocks: every exchange with both halves is linked


@pytest.mark.parametrize("loss", (0.03, 0.3, 0.7, 0.93))
def test_no_wrong_link_with_the_server_clock_ahead(loss):
    """The clock offset is measured from the links themselves; what no exact containment or
    anchor vouches for stays unlinked."""
    got = run(loss, seed=3, skew_ms=2.0, pause_ms=(5.0, 20.0))
    assert got.wrong == 0, got
    assert loss > 0.3 or got.right >= 0.9 * got.both, got


def test_without_epochs_loss_makes_wrong_links():
    """What the epochs prevent: the spans of a lost exchange's neighbours fit each other."""
    wrong = {loss: run(loss, seed=3, epochs=False).wrong for loss in (0.3, 0.93)}
    assert all(n > 0 for n in wrong.values()), wrong


def test_hub_rows_read_the_epoch_and_link_alike():
    if otlp_wire._otlp_wire is None:
        pytest.skip("extension not built")
    spans, truth = exchanges(0.5, seed=4)
    rows = []
    for i in range(0, len(spans), 100):
        got, rejected = otlp_wire.decode_rows(encode(spans[i:i + 100]))
        assert rejected == 0
        rows += got
    want = {s.span_id: epoch_of(s) for s in spans}
    assert {r.span_id: epoch_of(r) for r in rows} == want and any(want.values())
    rows.sort(key=lambda r: r.end_time_unix_nano)  # as agents ship them: in time
    out, lk = link(rows, 10.0, 0.05)
    got = score(out, truth, lk)
    assert got.wrong == 0 and got.right == got.both and got.across_loss > 0, got


def test_epoch_of_bad_values_is_zero():
    for value in ("3", None, 1.5, -2):
        s = Span("GET /", "CLIENT", 1, 2, attributes={"guardian.connection.epoch": value})
        assert epoch_of(s) == (0 if not isinstance(value, int) or value < 0 else value)
    assert epoch_of(Span("GET /", "CLIENT", 1, 2, attributes={"guardian.connection.epoch": 4})) == 4


def test_an_order_link_stands_beside_an_anchor_in_the_same_epochs():
    """Rule 7 on links alone: a loose link next to a sure one of the same epochs at the same
    distance on both sides stays; one whose neighbours were lost on both sides goes."""
    epochs_c, epochs_s = [1, 1, 1], [2, 2, 3]
    links = [(0, 0, 0, 0), (1, 1, 2, 5), (2, 2, 2, 5)]
    exact = lambda i, j: i == 0  # noqa: E731 — only the first is exactly contained
    kept, refused = within_epochs(links, 3, 3, exact, epochs_c.__getitem__, epochs_s.__getitem__,
                                  lambda i: False)
    assert kept == links[:2] and refused == 1


def test_a_lost_neighbours_server_is_refused_on_a_loss_shape():
    """Client 2's previous client and client 2's own server were lost; server 1 fits client 2
    within the clocks' slack: the link would be wrong, and the epochs show the shape."""
    lk = CrossNodeLinker(window_s=1.0, slack_ns=2 * MS)
    res_a = {"service.name": "front", "host.name": "a"}
    res_b = {"service.name": "back", "host.name": "b"}
    ends = {"client.address": "10.0.0.1", "client.port": 40000, "server.address": "10.0.0.2",
            "server.port": 80, "network.transport": "tcp"}
    c0 = Span("GET /", "CLIENT", 0, 10 * MS, attributes=dict(ends), resource=res_a)
    s0 = Span("GET /", "SERVER", 2 * MS, 8 * MS, attributes=dict(ends), resource=res_b)
    s1 = Span("GET /", "SERVER", 12 * MS, 12 * MS + MS // 2, attributes=dict(ends), resource=res_b)
    # client 1 lost; client 2 starts 0.2 ms after server 1 ended: server 2 lost
    c2 = Span("GET /", "CLIENT", 12 * MS + 7 * MS // 10, 15 * MS,
              attributes={**ends, "guardian.connection.epoch": 1}, resource=res_a)
    c3 = Span("GET /", "CLIENT", 16 * MS, 20 * MS, attributes={**ends, "guardian.connection.epoch": 1},
              resource=res_a)
    s3 = Span("GET /", "SERVER", 17 * MS, 19 * MS, attributes={**ends, "guardian.connection.epoch": 1},
              resource=res_b)
    lk.add([c0, s0, s1, c2, c3, s3])
    lk.flush()
    assert s0.parent_span_id == c0.span_id and s3.parent_span_id == c3.span_id
    assert s1.parent_span_id is None, "server 1 given to client 2"
    # the same spans without epochs: the wrong link this rule prevents
    for s in (c2, c3, s3):
        s.attributes.pop("guardian.connection.epoch")
    for s in (s0, s1, s3):
        s.parent_span_id = None
    lk = CrossNodeLinker(window_s=1.0, slack_ns=2 * MS)
    lk.add([c0, s0, s1, c2, c3, s3])
    lk.flush()
    assert s1.parent_span_id == c2.span_id


def test_an_unanswered_client_after_a_loss_takes_no_server_on_time_alone():
    """A request whose response never came ends when the connection closed (or the capture
    stopped): its wait holds every later server of the connection. After a loss it is not
    linked on time; with nothing lost on either side it is (a timeout has its server)."""
    ends = {"client.address": "10.0.0.1", "client.port": 40000, "server.address": "10.0.0.2",
            "server.port": 80, "network.transport": "tcp"}
    for epoch, linked in ((1, False), (0, True)):
        extra = {"guardian.connection.epoch": epoch} if epoch else {}
        c = Span("GET /", "CLIENT", 0, 19_000 * MS, resource={"service.name": "front", "host.name": "a"},
                 attributes={**ends, **extra, "error.type": "no_response"})
        s = Span("GET /", "SERVER", 2_979 * MS, 2_982 * MS, resource={"service.name": "back", "host.name": "b"},
                 attributes={**ends, **extra})
        lk = CrossNodeLinker(window_s=1.0, slack_ns=2 * MS)
        lk.add([c, s])
        lk.flush()
        assert (s.parent_span_id == c.span_id) is linked, epoch
