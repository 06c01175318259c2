"""A node's pods as the agent sees them: real processes in kubelet-style cgroups, pod metadata
from kmock's Kubernetes API emulator, and an agent scoped to one pod's cgroup subtree keeping
only that pod's spans (with its k8s.* identity)."""
from __future__ import annotations

import secrets

from kubernetes import client

from capture.enrich.enricher import Enricher
from capture.enrich.k8s import PodWatcher
from capture.scope import Scope
from capture.span import Span
from tests.capture.enrich.conftest import CgroupProcess
from tests.capture.enrich.test_k8s import k8s_api, pod, wait_for  # noqa: F401 - k8s_api is a fixture

NODE = "node-1"


def pod_cgroup(pod_uid: str, cid: str) -> str:
    return (f"guardian-kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_uid}.slice/"
            f"cri-containerd-{cid}.scope")


def test_scope_to_a_pod_subtree_keeps_its_spans_with_pod_identity(k8s_api):  # noqa: F811
    v1 = client.CoreV1Api(k8s_api)
    web, api = secrets.token_hex(32), secrets.token_hex(32)
    v1.create_namespaced_pod("shop", pod("web-5f6d-abcde", web, owner=("ReplicaSet", "web-5f6d")))
    v1.create_namespaced_pod("shop", pod("api-77aa-fghij", api, owner=("ReplicaSet", "api-77aa")))
    watcher = PodWatcher(k8s_api, node_name=NODE, read_timeout_s=2).start()
    try:
        assert watcher.index.synced.wait(10)
        en = Enricher(pods=watcher.index, host_name=NODE)
        with CgroupProcess(pod_cgroup("1111aaaa", web)) as p_web, CgroupProcess(pod_cgroup("2222bbbb", api)) as p_api:
            scope = Scope(cgroup="/sys/fs/cgroup/guardian-kubepods.slice/kubepods-burstable.slice/"
                                 "kubepods-burstable-pod1111aaaa.slice")
            spans = [Span(name="GET /", kind="SERVER", start_time_unix_nano=1, end_time_unix_nano=2,
                          resource=wait_for(lambda p=p: en.resource(p.pid).get("k8s.pod.name") and en.resource(p.pid)))
                     for p in (p_web, p_api)]
            kept = scope.keep(spans)
            assert [s.resource["k8s.pod.name"] for s in kept] == ["web-5f6d-abcde"]
            assert kept[0].resource["k8s.deployment.name"] == "web" and kept[0].resource["k8s.node.name"] == NODE
            # The whole node's pods (the kubepods subtree) are all in scope.
            node = Scope(cgroup="/guardian-kubepods.slice")
            assert node.allows(p_web.pid) and node.allows(p_api.pid)
    finally:
        watcher.stop()
