"""What the ELF files mapped on the host hold, remembered across starts so a warm start reads
fewer of them: no TLS, TLS that cannot be probed (and why), or the probes a TLS file takes.

At start the attacher reads every executable file mapped on the host (a few hundred: libc,
interpreters, daemons); nearly all hold no TLS, a few hold TLS that cannot be located (a
BoringSSL without symbols: the slowest to read). A file is remembered with why it is not
probed ("" for no TLS), or with its probes, by (dev, inode, size, mtime): a replaced or
rewritten file is read again. The memo is dropped whole when the code
that decides (capture/tls/*.py) changes. TLS files are remembered with their path too: the
attacher probes those still in place at start (a client run again is seen from its first call).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MAX_FILES = 20_000
_TLS_DIR = Path(__file__).resolve().parent


def _code_version() -> str:
    h = hashlib.sha256()
    for p in sorted(_TLS_DIR.glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def file_stamp(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class NoTlsMemo:
    def __init__(self, directory: str | None) -> None:
        self.path = Path(directory) / "notls.json" if directory and directory != "off" else None
        self.version = _code_version()
        self.stamps: dict[str, str] = {}  # stamp -> why not probed ("": no TLS)
        self.probes: dict[str, list] = {}  # stamp -> [library, [[addr, fn, ret], ...]] of a TLS file
        self._dirty = False
        if self.path is None:
            return
        try:
            body = json.loads(self.path.read_text())
            if body.get("version") == self.version:
                self.stamps = {str(k): str(v) for k, v in list(body["files"].items())[:MAX_FILES]}
                self.probes = {str(k): v for k, v in list(body.get("tls", {}).items())[:MAX_FILES]}
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or unreadable: every file is read

    def get(self, stamp: str | None) -> str | None:
        """Why the file is not probed ("" for no TLS), None when it must be read."""
        return None if stamp is None else self.stamps.get(stamp)

    def add(self, stamp: str | None, why: str) -> None:
        if stamp is not None and stamp not in self.stamps and len(self.stamps) < MAX_FILES:
            self.stamps[stamp] = why
            self._dirty = True

    def tls_probes(self, stamp: str | None) -> tuple[str, list[tuple[int, str, bool]]] | None:
        """(tls.library, [(address, program, is_return)]) found at an earlier start, or None."""
        try:
            entry = self.probes[stamp]
            return str(entry[0]), [(int(a), str(f), bool(r)) for a, f, r in entry[1]]
        except (KeyError, TypeError, ValueError, IndexError):
            return None

    def add_tls(self, stamp: str | None, library: str, probes: list[tuple[int, str, bool]],
                path: str | None = None) -> None:
        if stamp is not None and stamp not in self.probes and len(self.probes) < MAX_FILES:
            self.probes[stamp] = [library, [list(p) for p in probes], path]
            self._dirty = True

    def tls_files(self, limit: int) -> list[str]:
        """Paths of up to `limit` TLS files (the latest remembered first) that are still the file
        their probes were found in (same stamp): a new process of one is probed before it runs."""
        out = []
        for stamp, entry in reversed(list(self.probes.items())):
            path = entry[2] if isinstance(entry, list) and len(entry) > 2 else None
            if isinstance(path, str) and file_stamp(path) == stamp:
                out.append(path)
                if len(out) >= limit:
                    break
        return out

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            # copies: the attacher's worker may still be adding (a stop does not wait for it)
            tmp.write_text(json.dumps({"version": self.version, "files": dict(self.stamps),
                                       "tls": dict(self.probes)}))
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as e:
            log.debug("TLS memo not saved: %s", e)
