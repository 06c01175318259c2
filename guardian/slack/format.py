"""Markdown reports as Slack mrkdwn, split to Slack's limits (3,000 chars per section block).

Splits fall on line boundaries where possible; a longer line is cut hard. Text is escaped
(&, <, >) before links are rewritten, as Slack's formatting rules require. Only our own
Markdown links become Slack links: captured and model text arrives escaped by
guardian.report.untrusted (brackets backslashed, URLs in code), and stays inert here.
"""
from __future__ import annotations

import re

BLOCK_LIMIT = 3000  # a section block's text; the message text (40,000) is never the binding one
MAX_MESSAGES = 20  # a runaway report must not flood a channel

_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"(?<!\\)\[([^\]]+)(?<!\\)\]\((https?://[^)\s]+)\)")
_ESCAPED = re.compile(r"\\(\\|\[|\]|&lt;)")  # Markdown escapes Slack would show as-is


def to_mrkdwn(markdown: str) -> str:
    out = []
    for line in markdown.splitlines():
        line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        m = _HEADING.match(line)
        if m:
            line = f"*{m.group(1)}*"
        line = _BOLD.sub(r"*\1*", line)
        line = _LINK.sub(r"<\2|\1>", line)
        line = _ESCAPED.sub(r"\1", line)
        out.append(line)
    return "\n".join(out)


def split_message(text: str, limit: int = BLOCK_LIMIT, max_parts: int = MAX_MESSAGES) -> list[str]:
    """Chunks of at most `limit` characters, cut at newlines when one fits."""
    parts: list[str] = []
    rest = text.strip("\n")
    while rest:
        if len(rest) <= limit:
            parts.append(rest)
            break
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip("\n"))
        rest = rest[cut:].lstrip("\n")
    if len(parts) > max_parts:
        note = "\n_(report truncated: see the full report in the API)_"
        parts = parts[:max_parts]
        parts[-1] = parts[-1][: limit - len(note)] + note
    return parts or [""]
