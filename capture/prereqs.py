"""Is this machine able to run the eBPF capture, and if not, the command that fixes each missing piece.

Every check says what it found and, when it fails, the fix. Code that needs eBPF calls `require_ebpf()`
and so fails with the same words, not a traceback; `guardian doctor` only prints these checks.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from capture.errors import CaptureUnavailable

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges() -> Check:
    caps = _caps()
    has = lambda c: bool(caps >> c & 1)  # noqa: E731
    ok = os.geteuid() == 0 or (has(CAP_BPF) and has(CAP_PERFMON)) or has(CAP_SYS_ADMIN)
    detail = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}, CapEff={caps:#x}"
    return Check("privileges", ok, detail, "run as root (sudo) or grant CAP_BPF and CAP_PERFMON")


def check_btf() -> Check:
    ok = Path("/sys/kernel/btf/vmlinux").exists()
    return Check("BTF", ok, "/sys/kernel/btf/vmlinux" + (" present" if ok else " missing"),
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y")


def tracefs_root() -> Path | None:
    for p in TRACEFS:
        try:
            if (p / "events" / "syscalls").is_dir():
                return p
        except PermissionError:  # tracefs is root's: without root it is as good as absent
            continue
    return None


def check_tracefs() -> Check:
    root = tracefs_root()
    return Check("tracefs", root is not None, f"mounted at {root}" if root else "not mounted (or not readable: run as root)",
                 "mount -t tracefs nodev /sys/kernel/tracing  (or: make setup)")


def check_headers() -> Check:
    build = Path(f"/lib/modules/{platform.release()}/build")
    ok = (build / "include").is_dir()
    detail = f"{build} -> {os.path.realpath(build)}" if ok else f"{build} missing"
    return Check("kernel headers", ok, detail,
                 "apt-get install linux-headers-amd64 and link them there (make setup does both)")


def check_bcc() -> Check:
    from capture.bcclib import import_bcc

    try:
        bcc = import_bcc()
    except ImportError as e:
        return Check("BCC", False, f"not importable ({e})",
                     "apt-get install python3-bpfcc and make it visible to the venv (make setup)")
    version = getattr(bcc, "__version__", "unknown")
    return Check("BCC", True, f"bcc {version} ({Path(bcc.__file__).parent})")


def check_ringbuf() -> Check:
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    ok = (major, minor) >= (5, 8)
    return Check("BPF ring buffer", ok, f"kernel {platform.release()}", "needs Linux 5.8 or newer")


def check_kprobes() -> Check:
    root = tracefs_root()
    present = bool(root and (root / "kprobe_events").exists())
    return Check("kprobes", True, "available (not needed)" if present else
                 "absent — fine: Guardian uses tracepoints and uprobes only", required=False)


def check_uprobes() -> Check:
    root = tracefs_root()
    ok = bool(root and (root / "uprobe_events").exists())
    return Check("uprobes", ok, "available" if ok else "unavailable",
                 "needed for TLS capture: a kernel with CONFIG_UPROBE_EVENTS=y", required=False)


def _grpcio_boringssl() -> str:
    """Whether the BoringSSL inside this Python's grpcio (no symbols) is located."""
    import glob
    import importlib.util

    from capture.tls import elf

    spec = importlib.util.find_spec("grpc")
    paths = glob.glob(os.path.join(os.path.dirname(spec.origin), "_cython", "cygrpc*.so")) if spec else []
    if not paths:
        return "grpcio: not installed here"
    found = elf.inspect(paths[0])
    if found is None or found.ssl is None:
        return f"grpcio: no BoringSSL found in {paths[0]}"
    return f"grpcio's BoringSSL: {found.ssl.problem or 'located'}"


def check_tls() -> Check:
    """Which TLS stacks the uprobes can read plaintext from on this host (capture/tls)."""
    import glob

    from capture.tls import elf

    libs = sorted({p for pat in ("/usr/lib/x86_64-linux-gnu/libssl.so.*", "/usr/lib64/libssl.so.*")
                   for p in glob.glob(pat)})
    found = [p for p in libs if (f := elf.inspect(p)) is not None and f.ssl is not None]
    detail = (f"OpenSSL: {', '.join(found) or 'no libssl found'}; {_grpcio_boringssl()}; "
              "node and binaries that export "
              "SSL_*: yes; Go crypto/tls (go1.17+, amd64): yes, stripped binaries (-ldflags=\"-s -w\", "
              "strip) too, located through .gopclntab; BoringSSL without symbols in grpcio: located "
              "by its code (refused when ambiguous, the log says so); not captured, their "
              "ciphertext skipped: Go before 1.17 (stack ABI), Go files without section headers "
              "(sstrip, packed), other BoringSSL builds without symbols")
    return Check("TLS plaintext", bool(found), detail,
                 "apt-get install libssl3 for dynamically linked OpenSSL programs", required=False)


CHECKS = (check_privileges, check_btf, check_tracefs, check_headers, check_bcc, check_ringbuf,
          check_kprobes, check_uprobes, check_tls)


OPTIONAL_CHECKS = (check_kprobes, check_uprobes, check_tls)  # their Check has required=False


def run_checks() -> list[Check]:
    return [c() for c in CHECKS]


def require_ebpf() -> None:
    """Raise CaptureUnavailable listing each failed prerequisite and its fix. Runs only the
    checks that can fail the start (check_tls reads ELF files: seconds, and never required)."""
    failed = [c for c in (check() for check in CHECKS if check not in OPTIONAL_CHECKS)
              if c.required and not c.ok]
    if failed:
        lines = [f"  - {c.name}: {c.detail}. Fix: {c.fix}" for c in failed]
        raise CaptureUnavailable("eBPF capture cannot run here:\n" + "\n".join(lines))
