"""`guardian serve` as a real process: loopback-only without a token (and says so), token from env,
a store file, SIGTERM stops it cleanly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
from serving_support import free_port, seeded_store


def _serve(args: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "guardian.cli.main", "serve", "--port", str(port), *args],
                            env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 40
    while True:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "guardian serve did not come up"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    return err


def test_without_token_it_binds_loopback_and_says_so():
    env = {k: "" for k in ("GUARDIAN_API_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN")}
    proc, url = _serve(["--host", "0.0.0.0"], env)
    try:
        assert httpx.get(f"{url}/v1/services").status_code == 200  # open, but only on loopback
    finally:
        err = _stop(proc)
    assert "binding to 127.0.0.1 instead of 0.0.0.0" in err


def test_with_token_and_a_store_file(tmp_path):
    path = str(tmp_path / "spans.duckdb")
    seeded_store(path).close()
    proc, url = _serve(["--store", path], {"GUARDIAN_API_TOKEN": "s3cret"})
    try:
        assert httpx.get(f"{url}/v1/services").status_code == 401
        r = httpx.get(f"{url}/v1/services?since=30m", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and "payments" in {s["name"] for s in r.json()["services"]}
        # the store's drains of DuckDB's eviction queues (DuckDBStore.drain) on serve's own /metrics
        text = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer s3cret"}).text
        assert "guardian_store_drains_total 0.0" in text.splitlines()
    finally:
        _stop(proc)


def test_bad_config_file_is_a_clear_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("schedule:\n  cron: 'whenever'\n")
    r = subprocess.run([sys.executable, "-m", "guardian.cli.main", "serve", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "bad configuration" in r.stderr and "cron" in r.stderr


def test_a_store_file_held_by_another_process_is_a_clear_error(tmp_path):
    path = str(tmp_path / "held.duckdb")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
                               "from serving_support import seeded_store; s = seeded_store(sys.argv[1]);"
                               "print('held', flush=True); time.sleep(60)", path, os.path.dirname(__file__)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run([sys.executable, "-m", "guardian.cli.main", "serve", "--store", path,
                            "--port", str(free_port())], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and f"cannot open store {path}" in r.stderr and "Traceback" not in r.stderr
    finally:
        holder.kill()
        holder.wait(10)
