"""Slack state of one app: signature verifier, Web API poster, recent event ids, and handing
questions to the investigation pool with the report posted back in the thread."""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict

from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from guardian.api.jobs import Busy, Job
from guardian.slack.client import SlackPoster
from capture.store.window import WindowError, resolve_window

log = logging.getLogger(__name__)
SIGNATURE_TTL_S = 6 * 60.0
PROGRESS_AFTER_S = 5.0  # an investigation still running after this gets a "still working" note
# "... in the last 30m", "over the past 2 hours", "since 90s": the window a question asks about.
_WINDOW = re.compile(r"\b(?:last|past|since)\s+(\d+(?:\.\d+)?)\s*(ms|s|secs?|seconds?|m|mins?|minutes?"
                     r"|h|hrs?|hours?|d|days?|w|weeks?)\b", re.I)


def window_phrase(question: str) -> str | None:
    """'why slow in the last 2 hours?' -> '2h'; None when the question names no window."""
    m = _WINDOW.search(question)
    if not m:
        return None
    unit = m.group(2).lower()
    return m.group(1) + ("ms" if unit == "ms" else unit[0])


class RecentIds:
    """Event ids seen in the last `ttl_s` seconds (bounded), to drop Slack's retries."""

    def __init__(self, ttl_s: float = 3600, max_size: int = 10000):
        self.ttl_s, self.max_size = ttl_s, max_size
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._seen and (len(self._seen) >= self.max_size
                                  or next(iter(self._seen.values())) < now - self.ttl_s):
                self._seen.popitem(last=False)
            if key in self._seen:
                return False
            self._seen[key] = now
            return True


class SlackService:
    """Slack settings, the Web API poster and the dedupe memory of one app."""

    def __init__(self, settings, jobs, metrics):
        self.settings, self.jobs, self.metrics = settings, jobs, metrics
        self.recent = RecentIds()
        # Longer than the verifier's 5-minute timestamp tolerance: a replay is stale by then.
        self.signatures = RecentIds(ttl_s=SIGNATURE_TTL_S, max_size=100_000)
        self.verifier = SignatureVerifier(settings.signing_secret) if settings.signing_secret else None
        self.poster = SlackPoster(settings.bot_token, settings.api_url) if settings.bot_token else None
        self.progress_after_s = PROGRESS_AFTER_S

    def post(self, channel: str, text: str, thread_ts: str | None = None, markdown: bool = False,
             extra_blocks: list[dict] | None = None) -> str | None:
        if self.poster is None:
            log.warning("SLACK_BOT_TOKEN not set: cannot post to %s", channel)
            return None
        return self.poster.post(channel, text, thread_ts, markdown, extra_blocks)

    def reply(self, channel: str, text: str, thread_ts: str | None = None, markdown: bool = False,
              extra_blocks: list[dict] | None = None) -> str | None:
        """post() for background work: a refusal or an unreachable Slack is logged, not raised."""
        try:
            return self.post(channel, text, thread_ts, markdown, extra_blocks)
        except (SlackApiError, OSError) as e:
            log.error("posting to Slack channel %s failed: %s", channel, e)
            return None

    def investigate(self, store, question: str, channel: str, thread_ts: str | None, engine: str) -> None:
        """Submit an investigation whose report (or failure) lands in the thread."""
        def deliver(job: Job) -> None:
            if job.status == "done":
                from guardian.slack.interactive import feedback_blocks

                self.reply(channel, job.report.to_markdown(), thread_ts, markdown=True,
                           extra_blocks=feedback_blocks(job.id))
            else:
                self.reply(channel, f"Sorry, the investigation failed: {job.error}", thread_ts)

        try:
            window = resolve_window(store, window_phrase(question) or self.settings.window)
            job = self.jobs.submit(question, window, engine, on_done=deliver, source="slack")
        except (Busy, WindowError, ValueError, OverflowError) as e:
            self.reply(channel, f"Can't investigate right now: {e}", thread_ts)
            return

        def still_working() -> None:
            if job.status in ("queued", "running"):
                self.reply(channel, f"Still investigating ({job.status}); the report will follow here.", thread_ts)

        # A quick (deterministic) answer needs no progress note; a slow (LLM) one does.
        timer = threading.Timer(self.progress_after_s, still_working)
        timer.daemon = True
        timer.start()
