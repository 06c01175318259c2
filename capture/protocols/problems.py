"""What parsers' counters say about the capture's health: each problem counter a parser keeps
(`stats`) is one of four kinds, summed per protocol for /metrics. Counters that are not problems
(handshakes seen, pushes, resyncs done) are not classified here."""
from __future__ import annotations

import re
from typing import Mapping

from capture.protocols import registry

# lost: stream bytes the parser never saw (capture cut them, or skipped while resyncing);
# garbled: bytes it saw but could not read as the protocol; overflow: a bound was hit and
# something was dropped; unpaired: a request or response without its other half.
PROBLEMS = ("lost", "garbled", "overflow", "unpaired")
_KIND = {
    "lost_bytes": "lost", "lost_chunks": "lost", "v5_segments_lost": "lost", "truncated_request": "lost",
    "truncated_response": "lost", "truncated_methods": "lost", "resync_skipped_chunks": "lost",
    "v5_segment_chunks_skipped": "lost",
    "garbage": "garbled", "garbage_chunks": "garbled", "head_too_large": "garbled", "malformed_hellos": "garbled",
    "hello_unreadable": "garbled", "header_block_too_large": "garbled", "degraded_header_blocks": "garbled",
    "unknown_command": "garbled",
    "pending_overflow": "overflow", "stream_overflow": "overflow", "hpack_table_capped": "overflow",
    "channel_overflow": "overflow", "deliveries_evicted": "overflow",
    "requests_without_response": "unpaired", "responses_without_request": "unpaired",
    "stream_reused_before_response": "unpaired",
}
_BAD = re.compile(r"bad_[a-z_]+")  # bad_head, bad_frame, bad_chunk, bad_header ...: a reader's lose() reasons


def kind(counter: str) -> str | None:
    """The problem a parser counter names, or None when it is not one."""
    return _KIND.get(counter) or ("garbled" if _BAD.fullmatch(counter) else None)


def totals(stats: Mapping[str, int], prefixes: tuple[str, ...] = ("pipeline.", "parser.")) -> dict[tuple[str, str], int]:
    """(protocol, problem) -> count, from capture stats keyed `<prefix><protocol>.<counter>` (closed
    connections under pipeline., open ones under parser.); every registry protocol and problem is
    present, zero when nothing happened, so the series exist from the start."""
    out = {(p.lower(), k): 0 for p in registry.protocols() for k in PROBLEMS}
    for key, value in stats.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                proto, _, counter = key[len(prefix):].partition(".")
                k = kind(counter)
                if k is not None and counter:
                    out[(proto, k)] = out.get((proto, k), 0) + int(value)
                break
    return out
