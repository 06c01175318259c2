"""Cross-node linking in the hub: a CLIENT span from one node and the SERVER span of the same
exchange from another become parent and child, from what each kernel saw. No header is read
or written.

Rule 1: the connection as the server saw it is the key. The server span's own 4-tuple is it;
        the client's 4-tuple is turned into it with the conntrack mapping the client's agent
        shipped (`guardian.nat.*`: destination NAT, e.g. a ClusterIP rewritten to a pod, and
        source NAT) when there is one.
Rule 2: on one key, requests follow each other (keep-alive). A server fits a client when it
        worked while the client waited. Fitting on near-exact clocks with no rival on either
        side: "connection". Within the clock slack, the pair that are each other's closest,
        keep the request order and lie near the connection's typical timing: "connection"
        (one candidate) or "connection+order" (several). Anything else (ties, crossed order,
        a neighbour whose own partner was lost) stays unlinked: never a wrong link. Neither
        pass takes a server that started after the client's end (beyond the clocks' doubt:
        a later request's) or gives one to a client whose wait overlaps two servers (joined
        from two requests when a response was lost).
Rule 3: spans already linked on their node (the agent found both ends) are left alone; the
        server's trace (its whole subtree, spans still to come included) takes the client's
        trace id.
Rule 4: the clock slack between two nodes shrinks to the exact one once their links show
        the clocks agree (`slack_for`): a lost span's neighbour then no longer fits. When they
        do not agree, the links measure the offset (the median gap between the two sides'
        midpoints) and its spread (of the middle 90 %): the server's times are read shifted by
        the offset, within a slack of twice the spread (`clock_for`), never wider than the
        configured one.
Rule 5: a pair is made once both spans end at least the clock slack before the watermark (the
        slowest live node's newest span), or when the server leaves the window: at the
        frontier one node's half may still be on its way, and a neighbour would fit instead.
Rule 6: a span released without its other half stays a candidate (a small stand-in: ids,
        times, node) for `late_s` of stream time. A late half that pairs with it makes a
        "+late" link: when the server's row is already written, the link and the trace ids
        to rewrite are handed out by `take_late()` for the store (SpanStore.relink).
Rule 7: request order and time hold only where nothing was lost. Each agent counts the losses
        it saw on a connection before each span (`guardian.connection.epoch`, capture/connection.py).
        A link stands when neither side lost anything on the connection before it; otherwise when
        the server lies exactly inside the client's wait, or the two spans do not sit on a loss
        shape (the previous client and the next server lost, or the other way round: a
        neighbour exchange's server would fit), and the client did see a response (an
        unanswered client's wait runs until the capture gave up on it); otherwise only beside a
        link of the same epochs that lies as many requests away on both sides: across a loss
        the n-th request after a link need not be the n-th server after it.
Each link writes `guardian.link.method` and `guardian.link.confidence` on the server span.
"""
from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections import defaultdict, deque
from typing import Callable, Iterable

from capture.span import Span
from capture.traces.losses import epoch_of, unanswered, within_epochs

_SERVERS = ("SERVER", "CONSUMER")
_CLIENTS = ("CLIENT", "PRODUCER")
NAT_SERVER = ("guardian.nat.server.address", "guardian.nat.server.port")
NAT_CLIENT = ("guardian.nat.client.address", "guardian.nat.client.port")
METHOD, CONFIDENCE = "guardian.link.method", "guardian.link.confidence"
_COST_FLOOR_NS = 1_000_000
_CLOCK_EVIDENCE = 50  # exact links between two nodes before their clocks are trusted
_SKEW_EVIDENCE = 50  # links between two nodes before their offset and spread are measured


def _addr(a: object) -> str:
    s = str(a)
    return s[7:] if s.startswith("::ffff:") else s


def node_of(s: Span) -> object:
    r = s.resource
    return r.get("k8s.node.name") or r.get("host.name")


_KEYS: dict[tuple, tuple | None] = {}  # attribute values as sent -> the key (they repeat)


