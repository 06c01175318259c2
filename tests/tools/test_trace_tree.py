"""Tree helpers on hand-built spans: self time with overlapping children, critical path."""
from __future__ import annotations

from capture.span import Span
from tools.trace import Tree

MS = 1_000_000


def _s(sid, parent, start, end, kind="SERVER", service="a"):
    return Span(name=sid, kind=kind, start_time_unix_nano=start * MS, end_time_unix_nano=end * MS,
                resource={"service.name": service}, trace_id="t", span_id=sid, parent_span_id=parent)


def test_self_time_merges_overlaps_and_clips_children():
    t = Tree([_s("root", None, 0, 100), _s("c1", "root", 10, 40), _s("c2", "root", 30, 60),
              _s("c3", "root", 90, 130)])  # c3 outlives its parent: only 10 ms count
    assert t.self_ns(t.by_id["root"]) == (100 - 50 - 10) * MS
    assert t.wait_before_children_ns(t.by_id["root"]) == 10 * MS
    assert t.wait_before_children_ns(t.by_id["c1"]) is None


def test_critical_path_follows_last_finishing_children():
    t = Tree([_s("root", None, 0, 100), _s("a", "root", 5, 30), _s("b", "root", 10, 50),
              _s("c", "root", 55, 95), _s("c1", "c", 60, 90)])
    path = [s.span_id for s in t.critical_path(t.by_id["root"])]
    assert path == ["root", "c", "c1", "b"]  # a overlaps b's end: not on the path


def test_orphans_become_roots_and_depth():
    t = Tree([_s("x", "missing", 0, 10), _s("y", "x", 1, 2)])
    assert [r.span_id for r in t.roots] == ["x"]
    assert t.depth(t.by_id["y"]) == 1
    assert [s.span_id for s in t.descendants(t.by_id["x"])] == ["y"]
