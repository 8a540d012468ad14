"""Turn the conformance cluster description into what kubectl prints, so tests go through the
same inventory reader as users do."""

from __future__ import annotations

import copy
from typing import Any


def kubectl_list(cluster: dict[str, Any],
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    cluster = copy.deepcopy(cluster)
    for kind, objs in (overrides or {}).items():
        for name, patch in objs.items():
            cluster[kind][name].update(patch)
    items: list[dict[str, Any]] = []
    for name, ns in sorted(cluster["namespaces"].items()):
        items.append({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": name, "labels": ns.get("labels", {})}})
    for pod in cluster["pods"].values():
        items.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod["name"], "namespace": pod["namespace"],
                         "labels": pod.get("labels", {})},
            "spec": {"serviceAccountName": "default", "containers": [
                {"name": "c", "ports": [dict(p) for p in pod.get("ports", [])]}]},
            "status": {"phase": "Running", "podIP": pod["ip"], "podIPs": [{"ip": pod["ip"]}]},
        })
    return {"apiVersion": "v1", "kind": "List", "items": items}
