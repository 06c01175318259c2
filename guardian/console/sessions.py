"""Console sign-in sessions: a random id in an HttpOnly SameSite=Strict cookie, mapped here to its
expiry. The API token is checked once at sign-in and never stored in the cookie or a URL.
In memory: a restart signs everyone out, which is the safe side."""
from __future__ import annotations

import hashlib
import secrets
import threading
import time

SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000
MAX_FAILURES = 10  # wrong tokens per client per FAILURE_WINDOW_S before sign-in answers 429
FAILURE_WINDOW_S = 60.0


class Sessions:
    def __init__(self, ttl_s: float = SESSION_TTL_S):
        self.ttl_s = ttl_s
        self._expiry: dict[str, float] = {}  # sha256(session id) -> expiry; the id itself is not kept
        self._failures: dict[str, list[float]] = {}  # client address -> times of wrong tokens
        self._lock = threading.Lock()

    def throttled(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if t > now - FAILURE_WINDOW_S]
            if recent:
                self._failures[client] = recent
            else:
                self._failures.pop(client, None)
            return len(recent) >= MAX_FAILURES

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 10000:  # bounded: forget everyone rather than grow
                self._failures.clear()
            self._failures.setdefault(client, []).append(time.monotonic())

    @staticmethod
    def _key(sid: str) -> str:
        return hashlib.sha256(sid.encode("utf-8", "replace")).hexdigest()

    def create(self) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            for k in [k for k, t in self._expiry.items() if t < now]:
                del self._expiry[k]
            if len(self._expiry) >= MAX_SESSIONS:
                del self._expiry[min(self._expiry, key=self._expiry.get)]
            self._expiry[self._key(sid)] = now + self.ttl_s
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid or len(sid) > 100:
            return False
        with self._lock:
            t = self._expiry.get(self._key(sid))
        return t is not None and t > time.monotonic()

    def revoke(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._expiry.pop(self._key(sid), None)
