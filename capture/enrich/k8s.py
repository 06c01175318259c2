"""Kubernetes identity: watch the pods of this node and index them by container id.

Uses the official kubernetes client (list, then watch; re-list on any error). Works with
in-cluster config or a kubeconfig; outside Kubernetes nothing here is started.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

log = logging.getLogger(__name__)


def _owner_keys(meta: dict[str, Any]) -> dict[str, str]:
    """k8s.<workload>.name from ownerReferences (ReplicaSet → its Deployment by name)."""
    out: dict[str, str] = {}
    labels = meta.get("labels") or {}
    for ref in meta.get("ownerReferences") or meta.get("owner_references") or []:
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ReplicaSet":
            out["k8s.replicaset.name"] = name
            suffix = labels.get("pod-template-hash")
            if suffix and name.endswith("-" + suffix):
                out["k8s.deployment.name"] = name[: -len(suffix) - 1]
            elif "-" in name:
                out["k8s.deployment.name"] = name.rsplit("-", 1)[0]
        elif kind in ("StatefulSet", "DaemonSet", "Job", "Deployment", "CronJob"):
            out[f"k8s.{kind.lower()}.name"] = name
    return out


def pod_resources(pod: dict[str, Any]) -> dict[str, dict[str, str]]:
    """container id → resource attributes of that container, from one pod object (API JSON)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    base = {"k8s.pod.name": meta.get("name", ""), "k8s.namespace.name": meta.get("namespace", ""),
            "k8s.node.name": spec.get("nodeName", "")}
    if meta.get("uid"):
        base["k8s.pod.uid"] = meta["uid"]
    base.update(_owner_keys(meta))
    out = {}
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        cid = (cs.get("containerID") or "").split("://")[-1]
        if cid:
            out[cid] = {**base, "k8s.container.name": cs.get("name", "")}
    return out


class PodIndex:
    """container id → k8s attributes, kept current by PodWatcher; safe to read from any thread."""

    def __init__(self) -> None:
        self._by_container: dict[str, dict[str, str]] = {}
        self._by_pod: dict[tuple[str, str], list[str]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()

    def get(self, container_id: str) -> dict[str, str] | None:
        return self._by_container.get(container_id)

    def upsert(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        found = pod_resources(pod)
        with self._lock:
            for cid in self._by_pod.pop(key, []):
                self._by_container.pop(cid, None)
            self._by_container.update(found)
            self._by_pod[key] = list(found)

    def remove(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        with self._lock:
            for cid in self._by_pod.pop((meta.get("namespace", ""), meta.get("name", "")), []):
                self._by_container.pop(cid, None)

    def replace_all(self, pods: list[dict[str, Any]]) -> None:
        with self._lock:
            self._by_container.clear()
            self._by_pod.clear()
        for pod in pods:
            self.upsert(pod)


class PodWatcher:
    """Background thread: list + watch pods with spec.nodeName == node into a PodIndex."""

    def __init__(self, api_client: Any, node_name: str | None = None, index: PodIndex | None = None,
                 read_timeout_s: float = 30.0):
        from kubernetes import client

        self.v1 = client.CoreV1Api(api_client)
        self.api_client = api_client
        self.node = node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        self.index = index or PodIndex()
        self.read_timeout_s = read_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="k8s-pod-watch", daemon=True)

    def start(self) -> "PodWatcher":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _pods(self, items: list[Any]) -> list[dict[str, Any]]:
        pods = [self.api_client.sanitize_for_serialization(p) for p in items]
        # Filter here too: not every API server (or emulator) honours field selectors.
        return [p for p in pods if (p.get("spec") or {}).get("nodeName") == self.node]

    def _run(self) -> None:
        from kubernetes import watch

        selector = f"spec.nodeName={self.node}"
        while not self._stop.is_set():
            try:
                listed = self.v1.list_pod_for_all_namespaces(
                    field_selector=selector, _request_timeout=self.read_timeout_s)
                self.index.replace_all(self._pods(listed.items))
                self.index.synced.set()
                w = watch.Watch()
                for ev in w.stream(self.v1.list_pod_for_all_namespaces, field_selector=selector,
                                   resource_version=listed.metadata.resource_version,
                                   _request_timeout=self.read_timeout_s):
                    if self._stop.is_set():
                        w.stop()
                        break
                    for pod in self._pods([ev["object"]]):
                        if ev["type"] == "DELETED":
                            self.index.remove(pod)
                        else:
                            self.index.upsert(pod)
            except Exception as e:  # noqa: BLE001 - any API/network error: back off, re-list
                if not self._stop.is_set():
                    log.debug("pod watch restarting: %s", e)
                    self._stop.wait(1.0)


def connect(kubeconfig: str | None = None) -> Any:
    """An ApiClient from in-cluster config, else the given/default kubeconfig."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=kubeconfig)
