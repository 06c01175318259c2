"""Calls no SERVER span answered (a callee outside the capture: another host, a TLS server
the capture cannot read, a managed service) that grew while the same caller's calls to its
other callees, over the same time, stayed as they were: the callee or the path to it.

Without the callee's SERVER span there is no gap to read: the whole call is the callee's
(its network and its own time). The caller's other calls are the control a linked call's
SERVER span would have been: a caller slow to send and read (its CPU, its load) lengthens
them all, a callee's path only its own. Read from sampled traces; ranks nothing: a shift
found is a GapShift on the edge (caller, "address:port" as the call named it), its typical
call moved (`every_call`).
"""
from __future__ import annotations

from capture.span import Span
from tools.gaps import MIN_RATIO, MIN_SHIFT_MS, Call, GapShift
from tools.sampling import Sample
from tools.stats import MIN_SAMPLE, SURE, _quantile, confidence, mann_whitney_p

NOW_CALLS = 2 * MIN_SAMPLE  # calls now on the edge, to test on
# the caller's other calls' typical call moved at most this share of the edge's shift (in ms:
# a caller slow to send and read adds its own delay to each call, short or long)
OTHER_SHARE = 0.25


def _callee(c: Span) -> str | None:
    port = c.attributes.get("server.port")
    if port is None:
        return None
    return f"{c.attributes.get('server.address') or c.attributes.get('server.ip') or '?'}:{port}"


def _by_callee(s: Sample) -> tuple[dict[tuple[str, str], list[Span]], dict[tuple[str, str], list[Span]]]:
    """CLIENT spans per (caller, callee): those no SERVER span answered, and all of them."""
    unanswered: dict[tuple[str, str], list[Span]] = {}
    every: dict[tuple[str, str], list[Span]] = {}
    for tree in s.trees:
        answered = {x.parent_span_id for x in tree.spans if x.kind == "SERVER"}
        for x in tree.spans:
            if x.kind != "CLIENT":
                continue
            callee = _callee(x)
            if callee is None:
                continue
            every.setdefault((x.service, callee), []).append(x)
            if x.span_id not in answered:
                unanswered.setdefault((x.service, callee), []).append(x)
    return unanswered, every


def _ms(spans: list[Span]) -> list[float]:
    return sorted(x.duration_ns / 1e6 for x in spans)


def unlinked_shifts(cur: Sample, base: Sample) -> list[GapShift]:
    """Edges to callees no SERVER span answers whose typical call grew, alone among the
    caller's edges with calls enough to tell; surest first."""
    now, now_all = _by_callee(cur)
    before, before_all = _by_callee(base)
    out = []
    for edge, cs in now.items():
        bs = before_all.get(edge, [])
        if len(cs) < NOW_CALLS or len(bs) < MIN_SAMPLE:
            continue
        if len(now_all[edge]) > len(cs) or len(before.get(edge, [])) < len(bs):
            continue  # some calls answered: a linked edge, whose gaps tell (tools.gaps)
        d1, d0 = _ms(cs), _ms(bs)
        p50 = (_quantile(d0, 0.5), _quantile(d1, 0.5))
        p90 = (_quantile(d0, 0.9), _quantile(d1, 0.9))
        shift = p50[1] - p50[0]
        if shift < MIN_SHIFT_MS or p50[1] < MIN_RATIO * p50[0]:
            continue
        sure = confidence(mann_whitney_p(d1, d0))
        if sure < SURE:
            continue
        others = [e for e in now_all if e[0] == edge[0] and e != edge
                  and len(now_all[e]) >= MIN_SAMPLE and len(before_all.get(e, [])) >= MIN_SAMPLE]
        if not others:
            continue  # nothing else the caller called to tell its own slowness from the callee's
        if any(_quantile(_ms(now_all[e]), 0.5) - _quantile(_ms(before_all[e]), 0.5) > OTHER_SHARE * shift
               for e in others):
            continue  # the caller's other calls grew too: the caller, its host or its load
        ops: dict[str, float] = {}
        for x in cs:
            ops[x.name] = ops.get(x.name, 0.0) + max(x.duration_ns / 1e6 - p50[0], 0.0)
        worst = sorted(cs, key=lambda x: -x.duration_ns)[:5]
        out.append(GapShift(client=edge[0], server=edge[1], operation=max(ops, key=ops.get),
                            p50_ms=p50, p90_ms=p90, sure=sure, count=(len(bs), len(cs)),
                            every_call=True, after=False,
                            examples=[Call(x, x, x.duration_ns, 0) for x in worst]))
    out.sort(key=lambda g: (-g.sure, -g.shift_ms))
    return out
