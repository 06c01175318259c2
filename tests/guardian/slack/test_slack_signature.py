"""Signing-secret verification on the raw body: good → handled, bad/stale/missing → 401."""
from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient
from serving_support import SLACK_SECRET as SECRET, slack_headers

from guardian.api.main import create_app


def _post(client, body: bytes, headers: dict, path="/slack/events"):
    return client.post(path, content=body, headers={"Content-Type": "application/json", **headers})


def test_url_verification_with_a_good_signature(client):
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps({"type": "url_verification", "challenge": challenge, "token": "x"}).encode()
    r = _post(client, body, slack_headers(SECRET, body))
    assert r.status_code == 200 and r.json() == {"challenge": challenge}


def test_bad_stale_or_missing_signatures_are_401(client):
    body = json.dumps({"type": "url_verification", "challenge": "c"}).encode()
    assert _post(client, body, slack_headers("another-secret", body)).status_code == 401
    stale = slack_headers(SECRET, body, ts=int(time.time()) - 6 * 60)
    assert _post(client, body, stale).status_code == 401
    future = slack_headers(SECRET, body, ts=int(time.time()) + 6 * 60)
    assert _post(client, body, future).status_code == 401
    assert _post(client, body, {}).status_code == 401
    good = slack_headers(SECRET, body)
    assert _post(client, body + b" ", good).status_code == 401  # the body is what is signed
    bad_ts = {**good, "X-Slack-Request-Timestamp": "noon"}
    assert _post(client, body, bad_ts).status_code == 401
    assert client.post("/slack/commands", content=b"command=%2Fguardian&text=hi",
                       headers={"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=00"}).status_code == 401


def test_signed_but_malformed_payloads_are_400(client):
    for body in (b"{not json", b"[1,2]", b'{"no_type": 1}'):
        r = _post(client, body, slack_headers(SECRET, body))
        assert r.status_code == 400, body
        assert "Slack event payload" in r.json()["detail"]
    huge = b'{"type":"event_callback","pad":"' + b"x" * (2 << 20) + b'"}'
    assert _post(client, huge, slack_headers(SECRET, huge)).status_code == 413
    form = b"text=why"  # no command / channel_id
    r = client.post("/slack/commands", content=form, headers=slack_headers(SECRET, form))
    assert r.status_code == 400 and "channel_id" in r.json()["detail"]


def test_slack_not_configured_is_503(store):
    with TestClient(create_app(store, {"api": {"token": "t"}})) as c:
        body = b'{"type":"url_verification","challenge":"c"}'
        r = _post(c, body, slack_headers(SECRET, body))
        assert r.status_code == 503 and "SLACK_SIGNING_SECRET" in r.json()["detail"]


def test_non_ascii_signature_is_401_not_500(client):
    body = b'{"type":"url_verification","challenge":"c"}'
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": str(int(time.time())),
               "X-Slack-Signature": "v0=\u00e9\u00e9".encode("utf-8")}
    assert client.post("/slack/events", content=body, headers=headers).status_code == 401
    headers["X-Slack-Signature"] = "v0=\u00e9".encode("latin-1")
    assert client.post("/slack/commands", content=b"command=x", headers=headers).status_code == 401


def test_a_signed_request_is_accepted_once(client, slack_api):
    form = b"command=%2Fguardian&text=help&channel_id=C1&user_id=U1"
    signed = slack_headers(SECRET, form)
    first = client.post("/slack/commands", content=form, headers=signed)
    assert first.status_code == 200 and first.json()["response_type"] == "ephemeral"
    again = client.post("/slack/commands", content=form, headers=signed)  # a captured request replayed
    assert again.status_code == 409 and "replay" in again.json()["detail"]
    # An event without an event_id, replayed, is refused the same way.
    body = json.dumps({"type": "event_callback", "event": {"type": "app_mention", "text": "<@U0> hi",
                                                           "channel": "C1", "ts": "1.0"}}).encode()
    signed = slack_headers(SECRET, body)
    assert _post(client, body, signed).status_code == 200
    assert _post(client, body, signed).status_code == 409
    # Slack's own retry of the same event is signed anew (new timestamp): accepted.
    assert _post(client, body, slack_headers(SECRET, body, ts=int(time.time()) - 1)).status_code == 200
