"""The fault lab: mechanisms applied to and removed from a live lab service (visible in its
latency, then gone), the capture seeing a network delay on the caller's side only, and the
recorded case folders well-formed per the eval contract."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from lab import faults as F
from support.live import free_port

REPO = Path(__file__).resolve().parents[2]
CLASSES = {"network_delay", "network_loss", "network_jitter", "cpu_contention", "cpu_throttle",
           "memory_pressure", "process_pause", "exception", "wrong_return", "slow_query", "lock_contention",
           "pool_exhaustion", "dns_failure", "tls_expiry", "dependency_timeout", "none"}
KINDS = {"latency", "error", "saturation", "dependency", "traffic", "network", "none"}


@contextmanager
def lab_service(tmp: Path, routes: dict):
    """One lab service (lab/services/svc.py) on a free port, no database or Redis."""
    port = free_port()
    (tmp / "control").mkdir(exist_ok=True)
    conf = tmp / "svc.json"
    conf.write_text(json.dumps({"name": "labtest", "port": port, "peers": {}, "routes": routes,
                                "dns": "127.0.0.1:53", "control": str(tmp / "control")}))
    proc = subprocess.Popen([sys.executable, "-m", "lab.services.svc"], cwd=REPO, start_new_session=True,
                            env={**os.environ, "LAB_CONFIG": str(conf), "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield port, proc.pid
    finally:
        F.remove_shaping_of([port])
        proc.kill()
        proc.wait(5)


def median_ms(port: int, seconds: float = 1.5, timeout: float = 5.0) -> float:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end or len(out) < 5:
        t = time.perf_counter()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=timeout).read()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return out[len(out) // 2]


def _classes() -> str:
    return subprocess.run(["tc", "class", "show", "dev", "lo"], capture_output=True, text=True).stdout


@pytest.mark.slow
def test_shaping_delays_the_answers_then_goes_away(tmp_path):
    with lab_service(tmp_path, {"GET /work": [{"work": 1}]}) as (port, _), \
            lab_service(tmp_path, {"GET /work": [{"work": 1}]}) as (other, _):
        before, before_other = median_ms(port), median_ms(other)
        shape = F.Shape(port, 24)
        shape.apply()
        try:
            assert f"class htb {shape.classid} " in _classes()
            during, other_during = median_ms(port), median_ms(other)
        finally:
            shape.remove()
        after = median_ms(port)
        assert during > before + 30, (before, during)
        assert other_during < before_other + 20, (before_other, other_during)  # only that port
        assert after < during / 3, (during, after)
        assert f"class htb {shape.classid} " not in _classes()


def _state(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


@pytest.mark.slow
def test_pause_stops_the_service_and_resume_brings_it_back(tmp_path):
    with lab_service(tmp_path, {"GET /work": [{"work": 1}]}) as (port, pid):
        median_ms(port, 0.3)
        pause = F.Pause(pid, 0, 0)
        pause.apply()
        try:
            deadline = time.monotonic() + 2
            while _state(pid) != "T" and time.monotonic() < deadline:  # the stop is delivered async
                time.sleep(0.05)
            assert _state(pid) == "T"
            with pytest.raises((TimeoutError, urllib.error.URLError)):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=0.8).read()
        finally:
            pause.remove()
        assert median_ms(port, 0.3) < 500


@pytest.mark.slow
def test_cpu_throttle_slows_cpu_work_then_goes_away(tmp_path):
    with lab_service(tmp_path, {"GET /work": [{"work": 5}]}) as (port, pid):
        before = median_ms(port)
        throttle = F.CpuThrottle("labtest", pid, 0.02)
        throttle.apply()
        try:
            during = median_ms(port, timeout=10)
        finally:
            throttle.remove()
        after = median_ms(port)
        assert during > 3 * before, (before, during)
        assert after < during / 2, (during, after)
        assert not throttle.cg.path.exists()


@pytest.mark.slow
def test_cpu_contention_slows_a_light_service_then_goes_away(tmp_path):
    # 2 ms of CPU per request: equal-weight hogs on its CPU alone barely slow it
    with lab_service(tmp_path, {"GET /work": [{"work": 2}]}) as (port, pid):
        before = median_ms(port)
        hogs = F.CpuContention("labtest", pid, 4, F.CONTENTION_SHARE["mild"])
        hogs.apply()
        try:
            assert os.sched_getaffinity(pid) == {hogs.cpu}
            during = median_ms(port, timeout=10)
            group = set(hogs.cg.read("cgroup.procs").split())
            assert str(pid) in group and len(group) > 1, group  # the hogs share the service's group
        finally:
            hogs.remove()
        after = median_ms(port)
        assert during > 3 * before, (before, during)
        assert after < during / 2, (during, after)
        assert not hogs.cg.path.exists()
        assert len(os.sched_getaffinity(pid)) == os.cpu_count()


@pytest.mark.slow
def test_error_switch_fails_one_route_only(tmp_path):
    with lab_service(tmp_path, {"GET /work": [{"work": 1}], "GET /other": [{"work": 1}]}) as (port, _):
        switch = F.Switch(tmp_path / "control" / "labtest", {"route": "GET /work", "mode": "error"})
        switch.apply()
        try:
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=2)
            assert e.value.code == 500
            assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=2).read())["ok"]
        finally:
            switch.remove()
        time.sleep(0.4)
        assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=2).read())["ok"]


def _cases() -> list[Path]:
    return sorted(p.parent for root in ("evals/lab", "evals/heldout") for p in (REPO / root).glob("*/expected.json"))


def test_recorded_cases_follow_the_contract():
    cases = _cases()
    assert cases, "no recorded lab cases under evals/lab or evals/heldout"
    topologies = {"lab": set(), "heldout": set()}
    for d in cases:
        exp = json.loads((d / "expected.json").read_text())
        for key in ("service", "aliases", "operation", "kind", "kind_aliases", "fault_class", "fault_start_ns",
                    "fault_end_ns", "window_start_ns", "window_end_ns", "neighbours", "red_herrings", "topology",
                    "seed", "strength", "load", "host_load"):
            assert key in exp, (d.name, key)
        assert exp["fault_class"] in CLASSES, d.name
        assert exp["kind"] in KINDS and set(exp["kind_aliases"]) <= KINDS, d.name
        topologies[d.parent.name].add(exp["topology"])
        question = (d / "question.txt").read_text().strip()
        assert question
        ws, we = exp["window_start_ns"], exp["window_end_ns"]
        assert ws < we
        if exp["fault_class"] == "none":
            assert exp["service"] == "" and exp["kind"] == "none"
        else:
            assert exp["service"] and exp["service"].lower() not in question.lower(), d.name
            assert ws <= exp["fault_start_ns"] < exp["fault_end_ns"] <= we, d.name
            assert exp["effect"]["baseline"].keys() >= {"calls", "p50_ms", "errors"}, d.name
        starts = []
        with gzip.open(d / "spans.jsonl.gz", "rt") as f:
            for line in f:
                s = json.loads(line)
                assert {"trace_id", "span_id", "name", "kind", "start_time_unix_nano", "resource"} <= s.keys()
                starts.append(s["start_time_unix_nano"])
        in_window = [t for t in starts if ws <= t <= we]
        assert len(in_window) >= 50, (d.name, len(in_window))
        assert min(starts) < ws, d.name  # a baseline before the window
        assert len(starts) == exp.get("spans", len(starts)), d.name  # the counts match the file
    if topologies["heldout"]:
        assert topologies["heldout"] - topologies["lab"], "held-out needs a topology never seen in tuning"


def test_variants_strip_status_add_internal_spans_thin_out_and_cut_short(tmp_path):
    from lab.variants import make

    case = next(d for d in _cases() if json.loads((d / "expected.json").read_text())["fault_class"] != "none")
    exp = json.loads((case / "expected.json").read_text())

    def spans(d: Path) -> list[dict]:
        with gzip.open(d / "spans.jsonl.gz", "rt") as f:
            return [json.loads(line) for line in f]

    orig = spans(case)
    nostatus = spans(make(case, tmp_path, "nostatus"))
    assert len(nostatus) == len(orig)
    assert all(s["status_code"] == "UNSET" and "http.response.status_code" not in s["attributes"] for s in nostatus)
    inner = spans(make(case, tmp_path, "internal"))
    by_id = {s["span_id"]: s for s in inner}
    internal = [s for s in inner if s["kind"] == "INTERNAL"]
    assert internal and all(by_id[s["parent_span_id"]]["resource"] == s["resource"] for s in internal)
    sparse = spans(make(case, tmp_path, "sparse"))
    assert 0 < len({s["trace_id"] for s in sparse}) < 0.3 * len({s["trace_id"] for s in orig})
    partial = spans(make(case, tmp_path, "partial"))
    assert max(s["end_time_unix_nano"] for s in partial) < exp["fault_end_ns"]
    assert json.loads((tmp_path / "partial" / case.name / "expected.json").read_text())["variant"] == "partial"


def test_no_fault_window_waits_for_other_topologies_faults_and_holds_theirs_off():
    from lab.record import FaultLog

    log, stop, seen = FaultLog(), threading.Event(), []
    log.hold_fault("mesh12-s1", stop)  # mesh12's fault case is under way
    quiet = threading.Thread(target=lambda: (log.hold_quiet("shop-s2", stop), seen.append("quiet")))
    quiet.start()
    time.sleep(0.3)
    assert seen == []  # the shop's no-fault window waits for mesh12's fault and its recovery
    log.release_fault("mesh12-s1", time.time() + 0.5)
    time.sleep(0.2)
    assert seen == []
    quiet.join(5)
    assert seen == ["quiet"]
    nxt = threading.Thread(target=lambda: (log.hold_fault("mesh12-s1", stop), seen.append("fault")))
    nxt.start()
    time.sleep(0.3)
    assert seen == ["quiet"]  # mesh12's next fault waits for the quiet window to end
    log.release_quiet("shop-s2")
    nxt.join(5)
    assert seen == ["quiet", "fault"]
    log.hold_fault("shop-s2", stop)  # fault cases of two topologies overlap freely


def test_stale_finds_and_moves_cases_the_recording_cannot_vouch_for(tmp_path):
    from lab.stale import main as stale

    root = tmp_path / "lab"
    beside = [{"topology": "shop", "fault_class": "exception", "service": "x"}]
    for name, exp in [("a", {"fault_class": "none", "concurrent_faults": beside}),
                      ("b", {"fault_class": "none", "concurrent_faults": []}),
                      ("c", {"fault_class": "exception", "concurrent_faults": beside}),
                      ("d", {"fault_class": "cpu_contention", "effect": {"baseline": {}}}),
                      ("e", {"fault_class": "cpu_contention", "effect": {"server_p50_growth": 2.1}})]:
        (root / name).mkdir(parents=True)
        (root / name / "expected.json").write_text(json.dumps(exp))
    assert stale([str(root), "--move-to", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["b", "c", "e"]
    assert sorted(p.name for p in (tmp_path / "out" / "lab").iterdir()) == ["a", "d"]
