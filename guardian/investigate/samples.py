"""Sample requests for an anomaly and baseline requests for comparison, as trace trees.

Walker caches every trace it fetched (one query per sample set, via SpanStore.traces);
Memo answers the aggregate queries one investigation repeats (service map, RED) once.
"""
from __future__ import annotations

from capture.span import Span
from capture.store.api import SpanFilter, SpanStore, TimeWindow
from guardian.investigate.walk import (Vote, baseline_self_times, entry_of, error_votes,
                                       last_answer, latency_vote)
from tools.anomalies import Anomaly, new_work
from tools.trace import Tree

SAMPLES = 8  # requests walked per anomaly
BASELINE_SAMPLES = 8  # baseline requests per endpoint, for "normal" own times


class Walker:
    """Caches traces and baselines while walking samples of each anomaly."""

    def __init__(self, store: SpanStore, window: TimeWindow, baseline: TimeWindow):
        self.store, self.window, self.baseline = store, window, baseline
        self.services = set(store.services(window)) | set(store.services(baseline))
        self.trees: dict[str, Tree] = {}
        self.base: dict[tuple[str, str], dict] = {}
        self.went_on: dict[tuple[str, str, str], tuple[bool, float] | set[str]] = {}
        self.ports: dict[str, str] = {}  # a port only one service serves on -> that service
        self.lone: frozenset = frozenset()  # (caller, callee) edges whose gaps are the caller's
        self._op_callers: dict[str, set[str]] = {}
        self.before: set[str] | None = None  # services with spans in the baseline, read once

    def canon(self, name: str, call: Span | None = None) -> str:
        """'payments:8080' is payments when payments is a service we see (calls not linked);
        '127.0.0.1:21443' is the service seen serving on port 21443; so is a peer named after
        its protocol ('postgresql') by a call to that port that no server span answered."""
        host, _, port = name.rpartition(":")
        if not port.isdigit():
            to = str(call.attributes.get("server.port", "")) if call is not None else ""
            if name not in self.services and to in self.ports:
                return self.ports[to]
            return name
        if host in self.services:
            return host
        return self.ports.get(port, name)

    def tree(self, trace_id: str) -> Tree:
        if trace_id not in self.trees:
            self.trees[trace_id] = Tree(self.store.trace(trace_id))
        return self.trees[trace_id]

    def fetch(self, flt: SpanFilter, n: int) -> list[tuple[Tree, Span]]:
        """Up to n requests matching flt, each as (its trace's tree, the matching span)."""
        out = []
        for spans in self.store.traces(flt, limit=n):
            if not spans:
                continue
            tid = spans[0].trace_id
            tree = self.trees.setdefault(tid, Tree(spans))
            hits = [s for s in tree.spans if match(s, flt)]
            if hits:
                out.append((tree, max(hits, key=lambda s: s.duration_ns)))
        return out

    def samples(self, a: Anomaly) -> list[tuple[Tree, Span]]:
        failing = a.kind in ("error_rate", "new_error", "saturation")
        flt = dict(window=self.window, status_code="ERROR" if failing else None)
        if a.caller:
            got = self.fetch(SpanFilter(service=a.caller, peer=a.service, **flt), SAMPLES)
            if got:
                return got
            return self.fetch(SpanFilter(service=a.service, kind="SERVER", **flt), SAMPLES)
        if not failing:
            flt["min_duration_ns"] = int(a.baseline.p95_ms * 1e6) or None
        return self.fetch(SpanFilter(service=a.service, name=a.operation, **flt), SAMPLES)

    def baseline_for(self, s: Span) -> dict:
        """Normal own time per key under requests like s (same service and operation)."""
        k = (s.service, s.name)
        if k not in self.base:
            self.base[k] = baseline_self_times(self.fetch(SpanFilter(
                window=self.baseline, service=s.service, name=s.name, kind=s.kind),
                BASELINE_SAMPLES), self.lone)
        return self.base[k]

    def new_work(self, tree: Tree) -> bool:
        """A request started by a client that made no request in the baseline (a batch job, a
        script someone ran): new work, which a busy service answers slowly, not a change of
        the service. Its calls say nothing of how the service treats the work it had."""
        if self.before is None:
            self.before = set(self.store.services(self.baseline))
        return new_work(tree.roots, self.before)

    def votes(self, a: Anomaly) -> list[Vote]:
        out = []
        for tree, start in self.samples(a):
            if a.kind == "latency":
                if self.new_work(tree):
                    continue
                v = latency_vote(tree, start, self.baseline_for(start), self.lone)
                out += [v] if v else []
            else:
                for v in error_votes(tree, start):
                    out += self._answered(tree, v)
        return out

    def _answered(self, tree: Tree, v: Vote) -> list[Vote]:
        """A service failing right after a callee answered with success, where its requests
        used to go on calling: the callee's answer is what it failed on (a wrong value). Calls
        answered alongside the last one (a parallel fan-out) share half the vote: any of them
        may have sent it, and the failing operations that call only some of them tell which."""
        if v.span.kind not in ("SERVER", "CONSUMER", "INTERNAL") or v.kind != "error" or gave_up_on(v.span):
            return [v]
        answers = last_answer(tree, v.span)
        if not answers:
            return [v]
        got = answers[0]
        entry = entry_of(tree, v.span)
        went_on, tail_ns = self.went_on_after(entry, got.service)
        client = tree.by_id.get(got.parent_span_id or "")
        cut_short = client is not None and tail_ns >= 500_000 and \
            v.span.end_time_unix_nano - client.end_time_unix_nano < 0.5 * tail_ns
        # Its last call answered, and it had made every call its requests usually make: it
        # did all its own work and failed on the last answer. (An exception of its own shows
        # as requests that stop before their usual calls.)
        made = {k.service for c in tree.descendants(entry) if c.service == entry.service
                and c.kind == "CLIENT" for k in tree.children[c.span_id]}
        usual = self.usual_callees(entry)
        did_all = got.service in usual and usual <= made
        if not (went_on or cut_short or did_all):
            return [v]
        # The last answer most often is the one it failed on (it read it and failed at once);
        # the others answered earlier and may have been read only then.
        shares = [1.0] if len(answers) == 1 else [0.5] + [0.5 / (len(answers) - 1)] * (len(answers) - 1)
        return [Vote((a.service, a.name), "error", a, v.weight * w, failed_after=v.span)
                for a, w in zip(answers, shares)]

    def op_callers(self, op: str) -> set[str]:
        """Services seen making calls named op (window and baseline), read once."""
        if op not in self._op_callers:
            self._op_callers[op] = {sp.service for w in (self.window, self.baseline)
                                    for sp in self.store.spans(SpanFilter(window=w, name=op, kind="CLIENT",
                                                                          limit=200))}
        return self._op_callers[op]

    def usual_callees(self, entry: Span) -> set[str]:
        """Services that at least half of the baseline requests of entry's operation call."""
        k = (entry.service, entry.name, "")
        if k not in self.went_on:
            counts: dict[str, int] = {}
            got = self.fetch(SpanFilter(window=self.baseline, service=entry.service,
                                        name=entry.name, kind=entry.kind), BASELINE_SAMPLES)
            for tree, s in got:
                for callee in {k.service for c in tree.descendants(s) if c.service == s.service
                               and c.kind == "CLIENT" for k in tree.children[c.span_id]}:
                    counts[callee] = counts.get(callee, 0) + 1
            self.went_on[k] = {c for c, n in counts.items() if 2 * n >= len(got)}
        return self.went_on[k]

    def went_on_after(self, entry: Span, callee: str) -> tuple[bool, float]:
        """Did baseline requests of entry's operation make calls after their call to callee,
        and how long did they run on after it answered (median ns)?"""
        k = (entry.service, entry.name, callee)
        if k not in self.went_on:
            seen = went = 0
            tails = []
            for tree, s in self.fetch(SpanFilter(window=self.baseline, service=entry.service,
                                                 name=entry.name, kind=entry.kind), BASELINE_SAMPLES):
                calls = [c for c in tree.descendants(s) if c.service == s.service
                         and c.kind in ("CLIENT", "PRODUCER")]
                to_callee = [c for c in calls if any(k.service == callee for k in tree.children[c.span_id])]
                if not to_callee:
                    continue
                seen += 1
                end = max(c.end_time_unix_nano for c in to_callee)
                went += any(c.start_time_unix_nano >= end for c in calls)
                tails.append(s.end_time_unix_nano - end)
            tails.sort()
            self.went_on[k] = (seen > 0 and went >= 0.5 * seen, tails[len(tails) // 2] if tails else 0.0)
        return self.went_on[k]


GAVE_UP_NS = 500_000_000  # a request unanswered this long was given up on by its caller


def gave_up_on(s: Span) -> bool:
    """Its caller stopped waiting: the request ran long and no response was sent (the span
    ends when the service, done at last, finds the connection closed: right after its last
    call answered, though nothing in that answer failed it). It was too slow, it did not
    fail on what it read."""
    return s.attributes.get("error.type") == "no_response" and s.duration_ns >= GAVE_UP_NS


def match(s: Span, f: SpanFilter) -> bool:
    """Does s meet the filter: the store's rule (SpanFilter.matches), for spans already fetched."""
    return f.matches(s)


class Memo:
    """The store, with the aggregate queries one investigation repeats answered once."""

    def __init__(self, store: SpanStore):
        self._store, self._memo = store, {}

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _once(self, key, fn):
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def service_map(self, window):
        return self._once(("map", window), lambda: self._store.service_map(window))

    def red(self, window, by="service", interval_s=None, service=None):
        return self._once(("red", window, by, interval_s, service),
                          lambda: self._store.red(window, by, interval_s, service))
