"""Live eBPF capture of NATS between nats-py and a real nats-server (user/password auth)."""
from __future__ import annotations

import asyncio
import json
import os

import nats
import pytest

from support.live import live_capture

pytestmark = pytest.mark.ebpf


async def _session(port: int, user: str, password: str) -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{port}", user=user, password=password, name="guardian-test",
                            allow_reconnect=False)
    got = []

    async def on_message(msg):
        got.append(msg.data)

    sub = await nc.subscribe("orders.created", cb=on_message)
    await nc.flush()
    for i in range(5):
        await nc.publish("orders.created", b"order-%d" % i)
    await nc.publish("orders.audit", b"x", headers={"trace": "1"})  # HPUB
    await nc.flush()
    for _ in range(50):
        if len(got) == 5:
            break
        await asyncio.sleep(0.05)
    assert len(got) == 5
    await sub.unsubscribe()
    await nc.flush()
    await nc.close()


async def _bad_password(port: int, user: str) -> None:
    with pytest.raises(Exception):
        await nats.connect(f"nats://127.0.0.1:{port}", user=user, password="wrong", allow_reconnect=False,
                           max_reconnect_attempts=0, connect_timeout=2)


@pytest.fixture(scope="module")
def traffic(nats_server):
    port = nats_server["port"]
    with live_capture(port=port, extra=("--no-tls",)) as cap:
        asyncio.run(_session(port, nats_server["user"], nats_server["password"]))
        asyncio.run(_bad_password(port, nats_server["user"]))
    return cap


def mine(cap):
    return [s for s in cap.spans if s["resource"].get("process.pid") == os.getpid()]


def test_publish_subscribe_and_messages(traffic):
    spans = mine(traffic)
    by = {}
    for s in spans:
        by.setdefault((s["kind"], s["attributes"]["messaging.operation.name"]), []).append(s)
    pubs = by[("PRODUCER", "publish")]
    assert sorted(s["attributes"]["messaging.destination.name"] for s in pubs) == ["orders.audit"] + ["orders.created"] * 5
    msgs = by[("CONSUMER", "receive")]
    assert len(msgs) == 5 and {s["attributes"]["messaging.destination.name"] for s in msgs} == {"orders.created"}
    assert all(s["attributes"]["messaging.system"] == "nats" for s in spans)
    assert [s["attributes"]["messaging.destination.name"] for s in by[("CLIENT", "subscribe")]] == ["orders.created"]
    assert len(by[("CLIENT", "unsubscribe")]) == 1
    assert len(by[("CLIENT", "connect")]) == 2


def test_auth_error_and_no_password_in_spans(traffic):
    spans = mine(traffic)
    errors = [s for s in spans if s["status_code"] == "ERROR"]
    assert len(errors) == 1 and "Authorization" in errors[0]["status_message"], errors
    assert "s3cr3t-Pa55" not in json.dumps(traffic.spans) and '"wrong"' not in json.dumps(traffic.spans)
