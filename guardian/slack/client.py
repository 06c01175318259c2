"""Posting to Slack through the Web API (slack_sdk); base URL configurable for a stand-in server."""
from __future__ import annotations

from slack_sdk import WebClient

from guardian.slack.format import split_message, to_mrkdwn


class SlackPoster:
    def __init__(self, token: str, base_url: str | None = None, timeout: float = 10.0):
        base = base_url or WebClient.BASE_URL
        self.client = WebClient(token=token, base_url=base if base.endswith("/") else base + "/",
                                timeout=int(timeout))

    def post(self, channel: str, text: str, thread_ts: str | None = None, markdown: bool = False,
             extra_blocks: list[dict] | None = None) -> str | None:
        """Post `text` (split to fit) in `thread_ts`, or as a new message whose thread takes the rest.

        Returns the ts of the first message posted. Raises slack_sdk's SlackApiError on refusal."""
        body = to_mrkdwn(text) if markdown else text
        first = None
        parts = split_message(body)
        for i, part in enumerate(parts):
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": part}}] if part else []
            if extra_blocks and i == len(parts) - 1:
                blocks += extra_blocks
            resp = self.client.chat_postMessage(
                channel=channel, text=part, thread_ts=thread_ts or first, blocks=blocks or None,
            )
            first = first or resp.get("ts")
        return first