def _key(raw: tuple) -> tuple | None:
    """(transport, client address, port, server address, port) with addresses unmapped from
    IPv6 and ports as ints; None when they are not an address and a port."""
    try:
        return _KEYS[raw]
    except KeyError:
        pass
    except TypeError:  # an unhashable value: not a port or an address either
        return None
    try:
        key = (raw[0], _addr(raw[1]), int(raw[2]), _addr(raw[3]), int(raw[4]))
    except (TypeError, ValueError):
        key = None
    if len(_KEYS) >= 100_000:
        _KEYS.clear()
    _KEYS[raw] = key
    return key


def server_key(s: Span) -> tuple | None:
    a = s.attributes
    try:
        return _key((a.get("network.transport", "tcp"), a["client.address"], a["client.port"],
                     a["server.address"], a["server.port"]))
    except KeyError:
        return None


def client_key(s: Span) -> tuple[tuple | None, bool]:
    """The client's connection as its server saw it, and whether conntrack changed it."""
    a = s.attributes
    nat = NAT_SERVER[0] in a or NAT_CLIENT[0] in a
    try:
        if nat:
            ca, cp = a.get(NAT_CLIENT[0], a["client.address"]), a.get(NAT_CLIENT[1], a["client.port"])
            sa, sp = a.get(NAT_SERVER[0], a["server.address"]), a.get(NAT_SERVER[1], a["server.port"])
        else:
            ca, cp, sa, sp = a["client.address"], a["client.port"], a["server.address"], a["server.port"]
    except KeyError:
        return None, False
    key = _key((a.get("network.transport", "tcp"), ca, cp, sa, sp))
    return (key, nat) if key is not None else (None, False)


def _start(s: Span) -> int:
    return s.start_time_unix_nano


def _start_of_first(x: tuple[Span, bool]) -> int:
    return x[0].start_time_unix_nano


def _span(x: Span | tuple[Span, bool]) -> Span:
    """The span of a server candidate (a span) or of a client one (span, NAT flag)."""
    return x[0] if isinstance(x, tuple) else x


def _follow_chains(remap: dict[str, str]) -> None:
    """Each old trace id mapped to the end of its chain: a server's trace whose client's trace
    was itself remapped."""
    for old in remap:
        new, seen = remap[old], {old}
        while new in remap and new not in seen:
            seen.add(new)
            new = remap[new]
        remap[old] = new


def _fits(c: Span, s: Span, slack: int, offset: int = 0) -> bool:
    """The server worked while the client waited (within the clocks' slack; the server's clock
    `offset` ns ahead)."""
    s0, s1 = s.start_time_unix_nano - offset, s.end_time_unix_nano - offset
    return (c.start_time_unix_nano - slack <= s0 and s1 <= c.end_time_unix_nano + slack
            and c.start_time_unix_nano - slack <= s1)


_HOW = (("connection", 0.99), ("connection", 0.95), ("connection+order", 0.9))  # pairs()' link codes


