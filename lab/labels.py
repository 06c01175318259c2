"""Which report kinds count as naming a fault class correctly, in one place: the recorder
writes them, and `python -m lab.labels DIR...` re-applies them to recorded cases.

A kind is accepted when the mechanism really produces that symptom here: a throttled, paused
or lock-blocked service also makes its callers time out (errors); lost packets are retransmitted
(latency) or time out (errors)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ALIASES: dict[str, list[str]] = {
    "network_delay": ["latency"],
    "network_jitter": ["latency"],
    "network_loss": ["latency", "error"],
    "cpu_contention": ["latency"],
    "cpu_throttle": ["latency", "error"],
    "memory_pressure": ["latency", "error"],
    "process_pause": ["saturation", "error"],
    "exception": [],
    "wrong_return": [],
    "slow_query": ["saturation"],
    "lock_contention": ["saturation", "error"],
    "pool_exhaustion": ["latency", "error"],
    "dns_failure": ["error"],
    "tls_expiry": ["error"],
    "dependency_timeout": ["dependency", "saturation", "error"],
    "none": [],
}


def kind_aliases(fault_class: str, kind: str, extra: list[str] = ()) -> list[str]:
    return sorted((set(ALIASES.get(fault_class, [])) | set(extra)) - {kind})


def relabel(case: Path) -> bool:
    p = case / "expected.json"
    e = json.loads(p.read_text())
    new = kind_aliases(e["fault_class"], e["kind"], e.get("kind_aliases", []))
    if new == e.get("kind_aliases"):
        return False
    e["kind_aliases"] = new
    p.write_text(json.dumps(e, indent=2) + "\n")
    return True


if __name__ == "__main__":
    n = sum(relabel(p.parent) for root in sys.argv[1:] for p in Path(root).glob("*/expected.json"))
    print(f"relabelled {n} cases")
