"""Propagation only moves blame to a candidate below that can cause the symptom above: fast
failures are not explained by a slowdown below, and a slowdown of a few ms below does not
explain one of hundreds of ms above (tests/guardian/investigate/mesh.py spans)."""
from __future__ import annotations

from capture.store.api import TimeWindow
from guardian.investigate.rank import Candidate, explains
from tests.guardian.investigate.mesh import MS, Mesh
from tests.guardian.investigate.test_classes import top


class TwoFaults(Mesh):
    """One real fault and, under it in the call graph, a small slowdown of a loaded host."""

    def __init__(self, fault: str, noise: str, seed: int):
        super().__init__(fault, seed=seed)
        self.noise = noise

    def on(self, name: str) -> bool:
        return self.active and name in (self.fault, self.noise)

    def bank(self, trace, sid, t):
        extra = self.ms(12) if self.on("noise:bank") else self.ms(30) if self.on("slow:bank") else 0
        return self.ms(4) + extra, 200

    def pay(self, trace, sid, t):
        if self.on("pooltimeout:pay") and self.rng.random() < 0.7:
            return self.ms(2000), 500  # waited for a pooled connection, then gave up
        if not self.on("fastfail:pay") or self.rng.random() < 0.3:
            return super().pay(trace, sid, t)
        return self.ms(0.8), 500  # fails at once, before it would call bank


def test_fast_failures_are_not_a_slower_callee():
    report = top(TwoFaults("fastfail:pay", "noise:bank", seed=21).build(), "Orders fail, why?")
    rc = report.root_causes[0]
    assert (rc.service, rc.kind) == ("pay", "error"), report.summary


def test_a_few_ms_below_do_not_explain_hundreds_above():
    report = top(TwoFaults("slow:pay", "noise:bank", seed=22).build())
    rc = report.root_causes[0]
    assert rc.service == "pay" and rc.kind in ("latency", "saturation"), report.summary



def test_only_a_slowdown_of_the_size_of_the_wait_explains_timeouts_above():
    spans = TwoFaults("pooltimeout:pay", "noise:bank", seed=23).build()
    failed = [s for s in spans if s.service == "pay" and s.kind == "SERVER" and s.status_code == "ERROR"]
    slower = [s for s in spans if s.service == "bank" and s.kind == "SERVER"][-20:]
    x = Candidate(key=("pay", "POST /pay"), kind="error", spans=failed[:8])
    small = Candidate(key=("bank", "POST /auth"), kind="latency", spans=slower,
                      excess_ms=[s.duration_ns / 1e6 - 4 for s in slower])
    assert not explains(small, x)  # bank added ~12 ms; pay's requests waited ~2 s
    large = Candidate(key=("bank", "POST /auth"), kind="latency", spans=slower, excess_ms=[1900.0] * 5)
    assert explains(large, x)
    fast = Candidate(key=("pay", "POST /pay"), kind="error",
                     spans=[s for s in TwoFaults("fastfail:pay", "noise:bank", seed=21).build()
                            if s.service == "pay" and s.status_code == "ERROR"][:8])
    assert fast.spans and not explains(large, fast)  # failing in a ms waited on nothing


def test_time_between_call_and_answer_is_not_explained_by_what_the_callee_calls():
    """pay's network delays every answer; bank (below pay) is slower too, by less: the time
    between gateway's calls and pay's answers is still pay's network."""
    report = top(TwoFaults("net:pay", "slow:bank", seed=24).build())
    rc = report.root_causes[0]
    assert (rc.service, rc.kind) == ("pay", "network"), report.summary


