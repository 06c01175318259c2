"""Live eBPF capture of a Node client's kept-alive HTTP/1 connection to a Go server.

Every CLIENT span must contain the SERVER span of the same request (cause before effect on
the shared clock) and carry its path, on one long-lived connection with varying latency.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from support.live import free_port, live_capture
from support.ports import wait_port

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

KASERVER = Path(__file__).with_name("kaserver")
WORKERS, N = 8, 100

# Sequential calls over one kept-alive socket per worker (an agent each, maxSockets 1), GETs
# and POSTs whose body is a separate write as in a service's handler; the path carries the
# call's number. Several workers at once: a busy host is where a peer reads a write before
# the writer's syscall has returned.
NODE_CLIENT = textwrap.dedent("""
    const http = require('http');
    const [port, workers, n] = process.argv.slice(1).map(Number);
    function call(agent, w, i) {
      const method = i % 3 === 1 ? 'POST' : 'GET';
      const path = `/req/${w}-${i}?work=${[0, 2, 0, 1, 3][i % 5]}&d=${[0, 1, 5, 0, 2, 10][i % 6]}`;
      return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, method, path, agent,
          headers: method === 'POST' ? { 'Content-Type': 'application/json', 'Content-Length': 2 } : {} },
          (res) => {
            const local = res.socket.localPort;
            let body = '';
            res.on('data', (c) => { body += c; });
            res.on('end', () => resolve([res.statusCode, JSON.parse(body).path, local]));
          });
        req.on('error', reject);
        if (method === 'POST') req.write('{}');
        req.end();
      });
    }
    async function worker(w) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const ports = new Set();
      for (let i = 0; i < n; i++) {
        const [status, path, local] = await call(agent, w, i);
        if (status !== 200 || path !== `/req/${w}-${i}`) throw new Error(`call ${w}-${i}: ${status} ${path}`);
        ports.add(local);
      }
      agent.destroy();
      return [...ports];
    }
    Promise.all([...Array(workers).keys()].map(worker))
      .then((ports) => console.log(JSON.stringify({ ports })))
      .catch((e) => { console.error(e); process.exit(1); });
""")


def build_server(out: Path) -> Path:
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": str(out.parent / "gocache"),
           "GOPATH": str(out.parent / "gopath"), "CGO_ENABLED": "0", "GOPROXY": "off"}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=KASERVER, env=env, check=True, capture_output=True,
                   timeout=240)
    return out


def test_node_keepalive_client_spans_contain_their_server_spans(tmp_path):
    server_bin = build_server(tmp_path / "kaserver")
    port = free_port()
    server = subprocess.Popen([str(server_bin), str(port)], stderr=subprocess.PIPE)
    try:
        wait_port(port)
        with live_capture(port=port) as cap:
            out = subprocess.run(["node", "-e", NODE_CLIENT, str(port), str(WORKERS), str(N)],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
    ports = json.loads(out.stdout)["ports"]
    assert all(len(p) == 1 for p in ports), ports  # one kept-alive connection per worker
    port_of = {w: p[0] for w, p in enumerate(ports)}
    assert len(set(port_of.values())) == WORKERS

    servers = {s["attributes"]["url.path"]: s for s in cap.spans if s["kind"] == "SERVER"}
    clients = {s["attributes"]["url.path"]: s for s in cap.spans if s["kind"] == "CLIENT"}
    expected = {f"/req/{w}-{i}" for w in range(WORKERS) for i in range(N)}
    assert set(servers) == expected, cap.stats
    assert set(clients) == expected, cap.stats
    assert len([s for s in cap.spans if s["kind"] in ("SERVER", "CLIENT")]) == 2 * WORKERS * N
    misnested = []
    for path, c in clients.items():
        s = servers[path]
        worker = int(path.split("/")[2].split("-")[0])
        assert c["attributes"]["client.port"] == s["attributes"]["client.port"] == port_of[worker]
        assert c["attributes"]["http.request.method"] == s["attributes"]["http.request.method"]
        assert c["resource"]["process.pid"] != s["resource"]["process.pid"] == server.pid
        if not (c["start_time_unix_nano"] <= s["start_time_unix_nano"]
                and s["end_time_unix_nano"] <= c["end_time_unix_nano"]):
            misnested.append((path, s["start_time_unix_nano"] - c["start_time_unix_nano"],
                              c["end_time_unix_nano"] - s["end_time_unix_nano"]))
    assert not misnested, misnested  # (path, server start - client start, client end - server end)
