"""Lost packets on the path to a callee, as the investigator sees them: a few calls whose
answers came one TCP retransmission timeout late, while the rest are as before (the mesh of
tests/guardian/investigate/mesh.py, bank's answers lost now and then in the second half)."""
from __future__ import annotations

from capture.span import Span
from guardian.investigate.deterministic import investigate
from tests.guardian.investigate.mesh import MS, Mesh, store_of


def held(spans: list[Span], calls: list[Span], ms: float) -> None:
    """Each call's answer held ms on its way back: the call and every span waiting on it end
    that much later (the SERVER span it is answered by is as it was)."""
    by_id = {s.span_id: s for s in spans}
    for c in calls:
        s: Span | None = c
        while s is not None:
            s.end_time_unix_nano += int(ms * MS)
            s = by_id.get(s.parent_span_id or "")
            if s is not None and s.kind == "SERVER" and s.service == "bank":
                break


def into_bank(spans: list[Span], mesh: Mesh, after: bool) -> list[Span]:
    return sorted((s for s in spans if s.kind == "CLIENT" and s.service == "pay"
                   and (s.start_time_unix_nano >= mesh.fault_start) == after),
                  key=lambda s: s.start_time_unix_nano)


def lossy(lost: int, seed: int = 4) -> list[Span]:
    """A calm mesh; one baseline answer from bank 80 ms late (a busy host's hiccup), and `lost`
    of bank's answers in the second half held one RTO (two RTOs for the third)."""
    mesh = Mesh(None, seed=seed)
    spans = mesh.build()
    base, now = into_bank(spans, mesh, False), into_bank(spans, mesh, True)
    held(spans, [base[len(base) // 3]], 80.0)
    step = len(now) // (lost + 1)
    for i, c in enumerate(now[step::step][:lost]):
        held(spans, [c], 412.0 if i == 2 else 205.0 + i)
    return spans


def report(spans):
    store = store_of(spans)
    try:
        return investigate(store, "Orders are slow, why?")
    finally:
        store.close()


def test_a_few_answers_an_rto_late_name_the_callees_network():
    """4 of ~480 calls into bank lost their answer once or twice; one baseline call was 80 ms
    late, so "far beyond the baseline's longest" (3x) would not reach a 205 ms RTO, and the
    typical call did not move. Without tools.retransmit nothing is named."""
    r = report(lossy(4))
    assert r.root_causes, r.summary
    rc = r.root_causes[0]
    assert (rc.service, rc.kind) == ("bank", "network"), r.summary
    assert "retransmission timeout" in rc.description


def test_one_lost_answer_names_nothing():
    """The calm control: one answer an RTO late is one lost packet, not a fault."""
    r = report(lossy(1))
    assert not r.root_causes, r.summary


def test_a_calm_mesh_names_nothing():
    r = report(lossy(0))
    assert not r.root_causes, r.summary


def test_a_loss_resting_on_two_calls_is_said_to_be_few_and_not_sure():
    from guardian.investigate.loss import add_loss
    from guardian.investigate.signals import Signals
    from guardian.investigate.sparse import confidence, few
    from tools.gaps import Call
    from tools.retransmit import Retransmits

    spans = lossy(2)
    lost = [s for s in spans if s.kind == "CLIENT" and s.service == "pay"
            and s.duration_ns > 150 * MS][:2]
    server = {s.parent_span_id: s for s in spans if s.kind == "SERVER" and s.service == "bank"}
    r = Retransmits(server="bank", operation="POST /auth", callers=["pay"], hits=2, count=(300, 40),
                    base_hits=0, far=2, sure=0.998, excess_ms=[206.0, 205.0],
                    examples=[Call(c, server[c.span_id], 0, 205 * MS) for c in lost])

    class Canon:
        def canon(self, name, span=None):
            return name

    cands: dict = {}
    add_loss(Canon(), Signals(lost=[r]), cands)
    c = cands[("bank", "network")]
    assert c.calls == (300, 2) and "few to go on" in few(c) and "few to go on" in c.change
    assert confidence(c, 0.9) <= 0.5
