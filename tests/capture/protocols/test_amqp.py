"""AMQP 0-9-1 parser, bytes only: sync pairs, publish/deliver/get/ack, confirms, server closes, loss."""
from pamqp import commands as m, frame, header, body

from capture.protocols.amqp import PROTOCOL_HEADER, AmqpParser, detect
from capture.protocols.base import Side
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER


def f(ch, value):
    return frame.marshal(value, ch)


def content(ch, method, payload=b"hello"):
    return f(ch, method) + f(ch, header.ContentHeader(0, len(payload))) + f(ch, body.ContentBody(payload))


def feed_all(p, steps):
    out = []
    for i, (side, data) in enumerate(steps):
        out += p.feed(side, data, (i + 1) * 1000)
    return out


def test_handshake_and_queue_declare():
    p = AmqpParser()
    recs = feed_all(p, [
        (C, PROTOCOL_HEADER),
        (S, f(0, m.Connection.Start())),
        (C, f(0, m.Connection.StartOk(client_properties={}, response="\0g\0p"))),
        (S, f(0, m.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60))),
        (C, f(0, m.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60)) + f(0, m.Connection.Open())),
        (S, f(0, m.Connection.OpenOk())),
        (C, f(1, m.Channel.Open())),
        (S, f(1, m.Channel.OpenOk())),
        (C, f(1, m.Queue.Declare(queue="jobs"))),
        (S, f(1, m.Queue.DeclareOk(queue="jobs", message_count=0, consumer_count=0))),
    ])
    assert [r.name for r in recs] == ["connection.open", "channel.open", "queue.declare jobs"]
    q = recs[-1]
    assert q.attributes["messaging.destination.name"] == "jobs" and (q.start_ns, q.end_ns) == (9000, 10000)
    assert q.attributes["messaging.system"] == "rabbitmq"


def test_publish_split_across_frames_and_chunks():
    p = AmqpParser()
    data = content(1, m.Basic.Publish(exchange="orders", routing_key="eu.new"), b"x" * 5000)
    recs = p.feed(C, data[:30], 1) + p.feed(C, data[30:100], 2) + p.feed(C, data[100:], 3)
    (rec,) = recs
    a = rec.attributes
    assert rec.name == "publish orders" and (rec.start_ns, rec.end_ns) == (1, 3)
    assert (a["messaging.operation.type"], a["messaging.rabbitmq.destination.routing_key"],
            a["messaging.message.body.size"]) == ("publish", "eu.new", 5000)


def test_truncated_body_copy_still_completes_the_publish():
    p = AmqpParser()
    data = content(1, m.Basic.Publish(exchange="", routing_key="q"), b"y" * 20000)
    (rec,) = p.feed(C, data[:4096], 1, size=len(data))
    assert rec.name == "publish amq.default" and rec.attributes["messaging.message.body.size"] == 20000


def test_consume_deliver_and_ack_name_the_queue():
    p = AmqpParser()
    recs = feed_all(p, [
        (C, f(1, m.Basic.Consume(queue="jobs"))),
        (S, f(1, m.Basic.ConsumeOk(consumer_tag="ctag-1"))),
        (S, content(1, m.Basic.Deliver(consumer_tag="ctag-1", delivery_tag=7, exchange="", routing_key="jobs"))),
        (C, f(1, m.Basic.Ack(delivery_tag=7))),
        (C, f(1, m.Basic.Nack(delivery_tag=8, requeue=False))),
    ])
    assert [r.name for r in recs] == ["basic.consume jobs", "deliver jobs", "ack jobs", "nack"]
    assert recs[1].attributes["messaging.operation.type"] == "receive"
    assert recs[2].attributes["messaging.operation.type"] == "settle"
    assert recs[2].attributes["messaging.rabbitmq.message.delivery_tag"] == 7


def test_basic_get_ok_and_empty():
    p = AmqpParser()
    recs = feed_all(p, [
        (C, f(2, m.Basic.Get(queue="jobs"))),
        (S, content(2, m.Basic.GetOk(delivery_tag=1, exchange="", routing_key="jobs", message_count=0), b"abc")),
        (C, f(2, m.Basic.Get(queue="jobs"))),
        (S, f(2, m.Basic.GetEmpty())),
    ])
    assert [r.name for r in recs] == ["get jobs", "get jobs"]
    assert recs[0].attributes["messaging.message.body.size"] == 3
    assert recs[1].attributes["messaging.batch.message_count"] == 0


