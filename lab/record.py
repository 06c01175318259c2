"""Record labelled cases from a live topology: bring it up once under the real eBPF capture,
then for each case wait a baseline, inject one randomized fault (or none), remove it, let it
recover, and write the case folder (spans of [window_start - baseline, window_end], gzip).

    python -m lab.record --topology shop --cases 10 --seed 1 --out evals/lab
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from lab.capture import LabCapture
from lab.faults import FaultError, remove_shaping_of
from lab.labels import kind_aliases
from lab.topologies import load
from lab.topology import LOADS, STRENGTHS, FaultPlan

QUESTIONS = {
    "slow": ["{F} is slow since {t}, why?", "Users say {f} got slow around {t}. What is going on?",
             "Why is {f} slower than usual since {t}?", "Latency on {f} went up at {t}. What changed?"],
    "failing": ["{F} is failing since {t}, why?", "Users get errors on {f} since about {t}. What is broken?",
                "Why does {f} fail since {t}?", "Something is wrong with {f} since {t}: requests fail. Why?"],
    "backlog": ["Are {f} being processed? Something seems stuck since {t}.",
                "{F} stopped going through around {t}. What is going on?"],
    "none": ["Is anything wrong with {f} since {t}?", "Somebody says {f} feels off since {t}. Is something broken?",
             "Check {f}: is anything broken since {t}?"],
}


def question(rng: random.Random, symptom: str, feature: str, at_s: float) -> str:
    t = time.strftime("%H:%M", time.gmtime(at_s))
    return rng.choice(QUESTIONS[symptom]).format(F=feature[:1].upper() + feature[1:], f=feature, t=t)


def schedule(rng: random.Random, plans: list[FaultPlan], n: int, none_share: float) -> list[FaultPlan | None]:
    """n cases: no-fault windows at none_share, the rest cycling over fault classes in a
    shuffled order (each class about as often), the target drawn within the class."""
    classes = sorted({p.fault_class for p in plans})
    out: list[FaultPlan | None] = []
    order: list[str] = []
    for _ in range(n):
        if rng.random() < none_share:
            out.append(None)
            continue
        if not order:
            order = classes[:]
            rng.shuffle(order)
        cls = order.pop()
        out.append(rng.choice([p for p in plans if p.fault_class == cls]))
    return out


def sample_traces(spans: list, share: float) -> list:
    """Whole traces kept at `share` (by trace id, so a kept trace keeps all its spans)."""
    if share >= 1.0:
        return spans
    cut = int(share * 2**32)
    return [s for s in spans if int(s.trace_id[-8:], 16) < cut]


def effect(spans: list, service: str, port: int | None, base_end: int, start: int, end: int) -> dict:
    """What the fault did to the target as its callers saw it (CLIENT spans to its port; its own
    spans when it has no port): calls, p50/p90 latency and error share, baseline vs fault.
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

    mine = [s for s in spans if pick(s)]
    return {"baseline": stats([s for s in mine if s.start_time_unix_nano < base_end]),
            "fault": stats([s for s in mine if start <= s.start_time_unix_nano <= end])}


