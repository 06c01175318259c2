"""Candidates from per-call evidence the walks do not see: CLIENT/SERVER gaps that grew (the
callee's network), call patterns that changed (exceptions and wrong values without status
codes), calls stuck far beyond their baseline (a lock held elsewhere), and services that went
silent (a stopped process). Read from one bounded sample of the window and of the baseline.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from capture.store.api import SpanStore, TimeWindow
from guardian.investigate.lasting import lasting_gaps
from tools.gaps import MIN_SHIFT_MS, GapShift, calls, callers_all_grew, gap_shifts, lone_edges
from tools.own import OwnShift, own_shifts
from tools.pool import PoolWait, pool_waits
from tools.release import Release, releases
from tools.retransmit import Retransmits, retransmits
from tools.sampling import Sample, sample
from tools.shape import ShapeChange, shape_changes
from tools.silence import Silence, silences
from tools.stats import MIN_SAMPLE
from tools.stuck import Stuck, stuck_calls
from tools.unlinked import unlinked_shifts

# Attributes that say how a call ended, when the status code is left unset.
STATUS_KEYS = ("http.response.status_code", "rpc.grpc.status_code", "db.response.status_code",
               "error.type")


@dataclass
class Signals:
    gaps: list[GapShift] = field(default_factory=list)
    shapes: list[ShapeChange] = field(default_factory=list)
    slow_callers: set[str] = field(default_factory=set)  # every callee's gap grew at once
    callees: dict[str, set[str]] = field(default_factory=dict)  # linked calls: caller -> callees
    ports: dict[str, str] = field(default_factory=dict)  # a port one service alone serves on
    stalled: set[str] = field(default_factory=set)  # requests wait unread before it begins them
    has_status: bool = True  # spans say how calls ended (else failures show only in shapes)
    lone: set[tuple[str, str]] = field(default_factory=set)  # (caller, callee): the caller's gap
    stuck: list[Stuck] = field(default_factory=list)  # operations with calls stuck far too long
    own: list[OwnShift] = field(default_factory=list)  # services whose own time grew (alone)
    silent: list[Silence] = field(default_factory=list)  # services that stopped (no spans at all)
    pools: list[PoolWait] = field(default_factory=list)  # requests waiting, calling nothing, for a connection
    releases: list[Release] = field(default_factory=list)  # requests held and released together
    lost: list[Retransmits] = field(default_factory=list)  # answers an RTO late (tools.retransmit)
    # the window's and the baseline's samples they were read from (the report's text reads tools.held there)
    samples: tuple[Sample, Sample] | None = None

    def callers_own(self, g: GapShift) -> bool:
        """The gap is the caller's: every callee of it grew, or only it saw this callee grow."""
        return g.client in self.slow_callers or (g.client, g.server) in self.lone

    def network(self, service: str) -> GapShift | None:
        """The surest gap shift into service that looks like its network, not a stall."""
        if service in self.slow_callers:
            return None  # slow at both ends of its calls: the service itself, not its network
        for g in self.gaps:
            if g.server == service and not self.callers_own(g) and (g.every_call or g.after):
                return g
        return None


def read_signals(store: SpanStore, window: TimeWindow, baseline: TimeWindow) -> Signals:
    cur, base = sample(store, window), sample(store, baseline)
    sig = signals(cur, base)
    sig.silent = first_silent(silences(store, cur, base))
    return sig


def first_silent(found: list[Silence]) -> list[Silence]:
    """Of silences that overlap, the one that began first: a stopped service silences what
    waits on its work (its callees, the consumers of what it publishes) after it."""
    out = []
    for x in sorted(found, key=lambda x: x.start_ns):
        if not any(y.start_ns < x.end_ns and x.start_ns < y.end_ns for y in out):
            out.append(x)
    return out


def signals(cur: Sample, base: Sample) -> Signals:
    counts: dict[tuple[str, str], int] = {}
    for c in calls(cur):
        k = (c.client.service, c.server.service)
        counts[k] = counts.get(k, 0) + 1
    callees: dict[str, set[str]] = {}
    for (client, server), n in counts.items():
        if n >= MIN_SAMPLE:  # a callee too rarely called to test cannot be said to have grown
            callees.setdefault(client, set()).add(server)
    gaps = lasting_gaps(gap_shifts(cur, base), cur, base)  # not one busy stretch of the window
    slow_callers = callers_all_grew(gaps, callees)
    lone = lone_edges(gaps, cur, base)
    # calls no SERVER span answered, grown alone among their caller's calls (tools.unlinked)
    gaps += [g for g in unlinked_shifts(cur, base) if g.client not in slow_callers]
    seen: dict[str, set[str]] = {}
    for s in cur.spans + base.spans:
        port = s.attributes.get("server.port")
        if s.kind == "SERVER" and port is not None:
            seen.setdefault(str(port), set()).add(s.service)
    has_status = any(s.status_code != "UNSET" or any(k in s.attributes for k in STATUS_KEYS)
                     for s in cur.spans + base.spans)
    # Where spans say how calls ended, failures show there: call patterns are not read.
    return Signals(gaps=gaps, shapes=[] if has_status else shape_changes(cur, base),
                   slow_callers=slow_callers, has_status=has_status, lone=lone,
                   stuck=stuck_calls(cur, base), own=own_shifts(cur, base), pools=pool_waits(cur, base),
                   releases=releases(cur, base), lost=retransmits(cur, base), samples=(cur, base),
                   callees=callees, ports={p: next(iter(v)) for p, v in seen.items() if len(v) == 1},
                   stalled={g.server for g in gaps if (not (g.every_call or g.after)
                            or g.server in slow_callers) and g.client not in slow_callers
                            and (g.client, g.server) not in lone and g.shift_ms >= MIN_SHIFT_MS})
