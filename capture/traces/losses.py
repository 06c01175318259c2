"""Rule 7 of the cross-node linker (capture/traces/crossnode.py): which links stand when a
connection lost records. Reads the epochs agents ship (capture/connection.py); makes no link.
"""
from __future__ import annotations

from bisect import bisect_left, insort

from capture.connection import EPOCH
from capture.span import Span

_EPOCH_JSON = f'"{EPOCH}":'


def epoch_of(s: Span) -> int:
    """The span's connection epoch as its agent shipped it (0 when absent): from a Span's
    attributes, or from a hub Row's attributes JSON."""
    json = getattr(s, "attrs_json", None)
    if json is None:
        v = s.attributes.get(EPOCH, 0) if s.attributes else 0
        return v if type(v) is int and v > 0 else 0
    at = json.find(_EPOCH_JSON)
    if at < 0:
        return 0
    at += len(_EPOCH_JSON)
    end = at
    while end < len(json) and json[end].isdigit():
        end += 1
    return int(json[at:end]) if end > at else 0


_NO_RESPONSE_JSON = '"error.type":"no_response"'


def unanswered(s: Span) -> bool:
    """The span's request saw no response (every parser's error.type "no_response")."""
    json = getattr(s, "attrs_json", None)
    if json is None:
        return bool(s.attributes) and s.attributes.get("error.type") == "no_response"
    return _NO_RESPONSE_JSON in json


def within_epochs(links: list[tuple[int, int, int, int]], n_clients: int, n_servers: int, exact,
                  client_epoch, server_epoch, unanswered) -> tuple[list, int]:
    """Rule 7 on one connection's links (client index, server index, _HOW code, cost) among
    n_clients and n_servers candidates (by start): the links kept, and how many went.
    `exact(i, j)`: the server lies inside the client's wait on the measured clock, no slack;
    `client_epoch(i)`, `server_epoch(j)`: the epochs of the spans at those indexes;
    `unanswered(i)`: the client saw no response (its end is when the capture gave up on it)."""
    epochs = [(client_epoch(i), server_epoch(j)) for i, j, _how, _c in links]
    if all(e == (0, 0) for e in epochs):
        return links, 0

    def lost_before(epoch, k: int, e: int) -> bool:  # not known (first candidate): lost
        return e != 0 and (k == 0 or epoch(k - 1) != e)

    def lost_after(epoch, k: int, n: int, e: int) -> bool:  # not known (the last one): lost
        return k == n - 1 or epoch(k + 1) != e

    sure = []
    for (i, j, _how, _c), (ce, se) in zip(links, epochs):
        # A client can take a neighbour exchange's server only if the spans between them were
        # lost: the previous client and the server after (an earlier server), or the other way.
        # A client with no response waited until the connection closed or the capture stopped:
        # after a loss its wait holds any later server, so time alone says nothing.
        ok = (ce, se) == (0, 0) or not unanswered(i) and (exact(i, j) or not (
            (lost_before(client_epoch, i, ce) and lost_after(server_epoch, j, n_servers, se))
            or (lost_after(client_epoch, i, n_clients, ce) and lost_before(server_epoch, j, se))))
        sure.append(ok)
    if all(sure):
        return links, 0
    anchors = sorted((i, j) for (i, j, _how, _c), ok in zip(links, sure) if ok)  # and those kept since
    kept, refused = [], 0
    for link, ok, (ce, se) in zip(links, sure, epochs):
        i, j, _how, _cost = link
        if not ok:
            at = bisect_left(anchors, (i, j))
            for k in (at - 1, at):  # the anchors next to it on the client side
                if not ok and 0 <= k < len(anchors):
                    i2, j2 = anchors[k]
                    ok = i - i2 == j - j2 and client_epoch(i2) == ce and server_epoch(j2) == se
            if ok:
                insort(anchors, (i, j))
        if ok:
            kept.append(link)
        else:
            refused += 1
    return kept, refused
