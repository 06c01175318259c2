"""A real Alertmanager (Debian's prometheus-alertmanager) on free loopback ports, for the alert tests."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import time

import httpx
from serving_support import free_port

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

CONFIG = """\
route:
  receiver: guardian
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
- name: guardian
  webhook_configs:
  - url: {webhook}
    send_resolved: true
    http_config:
      authorization:
        credentials: {token}
"""


@contextlib.contextmanager
def alertmanager(tmp_path, webhook: str, token: str):
    """Yields the base URL of a running Alertmanager whose only receiver is `webhook`."""
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(CONFIG.format(webhook=webhook, token=token))
    port = free_port()
    proc = subprocess.Popen([BINARY, f"--config.file={cfg}", f"--storage.path={tmp_path / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "alertmanager did not come up"
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
