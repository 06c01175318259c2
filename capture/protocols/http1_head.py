"""One HTTP/1 message head (RFC 9112 §2-3, §6) scanned into the few facts the parser keeps.

The specification of capture/_http1.c, which capture/protocols/http1.py uses when it is built
(setup.py); the two must give identical results (tests/capture/protocols/test_http1_head.py).
It decides nothing about framing state or pairing: that stays in http1.py.
"""
from __future__ import annotations

import re

# content_length when the head has no Content-Length, and when its value is not a length
NO_LENGTH, BAD_LENGTH = -1, -3
# A request line as the hot path accepts it whole: method, a target, and the version last.
_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|TRACE|CONNECT) [/*h\w].* HTTP/1\.[01]", re.S)
# Request headers kept as span attributes, in the order scan() returns their values.
KEPT = (b"\r\nhost:", b"\r\nuser-agent:", b"\r\ntraceparent:")


def _value(head: bytes, lower: bytes, name: bytes) -> bytes | None:
    """The value of the first header `name` (lower-case, with its CRLF and colon), unstripped."""
    i = lower.find(name)
    if i < 0:
        return None
    i += len(name)
    j = lower.find(b"\r\n", i)
    return head[i:j if j >= 0 else None]


def scan(data: bytes, pos: int = 0, end: int = -1):
    """The head starting at data[pos]. `end`: where its CRLFCRLF starts, or -1 to find it (None
    when data holds no CRLFCRLF after pos). Returns
    (end, first_line, request_ok, status, chunked, content_length, host, user_agent, traceparent):
    request_ok: the first line is a request line the hot path takes whole; status: the code of a
    status line the hot path takes whole ("HTTP/1.x NNN"), else -1; chunked: Transfer-Encoding
    names chunked; content_length: the first Content-Length's value, NO_LENGTH or BAD_LENGTH;
    then the kept headers' values (stripped, latin-1) or None."""
    if end < 0:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return None
    head = data[pos:end]
    nl = head.find(b"\r\n")
    first = head[:nl] if nl >= 0 else head
    request_ok = _REQUEST_LINE.fullmatch(first) is not None
    status = -1
    code = first[9:12]
    if first.startswith(b"HTTP/1.") and first[8:9] == b" " and code.isdigit() and first[12:13] in (b" ", b""):
        status = int(code)
    lower = head.lower()
    te = _value(head, lower, b"\r\ntransfer-encoding:")
    chunked = te is not None and b"chunked" in te.lower()
    cl = _value(head, lower, b"\r\ncontent-length:")
    if cl is None:
        length = NO_LENGTH
    else:
        cl = cl.strip()
        # digits only (RFC 9110 §8.6), and few enough to be a real length
        length = int(cl) if cl.isdigit() and len(cl) < 19 else BAD_LENGTH
    kept = [_value(head, lower, name) for name in KEPT]
    host, agent, parent = (v.strip().decode("latin-1") if v is not None else None for v in kept)
    return end, first, request_ok, status, chunked, length, host, agent, parent
