"""List the benchmarks, or run some of them, each in its own process with its own arguments.

  python -m bench.run                      list them (name, what it measures, whether it needs root)
  python -m bench.run parsers --seconds 1  run one, passing the rest of the arguments to it
  python -m bench.run all                  run every one with its defaults (root ones only as root)

Every figure a bench prints sits beside a baseline measured in the same run; docs/benchmarks.md
keeps dated results with the command that produced them.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# REGISTRY:benches — module under bench/ -> needs root (eBPF capture)
BENCHES = {
    "parsers": False,
    "store": False,
    "investigate": False,
    "linking": False,
    "events": True,
    "capture": True,
    "dbload": True,
    "dbsched": True,
    "exchange_cpu": True,
    "tls": True,
    "scope": True,
    "start": True,
    "fuzz": False,
    "hostile": False,
    "cluster": True,
    "hub_ingest": False,
    "soak": True,
    "soak_rate": False,
    "soak_live": True,
    "llm_eval": False,
    "kernel_time": True,
    "uprobe_cost": True,
    "stop": True,
    "older_conns": True,
    "report_heap": False,
}


def summary(name: str) -> str:
    doc = ast.get_docstring(ast.parse((HERE / f"{name}.py").read_text())) or ""
    return doc.splitlines()[0] if doc else ""


def run(name: str, args: list[str]) -> int:
    cmd = [sys.executable, "-m", f"bench.{name}", *args]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd, cwd=HERE.parent).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(__doc__)
        for name, root in BENCHES.items():
            print(f"  {name:<12} {'[root] ' if root else '       '}{summary(name)}")
        return 0
    name, rest = argv[0], argv[1:]
    if name == "all":
        failed = [n for n, root in BENCHES.items() if (not root or os.geteuid() == 0) and run(n, rest) != 0]
        skipped = [n for n, root in BENCHES.items() if root and os.geteuid() != 0]
        if skipped:
            print(f"not run (need root): {', '.join(skipped)}", file=sys.stderr)
        return 1 if failed else 0
    if name not in BENCHES:
        print(f"bench.run: no bench {name!r}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    return run(name, rest)


if __name__ == "__main__":
    sys.exit(main())
