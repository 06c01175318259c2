"""Live eBPF capture of a real Go gRPC server (Debian etcd) driven by etcdctl."""
from __future__ import annotations

import subprocess

import pytest

from support.live import live_capture

pytestmark = pytest.mark.ebpf


def etcdctl(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["etcdctl", f"--endpoints=127.0.0.1:{port}", *args], capture_output=True, text=True,
                          timeout=30, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def traffic(etcd_server):
    port = etcd_server["port"]
    with live_capture(port=port, extra=("--no-tls",)) as cap:
        assert etcdctl(port, "put", "/guardian/k", "v1").returncode == 0
        assert etcdctl(port, "get", "/guardian/k").stdout.split() == ["/guardian/k", "v1"]
        assert etcdctl(port, "del", "/guardian/k").stdout.strip() == "1"
        bad = etcdctl(port, "lease", "revoke", "1234abcd")  # no such lease: a gRPC error
        assert bad.returncode != 0
    return cap


def kv_calls(cap, kind):
    return [s for s in cap.spans if s["kind"] == kind and s["attributes"].get("rpc.service", "").startswith("etcdserverpb.")]


def test_etcdctl_calls_are_grpc_spans(traffic):
    clients = kv_calls(traffic, "CLIENT")
    methods = [s["attributes"]["rpc.method"] for s in clients if s["attributes"]["rpc.service"] in
               ("etcdserverpb.KV", "etcdserverpb.Lease")]
    assert sorted(methods) == ["DeleteRange", "LeaseRevoke", "Put", "Range"], [s["name"] for s in clients]
    for s in clients:
        assert s["attributes"]["rpc.system"] == "grpc" and s["attributes"]["network.protocol.version"] == "2"
    revoke = next(s for s in clients if s["attributes"]["rpc.method"] == "LeaseRevoke")
    assert revoke["status_code"] == "ERROR" and revoke["attributes"]["rpc.grpc.status_code"] == 5
    assert all(s["status_code"] == "UNSET" for s in clients if s["attributes"]["rpc.method"] != "LeaseRevoke")


def test_server_side_matches(traffic):
    servers = [s["attributes"]["rpc.method"] for s in kv_calls(traffic, "SERVER")]
    assert sorted(m for m in servers if m in ("Put", "Range", "DeleteRange", "LeaseRevoke")) == [
        "DeleteRange", "LeaseRevoke", "Put", "Range"]