def test_confirm_mode_waits_for_broker_ack_and_nack():
    p = AmqpParser()
    recs = feed_all(p, [
        (C, f(1, m.Confirm.Select())),
        (S, f(1, m.Confirm.SelectOk())),
        (C, content(1, m.Basic.Publish(exchange="x", routing_key="a"))),
        (C, content(1, m.Basic.Publish(exchange="x", routing_key="b"))),
        (C, content(1, m.Basic.Publish(exchange="x", routing_key="c"))),
        (S, f(1, m.Basic.Ack(delivery_tag=2, multiple=True))),
        (S, f(1, m.Basic.Nack(delivery_tag=3))),
    ])
    pubs = [r for r in recs if r.name == "publish x"]
    assert [(r.attributes["messaging.rabbitmq.destination.routing_key"], r.status, r.end_ns) for r in pubs] == \
        [("a", "UNSET", 6000), ("b", "UNSET", 6000), ("c", "ERROR", 7000)]


def test_server_channel_close_fails_the_pending_request():
    p = AmqpParser()
    recs = feed_all(p, [
        (C, f(1, m.Queue.Declare(queue="missing", passive=True))),
        (S, f(1, m.Channel.Close(reply_code=404, reply_text="NOT_FOUND - no queue 'missing'",
                                 class_id=50, method_id=10))),
        (C, f(1, m.Channel.CloseOk())),
    ])
    (rec,) = recs
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "NOT_FOUND"
    assert rec.attributes["amqp.reply_code"] == 404


def test_publish_to_missing_exchange_is_an_error_span():
    p = AmqpParser()
    recs = feed_all(p, [
        (C, content(1, m.Basic.Publish(exchange="nope", routing_key="k"))),
        (S, f(1, m.Channel.Close(reply_code=404, reply_text="NOT_FOUND - no exchange 'nope'",
                                 class_id=60, method_id=40))),
    ])
    assert [(r.name, r.status) for r in recs] == [("publish nope", "UNSET"), ("channel.close", "ERROR")]
    assert recs[1].attributes["amqp.failed_method"] == "basic.40"


def test_garbage_gap_and_mid_stream_resync():
    p = AmqpParser()
    assert p.feed(C, b"\x07garbage that is not a frame", 1) == []
    p.feed(C, b"", 2, size=50)
    (rec,) = p.feed(C, content(1, m.Basic.Publish(exchange="e", routing_key="r")), 3)
    assert rec.name == "publish e"


def test_unanswered_on_close():
    p = AmqpParser()
    p.feed(C, f(1, m.Queue.Declare(queue="q")), 1)
    (rec,) = p.close(9)
    assert rec.status == "ERROR" and rec.attributes["error.type"] == "no_response"


def test_detect():
    assert detect(PROTOCOL_HEADER) == C
    assert detect(f(0, m.Connection.Start())) == S
    assert detect(f(1, m.Basic.Publish(exchange="e"))) == C
    assert detect(f(1, m.Basic.Deliver(consumer_tag="t", delivery_tag=1, exchange="", routing_key="q"))) == S
    assert detect(f(1, m.Queue.Declare(queue="q"))) is None  # direction not fixed by the method: wait
    assert random_match_rate(detect) < 0.001
    assert other_protocol_matches(detect) == []


def bench_sample():
    """A queue.declare pair and a publish with its content (bench/parsers.py)."""
    return [(C, f(1, m.Queue.Declare(queue="jobs"))),
            (S, f(1, m.Queue.DeclareOk(queue="jobs", message_count=0, consumer_count=0))),
            (C, content(1, m.Basic.Publish(exchange="orders", routing_key="eu"), b"x" * 200))], 2


def test_recorded_celery_capture_mid_stream():
    from capture.sources.pcap import replay
    from tests.capture.sources.pcapwriter import CAPTURES
    spans = []
    replay(str(CAPTURES / "amqp" / "ndpi-amqp.pcap"), lambda b: spans.extend(s.to_dict() for s in b))
    names = [s["name"] for s in spans]
    assert names.count("publish celeryev") > 10 and "publish default" in names
    delivers = [s for s in spans if s["name"].startswith("deliver")]
    acks = [s for s in spans if s["name"].startswith("ack")]
    assert delivers and acks and all(s["attributes"]["server.port"] == 5672 for s in spans)
    assert {s["attributes"]["messaging.rabbitmq.message.delivery_tag"] for s in acks} <= \
        {s["attributes"]["messaging.rabbitmq.message.delivery_tag"] for s in delivers}


