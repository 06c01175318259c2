"""What the Python shop services share: their process name, DNS through the shop's own
resolver, addresses from the environment, and the fault switch the demo flips."""
from __future__ import annotations

import ctypes
import os
import time

import dns.exception
import dns.resolver


def name_process(name: str) -> None:
    """Set the kernel's comm (what eBPF and `ps -o comm` see) before any thread starts,
    so every thread of the service carries the service's name, not "python3"."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NAME = 15
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def env_addr(var: str) -> tuple[str, int]:
    """SHOP_X=host:port -> (host, port)."""
    host, _, port = os.environ[var].rpartition(":")
    return host, int(port)


class ResolveError(RuntimeError):
    pass


class ShopResolver:
    """A-record lookups against the shop's DNS server (the glibc resolver can't take a port)."""

    def __init__(self) -> None:
        host, port = env_addr("SHOP_DNS")
        self._r = dns.resolver.Resolver(configure=False)
        self._r.nameservers = [host]
        self._r.port = port
        self._r.timeout = self._r.lifetime = 1.0
        self._cache: dict[str, tuple[str, float]] = {}  # name -> (address, expiry); threads share it

    def resolve(self, name: str) -> str:
        """The first A record, cached for its TTL (the zone's TTL is 1 s), as a stub resolver does."""
        hit = self._cache.get(name)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        try:
            answer = self._r.resolve(name, "A")
            addr = answer[0].address
        except (dns.exception.DNSException, IndexError) as e:
            raise ResolveError(f"cannot resolve {name}: {e.__class__.__name__}") from e
        self._cache[name] = (addr, time.monotonic() + answer.rrset.ttl)
        return addr


class FaultSwitch:
    """The fault mode the demo set for this service ('' when healthy), re-read at most
    every 250 ms from a file in SHOP_CONTROL."""

    def __init__(self, service: str) -> None:
        self._path = os.path.join(os.environ.get("SHOP_CONTROL", "/nonexistent"), service)
        self._mode, self._at = "", 0.0

    @property
    def mode(self) -> str:
        now = time.monotonic()
        if now - self._at > 0.25:
            self._at = now
            try:
                with open(self._path) as f:
                    self._mode = f.read().strip()
            except OSError:
                self._mode = ""
        return self._mode
