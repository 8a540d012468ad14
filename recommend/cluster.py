"""What the inventory tells recommendation about workloads: their pods' labels, the other pods
of their namespace, stable names, and the cluster DNS workload.

Without an inventory, a workload is known by the labels its flow records carry (the labels
common to its pods, §1.2) and DNS is assumed to be labelled ``k8s-app: kube-dns`` in
``kube-system``, the label both kube-dns and CoreDNS deployments use upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from ingest.inventory import Inventory
from policy import Endpoint
from recommend.model import Observation
from recommend.observe import workload_key
from recommend.selectors import Choice, common_labels, selector_text, workload_selector

__all__ = ["DNS_NAMESPACE", "Cluster", "DnsPeer", "pod_workload", "stable_name"]

DNS_NAMESPACE = "kube-system"
_DNS_LABELS = (("k8s-app", "kube-dns"),)
_DNS_NAMES = ("coredns", "kube-dns", "rke2-coredns")
_NAME_CHARS = re.compile(r"[^a-z0-9.-]+")

Labels = tuple[tuple[str, str], ...]
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class DnsPeer:
    namespace: str
    choice: Choice
    warning: str | None = None


def pod_workload(ep: Endpoint) -> str:
    """A pod's workload key: ``generateName*`` as Calico's ``name_aggr``, CronJob runs merged."""
    return workload_key(f"{ep.generate_name}*" if ep.generate_name else ep.name)


def stable_name(workload: str, labels: Mapping[str, str]) -> str:
    """A readable name for a workload that survives rollouts: its prefix without the ``-*``
    and without the ReplicaSet's ``pod-template-hash`` (``frontend-864f4fcdfd-*`` with
    ``pod-template-hash: 864f4fcdfd`` → ``frontend``), in the characters a name may use."""
    base = workload.removesuffix("*").rstrip("-") or workload
    digest = labels.get("pod-template-hash")
    if digest and base.endswith(f"-{digest}"):
        base = base[: -len(digest) - 1]
    return _NAME_CHARS.sub("-", base.lower()).strip("-.") or "workload"


@dataclass(frozen=True)
class Cluster:
    """An inventory (maybe empty) seen as workloads, plus the label sets the flow records
    show per workload (``observed``), which stand in for pods the inventory does not list.
    """

    inventory: Inventory = field(default_factory=Inventory)
    observed: Mapping[tuple[str, str], tuple[Labels, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, inventory: Inventory, observations: Iterable[Observation]) -> Cluster:
        seen: dict[tuple[str, str], set[Labels]] = {}
        for o in observations:
            seen.setdefault((o.namespace, o.workload), set()).update(o.local_labels)
            if o.peer.type == "wep":
                key = (o.peer.namespace, workload_key(o.peer.name_aggr))
                seen.setdefault(key, set()).update(o.peer_labels)
        return cls(inventory, {k: tuple(sorted(v)) for k, v in sorted(seen.items())})

    @cached_property
    def _pods(self) -> dict[tuple[str, str], list[Endpoint]]:
        out: dict[tuple[str, str], list[Endpoint]] = {}
        for ep in sorted(self.inventory.endpoints, key=lambda e: e.identity):
            out.setdefault((ep.namespace, pod_workload(ep)), []).append(ep)
        return out

    def pods(self, namespace: str, workload: str) -> list[Endpoint]:
        return self._pods.get((namespace, workload), [])

    @cached_property
    def _namespaces(self) -> dict[str, list[Endpoint]]:
        """Pods per namespace, by workload then pod (``beyond`` asks once per rule)."""
        out: dict[str, list[Endpoint]] = {}
        for (ns, _), eps in sorted(self._pods.items()):
            out.setdefault(ns, []).extend(eps)
        return out

    def pods_in(self, namespace: str) -> list[Endpoint]:
        return list(self._namespaces.get(namespace, ()))

    def labels(self, namespace: str, workload: str,
               seen: Iterable[Labels]) -> dict[str, str]:
        """The labels common to the workload's pods in the inventory, else to its records."""
        pods = self.pods(namespace, workload)
        if pods:
            return common_labels(dict(p.labels) for p in pods)
        return common_labels(dict(s) for s in seen)

    def choice(self, namespace: str, workload: str, seen: Iterable[Labels]) -> Choice:
        """The workload's stable selector, narrow enough to leave its namespace's other
        workloads out (those the inventory lists, and those the records show)."""
        key = (namespace, workload, tuple(seen))
        found = self._choices.get(key)
        if found is None:
            found = self._choices[key] = self._choice(namespace, workload, key[2])
        return found

    @cached_property
    def _choices(self) -> dict[tuple[str, str, tuple[Labels, ...]], Choice]:
        return {}

    @cached_property
    def _pods_of(self) -> dict[str, list[tuple[str, list[Endpoint]]]]:
        return _per_namespace(self._pods)

    @cached_property
    def _observed_of(self) -> dict[str, list[tuple[str, tuple[Labels, ...]]]]:
        return _per_namespace(self.observed)

    def _choice(self, namespace: str, workload: str, seen: tuple[Labels, ...]) -> Choice:
        labels = self.labels(namespace, workload, seen)
        others = [dict(p.labels) for wl, eps in self._pods_of.get(namespace, ())
                  if wl != workload for p in eps]
        others += [common_labels(dict(s) for s in sets)
                   for wl, sets in self._observed_of.get(namespace, ())
                   if wl != workload and (namespace, wl) not in self._pods]
        return workload_selector([labels], others)

    def dns_peer(self) -> DnsPeer:
        """The cluster DNS workload as the inventory labels it."""
        pods = self.pods_in(DNS_NAMESPACE)
        if any(set(_DNS_LABELS) <= set(p.labels) for p in pods):
            return DnsPeer(DNS_NAMESPACE, Choice(_DNS_LABELS, selector_text(_DNS_LABELS)))
        named = [p for p in pods if p.name.startswith(_DNS_NAMES)]
        if named:
            others = [dict(p.labels) for p in pods if p not in named]
            return DnsPeer(DNS_NAMESPACE,
                           workload_selector([dict(p.labels) for p in named], others))
        why = ("the inventory lists no DNS pods in kube-system" if self.inventory.endpoints
               else "no inventory given")
        return DnsPeer(DNS_NAMESPACE, Choice(_DNS_LABELS, selector_text(_DNS_LABELS)),
                       f"DNS rule assumes CoreDNS labelled k8s-app: kube-dns in kube-system "
                       f"({why})")


def _per_namespace(by_workload: Mapping[tuple[str, str], V]) -> dict[str, list[tuple[str, V]]]:
    """``{(namespace, workload): value}`` as ``{namespace: [(workload, value), ...]}``, in the
    mapping's order (a workload's selector is chosen against its namespace's others)."""
    out: dict[str, list[tuple[str, V]]] = {}
    for (ns, wl), value in by_workload.items():
        out.setdefault(ns, []).append((wl, value))
    return out
