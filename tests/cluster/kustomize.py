"""Render deploy/ kustomizations as kubectl would for what they use: resources (files and
directories), namespace, and strategic-merge patches (lists of named items merged by name,
null deleting a key). Anything else in a kustomization is refused, so the tests notice."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

KNOWN = {"apiVersion", "kind", "namespace", "resources", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def _merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(
            isinstance(x, dict) and "name" in x for x in base + patch):
        out = [dict(x) for x in base]
        for item in patch:
            for i, x in enumerate(out):
                if x["name"] == item["name"]:
                    out[i] = _merge(x, item)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def render(directory: Path) -> list[dict]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - KNOWN
    assert not unknown, f"{directory}: kustomization fields this renderer does not know: {unknown}"
    docs: list[dict] = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for p in k.get("patches", []):
        patch = yaml.safe_load((directory / p["path"]).read_text())
        hits = [i for i, d in enumerate(docs) if d["kind"] == patch["kind"]
                and d["metadata"]["name"] == patch["metadata"]["name"]]
        assert len(hits) == 1, f"patch {p['path']} matches {len(hits)} resources"
        docs[hits[0]] = _merge(docs[hits[0]], patch)
    if k.get("namespace"):
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = k["namespace"]
    return docs
