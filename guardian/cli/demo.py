"""`guardian demo`: start the shop (demo/) on loopback with `guardian agent` watching it,
inject a fault, let the scheduled anomaly detection find it, investigate, print the report."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from guardian.demo.config import Ports
    from guardian.demo.faults import FAULTS

    p = sub.add_parser("demo", help="live demo: a shop on loopback, a fault, and Guardian explaining it",
                       description="Start a small shop (Python, Go, Node and gRPC services over PostgreSQL, "
                                   "Redis, RabbitMQ and DNS) on loopback with load, run `guardian agent` on it, "
                                   "inject a fault, wait for the scheduled anomaly detection to find it, "
                                   "investigate and print the report. Ctrl-C stops everything.")
    p.add_argument("--fault", choices=sorted(FAULTS), default="downstream-5xx", metavar="NAME",
                   help="fault to inject (default downstream-5xx; see --list-faults)")
    p.add_argument("--list-faults", action="store_true", help="list the faults and exit")
    p.add_argument("--exit-after-report", action="store_true",
                   help="stop everything after printing the report (default: keep the API up until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--ports", default="", metavar="NAME=PORT,…",
                   help="override ports; names: " + ", ".join(Ports.names()))
    p.add_argument("--port-offset", type=int, default=0, metavar="N", help="add N to every default port")
    p.add_argument("--workdir", default="/tmp/guardian-demo", help="data, logs and certificates (wiped at start)")
    p.add_argument("--rate", type=float, default=8.0, help="load generator requests per second (default 8)")
    p.add_argument("--baseline", type=float, default=40.0, metavar="S",
                   help="seconds of healthy traffic before the fault (default 40)")
    p.add_argument("--detect-timeout", type=float, default=120.0, metavar="S",
                   help="give up if no anomaly report names the shop within S seconds (default 120)")
    p.add_argument("--no-agent", action="store_true",
                   help="run only the shop, load and fault (no eBPF); shows what the shoppers feel")
    p.set_defaults(func=run)


def _list_faults() -> int:
    from guardian.demo.faults import FAULTS

    for f in FAULTS.values():
        print(f"{f.name:17} {f.description}  [expect: {'/'.join(f.services)}, {'/'.join(f.kinds)}]")
    return 0


def _say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}" if sys.stderr.isatty() else f"[demo] {msg}", file=sys.stderr, flush=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.list_faults:
        return _list_faults()
    from guardian.demo.config import DemoConfig, Ports
    from guardian.demo.faults import FAULTS
    from guardian.demo.procs import DemoError, leftovers
    from guardian.demo.run import DemoRun

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API poll is noise here

    ports = Ports().shifted(args.port_offset)
    try:
        ports.update(args.ports)
    except ValueError as e:
        print(f"guardian demo: {e}", file=sys.stderr)
        return 2
    if not args.no_agent and os.geteuid() != 0:
        print("guardian demo: the agent loads eBPF programs and needs root (sudo make demo), "
              "or use --no-agent to run only the shop", file=sys.stderr)
        return 2
    cfg = DemoConfig(ports=ports, workdir=Path(args.workdir), rate=args.rate, agent=not args.no_agent)
    fault = FAULTS[args.fault]
    demo = DemoRun(cfg, progress=_say)
    signal.signal(signal.SIGTERM, _interrupt)  # teardown runs on `kill` as on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (`&`)
    from guardian.llm.server import serve_if_installed

    llm = None
    try:
        # After make setup-llm the local model answers (the env reaches the API process).
        llm = None if args.no_agent else serve_if_installed()
        if llm:
            _say(f"LLM engine: local {llm.model} on {llm.base_url}")
        demo.start()
        demo.wait(args.baseline, "collecting a baseline of healthy traffic")
        t0 = demo.inject(fault)
        if args.no_agent:
            return _without_agent(demo, fault, args)
        det = demo.detect(t0, args.detect_timeout)
        report = demo.investigate(fault.question, t0)
        _verdict(fault, report, cfg.ports)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(_markdown(report, det.after_s))
        if args.exit_after_report:
            return 0
        _say(f"the fault stays on; ask Guardian more: API http://127.0.0.1:{cfg.ports.api} "
             f"(token {demo.token}), e.g.\n  curl -s -H 'Authorization: Bearer {demo.token}' "
             f"-H 'Content-Type: application/json' -d '{{\"question\":\"what is slow?\",\"since\":\"5m\"}}' "
             f"http://127.0.0.1:{cfg.ports.api}/v1/investigate\nlogs in {cfg.logs}; Ctrl-C stops everything")
        while True:
            demo.wait(3600, "serving")
    except DemoError as e:
        print(f"guardian demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut teardown short
        demo.stop()
        if llm:
            llm.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        left = leftovers(cfg.workdir)
        _say("stopped; nothing left running" if not left else
             "stopped, but these are still running:\n  " + "\n  ".join(left))


def _verdict(fault, report: dict, ports) -> None:
    """Say on stderr whether the top root cause is the injected fault."""
    top = (report.get("root_causes") or [{}])[0]
    got = f"{top.get('service', 'nothing')} ({top.get('kind', '-')})"
    want = f"{'/'.join(fault.services)} ({'/'.join(fault.kinds)})"
    ok = fault.blames(top, ports)
    _say(f"injected {fault.name}: expected {want}; Guardian's top root cause: {got}"
         f" — {'right' if ok else 'not the injected fault'}")


def _markdown(report: dict, after_s: float) -> str:
    from guardian.report import Report

    rep = Report.model_validate(report)
    engine = f"{rep.engine.type} ({rep.engine.model})" if rep.engine.model else rep.engine.type
    head = (f"_Found by Guardian's scheduled anomaly detection {after_s:.0f}s after the fault;"
            f" answered by the {engine} engine._\n\n")
    return head + rep.to_markdown()


def _without_agent(demo, fault, args: argparse.Namespace) -> int:
    from guardian.demo.faults import symptom_seen
    from guardian.demo.services import last_stats

    before = last_stats(demo.cfg, 2)[0] if last_stats(demo.cfg, 2) else {}
    demo.wait(12, "letting the shoppers feel it")
    during = last_stats(demo.cfg)[0]
    out = {"fault": fault.name, "route": fault.route, "felt": symptom_seen(fault, before, during),
           "before": before.get(fault.route), "during": during.get(fault.route)}
    print(json.dumps(out, indent=2) if args.json else
          f"{fault.name}: {fault.route} before {out['before']} -> during {out['during']}")
    if args.exit_after_report:
        return 0
    while True:
        demo.wait(3600, "running (Ctrl-C stops everything)")