def test_unconfirmed_publishes_channels_and_sync_waits_are_bounded_per_connection():
    """Found by bench.fuzz's long-lived parser: confirm-mode publishes never confirmed kept 10,000
    spans' attributes per channel, on up to 65,536 channels."""
    from capture.protocols import amqp
    p = AmqpParser()
    steps = []
    for ch in (1, 2, 3):
        steps += [(C, f(ch, m.Confirm.Select())), (S, f(ch, m.Confirm.SelectOk()))]
        steps += [(C, content(ch, m.Basic.Publish(exchange="x", routing_key="k")))] * 1000
    feed_all(p, steps)
    assert sum(len(c.unconfirmed) for c in p._channels.values()) == amqp.MAX_UNCONFIRMED
    assert p.stats["pending_overflow"] == 3000 - amqp.MAX_UNCONFIRMED
    feed_all(p, [(C, f(4, m.Queue.Declare(queue="q")))] * (amqp.MAX_SYNC + 10))  # never answered
    assert len(p._channels[4].sync) == amqp.MAX_SYNC
    feed_all(p, [(C, f(ch, m.Queue.Declare(queue="q"))) for ch in range(5, amqp.MAX_CHANNELS + 100)])
    assert len(p._channels) == amqp.MAX_CHANNELS and p.stats["channel_overflow"] == 99  # 2,143 asked, 2,044 free


def test_unconfirmed_count_follows_acks_across_channels():
    """The connection's bound is kept as a count (not summed over channels per publish): acks on
    one channel make room for publishes on another, and the count always matches what is held."""
    from capture.protocols import amqp
    p = AmqpParser()
    steps = []
    for ch in (1, 2):
        steps += [(C, f(ch, m.Confirm.Select())), (S, f(ch, m.Confirm.SelectOk()))]
    steps += [(C, content(1, m.Basic.Publish(exchange="x", routing_key="k")))] * amqp.MAX_UNCONFIRMED
    steps += [(C, content(2, m.Basic.Publish(exchange="x", routing_key="k")))] * 10  # over the bound
    feed_all(p, steps)
    assert p.stats["pending_overflow"] == 10
    recs = feed_all(p, [(S, f(1, m.Basic.Ack(delivery_tag=100, multiple=True))),
                        (S, f(1, m.Basic.Nack(delivery_tag=101)))])
    assert len(recs) == 101 and p._unconfirmed == amqp.MAX_UNCONFIRMED - 101
    feed_all(p, [(C, content(2, m.Basic.Publish(exchange="x", routing_key="k")))] * 101)
    assert p.stats["pending_overflow"] == 10 and p._unconfirmed == amqp.MAX_UNCONFIRMED
    assert p._unconfirmed == sum(len(c.unconfirmed) for c in p._channels.values())
    assert len(p.close(10**9)) == amqp.MAX_UNCONFIRMED and p._unconfirmed == 0


def test_deliveries_of_an_auto_ack_consumer_stay_at_their_bound():
    """An auto-ack consumer never acks: the soak's consumer grew each channel's delivery table by
    ~8 entries a second toward 10,000 (the agent's RSS rising over a 30-minute soak)."""
    from capture.protocols import amqp
    p = AmqpParser()
    n = amqp.MAX_DELIVERIES + 500
    steps = [(C, f(1, m.Basic.Consume(queue="jobs", no_ack=True))), (S, f(1, m.Basic.ConsumeOk(consumer_tag="t")))]
    steps += [(S, content(1, m.Basic.Deliver(consumer_tag="t", delivery_tag=tag, exchange="", routing_key="jobs")))
              for tag in range(1, n + 1)]
    recs = feed_all(p, steps)
    assert sum(r.name == "deliver jobs" for r in recs) == n
    assert len(p._channels[1].deliveries) == amqp.MAX_DELIVERIES
    assert p.stats["deliveries_evicted"] == 500
    # the newest are the ones kept: their acks still name the queue, an evicted one's does not
    (ack_new,) = feed_all(p, [(C, f(1, m.Basic.Ack(delivery_tag=n)))])
    (ack_old,) = feed_all(p, [(C, f(1, m.Basic.Ack(delivery_tag=1)))])
    assert (ack_new.name, ack_old.name) == ("ack jobs", "ack")
