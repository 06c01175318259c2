"""Kubernetes path: the real kubernetes client lists and watches pods served by kmock's
KubernetesEmulator over HTTP; pods carry the container ids of real cgroups of test processes."""
from __future__ import annotations

import asyncio
import secrets
import threading
import time

import kmock
import pytest
from kubernetes import client

from capture.enrich.enricher import Enricher
from capture.enrich.k8s import PodWatcher

NODE = "node-1"


@pytest.fixture
def k8s_api():
    """An ApiClient talking to a KubernetesEmulator on a free loopback port (own event loop thread)."""
    loop = asyncio.new_event_loop()
    started, box = threading.Event(), {}

    async def serve():
        box["stop"] = asyncio.Event()
        async with kmock.KubernetesEmulator() as emu, kmock.Server(emu) as srv:
            box["url"] = str(srv.url).rstrip("/")
            started.set()
            await box["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "emulator did not start"
    cfg = client.Configuration()
    cfg.host = box["url"]
    api = client.ApiClient(cfg)
    yield api
    api.close()
    loop.call_soon_threadsafe(box["stop"].set)
    thread.join(10)
    loop.close()


def pod(name: str, cid: str, node: str = NODE, owner: tuple[str, str] | None = None,
        labels: dict | None = None, container: str = "app") -> dict:
    meta = {"name": name, "namespace": "shop", "uid": name + "-uid", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": "o-" + owner[1]}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": container, "image": "img"}]},
            "status": {"containerStatuses": [{"name": container, "containerID": "containerd://" + cid,
                                              "image": "img", "imageID": "", "ready": True,
                                              "restartCount": 0}]}}


def wait_for(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def kubelet_cgroup(cid: str) -> str:
    return ("guardian-kubepods.slice/kubepods-besteffort-pod11112222.slice/"
            f"cri-containerd-{cid}.scope")


def test_pod_identity_of_real_processes(k8s_api, cgroup_process):
    v1 = client.CoreV1Api(k8s_api)
    web, db, bare, elsewhere = (secrets.token_hex(32) for _ in range(4))
    v1.create_namespaced_pod("shop", pod("web-7d9f8c-x2x9q", web, owner=("ReplicaSet", "web-7d9f8c"),
                                         labels={"pod-template-hash": "7d9f8c"}))
    v1.create_namespaced_pod("shop", pod("other-node-pod", elsewhere, node="node-2"))
    watcher = PodWatcher(k8s_api, node_name=NODE, read_timeout_s=2).start()
    try:
        assert watcher.index.synced.wait(10)
        en = Enricher(pods=watcher.index, host_name=NODE)
        with cgroup_process(kubelet_cgroup(web)) as p_web, \
                cgroup_process(kubelet_cgroup(db)) as p_db, \
                cgroup_process(kubelet_cgroup(bare)) as p_bare, \
                cgroup_process(kubelet_cgroup(elsewhere)) as p_else:
            r = en.resource(p_web.pid)
            assert {k: r[k] for k in ("service.name", "k8s.pod.name", "k8s.namespace.name",
                                      "k8s.node.name", "k8s.deployment.name", "container.id",
                                      "process.pid")} == {
                "service.name": "web", "k8s.pod.name": "web-7d9f8c-x2x9q",
                "k8s.namespace.name": "shop", "k8s.node.name": NODE, "k8s.deployment.name": "web",
                "container.id": web, "process.pid": p_web.pid}
            # A pod on another node is not watched: its container degrades to process identity.
            assert "k8s.pod.name" not in en.resource(p_else.pid)
            # Processes seen before their pod arrives get the pod once the watch delivers it.
            early = en.resource(p_db.pid)
            assert "k8s.pod.name" not in early and early["container.id"] == db
            v1.create_namespaced_pod("shop", pod("db-0", db, owner=("StatefulSet", "db")))
            v1.create_namespaced_pod("shop", pod("debug", bare, container="toolbox"))
            late = wait_for(lambda: en.resource(p_db.pid).get("k8s.pod.name") and en.resource(p_db.pid))
            assert late["service.name"] == "db" and late["k8s.statefulset.name"] == "db"
            assert wait_for(lambda: en.resource(p_bare.pid).get("k8s.pod.name")) == "debug"
            assert en.resource(p_bare.pid)["service.name"] == "toolbox"  # no workload: container name
            v1.delete_namespaced_pod("debug", "shop")
            wait_for(lambda: watcher.index.get(bare) is None)
    finally:
        watcher.stop()
