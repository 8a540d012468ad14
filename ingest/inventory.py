"""The cluster inventory, from what ``kubectl get namespaces,pods,services,serviceaccounts -A
-o json`` prints: a ``kind: List`` of Namespace, Pod, Service and ServiceAccount objects.

Pure: :meth:`Inventory.from_text` takes the text; the CLI reads files. Pods become
:class:`policy.endpoints.Endpoint` values (labels, IPs from ``status.podIP``/``podIPs``, named
container ports, service account, ``generateName``); host-network pods are not Calico workload
endpoints and are left out, as Calico leaves them out.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import yaml

from policy import DocumentError, Endpoint, FieldReader, LabelSet, NamedPortDef
from policy.endpoints import IpAddress
from policy.rules import protocol_number

__all__ = ["Inventory", "InventoryError", "Service", "ServicePort"]


class InventoryError(DocumentError):
    """An inventory object that is not what Kubernetes would print."""


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: int
    target_port: int | str


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    cluster_ips: tuple[IpAddress, ...]
    ports: tuple[ServicePort, ...]
    selector: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Inventory:
    namespaces: Mapping[str, LabelSet] = field(default_factory=dict)
    endpoints: tuple[Endpoint, ...] = ()
    services: tuple[Service, ...] = ()
    owners: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # pod → (kind, name)
    # pod → metadata.creationTimestamp (Unix seconds): which pod held a reused IP when.
    created: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str, source: str = "<string>") -> Inventory:
        try:
            is_json = text.lstrip().startswith(("{", "["))
            data = json.loads(text) if is_json else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise InventoryError(source, None, "", str(e).splitlines()[0],
                                 "is not valid JSON or YAML (expected kubectl get -o json output)"
                                 ) from e
        items = data if isinstance(data, list) else (data or {}).get("items", [data])
        return cls.from_objects(items, source)

    @classmethod
    def from_objects(cls, items: Iterable[Any], source: str = "<string>") -> Inventory:
        by_kind: dict[str, list[tuple[FieldReader, Mapping[str, Any]]]] = {}
        for i, obj in enumerate(items):
            r = FieldReader(source, None, f"items[{i}].", InventoryError)
            m = r.mapping(obj, "")
            kind = r.enum(m.get("kind"), "kind", ("Namespace", "Pod", "Service", "ServiceAccount"))
            by_kind.setdefault(kind, []).append((r, m))
        namespaces = {name: LabelSet(labels) for name, labels in
                      (_namespace(r, m) for r, m in by_kind.get("Namespace", []))}
        sas = dict(_service_account(r, m) for r, m in by_kind.get("ServiceAccount", []))
        endpoints, owners, created = [], {}, {}
        for r, m in by_kind.get("Pod", []):
            ep, owner = _pod(r, m, namespaces, sas)
            if ep is not None:
                endpoints.append(ep)
                if owner:
                    owners[ep.identity] = owner
                stamp = _timestamp(r, m["metadata"].get("creationTimestamp"),
                                   "metadata.creationTimestamp")
                if stamp is not None:
                    created[ep.identity] = stamp
        services = tuple(_service(r, m) for r, m in by_kind.get("Service", []))
        return cls(namespaces, tuple(endpoints), services, owners, created)

    def merged(self, other: Inventory) -> Inventory:
        """Union of two snapshots; the later one (``other``) wins for the same object."""
        eps = {e.identity: e for e in self.endpoints} | {e.identity: e for e in other.endpoints}
        svcs = {(s.namespace, s.name): s for s in self.services} | {
            (s.namespace, s.name): s for s in other.services}
        return Inventory({**self.namespaces, **other.namespaces}, tuple(eps.values()),
                         tuple(svcs.values()), {**self.owners, **other.owners},
                         {**self.created, **other.created})

    def endpoint(self, identity: str) -> Endpoint | None:
        """The pod ``namespace/name``; for an aggregated name (``namespace/prefix-*``, as
        flow logs write a replica set's pods), one pod of that prefix when all of them agree
        on what policies read beyond labels (service account and its labels, named ports):
        pods of one pod template always do. None when they differ, or none is known."""
        found = self._by_name.get(identity)
        if found is not None or not identity.endswith("*"):
            return found
        return self._by_prefix.get(identity)

    @cached_property
    def _by_prefix(self) -> dict[str, Endpoint | None]:
        groups: dict[str, list[Endpoint]] = {}
        for e in self.endpoints:
            if e.generate_name:
                groups.setdefault(f"{e.namespace}/{e.generate_name}*", []).append(e)
        out: dict[str, Endpoint | None] = {}
        for key, pods in groups.items():
            facts = {(p.service_account, p.service_account_labels, p.named_ports)
                     for p in pods}
            out[key] = pods[0] if len(facts) == 1 else None
        return out

    def endpoint_for_ip(self, ip: IpAddress) -> Endpoint | None:
        return self._by_ip.get(ip)

    def endpoints_with_ip(self, ip: IpAddress) -> tuple[Endpoint, ...]:
        """Every pod that held ``ip`` in any snapshot."""
        return tuple(self._all_by_ip.get(ip, ()))

    def endpoint_at(self, ip: IpAddress, when: float) -> Endpoint | None:
        """The pod that held ``ip`` at Unix time ``when``: of the pods with that IP in any
        snapshot, the one created last at or before ``when`` (the earliest if all came later;
        pods without a creation time count as created at the epoch)."""
        pods = self._all_by_ip.get(ip)
        if not pods:
            return None
        if len(pods) == 1:
            return pods[0]
        stamps = [self.created.get(p.identity, 0.0) for p in pods]
        before = [(t, p.identity, p) for t, p in zip(stamps, pods, strict=True) if t <= when]
        if before:
            return max(before, key=lambda x: (x[0], x[1]))[2]
        return min(zip(stamps, (p.identity for p in pods), pods, strict=True))[2]

    def timeline(self, ip: IpAddress) -> tuple[list[float], list[Endpoint]]:
        """The pods that held ``ip``, by creation time (then identity): ``endpoint_at(ip, t)``
        is ``pods[max(0, bisect_right(stamps, t) - 1)]``."""
        pods = sorted(self._all_by_ip.get(ip, ()),
                      key=lambda p: (self.created.get(p.identity, 0.0), p.identity))
        return [self.created.get(p.identity, 0.0) for p in pods], pods

    def services_for_ip(self, ip: IpAddress) -> tuple[Service, ...]:
        return tuple(s for s in self.services if ip in s.cluster_ips)

    def backends(self, ip: IpAddress, port: int, protocol: int
                 ) -> tuple[Service, ServicePort, tuple[tuple[Endpoint, int], ...]] | None:
        """What kube-proxy DNATs ``ip:port/protocol`` to, when ``ip`` is a ClusterIP with that
        service port: the service, its port and ``(pod, target port)`` for every ready-looking
        backend (pods of the service's namespace matching its selector, with an IP; a named
        targetPort resolved on each pod). ``None`` when nothing is DNATed."""
        for svc in self.services_for_ip(ip):
            for sp in svc.ports:
                if sp.port == port and sp.protocol == protocol and svc.selector:
                    return svc, sp, tuple(_backends(self.endpoints, svc, sp))
        return None

    @cached_property
    def _by_name(self) -> dict[str, Endpoint]:
        return {e.identity: e for e in self.endpoints}

    @cached_property
    def _by_ip(self) -> dict[IpAddress, Endpoint]:
        return {ip: e for e in self.endpoints for ip in e.ips}

    @cached_property
    def _all_by_ip(self) -> dict[IpAddress, list[Endpoint]]:
        out: dict[IpAddress, list[Endpoint]] = {}
        for e in self.endpoints:
            for ip in e.ips:
                out.setdefault(ip, []).append(e)
        return out


def _backends(endpoints: tuple[Endpoint, ...], svc: Service,
              sp: ServicePort) -> list[tuple[Endpoint, int]]:
    out = []
    for ep in sorted(endpoints, key=lambda e: e.identity):
        labels = dict(ep.labels)
        if ep.namespace != svc.namespace or not ep.ips or \
                any(labels.get(k) != v for k, v in svc.selector):
            continue
        target = sp.target_port
        number = ep.named_port(target, sp.protocol) if isinstance(target, str) \
            and not target.isdigit() else int(target)
        if number is not None:  # a named targetPort the pod lacks gets no traffic
            out.append((ep, number))
    return out


def _timestamp(r: FieldReader, value: object, path: str) -> float | None:
    """An RFC 3339 timestamp as Kubernetes prints it (``2026-11-27T14:24:21Z``)."""
    if value is None:
        return None
    text = r.string(value, path) or ""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError as e:
        raise r.fail(path, value, "must be an RFC 3339 time like 2026-11-27T14:24:21Z") from e


def _meta(r: FieldReader, m: Mapping[str, Any], namespaced: bool) -> Mapping[str, Any]:
    meta = r.mapping(m.get("metadata"), "metadata")
    r.string(meta.get("name"), "metadata.name", required=True)
    if namespaced:
        r.string(meta.get("namespace"), "metadata.namespace", required=True)
    return meta


def _namespace(r: FieldReader, m: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    meta = _meta(r, m, namespaced=False)
    labels = dict(r.labels(meta.get("labels"), "metadata.labels"))
    # Kubernetes (1.21+) always sets this label; older snapshots may lack it.
    labels.setdefault("kubernetes.io/metadata.name", meta["name"])
    return meta["name"], labels


def _service_account(r: FieldReader, m: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str],
                                                                                 ...]]:
    meta = _meta(r, m, namespaced=True)
    return f"{meta['namespace']}/{meta['name']}", r.labels(meta.get("labels"), "metadata.labels")


def _ip(r: FieldReader, value: object, path: str) -> IpAddress:
    try:
        return ipaddress.ip_address(r.string(value, path, required=True) or "")
    except ValueError as e:
        raise r.fail(path, value, "must be an IPv4 or IPv6 address") from e


def _pod(r: FieldReader, m: Mapping[str, Any], namespaces: Mapping[str, LabelSet],
         sas: Mapping[str, tuple[tuple[str, str], ...]]) -> tuple[Endpoint | None,
                                                                  tuple[str, str] | None]:
    meta = _meta(r, m, namespaced=True)
    spec = r.mapping(m.get("spec"), "spec")
    status = r.mapping(m.get("status"), "status")
    if spec.get("hostNetwork"):
        return None, None
    ips = [_ip(r, p.get("ip"), f"status.podIPs[{i}].ip")
           for i, p in enumerate(r.sequence(status.get("podIPs"), "status.podIPs"))]
    if not ips and status.get("podIP"):
        ips = [_ip(r, status["podIP"], "status.podIP")]
    ns, sa = meta["namespace"], spec.get("serviceAccountName") or "default"
    ports = []
    for ci, c in enumerate(r.sequence(spec.get("containers"), "spec.containers")):
        for pi, p in enumerate(r.sequence(r.mapping(c, f"spec.containers[{ci}]").get("ports"),
                                          f"spec.containers[{ci}].ports")):
            path = f"spec.containers[{ci}].ports[{pi}]"
            pm = r.mapping(p, path)
            if pm.get("name"):
                proto = protocol_number(pm.get("protocol", "TCP"))
                if proto is None:
                    raise r.fail(f"{path}.protocol", pm.get("protocol"),
                                 "must be TCP, UDP or SCTP")
                number = r.integer(pm.get("containerPort"), f"{path}.containerPort", 1, 65535)
                ports.append(NamedPortDef(pm["name"], proto, number))
    owner = None
    refs = r.sequence(meta.get("ownerReferences"), "metadata.ownerReferences")
    for i, item in enumerate(refs):
        ref = r.mapping(item, f"metadata.ownerReferences[{i}]")
        kind = r.string(ref.get("kind"), f"metadata.ownerReferences[{i}].kind", required=True)
        name = r.string(ref.get("name"), f"metadata.ownerReferences[{i}].name", required=True)
        if owner is None or ref.get("controller"):  # the controller owner wins
            owner = (kind or "", name or "")
    return Endpoint(
        namespace=ns, name=meta["name"],
        labels=r.labels(meta.get("labels"), "metadata.labels"),
        service_account=sa,
        namespace_labels=tuple(sorted(namespaces.get(ns, LabelSet(
            {"kubernetes.io/metadata.name": ns})).items())),
        service_account_labels=sas.get(f"{ns}/{sa}", ()),
        named_ports=tuple(sorted(ports)), ips=tuple(ips),
        generate_name=meta.get("generateName"),
    ), owner


def _service(r: FieldReader, m: Mapping[str, Any]) -> Service:
    meta = _meta(r, m, namespaced=True)
    spec = r.mapping(m.get("spec"), "spec")
    ips = list(r.sequence(spec.get("clusterIPs"), "spec.clusterIPs")) or (
        [spec["clusterIP"]] if spec.get("clusterIP") else [])
    cluster_ips = tuple(_ip(r, v, "spec.clusterIPs") for v in ips if v != "None")
    ports = []
    for i, p in enumerate(r.sequence(spec.get("ports"), "spec.ports")):
        pm = r.mapping(p, f"spec.ports[{i}]")
        port = r.integer(pm.get("port"), f"spec.ports[{i}].port", 1, 65535)
        ports.append(ServicePort(pm.get("name") or "", port,
                                 protocol_number(pm.get("protocol", "TCP")) or 6,
                                 pm.get("targetPort", port)))
    return Service(meta["namespace"], meta["name"], cluster_ips, tuple(ports),
                   r.labels(spec.get("selector"), "spec.selector"))
