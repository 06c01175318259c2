"""Copies of the dicts the capture thread changes without a lock (its connection table, its
counters), for readers on other threads (/metrics, the API). Iterating such a dict while it
gains or loses a key raises "dictionary changed size during iteration"; a copy is made in one
C call that runs no Python code (the GIL is not handed over inside it), and made again if it
was interrupted all the same. Not a lock: the capture thread never waits for a reader."""
from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

ATTEMPTS = 100


def copy(d: dict[K, V]) -> dict[K, V]:
    """A plain dict with `d`'s entries at one instant; iterate this, not `d`."""
    for _ in range(ATTEMPTS - 1):
        try:
            return dict(d)
        except RuntimeError:  # changed size under the copy: another thread ran in between
            continue
    return dict(d)
