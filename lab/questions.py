"""The question a person asks about a case's window, from templates per symptom, and the check
that it never names the target: not its name, an alias, a part of a hyphenated name, nor a word
sharing most of a name's stem ("fulfilment" holds fulfil, "payment" payments).
`python -m lab.questions DIR...` lists recorded cases whose question names their target."""
from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path

QUESTIONS = {
    "slow": ["{F} is slow since {t}, why?", "Users say {f} got slow around {t}. What is going on?",
             "Why is {f} slower than usual since {t}?", "Latency on {f} went up at {t}. What changed?"],
    "failing": ["{F} is failing since {t}, why?", "Users get errors on {f} since about {t}. What is broken?",
                "Why does {f} fail since {t}?", "Something is wrong with {f} since {t}: requests fail. Why?"],
    "backlog": ["Are {f} being processed? Something seems stuck since {t}.",
                "{F} stopped going through around {t}. What is going on?"],
    "none": ["Is anything wrong with {f} since {t}?", "Somebody says {f} feels off since {t}. Is something broken?",
             "Check {f}: is anything broken since {t}?"],
    # what people ask in a window where nothing broke (calm windows of `--calm`)
    "calm": ["{F} feels slow, anything wrong?", "Is everything OK with {f}? It seemed slower than usual around {t}.",
             "Anything wrong with {f} since {t}?", "{F} feels off since {t}. Is something broken?",
             "A customer says {f} was sluggish around {t}. Should we worry?"],
    "calm-errors": ["We see some errors on {f} since {t}. Is something broken?",
                    "The error count for {f} looks higher since {t}. Anything wrong?"],
}

# what a question says instead of a feature that names the target
GENERIC = {"backlog": ("Background work", "background jobs")}


def _names(target: list[str]) -> set[str]:
    out = set()
    for n in target:
        n = n.lower()
        if ":" in n or n[:1].isdigit():  # host:port aliases: a port never reads as a word
            n = n.split(":")[0]
            if n[:1].isdigit():
                continue
        out.add(n)
        out.update(p for p in re.split(r"[-_.]", n) if len(p) >= 4)
    return {n for n in out if len(n) >= 3}


def names_target(text: str, target: list[str]) -> bool:
    """True when `text` holds a name of the target, or a word whose common start with a name is
    5+ letters and most of the shorter one."""
    low = text.lower()
    words = re.findall(r"[a-z][a-z0-9-]*", low)
    for n in _names(target):
        if re.search(rf"(?<![a-z]){re.escape(n)}", low):
            return True
        for w in words:
            k = 0
            while k < min(len(w), len(n)) and w[k] == n[k]:
                k += 1
            if k >= 5 and k >= 0.8 * min(len(w), len(n)):
                return True
    return False


def question(rng: random.Random, symptom: str, feature: str, at_s: float, target: list[str] | None = None) -> str:
    """A question from the symptom's templates; when the feature would name the target (a feature
    like "order fulfilment" for the service fulfil), the same question about "the site"."""
    t = time.strftime("%H:%M", time.gmtime(at_s))
    pick = rng.choice(QUESTIONS[symptom])
    q = pick.format(F=feature[:1].upper() + feature[1:], f=feature, t=t)
    if target and names_target(q, target):
        F, f = GENERIC.get(symptom, ("The site", "the site"))
        q = pick.format(F=F, f=f, t=t)
    return q


def target_names(expected: dict) -> list[str]:
    return [expected.get("service", "")] + list(expected.get("aliases", [])) if expected.get("service") else []


def leaks(root: Path) -> list[tuple[str, str]]:
    """(case, question) for every case under root whose question names its target."""
    out = []
    for e in sorted(root.glob("*/expected.json")):
        exp = json.loads(e.read_text())
        q = (e.parent / "question.txt").read_text().strip()
        if names_target(q, target_names(exp)):
            out.append((e.parent.name, q))
    return out


if __name__ == "__main__":
    bad = [x for root in sys.argv[1:] for x in leaks(Path(root))]
    for case, q in bad:
        print(f"{case}: {q}")
    print(f"{len(bad)} questions name their target")
