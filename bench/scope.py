"""What an agent scoped elsewhere costs an HTTPS server outside its scope: nginx (OpenSSL) and a
Go crypto/tls server in the host's namespace at saturation (wrk), with no agent, with an unscoped
agent, and with an agent scoped to another network namespace (an empty one this command makes)
or --cgroup (an empty cgroup v2 directory), in one command. A scoped agent puts TLS uprobes into
its scope's processes only and drops other processes' syscalls at its kernel check
(bpf/scope.h), so the server outside should keep its baseline throughput and CPU per request.
Each round runs baseline, unscoped, scoped, baseline again; ratios are against the mean of the
round's two baselines, with the load average beside each run.

Run as root: .venv/bin/python -m bench.scope [--seconds 10] [--connections 8] [--repeat 3]
             [--cgroup] [--only nginx_openssl|go_crypto_tls] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import uuid

import bench.capture as capture
from bench.capture import agent, wrk
from bench.tls import foreign_tls_probes, load, saturate, server_rounds
from support.cgroups import temp_cgroup

READY_S = 600  # BCC compiles at start: minutes on a host shared with other builds


def run_phase(kind: str, url: str, port: int, seconds: int, conns: int, server_pid: int,
              scope_args: list[str]) -> dict:
    if kind == "baseline":
        return {"saturation": saturate(url, seconds, conns, server_pid), "load": load(),
                "foreign_tls_probes": foreign_tls_probes()}
    capture.AGENT_ARGS[:] = scope_args if kind == "scoped_elsewhere" else []
    with agent(port, ready_s=READY_S) as cap:
        at, foreign = load(), foreign_tls_probes(port)
        sat = saturate(url, seconds, conns, server_pid)
    return {"saturation": sat, "agent": cap, "load": at, "foreign_tls_probes": foreign}


def measure(url: str, port: int, seconds: int, conns: int, server_pid: int, scope_args: list[str]) -> dict:
    wrk(url, 2, conns)  # warm up: TLS sessions, page cache
    out = {kind: run_phase(kind, url, port, seconds, conns, server_pid, scope_args)
           for kind in ("baseline", "unscoped", "scoped_elsewhere")}
    out["baseline_after"] = run_phase("baseline", url, port, seconds, conns, server_pid, scope_args)
    base_rps = (out["baseline"]["saturation"]["rps"] + out["baseline_after"]["saturation"]["rps"]) / 2
    base_cpu = (out["baseline"]["saturation"]["server_cpu_us_per_request"]
                + out["baseline_after"]["saturation"]["server_cpu_us_per_request"]) / 2
    for kind in ("unscoped", "scoped_elsewhere"):
        r = out[kind]
        r["throughput_ratio"] = round(r["saturation"]["rps"] / base_rps, 3)
        r["server_cpu_ratio"] = round(r["saturation"]["server_cpu_us_per_request"] / max(base_cpu, 1e-9), 3)
    return out


def summary(name: str, r: dict) -> str:
    if "baseline" not in r:
        return f"{name}: {r}"
    b, a = r["baseline"], r["baseline_after"]
    lines = [f"{name} baseline: {b['saturation']['rps']:.0f} / {a['saturation']['rps']:.0f} req/s (before / after), "
             f"server CPU {b['saturation']['server_cpu_us_per_request']} / "
             f"{a['saturation']['server_cpu_us_per_request']} us/request; load {b['load']} / {a['load']}"]
    for kind in ("unscoped", "scoped_elsewhere"):
        x = r[kind]
        lines.append(f"  {kind}: ratio {x['throughput_ratio']:.3f} ({x['saturation']['rps']:.0f} req/s), server CPU "
                     f"{x['saturation']['server_cpu_us_per_request']} us/request (x{x['server_cpu_ratio']:.2f}); "
                     f"spans {x['agent']['server_spans']}+{x['agent']['client_spans']}; TLS probes "
                     f"{x['agent'].get('tls_probes')}; scope_skipped {x['agent'].get('scope_skipped')}; "
                     f"agent {x['agent'].get('agent_cpu_pct', 0):.0f} %; load {x['load']}; "
                     f"foreign TLS probe links {sum(x['foreign_tls_probes'].values())}")
    return "\n".join(lines)


def _rounds(args, scope_args: list[str]) -> list[dict]:
    return server_rounds(args, lambda url, port, pid: measure(url, port, args.seconds, args.connections,
                                                              pid, scope_args),
                         summary, first={"scope": scope_args})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1, help="run the whole sequence this many times")
    ap.add_argument("--cgroup", action="store_true", help="scope the agent to an empty cgroup, not a netns")
    ap.add_argument("--only", choices=["go_crypto_tls", "nginx_openssl"])
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    args = ap.parse_args()
    if args.cgroup:
        with temp_cgroup("guardian-bench-scope") as (path, _):
            rounds = _rounds(args, ["--cgroup", path])
    else:
        ns = f"gbench-scope-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            rounds = _rounds(args, ["--netns", f"/var/run/netns/{ns}"])
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    print(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    main()