class FewerShoppers(Mesh):
    """A load generator (a client serving nothing) calls gateway; halfway it sends a third as
    many requests, all answered as before, and looks names up as often as before."""

    def build(self):
        t = self.fault_start - int(120e9)
        while t < self.end:
            quiet = t >= self.fault_start
            trace = f"{self.rng.getrandbits(128):032x}"
            cid, sid = self.sid(), self.sid()
            d, st = self.gateway(trace, sid, t + self.ms(0.1))
            self.add(trace, cid, "gateway", "POST /order", "SERVER", t + self.ms(0.1), d,
                     {"http.response.status_code": st}, span_id=sid)
            self.add(trace, None, "loadgen", "POST /order", "CLIENT", t, d + self.ms(0.3),
                     {"http.response.status_code": st, "server.address": "gateway", "server.port": 8080},
                     span_id=cid)
            t += d + int(self.rng.uniform(100, 400) * (3 if quiet else 1) * 1_000_000)
        t = self.fault_start - int(120e9)
        while t < self.end:  # it also looks names up, as often as before
            trace, cid = f"{self.rng.getrandbits(128):032x}", self.sid()
            self.add(trace, cid, "dnsmasq", "DNS A gateway.local", "SERVER", t + self.ms(0.05),
                     self.ms(0.1), {"dns.question.name": "gateway.local"})
            self.add(trace, None, "loadgen", "DNS A gateway.local", "CLIENT", t, self.ms(0.2),
                     {"dns.question.name": "gateway.local", "server.address": "127.0.0.1",
                      "server.port": 53}, span_id=cid)
            t += int(self.rng.uniform(50, 150) * 1_000_000)
        return self.spans


def test_fewer_requests_offered_by_a_load_generator_is_no_fault():
    mesh = FewerShoppers(None, seed=25)
    report = top(mesh.build(), "Is anything wrong?", TimeWindow(mesh.fault_start, mesh.end))
    assert any(a["kind"] == "traffic_drop" for a in report.anomalies)  # the drop is seen
    assert report.root_causes == [], report.summary


def test_a_slowdown_below_does_not_explain_a_wrong_answer_given_on_time():
    """pay answered with success and its callers failed on the answer: a slower bank below
    cannot have made that answer wrong; without that evidence the failure could be a timeout."""
    from capture.span import Span

    def span(i: int) -> Span:
        return Span(trace_id=f"{i:032x}", span_id=f"{i:016x}", name="POST /pay", kind="SERVER",
                    start_time_unix_nano=10**18, end_time_unix_nano=10**18 + 5_000_000,
                    status_code="UNSET", resource={"service.name": "pay"})

    bank = Candidate(key=("bank", "POST /auth"), kind="latency", excess_ms=[300.0] * 5)
    pay = Candidate(key=("pay", "POST /pay"), kind="error", spans=[span(i) for i in range(4)])
    assert explains(bank, pay)
    pay.answered = list(pay.spans)
    assert not explains(bank, pay)


class StarvedCaller(Mesh):
    """pay starved of CPU: it reads bank's answers late (its calls to bank get longer, bank's
    own spans do not) and its own work slows; gateway calls bank too, as fast as before."""

    def http(self, trace, parent, caller, callee, name, t, body):
        if not (self.on("starved:pay") and caller == "pay"):
            return super().http(trace, parent, caller, callee, name, t, body)
        cid, sid = self.sid(), self.sid()
        before, after = self.ms(0.1), self.ms(0.1) + int(self.rng.uniform(20, 80) * MS)
        d, status = body(trace, sid, t + before)
        self.add(trace, cid, callee, name, "SERVER", t + before, d, {"http.response.status_code": status},
                 span_id=sid)
        self.add(trace, parent, caller, name, "CLIENT", t, before + d + after,
                 {"http.response.status_code": status, "server.address": callee, "server.port": 8080},
                 span_id=cid)
        return before + d + after, status

    def gateway(self, trace, sid, t):
        d, _ = self.http(trace, sid, "gateway", "bank", "POST /auth", t + self.ms(0.2), self.bank)
        d2, st = super().gateway(trace, sid, t + d + self.ms(0.2))
        return d + d2 + self.ms(0.4), st


def test_calls_longer_only_for_one_caller_are_that_callers():
    report = top(StarvedCaller("starved:pay", seed=25).build())
    rc = report.root_causes[0]
    assert rc.service == "pay" and rc.kind in ("latency", "saturation"), report.summary
