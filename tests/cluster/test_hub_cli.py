"""`guardian hub` as a process: OTLP/HTTP in, spans in its store (chDB file), its counters in
/metrics next to the API's, SIGTERM exits 0, and `guardian investigate --store` reads the store."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from capture.export.otlp_proto import encode
from tests.cluster.test_shipping import free_port, spans

ROOT = Path(__file__).resolve().parents[2]


def test_hub_process_receives_stores_and_reports(tmp_path):
    api, otlp = free_port(), free_port()
    store = f"chdb://{tmp_path / 'ch'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "guardian.cli.main", "hub", "--store", store,
                             "--otlp-host", "127.0.0.1", "--otlp-grpc-port", "0", "--otlp-http-port", str(otlp),
                             "--port", str(api), "--link-window", "0.5"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "ready" in line:
                break
        now = time.time_ns()
        sent = spans(300, t0=now - 10**9)
        r = httpx.post(f"http://127.0.0.1:{otlp}/v1/traces", content=encode(sent),
                       headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 200
        assert httpx.post(f"http://127.0.0.1:{otlp}/v1/traces", content=b"\x00garbage",
                          headers={"Content-Type": "application/x-protobuf"}).status_code == 400
        deadline = time.monotonic() + 30
        metrics = ""
        while time.monotonic() < deadline:
            metrics = httpx.get(f"http://127.0.0.1:{api}/metrics").text
            if "guardian_hub_spans_stored_total 300.0" in metrics:
                break
            time.sleep(0.3)
        assert "guardian_hub_spans_stored_total 300.0" in metrics
        assert "guardian_hub_malformed_requests_total 1.0" in metrics
        assert httpx.get(f"http://127.0.0.1:{api}/healthz").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0
    out = subprocess.run([sys.executable, "-m", "guardian.cli.main", "investigate", "--store", store, "--json",
                          "--since", "1h", "what is failing?"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["root_causes"] and report["root_causes"][0]["service"] == "api"