def write_case(d: Path, spans, question_text: str, expected: dict) -> int:
    d.mkdir(parents=True, exist_ok=True)
    (d / "question.txt").write_text(question_text + "\n")
    (d / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    with open(d / "spans.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                                compresslevel=9) as f:
        f.write(b"".join(s.json_line() for s in spans))
    return (d / "spans.jsonl.gz").stat().st_size


class Recorder:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.topo = load(args.topology, args.workdir, args.port_base)
        self.out = Path(args.out)
        self.workdir = Path(args.workdir or f"/tmp/guardian-lab-{args.topology}")
        self.t0 = time.monotonic()

    def say(self, msg: str) -> None:
        el = time.monotonic() - self.t0
        print(f"[{el:6.0f}s] {msg}", flush=True)

    def wait(self, seconds: float, why: str) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            dead = self.topo.dead()
            if dead:
                raise RuntimeError(f"stopped unexpectedly: {', '.join(dead)} ({why})")
            if not self.cap.alive():
                raise RuntimeError("guardian capture exited")
            time.sleep(min(1.0, max(end - time.monotonic(), 0)))

    def run(self) -> int:
        a = self.args
        self.topo.prepare(self.say)
        self.cap = LabCapture(set(self.topo.ports.values()), self.workdir / "capture.log")
        try:
            self.say("starting guardian capture (compiling eBPF probes) …")
            self.cap.start()
            self.say(f"capture ready; starting topology {self.topo.name} …")
            self.topo.start(self.say)
            self.wait(a.warmup, "warm-up")
            plans = self.topo.plans()
            if a.classes:
                plans = [p for p in plans if p.fault_class in a.classes.split(",")]
            todo = schedule(self.rng, plans, a.cases, a.none_share)
            done = 0
            for i, plan in enumerate(todo):
                name = f"{self.topo.name}-s{a.seed}-{i:03d}"
                if (self.out / name / "expected.json").exists():
                    continue
                try:
                    size = self.case(i, name, plan)
                    done += 1
                    self.say(f"case {i + 1}/{len(todo)} {name} written ({size / 1024:.0f} KiB); "
                             f"{done} done, capture kept {self.cap.kept} of {self.cap.seen} spans")
                except FaultError as e:
                    self.say(f"case {i + 1}/{len(todo)} skipped: {e}")
            return 0
        finally:
            remove_shaping_of(list(self.topo.ports.values()))
            self.say("stopping …")
            self.topo.stop()
            self.cap.stop()

    def case(self, i: int, name: str, plan: FaultPlan | None) -> int:
        a, rng = self.args, self.rng
        strength, load_name = rng.choice(STRENGTHS), rng.choice(list(LOADS))
        cls = plan.fault_class if plan else "none"
        what = f"{cls} on {plan.service}" if plan else "no fault"
        self.say(f"case {i + 1}: {what} (strength {strength}, load {load_name})")
        self.topo.set_load(LOADS[load_name])
        # the baseline slice starts a few seconds after a load change (the shop restarts its
        # load generator), so it holds the new level only
        self.wait(a.baseline + 8 + rng.uniform(0, 10), "baseline")
        window_start = time.time()
        self.wait(rng.uniform(2, 8), "before the fault")
        duration = rng.uniform(a.min_fault, a.max_fault)
        herring = None
        herrings = [h for h in self.topo.herrings() if not plan or h.service != plan.service]
        if herrings and rng.random() < a.herring_share:
            herring = rng.choice(herrings)
        mech = plan.make(rng, strength) if plan else None
        fault_start = time.time()
        try:
            if mech:
                mech.apply()
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
        window_end = fault_end + rng.uniform(0, 3)
        load_avg = os.getloadavg()
        self.wait(max(a.recovery, window_end - time.time() + 8), "recovery")
        ws = int(window_start * 1e9)
        base = self.cap.between(int((window_start - a.baseline) * 1e9), ws)
        window = self.cap.between(ws, int(window_end * 1e9))
        kept_share = min(1.0, a.max_baseline_spans / max(len(base), 1))
        spans = sample_traces(base, kept_share) + window
        in_window = len(window)
        herrings_named = sorted(set(self.topo.always_herrings) | ({herring.service} if herring else set()))
        expected = {
            "service": plan.service if plan else "",
            "aliases": plan.aliases if plan else [],
            "operation": plan.operation if plan else None,
            "kind": plan.kind if plan else "none",
            "kind_aliases": kind_aliases(plan.fault_class, plan.kind, plan.kind_aliases) if plan else [],
            "fault_class": cls,
            "fault_start_ns": int(fault_start * 1e9) if plan else 0,
            "fault_end_ns": int(fault_end * 1e9) if plan else 0,
            "window_start_ns": int(window_start * 1e9), "window_end_ns": int(window_end * 1e9),
            "neighbours": self.topo.neighbours(plan.service) if plan else [],
            "red_herrings": herrings_named,
            "topology": self.topo.name, "seed": a.seed, "case": i, "strength": strength if plan else "",
            "load": load_name, "host_load": [round(x, 2) for x in load_avg],
            "spans": len(spans), "spans_in_window": in_window, "baseline_trace_share": round(kept_share, 3),
        }
        if plan:
            expected["effect"] = effect(spans, plan.service, self.topo.ports.get(plan.service), ws,
                                        int(fault_start * 1e9), int(fault_end * 1e9))
        q = question(rng, plan.symptom if plan else "none", plan.feature if plan else rng.choice(self.topo.features),
                     fault_start if plan else window_start)
        return write_case(self.out / name, spans, q, expected)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.record", description=__doc__.splitlines()[0])
    p.add_argument("--topology", required=True)
    p.add_argument("--cases", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--workdir", help="data dirs and logs (default /tmp/guardian-lab-TOPOLOGY)")
    p.add_argument("--port-base", type=int, help="first loopback port of the topology's block")
    p.add_argument("--baseline", type=float, default=40.0, help="seconds of spans before the window")
    p.add_argument("--min-fault", type=float, default=25.0)
    p.add_argument("--max-fault", type=float, default=40.0)
    p.add_argument("--max-baseline-spans", type=int, default=1500,
                   help="sample baseline traces down to about this many spans (window spans are all kept)")
    p.add_argument("--recovery", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=20.0)
    p.add_argument("--none-share", type=float, default=0.1, help="share of no-fault windows")
    p.add_argument("--herring-share", type=float, default=0.3, help="share of cases with a staged red herring")
    p.add_argument("--classes", help="only these fault classes (comma-separated)")
    args = p.parse_args(argv)

    def interrupt(*_):  # also under a background shell job (SIGINT ignored there) or kill
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        return Recorder(args).run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