def pairs(c0s: list[int], c1s: list[int], s0s: list[int], s1s: list[int], c_late: list[bool] | None,
          s_late: list[bool] | None, offset: int, slack: int, strict: int,
          horizon: tuple[int, int] | None, history: list[int]) -> tuple[list[tuple[int, int, int, int]], int]:
    """Rule 2 (and Rule 5's ripeness, Rule 6's stand-ins) on one connection: clients (start,
    end; by start) and servers (by start; read `offset` ns behind on the client's clock) ->
    links (client index, server index, _HOW code, cost) in the order made, and how many were
    left ambiguous. `history`: the connection's recent link costs. This is the specification
    of capture/traces/_pairs.c, which the linker runs when setup.py built it."""
    # Cost of a pairing: how far apart the two sides saw the request start and the response.
    by_end = sorted((e - offset, j) for j, e in enumerate(s1s))
    ends = [e for e, _ in by_end]
    starts = [x - offset for x in s0s]  # on the client's clock
    n = len(c0s)
    out: list[tuple[int, int, int, int]] = []
    ambiguous = 0

    def candidates(i: int, slack: int, started: int | None = None) -> list[tuple[int, int]]:
        """(cost, server index) of the servers that fit client i within `slack`, cheapest first;
        with `started`, only servers that started by the client's end give or take that much."""
        c0, c1 = c0s[i], c1s[i]
        lo, hi = c0 - slack, c1 + slack
        first = hi if started is None else c1 + started
        row = [(abs(c1 - e) + abs(starts[j] - c0), j)
               for e, j in by_end[bisect_left(ends, lo):bisect_right(ends, hi)]
               if lo <= starts[j] <= first]  # = _fits: e lies in [lo, hi] by the bisection
        row.sort()
        return row

    linked: dict[int, int] = {}  # client index -> server index

    # Pass 1: the server's work lies inside the client's wait on exact clocks, and neither
    # side has another such partner: the same exchange. A server starts reading a request before
    # its client has the response, and the next request on a keep-alive connection is read only
    # after that: a server that started after the client's end (beyond what the clocks leave
    # open) is a later request's, the neighbour of a lost client, in both passes.
    strict_rows = [candidates(i, strict, 0) for i in range(n)]
    strict_clients: dict[int, int] = defaultdict(int)
    for row in strict_rows:
        for _cost, j in row:
            strict_clients[j] += 1

    def ripe(i: int, j: int) -> bool:
        """Both ends far enough behind every node's frontier, or the server leaves now."""
        if c_late and c_late[i] and s_late and s_late[j]:
            return False  # both released unpaired already: nothing new to decide
        if horizon is None:
            return True
        end = s1s[j]
        return end < horizon[1] or (end < horizon[0] and c1s[i] < horizon[0])

    # Rule 6: a stand-in pairs only in this pass, and only when the server's work lies
    # inside the client's wait on the measured clock with no slack at all, each the other's
    # only such partner: a released span's neighbours are gone, so order cannot vouch for it.
    exact_rows: list[list[tuple[int, int]]] = []
    exact_clients: dict[int, int] = defaultdict(int)
    if (c_late and any(c_late)) or (s_late and any(s_late)):
        exact_rows = [candidates(i, 0) for i in range(n)]
        for row in exact_rows:
            for _cost, j in row:
                exact_clients[j] += 1
    # A client whose wait overlaps two servers of its connection (within the exact slack; a
    # server that ended before the client started is the previous request's) covers more than
    # one exchange (a response between them was lost and the capture joined two requests'
    # halves): it takes no server.
    several = [sum(s1s[j] - offset > c0s[i] for _cost, j in row) > 1 for i, row in enumerate(strict_rows)]

    def is_late(i: int, j: int) -> bool:
        return bool((c_late and c_late[i]) or (s_late and s_late[j]))

    def late_ok(i: int, j: int) -> bool:
        if not exact_rows or not is_late(i, j):
            return True
        row = exact_rows[i]
        return len(row) == 1 and row[0][1] == j and exact_clients[j] == 1

    history = list(history)
    for i, row in enumerate(strict_rows):
        if len(row) == 1 and strict_clients[row[0][1]] == 1 and several[i]:
            ambiguous += 1
            continue
        if len(row) == 1 and strict_clients[row[0][1]] == 1 and ripe(i, row[0][1]) \
                and late_ok(i, row[0][1]):
            linked[i] = row[0][1]
            history.append(row[0][0])
            out.append((i, row[0][1], 0, row[0][0]))
    history = history[-64:]
    # Within the slack, for the clients still without a server (Pass 2).
    fits = {i: candidates(i, slack, slack - strict) for i in range(n) if i not in linked}

    # Pass 2, within the clocks' slack: each other's closest among what is left, in request
    # order with the pairs already made, and not much further apart than this connection's
    # typical pair (a neighbour whose own partner was lost would be).
    taken = set(linked.values())
    best_c: dict[int, tuple[int, int]] = {}
    for i, row in fits.items():
        for cost, j in row:
            if j not in taken and (j not in best_c or cost < best_c[j][0]):
                best_c[j] = (cost, i)
    typical = sorted([row[0][0] for i, row in fits.items() if row
                      and row[0][1] not in taken and best_c[row[0][1]][1] == i] + history)
    limit = 3 * typical[len(typical) // 2] + _COST_FLOOR_NS if typical else _COST_FLOOR_NS
    m = len(s0s)
    before = [-1] * (n + 1)  # before[i]: highest server index linked to a client < i
    for i in range(n):
        before[i + 1] = max(before[i], linked.get(i, -1))
    after = [m] * (n + 1)  # after[i]: lowest server index linked to a client > i
    for i in range(n - 1, -1, -1):
        after[i] = min(after[i + 1], linked.get(i + 1, m) if i + 1 < n else m)
    made = -1  # highest server index linked in this pass so far: later clients come after it
    for i, row in fits.items():
        row = [(cost, j) for cost, j in row if j not in taken]
        if not row:
            continue
        cost, j = row[0]
        if not ripe(i, j) or (exact_rows and is_late(i, j)):
            continue
        if several[i]:
            ambiguous += 1
            continue
        tie = len(row) > 1 and row[1][0] == cost
        if tie or best_c[j][1] != i or not max(before[i], made) < j < after[i] or cost > limit:
            ambiguous += 1
            continue
        linked[i] = j
        taken.add(j)
        made = j
        out.append((i, j, 1 if len(fits[i]) == 1 else 2, cost))
    return out, ambiguous



class CrossNodeLinker:
    """Holds spans for `window_s` of stream time so both halves of an exchange meet, then
    releases them linked. Same face as capture.traces.stream.StreamLinker. Takes Spans, or the
    hub's Rows (capture.export.otlp_wire.decode_rows: their keys read when decoded)."""

    def __init__(self, window_s: float = 5.0, slack_ns: int = 50_000_000, max_pending: int = 500_000,
                 strict_ns: int = 1_000_000, late_s: float = 120.0, max_late: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self.clock = clock  # seconds; a replay passes its stream's time
        self.window_ns = int(window_s * 1e9)
        self.late_ns = int(late_s * 1e9)
        self.max_late = max_late
        # Rule 6: released candidates by key (stand-ins), their ids, what the store must redo.
        self._late_servers: dict[tuple, list[Span]] = defaultdict(list)
        self._late_clients: dict[tuple, list[tuple[Span, bool]]] = defaultdict(list)
        self._late_ids: set[int] = set()
        self._late_oldest = 0
        self._late_links: list[tuple[str, str, dict]] = []
        self._late_traces: dict[str, str] = {}
        self.slack_ns = slack_ns
        self.strict_ns = min(strict_ns, slack_ns)  # clocks this close: containment is exact
        self.max_pending = max_pending
        self._pending: list[Span] = []
        # Candidates by connection key, found once when a span arrives: servers not linked yet
        # and clients with their NAT flag (a client answered since is dropped when met).
        self._servers: dict[tuple, list[Span]] = defaultdict(list)
        self._clients: dict[tuple, list[tuple[Span, bool]]] = defaultdict(list)
        self._newest_end = 0
        self._last_run_end = 0
        self._last_add = clock()
        self._trace_map: dict[str, tuple[str, int]] = {}  # server trace -> (client trace, end ns)
        self._nodes: dict[object, list] = {}  # node -> [newest end ns, wall time last heard]
        self._costs: dict[tuple, deque[int]] = {}  # connection key -> costs of its recent links
        self._started: float | None = None
        # Clients that have their server (linked here, or by their own agent) -> end ns, kept
        # until the client leaves or its stamp falls behind the trace-map horizon.
        self._answered: dict[str, int] = {}
        self._sweep_at = 10_000
        # (client node, server node) -> [links exactly contained, links only within the slack]
        self._clocks: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
        # (client node, server node) -> server midpoint - client midpoint of recent links
        self._skew: dict[tuple, deque[int]] = defaultdict(lambda: deque(maxlen=256))
        self.stats = {"connection": 0, "connection_conntrack": 0, "order": 0, "ambiguous": 0,
                      "forced": 0, "late": 0, "across_loss": 0}

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def waiting_late(self) -> int:
        """Released spans still waiting for a late other half (Rule 6)."""
        return len(self._late_ids)

    @property
    def linked(self) -> int:
        return self.stats["connection"] + self.stats["order"]

    def add(self, spans: Iterable[Span]) -> list[Span]:
        n = len(self._pending)
        now = self.clock()
        nodes = self._nodes
        newest: dict[int, list] = {}  # id(resource) -> [resource, newest end]: spans share resources
        trace_map = self._trace_map
        servers, clients, answered = self._servers, self._clients, self._answered
        spans = spans if isinstance(spans, list) else list(spans)
        rows = bool(spans) and hasattr(spans[0], "attrs_json")  # the hub's Rows carry their keys
        for s in spans:
            if trace_map:
                hit = trace_map.get(s.trace_id)
                if hit is not None:
                    s.trace_id = hit[0]
            self._pending.append(s)
            end = s.end_time_unix_nano
            kind = s.kind
            if kind in _SERVERS:
                if s.parent_span_id:
                    answered[s.parent_span_id] = end
                elif (k := s.key if rows else server_key(s)) is not None:
                    servers[k].append(s)
            elif kind in _CLIENTS:
                k, nat = (s.key, s.nat) if rows else client_key(s)
                if k is not None:
                    clients[k].append((s, nat))
            r = newest.get(id(s.resource))
            if r is None:
                newest[id(s.resource)] = [s, end]
            elif end > r[1]:
                r[1] = end
        for first, end in newest.values():
            if end > self._newest_end:
                self._newest_end = end
            node = node_of(first)
            mark = nodes.get(node)
            if mark is None:
                nodes[node] = [end, now]
            else:
                if end > mark[0]:
                    mark[0] = end
                mark[1] = now
        if len(self._pending) > n:
            self._last_add = now
            if self._started is None:
                self._started = now
        if now - (self._started or now) < self.window_ns / 1e9 and len(self._pending) < self.max_pending:
            return []  # at start, an agent that has not sent yet may hold the other halves
        watermark = self._watermark(now)
        if (watermark - self._last_run_end < self.window_ns // 2
                and len(self._pending) < self.max_pending):
            return []
        self._last_run_end = watermark
        return self._release(watermark - self.window_ns, watermark)

    def _watermark(self, now: float) -> int:
        """How far every node that is still sending has got: a span waits for the slowest
        agent (its peer may be in that agent's queue), but not for one that went quiet."""
        quiet = 2 * self.window_ns / 1e9
        live = [m[0] for m in self._nodes.values() if now - m[1] < quiet]
        return min(live) if live else self._newest_end

    def idle(self) -> list[Span]:
        if self._pending and self.clock() - self._last_add >= self.window_ns / 1e9:
            return self._release(None)
        return []

    def flush(self) -> list[Span]:
        return self._release(None)

    def _release(self, cutoff: int | None, watermark: int | None = None) -> list[Span]:
        if not self._pending:
            return []
        if watermark is None:
            self._link()
        else:  # Rule 5: only what every node has shipped; the frontier waits for the next round
            self._link((watermark - self.slack_ns, cutoff))
        if cutoff is None:
            ready, keep = self._pending, []
        else:
            # A client waits for its server (and the other way round) until the window passed.
            ready = [s for s in self._pending if s.end_time_unix_nano < cutoff]
            keep = [s for s in self._pending if s.end_time_unix_nano >= cutoff]
            if len(keep) >= self.max_pending:
                keep.sort(key=lambda s: s.end_time_unix_nano)
                half = len(keep) // 2
                ready, keep = ready + keep[:half], keep[half:]
                self.stats["forced"] += half
        self._pending = keep
        self._forget(ready)
        horizon = (cutoff if cutoff is not None else self._newest_end) - 4 * self.window_ns
        # Old entries go once the maps doubled since the last sweep: a sweep per release
        # would cost as much as the rest of the release.
        if len(self._trace_map) + len(self._answered) >= self._sweep_at:
            self._trace_map = {k: v for k, v in self._trace_map.items() if v[1] >= horizon}
            self._answered = {k: v for k, v in self._answered.items() if v >= horizon}
            self._sweep_at = max(2 * (len(self._trace_map) + len(self._answered)), 10_000)
        return ready

    def _forget(self, ready: list[Span]) -> None:
        """Released spans are no longer pending; those still without their other half wait
        as stand-ins (Rule 6). Only the connections of released spans are visited."""
        if not ready:
            return
        answered = self._answered
        servers, clients = self._servers, self._clients
        if servers or clients:
            gone_s: dict[tuple, set[int]] = defaultdict(set)
            gone_c: dict[tuple, set[int]] = defaultdict(set)
            rows = hasattr(ready[0], "attrs_json")
            for x in ready:
                kind = x.kind
                if kind in _SERVERS:
                    if not x.parent_span_id and (k := x.key if rows else server_key(x)) in servers:
                        gone_s[k].add(id(x))
                elif kind in _CLIENTS and (k := x.key if rows else client_key(x)[0]) in clients:
                    gone_c[k].add(id(x))
            for k, gone in gone_s.items():
                rest = []
                for x in servers[k]:
                    if id(x) not in gone:
                        rest.append(x)
                    elif not x.parent_span_id:
                        self._to_late(self._late_servers[k], x)
                self._trim(servers, k, rest)
            for k, gone in gone_c.items():
                rest = []
                for x in clients[k]:
                    if id(x[0]) not in gone:
                        rest.append(x)
                    elif x[0].span_id not in answered:
                        self._to_late(self._late_clients[k], x)
                self._trim(clients, k, rest)
        if answered:
            for x in ready:
                answered.pop(x.span_id, None)
        self._expire_late()

    def _to_late(self, into: list, x: Span | tuple[Span, bool]) -> None:
        s = _span(x)
        stub = Span("", s.kind, s.start_time_unix_nano, s.end_time_unix_nano, resource=s.resource,
                    trace_id=s.trace_id, span_id=s.span_id)
        into.append((stub, x[1]) if isinstance(x, tuple) else stub)
        self._late_ids.add(id(stub))
        if not self._late_oldest or stub.end_time_unix_nano < self._late_oldest:
            self._late_oldest = stub.end_time_unix_nano

    def _expire_late(self) -> None:
        """Stand-ins older than late_s of stream time go, and the oldest beyond max_late."""
        ids = self._late_ids
        if not ids:
            return
        over = len(ids) > self.max_late
        if not over and self._newest_end - self._late_oldest <= self.late_ns + self.late_ns // 4:
            return  # a quarter of late_s of grace: a sweep per release would cost more than it frees
        floor = self._newest_end - self.late_ns
        if over:
            every = sorted(_span(x).end_time_unix_nano
                           for index in (self._late_servers, self._late_clients)
                           for xs in index.values() for x in xs)
            floor = max(floor, every[len(every) - self.max_late // 2])
        self._late_oldest = 0
        for index in (self._late_servers, self._late_clients):
            for k in list(index):
                keep = []
                for x in index[k]:
                    s = _span(x)
                    if s.end_time_unix_nano >= floor:
                        keep.append(x)
                        if not self._late_oldest or s.end_time_unix_nano < self._late_oldest:
                            self._late_oldest = s.end_time_unix_nano
                    else:
                        ids.discard(id(s))
                self._trim(index, k, keep)

    def take_late(self) -> tuple[list[tuple[str, str, dict]], dict[str, str]]:
        """Links made to spans already released (span_id, parent_span_id, attributes to add)
        and trace ids to rewrite (old -> new) since the last call: for SpanStore.relink."""
        links, traces = self._late_links, self._late_traces
        self._late_links, self._late_traces = [], {}
        _follow_chains(traces)
        return links, traces

    def _link(self, horizon: tuple[int, int] | None = None) -> None:
        servers, clients, answered = self._servers, self._clients, self._answered
        remap: dict[str, str] = {}
        late_s, late_c, late_ids = self._late_servers, self._late_clients, self._late_ids
        keys = [k for k in clients if k in servers or k in late_s]
        keys += [k for k in servers if k in late_c and k not in clients]
        for k in keys:
            cs = [x for x in clients.get(k, ()) if x[0].span_id not in answered]
            ss = servers.get(k, [])
            lc, ls = late_c.get(k), late_s.get(k)
            both_c, both_s = cs + lc if lc else cs, ss + ls if ls else ss
            if both_c and both_s and (cs or ss):
                both_c.sort(key=_start_of_first)
                both_s.sort(key=_start)
                self._pair(k, both_c, both_s, remap, horizon)
                cs = [x for x in cs if x[0].span_id not in answered]
                ss = [x for x in ss if not x.parent_span_id]
                if lc:
                    late_ids.difference_update(id(x[0]) for x in lc if x[0].span_id in answered)
                    self._trim(late_c, k, [x for x in lc if x[0].span_id not in answered])
                if ls:
                    late_ids.difference_update(id(x) for x in ls if x.parent_span_id)
                    self._trim(late_s, k, [x for x in ls if not x.parent_span_id])
            self._trim(clients, k, cs)
            self._trim(servers, k, ss)
        if not remap:
            return
        _follow_chains(remap)
        for old, new in remap.items():
            self._trace_map[old] = (new, self._newest_end)
        for x in self._pending:
            new = remap.get(x.trace_id)
            if new is not None:
                x.trace_id = new
        if self._late_ids:  # stand-ins too: a late link must give the trace the client has now
            for index in (self._late_servers, self._late_clients):
                for xs in index.values():
                    for x in xs:
                        x = _span(x)
                        new = remap.get(x.trace_id)
                        if new is not None:
                            x.trace_id = new

    @staticmethod
    def _trim(index: dict, k: tuple, rest: list) -> None:
        if rest:
            index[k] = rest
        else:
            index.pop(k, None)

    def slack_for(self, client_node: object, server_node: object) -> int:
        """The clock slack between two nodes: the configured one until their links show the
        clocks agree (nearly every pair exactly contained), then the exact one. Kernel
        timestamps on agreeing clocks never put a server outside its client's wait."""
        return self.clock_for(client_node, server_node)[1]

    def clock_for(self, client_node: object, server_node: object) -> tuple[int, int]:
        """(offset, slack) for reading a server's times against its client's: the server's
        clock is `offset` ns ahead, give or take `slack` (Rule 4)."""
        exact, loose = self._clocks[(client_node, server_node)]
        if exact >= _CLOCK_EVIDENCE and loose * 50 <= exact:
            return 0, self.strict_ns
        skew = self._skew.get((client_node, server_node))
        if skew is None or len(skew) < _SKEW_EVIDENCE:
            return 0, self.slack_ns
        ordered = sorted(skew)
        offset = ordered[len(ordered) // 2]
        # The spread of the middle 90 %: a wrong link (a lost span's neighbour) has a midpoint
        # gap of half a request; counted in, one of them would open the slack for more.
        tail = len(ordered) // 20
        spread = max(offset - ordered[tail], ordered[-1 - tail] - offset)
        return offset, min(self.slack_ns, max(self.strict_ns, 2 * spread + self.strict_ns))

    def _pair(self, key: tuple, cs: list[tuple[Span, bool]], ss: list[Span], remap: dict[str, str],
              horizon: tuple[int, int] | None = None) -> None:
        offset, slack = self.clock_for(node_of(cs[0][0]), node_of(ss[0]))
        late = self._late_ids
        history = self._costs.get(key)
        if history is None:
            if len(self._costs) > 200_000:
                self._costs.clear()
            history = self._costs[key] = deque(maxlen=64)
        c_late = [id(c) in late for c, _nat in cs] if late else None
        s_late = [id(x) in late for x in ss] if late else None
        links, ambiguous = _pairs_run([c.start_time_unix_nano for c, _nat in cs],
                                 [c.end_time_unix_nano for c, _nat in cs],
                                 [x.start_time_unix_nano for x in ss], [x.end_time_unix_nano for x in ss],
                                 c_late, s_late, offset, slack, self.strict_ns, horizon, list(history))
        self.stats["ambiguous"] += ambiguous
        if links:
            links, refused = within_epochs(links, len(cs), len(ss), lambda i, j: _fits(cs[i][0], ss[j], 0, offset),
                                           lambda i: epoch_of(cs[i][0]), lambda j: epoch_of(ss[j]),
                                           lambda i: unanswered(cs[i][0]))
            self.stats["across_loss"] += refused
        if links:
            self._link_pairs(cs, ss, links, history, remap)

    def _link_pairs(self, cs: list[tuple[Span, bool]], ss: list[Span], links: list[tuple[int, int, int, int]],
                    history: deque, remap: dict[str, str]) -> None:
        """The links pairs() made on one connection: parent, trace, how made, clock evidence."""
        stats, late, answered, strict = self.stats, self._late_ids, self._answered, self.strict_ns
        clocks, skews = self._clocks, self._skew
        node: dict[int, object] = {}  # id(resource) -> node: a connection's spans share a few
        made = [0, 0, 0]  # links per _HOW code
        for i, j, how, cost in links:
            history.append(cost)
            c, nat = cs[i]
            s = ss[j]
            made[how] += 1
            method, conf = _HOW[how]
            cn = node.get(id(c.resource))
            if cn is None:
                cn = node[id(c.resource)] = node_of(c)
            sn = node.get(id(s.resource))
            if sn is None:
                sn = node[id(s.resource)] = node_of(s)
            nodes = (cn, sn)
            clocks[nodes][0 if _fits(c, s, strict) else 1] += 1
            skews[nodes].append((s.start_time_unix_nano + s.end_time_unix_nano
                                 - c.start_time_unix_nano - c.end_time_unix_nano) // 2)
            if nat:
                method += "+conntrack"
                stats["connection_conntrack"] += 1
            if late and (id(s) in late or id(c) in late):  # Rule 6: one half was released already
                method += "+late"
                stats["late"] += 1
                if s.trace_id != c.trace_id:
                    self._late_traces[s.trace_id] = c.trace_id
                if id(s) in late:
                    self._late_links.append((s.span_id, c.span_id, {METHOD: method, CONFIDENCE: conf}))
            s.parent_span_id = c.span_id
            answered[c.span_id] = c.end_time_unix_nano
            a = s.attributes
            if type(s) is Span:
                a[METHOD] = method
                a[CONFIDENCE] = conf
            else:  # a Row: the attributes the hub adds (a dict shared by rows linked alike, never changed)
                s.attributes = _added(method, conf) if a is None else {**a, METHOD: method, CONFIDENCE: conf}
            if s.trace_id != c.trace_id:
                remap[s.trace_id] = c.trace_id
        stats["connection"] += made[0] + made[1]
        stats["order"] += made[2]


_ADDED: dict[tuple[str, float], dict] = {}


def _added(method: str, conf: float) -> dict:
    d = _ADDED.get((method, conf))
    if d is None:
        d = _ADDED[(method, conf)] = {METHOD: method, CONFIDENCE: conf}
    return d


try:
    from capture.traces._pairs import pairs as _pairs_run
except ImportError:  # no compiler at set-up: the Python specification
    _pairs_run = pairs
