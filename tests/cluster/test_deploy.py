"""deploy/: every rendered manifest validates against the Kubernetes schemas; the agent gets
only the capabilities eBPF needs and the mounts BCC needs; RBAC is read-only on the four
resources; every container has limits; both overlays point the hub at a ClickHouse."""
from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from tests.cluster.kustomize import render

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
OVERLAYS = ["external-clickhouse", "bundled-clickhouse"]
K8S_VERSIONS = ["1.30.0", "1.33.0"]


def by_kind(docs, kind, name=None):
    out = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert out, (kind, name)
    return out[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates(overlay, version):
    docs = render(DEPLOY / "overlays" / overlay)
    assert len(docs) >= 8
    for d in docs:
        kubernetes_validate.validate(d, version, strict=True)  # raises on any schema error


def test_a_broken_manifest_is_caught():
    ds = by_kind(render(DEPLOY / "base"), "DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = "BPF"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[0], strict=True)


def test_agent_daemonset_has_only_what_ebpf_needs():
    ds = by_kind(render(DEPLOY / "base"), "DaemonSet", "guardian-agent")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and "hostNetwork" not in pod
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE", "NET_ADMIN",
                                              "SYS_PTRACE"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ("/sys/kernel/tracing", "/sys/kernel/btf", "/lib/modules", "/usr/src"):
        assert mounts[path].get("readOnly") is True
    assert "/var/lib/guardian" in mounts  # the on-disk export queue outlives the pod
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts["/sys/kernel/btf"]["name"]]["hostPath"]["path"] == "/sys/kernel/btf"
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["GUARDIAN_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "guardian-tokens"


def test_every_container_has_requests_and_limits():
    for overlay in OVERLAYS:
        for d in render(DEPLOY / "overlays" / overlay):
            if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
                for c in d["spec"]["template"]["spec"]["containers"]:
                    assert {"cpu", "memory"} <= set(c["resources"]["limits"]), (d["metadata"]["name"], c["name"])
                    assert {"cpu", "memory"} <= set(c["resources"]["requests"])


def test_rbac_reads_pods_nodes_services_replicasets_and_nothing_else():
    role = by_kind(render(DEPLOY / "base"), "ClusterRole")
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("", "pods"), ("", "nodes"), ("", "services"), ("apps", "replicasets")}
    assert all(set(rule["verbs"]) == {"get", "list", "watch"} for rule in role["rules"])


def test_hub_store_and_tokens():
    ext = by_kind(render(DEPLOY / "overlays" / "external-clickhouse"), "Deployment", "guardian-hub")
    env = {e["name"]: e for e in ext["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GUARDIAN_HUB_STORE"]["valueFrom"]["secretKeyRef"] == {"name": "guardian-tokens", "key": "store-url"}
    docs = render(DEPLOY / "overlays" / "bundled-clickhouse")
    hub = by_kind(docs, "Deployment", "guardian-hub")
    env = {e["name"]: e for e in hub["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GUARDIAN_HUB_STORE"] == {"name": "GUARDIAN_HUB_STORE",
                                         "value": "clickhouse://guardian@guardian-clickhouse.guardian.svc:8123/guardian"}
    assert env["GUARDIAN_API_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "api-token"
    svc = by_kind(docs, "Service", "guardian-clickhouse")
    assert svc["spec"]["ports"][0]["port"] == 8123
    ports = {p["name"]: p["port"] for p in by_kind(docs, "Service", "guardian-hub")["spec"]["ports"]}
    assert ports == {"api": 8080, "otlp-grpc": 4317, "otlp-http": 4318}
    from capture.store.factory import is_clickhouse_url
    assert is_clickhouse_url(env["GUARDIAN_HUB_STORE"]["value"])
    # the agent ships to the hub's OTLP/HTTP port through the Service
    import yaml
    cfg = yaml.safe_load(by_kind(docs, "ConfigMap", "guardian-agent")["data"]["agent.yaml"])
    assert cfg["export"]["otlp_endpoint"] == "http://guardian-hub.guardian.svc:4318"
    assert cfg["export"]["queue_dir"].startswith("/var/lib/guardian")


def test_agent_config_in_the_configmap_loads():
    import yaml

    from capture.config import load_config

    cm = by_kind(render(DEPLOY / "base"), "ConfigMap", "guardian-agent")
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(cm["data"]["agent.yaml"])
        f.flush()
        cfg = load_config(f.name, env={"GUARDIAN_K8S_NODE_NAME": "node-a"})
    assert cfg.export.queue_dir == "/var/lib/guardian/queue" and cfg.k8s.node_name == "node-a"
    assert yaml.safe_load(cm["data"]["agent.yaml"])["export"]["otlp_protocol"] == "http"
