"""nginx configuration for the servers tests and benchmarks start: one preamble, their own server blocks."""
from __future__ import annotations

import shutil
from pathlib import Path

API_ECHO = 'location /api/ { default_type text/plain; return 200 "ok $request_uri\\n"; }'


def binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def conf(d: Path | str, servers: list[str], connections: int = 4096) -> str:
    """A single-worker, foreground nginx keeping its pid, logs and temp files in `d`, serving `servers`
    (each the inside of a server { } block). Keep-alive is effectively endless so a benchmark's
    connections are never recycled in the middle of a run."""
    blocks = "\n".join(f"    server {{\n        {s}\n    }}" for s in servers)
    return (f"worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
            f"events {{ worker_connections {connections}; }}\n"
            f"http {{\n    access_log off;\n    keepalive_requests 1000000;\n    client_body_temp_path {d}/body;\n"
            f"{blocks}\n}}\n")
