"""What one uprobe hit costs on this kernel, by the instruction it sits on: a loop calling small
assembly functions, without a probe and with an empty BPF program attached (uprobe, uprobe +
uretprobe). The kernel emulates pushes, calls and jumps; any other instruction runs out of line,
single-stepped (a debug trap). Linux 6.18+ turns a uprobe on a 5-byte nop (USDT-style) into a call
to a trampoline and the uprobe syscall after its first hit, with no trap (the `nop5` row; OpenSSL's
and Go's probe points have no such nop). The figures are why capture/tls/elf.py places probes on
emulated instructions and what a uretprobe adds. Not here: the capture's own programs
(`python -m bench.kernel_time --tls`).

Run as root: .venv/bin/python -m bench.uprobe_cost [--calls 300000] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from support import results as bench_results

ASM = """
    .intel_syntax noprefix
    .section .note.GNU-stack,"",@progbits
    .text
    .globl f_sub, f_call, f_jcc, f_jcc_site, f_push, f_nop5
g_leaf:
    lea eax, [rdi + 1]
    ret
f_sub:                      /* like OpenSSL's SSL_read: single-stepped */
    sub rsp, 8
    lea eax, [rdi + 1]
    add rsp, 8
    ret
f_call:
    call g_leaf
    ret
f_jcc:
    test edi, edi
f_jcc_site:
    js 1f
1:  lea eax, [rdi + 1]
    ret
f_push:                     /* like ssl_read_internal */
    push rbp
    lea eax, [rdi + 1]
    pop rbp
    ret
f_nop5:                     /* a USDT probe site: 0f 1f 44 00 00, what the kernel optimizes */
    .byte 0x0f, 0x1f, 0x44, 0x00, 0x00
    lea eax, [rdi + 1]
    ret
"""

MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
int f_sub(int), f_call(int), f_jcc(int), f_push(int), f_nop5(int);
int main(int argc, char **argv) {
    int (*f)(int) = !strcmp(argv[1], "sub") ? f_sub : !strcmp(argv[1], "call") ? f_call
                  : !strcmp(argv[1], "jcc") ? f_jcc : !strcmp(argv[1], "nop5") ? f_nop5 : f_push;
    long n = atol(argv[2]);
    struct timespec a, b;
    int x = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) x = f(x) & 0xffff;
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return x == -1;
}
"""

# (loop argument, symbol probed, instruction there)
CASES = [("sub", "f_sub", "sub rsp, 8"), ("push", "f_push", "push rbp"), ("call", "f_call", "call"),
         ("jcc", "f_jcc_site", "js"), ("nop5", "f_nop5", "nop5 (0f 1f 44 00 00)")]


def build(d: Path) -> Path:
    (d / "fns.S").write_text(ASM)
    (d / "main.c").write_text(MAIN)
    out = d / "ucost"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(d / "main.c"), str(d / "fns.S")], check=True)
    return out


def per_call_ns(binary: Path, kind: str, calls: int) -> float:
    """The fastest of three runs (the host's load only ever adds)."""
    return min(float(subprocess.run([str(binary), kind, str(calls)], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(3))


def measure(calls: int) -> dict:
    from bcc import BPF

    out: dict = {"load": os.getloadavg()[0], "kernel": os.uname().release}
    with tempfile.TemporaryDirectory(prefix="bench-uprobe-") as tmp:
        binary = build(Path(tmp))
        b = BPF(text="int hit(void *ctx) { return 0; }")
        try:
            for kind, sym, insn in CASES:
                base = per_call_ns(binary, kind, calls)
                b.attach_uprobe(name=str(binary), sym=sym, fn_name="hit")
                row = {"instruction": insn, "no_probe_ns": base,
                       "uprobe_ns": round(per_call_ns(binary, kind, calls) - base, 1)}
                if sym.startswith("f_") and kind in ("sub", "push", "nop5"):  # a function entry: uretprobe too
                    b.attach_uretprobe(name=str(binary), sym=sym, fn_name="hit")
                    row["uprobe_and_uretprobe_ns"] = round(per_call_ns(binary, kind, calls) - base, 1)
                    b.detach_uretprobe(name=str(binary), sym=sym)
                b.detach_uprobe(name=str(binary), sym=sym)
                out[kind] = row
        finally:
            b.cleanup()
    out["load_after"] = os.getloadavg()[0]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=300_000)
    p.add_argument("--json", help="also write the results as JSON")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.uprobe_cost needs root", file=sys.stderr)
        return 2
    out = measure(args.calls)
    print(json.dumps(out, indent=1))
    if args.json:
        bench_results.write(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
