"""Record labelled cases from a live topology: bring it up once under the real eBPF capture,
then for each case wait a baseline, inject one randomized fault (or none), remove it, let it
recover, and write the case folder (spans of [window_start - baseline, window_end], gzip).
`--with` records more topologies side by side on the same capture (one eBPF capture, not one each).

    python -m lab.record --topology shop --cases 10 --seed 1 --out evals/lab
    python -m lab.record --topology mesh12 --cases 30 --seed 12 --out evals/lab --with shop:3:30:evals/lab:25000
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from lab import calm as C
from lab.capture import LabCapture
from lab.faults import FaultError, remove_shaping_of
from lab.labels import kind_aliases
from lab.questions import question
from lab.topologies import load
from lab.topology import LOADS, STRENGTHS, FaultPlan

def schedule(rng: random.Random, plans: list[FaultPlan], n: int, none_share: float,
             have: Counter | None = None) -> list[FaultPlan | None]:
    """n cases: no-fault windows at none_share, the rest spread over fault classes so that each
    class ends about as often, counting the cases `have` (already in the output folder): the
    class with the fewest so far goes next (ties in a random order), the target drawn within it."""
    classes = sorted({p.fault_class for p in plans})
    count = Counter({c: (have or {}).get(c, 0) for c in classes})
    out: list[FaultPlan | None] = []
    for _ in range(n):
        if rng.random() < none_share:
            out.append(None)
            continue
        order = classes[:]
        rng.shuffle(order)
        cls = min(order, key=lambda c: count[c])
        count[cls] += 1
        out.append(rng.choice([p for p in plans if p.fault_class == cls]))
    return out


def calm_schedule(rng: random.Random, todo: list, kinds: list[str]) -> dict[int, str]:
    """The calm kind of each no-fault case (index -> kind), the kinds taken in turn from a shuffled
    list so a run holds each about as often; "cold" only for the first case (forced to no fault)."""
    if not kinds:
        return {}
    out: dict[int, str] = {}
    rest = [k for k in kinds if k != "cold"]
    if "cold" in kinds and todo:
        todo[0] = None
        out[0] = "cold"
    order: list[str] = []
    for i, plan in enumerate(todo):
        if plan is None and i not in out and rest:
            if not order:
                order = rest[:]
                rng.shuffle(order)
            out[i] = order.pop()
    return out


def classes_in(out: Path) -> Counter:
    """Fault classes of the cases already in a folder (what the schedule balances against)."""
    have: Counter = Counter()
    for f in out.glob("*/expected.json"):
        try:
            have[json.loads(f.read_text()).get("fault_class", "")] += 1
        except (OSError, ValueError):
            continue
    return have


class FaultLog:
    """Faults of every topology recorded by this process, so a case can name the ones another
    topology had active while its spans were taken (stress-ng's CPU hogs reach the whole host),
    and the turns that keep a no-fault window quiet: while one topology records a no-fault
    case (baseline and window), no other topology has a fault active or recovering."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[dict] = []
        self._turns = threading.Condition()
        self._busy: dict[str, float] = {}  # recorder -> when its fault and recovery are over
        self._quiet: set[str] = set()  # recorders in (or waiting for) a no-fault window

    def _wait(self, ready, stop: threading.Event) -> None:
        while not ready():
            if stop.is_set():
                raise KeyboardInterrupt
            self._turns.wait(1.0)

    def hold_fault(self, me: str, stop: threading.Event) -> None:
        """Before a fault case's baseline: wait while another topology wants a quiet window."""
        with self._turns:
            self._wait(lambda: not (self._quiet - {me}), stop)
            self._busy[me] = float("inf")

    def release_fault(self, me: str, quiet_from: float) -> None:
        with self._turns:
            self._busy[me] = quiet_from
            self._turns.notify_all()

    def hold_quiet(self, me: str, stop: threading.Event) -> None:
        """Before a no-fault case's baseline: no new fault starts elsewhere from now on; wait
        until the faults already under way elsewhere have ended and recovered."""
        with self._turns:
            self._quiet.add(me)
            self._turns.notify_all()
            self._wait(lambda: all(t <= time.time() for r, t in self._busy.items() if r != me), stop)

    def release_quiet(self, me: str) -> None:
        with self._turns:
            self._quiet.discard(me)
            self._turns.notify_all()

    def add(self, row: dict) -> dict:
        with self._lock:
            self._rows.append(row)
        return row

    def others(self, me: str, start: float, end: float) -> list[dict]:
        now = time.time()
        with self._lock:
            return [{k: r[k] for k in ("topology", "fault_class", "service")} for r in self._rows
                    if r["recorder"] != me and r["start"] < end and (r["end"] or now) > start]


def sample_traces(spans: list, share: float) -> list:
    """Whole traces kept at `share` (by trace id, so a kept trace keeps all its spans)."""
    if share >= 1.0:
        return spans
    cut = int(share * 2**32)
    return [s for s in spans if int(s.trace_id[-8:], 16) < cut]


def effect(spans: list, service: str, port: int | None, base_end: int, start: int, end: int) -> dict:
    """What the fault did to the target as its callers saw it (CLIENT spans to its port; its own
    spans when it has no port) and in its own SERVER spans: calls, p50/p90 latency and error
    share, baseline vs fault, and how much its own p50 grew.
    A mild fault on a quiet service can leave no trace at all; this says how much there is."""
    def pick(s) -> bool:
        if port is not None:
            return s.kind == "CLIENT" and s.attributes.get("server.port") == port
        return s.service == service

    def stats(group: list) -> dict:
        durs = sorted((s.end_time_unix_nano - s.start_time_unix_nano) / 1e6 for s in group)
        n = len(durs)
        return {"calls": n, "p50_ms": round(durs[n // 2], 1) if n else None,
                "p90_ms": round(durs[int(n * 0.9)], 1) if n else None,
                "errors": round(sum(s.status_code == "ERROR" for s in group) / n, 3) if n else None}

    def split(group: list) -> tuple[dict, dict]:
        return (stats([s for s in group if s.start_time_unix_nano < base_end]),
                stats([s for s in group if start <= s.start_time_unix_nano <= end]))

    out = dict(zip(("baseline", "fault"), split([s for s in spans if pick(s)])))
    # the target's own SERVER spans (its own time, not the path to it): did the fault reach it?
    own = [s for s in spans if s.service == service and s.kind == "SERVER"]
    out["server_baseline"], out["server_fault"] = split(own)
    b, f = out["server_baseline"]["p50_ms"], out["server_fault"]["p50_ms"]
    out["server_p50_growth"] = round(f / b, 2) if b and f is not None else None
    return out


def write_case(d: Path, spans, question_text: str, expected: dict) -> int:
    d.mkdir(parents=True, exist_ok=True)
    (d / "question.txt").write_text(question_text + "\n")
    (d / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    with open(d / "spans.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                                compresslevel=9) as f:
        f.write(b"".join(s.json_line() for s in spans))
    return (d / "spans.jsonl.gz").stat().st_size


class Recorder:
    def __init__(self, args: argparse.Namespace, stop: threading.Event | None = None,
                 faults: FaultLog | None = None) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.topo = load(args.topology, args.workdir, args.port_base)
        self.out = Path(args.out)
        self.workdir = Path(args.workdir or f"/tmp/guardian-lab-{args.topology}")
        self.tag = f"{args.topology}-s{args.seed}"
        self.stop = stop or threading.Event()
        self.faults = faults or FaultLog()
        self.quiet_until = 0.0  # the next baseline starts after the last fault's recovery
        self.next_load: str | None = None  # set at the end of the previous window (its settle overlaps)
        self.load_at = 0.0
        self.t0 = time.monotonic()
        self.done = self.failed = 0
        self.case_s: list[float] = []
        self.calm_kinds: dict[int, str] = {}

    def say(self, msg: str) -> None:
        el = time.monotonic() - self.t0
        print(f"[{el:6.0f}s {self.tag}] {msg}", flush=True)

    def wait(self, seconds: float, why: str) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.stop.is_set():
                raise KeyboardInterrupt
            dead = self.topo.dead()
            if dead:
                raise RuntimeError(f"stopped unexpectedly: {', '.join(dead)} ({why})")
            if not self.cap.alive():
                raise RuntimeError("guardian capture exited")
            time.sleep(min(1.0, max(end - time.monotonic(), 0)))

    def loop(self) -> None:
        """Every case of this topology (the topology and the capture are running)."""
        a = self.args
        try:
            calm = a.calm.split(",") if a.calm else []
            if "cold" not in calm:  # a cold window starts with the topology, no warm-up
                self.wait(a.warmup, "warm-up")
            plans = self.topo.plans()
            if a.classes:
                plans = [p for p in plans if p.fault_class in a.classes.split(",")]
            if a.targets and any(p.service in a.targets.split(",") for p in plans):  # (--with: per topology)
                plans = [p for p in plans if p.service in a.targets.split(",")]
            todo = schedule(self.rng, plans, a.cases, a.none_share,
                            None if a.own_balance else classes_in(self.out))
            self.calm_kinds = calm_schedule(self.rng, todo, calm)
            for i, plan in enumerate(todo):
                name = f"{self.topo.name}-s{a.seed}-{i:03d}"
                if (self.out / name / "expected.json").exists():
                    continue
                t = time.monotonic()
                try:
                    size = self.case(i, name, plan)
                    self.done += 1
                    self.case_s.append(time.monotonic() - t)
                    self.say(f"case {i + 1}/{len(todo)} {name} written ({size / 1024:.0f} KiB) in "
                             f"{self.case_s[-1]:.0f} s; {self.done} done, capture kept {self.cap.kept} of "
                             f"{self.cap.seen} spans")
                except FaultError as e:
                    self.failed += 1
                    self.say(f"case {i + 1}/{len(todo)} skipped: {e}")
        except KeyboardInterrupt:
            self.say("interrupted")
        except Exception as e:  # one topology failing does not stop the others
            self.failed += 1
            self.say(f"stopped: {type(e).__name__}: {e}")
        finally:
            remove_shaping_of(list(self.topo.ports.values()))

    def set_load(self, rng: random.Random) -> str:
        name = rng.choice(list(LOADS))
        self.topo.set_load(LOADS[name])
        self.load_at = time.time()
        return name

    def case(self, i: int, name: str, plan: FaultPlan | None) -> int:
        a, rng = self.args, self.rng
        strength = rng.choice(STRENGTHS)
        if a.strength:
            strength = a.strength
        load_name, self.next_load = self.next_load or self.set_load(rng), None
        cls = plan.fault_class if plan else "none"
        what = f"{cls} on {plan.service}" if plan else f"no fault ({self.calm_kinds.get(i) or 'plain'})"
        self.say(f"case {i + 1}: {what} (strength {strength}, load {load_name})")
        phases: dict[str, float] = {}
        t = time.monotonic()
        # a no-fault window is quiet for the whole host's lab: other topologies' faults wait
        (self.faults.hold_fault if plan else self.faults.hold_quiet)(self.tag, self.stop)
        try:
            return self._case(i, name, plan, strength, load_name, cls, phases, t)
        finally:
            if plan:
                self.faults.release_fault(self.tag, self.quiet_until if self.quiet_until > 0 else time.time())
            else:
                self.faults.release_quiet(self.tag)

    def _case(self, i: int, name: str, plan: FaultPlan | None, strength: str, load_name: str, cls: str,
              phases: dict, t: float) -> int:
        a, rng = self.args, self.rng
        phases["turn"] = time.monotonic() - t
        t = time.monotonic()
        kind = self.calm_kinds.get(i) if not plan else None
        # the baseline slice starts a few seconds after a load change (the shop restarts its
        # load generator), so it holds the new level only, and after the last fault's recovery
        settled = max(self.load_at + a.settle + rng.uniform(0, a.settle_jitter), self.quiet_until)
        if kind != "cold":
            self.wait(settled - time.time(), "settle")
        phases["settle"] = time.monotonic() - t
        factor = LOADS[load_name]
        calm_mech, calm_in_window = None, False
        if kind == "drift":  # across baseline and window
            calm_mech = C.Drift(self.topo, factor, rng.choice((1.8, 0.55)), a.baseline + 30)
        elif kind == "bad-client":  # mostly there all along; sometimes it appears in the window
            calm_mech = C.BadClient(C.entry_port(self.topo), self.workdir / "logs", rng)
            calm_in_window = rng.random() < 0.3
        elif kind in ("load-up", "load-down"):
            calm_mech, calm_in_window = C.LoadStep(self.topo, factor, 2.0 if kind == "load-up" else 0.5), True
        if calm_mech and not calm_in_window:
            calm_mech.apply()
        base_s = rng.uniform(4, 10) if kind == "cold" else a.baseline
        self.wait(base_s, "baseline")
        phases["baseline"] = time.monotonic() - t - phases["settle"]
        window_start = time.time()
        self.wait(rng.uniform(2, 8), "before the fault")
        duration = rng.uniform(a.min_fault, a.max_fault)
        herring = None
        herrings = [h for h in self.topo.herrings() if not plan or h.service != plan.service]
        if kind in ("batch", "restart"):
            herring = rng.choice([h for h in herrings if h.batch == (kind == "batch")])
        elif herrings and not kind and rng.random() < a.herring_share:
            herring = rng.choice(herrings)
        mech = plan.make(rng, strength) if plan else None
        phases["before"] = time.monotonic() - t - phases["settle"] - phases["baseline"]
        fault_start = time.time()
        logged = self.faults.add({"recorder": self.tag, "topology": self.topo.name, "fault_class": cls,
                                  "service": plan.service if plan else "", "start": fault_start,
                                  "end": None}) if plan else None
        try:
            if mech:
                mech.apply()
            if calm_mech and calm_in_window:
                calm_mech.apply()
            herring_mech = None
            if herring:
                lead = rng.uniform(0, duration / 2)
                self.wait(lead, "fault")
                herring_mech = herring.make(rng)
                herring_mech.apply()
                self.say(f"  red herring: {herring.service}")
                self.wait(duration - lead, "fault")
                herring_mech.remove()
            else:
                self.wait(duration, "fault")
        finally:
            if mech:
                mech.remove()
        fault_end = time.time()
        if logged:
            logged["end"] = fault_end
        phases["fault"] = fault_end - fault_start
        window_end = fault_end + rng.uniform(0, 3)
        load_avg = os.getloadavg()
        self.wait(window_end - time.time(), "window end")
        if calm_mech:
            calm_mech.remove()
        if i + 1 < a.cases:  # the next case's load level, set now so its settle overlaps this tail
            self.next_load = self.set_load(rng)
        # the linker holds spans until their trace is quiet: cut once that is past the window;
        # the rest of the recovery runs into the next case's settle (quiet_until)
        self.wait(window_end - time.time() + a.linker_settle, "linker settle")
        self.quiet_until = fault_end + a.recovery
        phases["tail"] = time.time() - fault_end
        ws = int(window_start * 1e9)
        mine = set(self.topo.ports.values())  # the capture may serve other topologies too
        base = [s for s in self.cap.between(int((window_start - base_s) * 1e9), ws)
                if s.attributes.get("server.port") in mine]
        window = [s for s in self.cap.between(ws, int(window_end * 1e9)) if s.attributes.get("server.port") in mine]
        kept_share = min(1.0, a.max_baseline_spans / max(len(base), 1))
        spans = sample_traces(base, kept_share) + window
        in_window = len(window)
        herrings_named = sorted(set(self.topo.always_herrings) | ({herring.service} if herring else set())
                                | ({C.BAD_CLIENT} if kind == "bad-client" else set()))
        # past-end: the question's window runs on past the recorded data (asked before the data
        # arrived, or the agent stopped): rates over the window would read as drops everywhere
        asked_end = window_end + rng.uniform(15, 40) if kind == "past-end" else window_end
        expected = {
            "service": plan.service if plan else "",
            "aliases": plan.aliases if plan else [],
            "operation": plan.operation if plan else None,
            "kind": plan.kind if plan else "none",
            "kind_aliases": kind_aliases(plan.fault_class, plan.kind, plan.kind_aliases) if plan else [],
            "fault_class": cls,
            "fault_start_ns": int(fault_start * 1e9) if plan else 0,
            "fault_end_ns": int(fault_end * 1e9) if plan else 0,
            "window_start_ns": int(window_start * 1e9), "window_end_ns": int(asked_end * 1e9),
            "neighbours": self.topo.neighbours(plan.service) if plan else [],
            "red_herrings": herrings_named,
            "topology": self.topo.name, "seed": a.seed, "case": i, "strength": strength if plan else "",
            "load": load_name, "calm": kind or "", "host_load": [round(x, 2) for x in load_avg],
            "spans": len(spans), "spans_in_window": in_window, "baseline_trace_share": round(kept_share, 3),
            # faults another topology recorded alongside had active meanwhile (they reach this
            # one only through the shared host: CPU)
            "concurrent_faults": self.faults.others(self.tag, window_start - a.baseline, window_end),
        }
        if plan:
            expected["effect"] = effect(spans, plan.service, self.topo.ports.get(plan.service), ws,
                                        int(fault_start * 1e9), int(fault_end * 1e9))
        symptom = plan.symptom if plan else ("calm-errors" if kind == "bad-client" else "calm" if kind else "none")
        q = question(rng, symptom, plan.feature if plan else rng.choice(self.topo.features),
                     fault_start if plan else window_start, [plan.service] + plan.aliases if plan else None)
        size = write_case(self.out / name, spans, q, expected)
        self.say("  phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
        return size


def run(groups: list[argparse.Namespace]) -> int:
    """Prepare and start every topology, one capture for all of them, their cases in parallel."""
    stop, faults = threading.Event(), FaultLog()
    recs = [Recorder(g, stop, faults) for g in groups]
    ports = [p for r in recs for p in r.topo.ports.values()]
    if len(ports) != len(set(ports)):
        raise SystemExit("topologies recorded together need separate port blocks (--port-base / --with ...:PORT)")
    cap = LabCapture(set(ports), recs[0].workdir / "capture.log")
    started: list[Recorder] = []
    t0 = time.monotonic()
    try:
        for r in recs:
            r.topo.prepare(r.say)
        recs[0].say("starting guardian capture (compiling eBPF probes) …")
        cap.start()
        recs[0].say(f"capture ready in {time.monotonic() - t0:.0f} s")
        for r in recs:
            r.cap = cap
            r.say(f"starting topology {r.topo.name} …")
            t = time.monotonic()
            started.append(r)
            r.topo.start(r.say)
            r.say(f"topology up in {time.monotonic() - t:.0f} s")
        threads = [threading.Thread(target=r.loop, name=r.tag) for r in recs]
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            for th in threads:
                th.join(0.5)
        return 0 if all(r.failed == 0 for r in recs) else 1
    except KeyboardInterrupt:
        stop.set()
        return 130
    finally:
        stop.set()
        for th in threading.enumerate():
            if th is not threading.current_thread() and th.name in {r.tag for r in recs}:
                th.join(60)
        for r in reversed(started):
            remove_shaping_of(list(r.topo.ports.values()))
            r.say("stopping …")
            r.topo.stop()
            if r.case_s:
                r.say(f"{r.done} cases, {r.failed} failed, {sum(r.case_s) / len(r.case_s):.0f} s per case")
        cap.stop()


def with_group(args: argparse.Namespace, spec: str) -> argparse.Namespace:
    """TOPOLOGY:SEED:CASES:OUT[:PORT_BASE] -> the recorder settings of one more topology."""
    parts = spec.split(":")
    if not 4 <= len(parts) <= 5:
        raise SystemExit(f"--with {spec!r}: expected TOPOLOGY:SEED:CASES:OUT[:PORT_BASE]")
    g = argparse.Namespace(**vars(args))
    g.topology, g.seed, g.cases, g.out = parts[0], int(parts[1]), int(parts[2]), parts[3]
    g.port_base = int(parts[4]) if len(parts) == 5 else None
    g.workdir = f"/tmp/guardian-lab-{g.topology}-s{g.seed}"
    return g


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.record", description=__doc__.splitlines()[0])
    p.add_argument("--topology", required=True)
    p.add_argument("--cases", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--workdir", help="data dirs and logs (default /tmp/guardian-lab-TOPOLOGY)")
    p.add_argument("--port-base", type=int, help="first loopback port of the topology's block")
    p.add_argument("--baseline", type=float, default=35.0, help="seconds of spans before the window")
    p.add_argument("--min-fault", type=float, default=20.0)
    p.add_argument("--max-fault", type=float, default=35.0)
    p.add_argument("--max-baseline-spans", type=int, default=1500,
                   help="sample baseline traces down to about this many spans (window spans are all kept)")
    p.add_argument("--recovery", type=float, default=15.0, help="seconds from a fault's end to the next baseline")
    p.add_argument("--settle", type=float, default=8.0, help="seconds from a load change to the baseline")
    p.add_argument("--settle-jitter", type=float, default=4.0, help="random extra settle, 0 to this")
    p.add_argument("--linker-settle", type=float, default=8.0,
                   help="seconds after the window before its spans are cut (the linker holds open traces)")
    p.add_argument("--warmup", type=float, default=20.0)
    p.add_argument("--none-share", type=float, default=0.1, help="share of no-fault windows")
    p.add_argument("--herring-share", type=float, default=0.3, help="share of cases with a staged red herring")
    p.add_argument("--classes", help="only these fault classes (comma-separated)")
    p.add_argument("--targets", help="only faults at these services (comma-separated)")
    p.add_argument("--strength", choices=STRENGTHS, help="every fault at this strength")
    p.add_argument("--calm", help="what no-fault windows carry, taken in turn (comma-separated): "
                   + ", ".join(C.KINDS))
    p.add_argument("--own-balance", action="store_true",
                   help="balance classes within this run only, not against the cases already in --out")
    p.add_argument("--with", dest="also", action="append", default=[], metavar="TOPOLOGY:SEED:CASES:OUT[:PORT_BASE]",
                   help="record this topology too, side by side on the same capture (repeatable)")
    args = p.parse_args(argv)
    groups = [args] + [with_group(args, w) for w in args.also]

    def interrupt(*_):  # also under a background shell job (SIGINT ignored there) or kill
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        return run(groups)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
