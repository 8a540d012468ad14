"""Staging and promotion of policy documents, as Calico does them (``reference/calico.md`` §6).

These work on the documents as written (mappings from YAML or JSON), so what a user wrote —
comments aside — survives: the spec is copied, never re-rendered from the model.

* :func:`staged_document`: a NetworkPolicy, GlobalNetworkPolicy or Kubernetes NetworkPolicy
  becomes StagedNetworkPolicy, StagedGlobalNetworkPolicy or StagedKubernetesNetworkPolicy
  with ``stagedAction: Set`` (or ``Delete``, to stage the removal of an enforced policy).
* :func:`enforced_document`: the reverse, Calico's "Enforce"; ``ConvertStagedPolicyToEnforced``
  copies the spec without ``stagedAction``; a staged Kubernetes policy becomes a
  ``networking.k8s.io/v1`` NetworkPolicy.

Server-set metadata (uid, resourceVersion, creationTimestamp, managedFields, ...) and
``status`` are dropped, as ``kubectl apply`` of the result would otherwise be refused.

>>> staged_document({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
...     "metadata": {"name": "web", "namespace": "shop", "uid": "1"},
...     "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})["spec"]
{'stagedAction': 'Set', 'podSelector': {}, 'policyTypes': ['Ingress']}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policy.errors import PolicyError

__all__ = ["STAGED_KINDS", "StagingError", "enforced_document", "enforced_kind",
           "staged_document"]

CALICO_API = "projectcalico.org/v3"
K8S_API = "networking.k8s.io/v1"
#: Enforced kind (apiVersion, kind) → staged kind.
STAGED_KINDS = {
    (CALICO_API, "NetworkPolicy"): "StagedNetworkPolicy",
    (CALICO_API, "GlobalNetworkPolicy"): "StagedGlobalNetworkPolicy",
    (K8S_API, "NetworkPolicy"): "StagedKubernetesNetworkPolicy",
}
_ENFORCED = {staged: key for key, staged in STAGED_KINDS.items()}
_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation",
                  "managedFields", "selfLink", "deletionTimestamp",
                  "deletionGracePeriodSeconds")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_K8S_SPEC = ("podSelector", "ingress", "egress", "policyTypes")


class StagingError(PolicyError):
    """A document that cannot be staged or promoted, and why."""


def staged_document(doc: Mapping[str, Any], action: str = "Set") -> dict[str, Any]:
    """``doc`` (an enforced policy) as its staged kind with ``stagedAction: action``."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if doc.get("kind") in _ENFORCED:
        raise StagingError(f"{_describe(doc)} is already staged")
    kind = STAGED_KINDS.get(key)  # type: ignore[arg-type]
    if kind is None:
        raise StagingError(f"{_describe(doc)} is not a policy that can be staged (accepted: "
                           f"{CALICO_API} NetworkPolicy, GlobalNetworkPolicy; "
                           f"{K8S_API} NetworkPolicy)")
    spec = dict(doc.get("spec") or {})
    if key[0] == K8S_API:
        spec = {k: spec[k] for k in _K8S_SPEC if k in spec}
    return {"apiVersion": CALICO_API, "kind": kind, "metadata": _metadata(doc),
            "spec": {"stagedAction": action, **{k: v for k, v in spec.items()
                                                if k != "stagedAction"}}}


def enforced_document(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The enforced document a staged one becomes; ``None`` for ``stagedAction: Delete``
    (the enforced policy of that name is to be removed)."""
    kind = doc.get("kind")
    if doc.get("apiVersion") != CALICO_API or kind not in _ENFORCED:
        raise StagingError(f"{_describe(doc)} is not a staged policy (accepted: "
                           f"{', '.join(sorted(_ENFORCED))})")
    spec = dict(doc.get("spec") or {})
    action = spec.pop("stagedAction", "Set")
    if action == "Delete":
        return None
    if action not in ("Set", "Learn"):
        raise StagingError(f"{_describe(doc)} has stagedAction {action!r}: only Set, Learn "
                           "(promoted as Set) and Delete can be promoted")
    api, enforced_kind = _ENFORCED[kind]
    if api == K8S_API:
        spec = {k: spec[k] for k in _K8S_SPEC if k in spec}
    return {"apiVersion": api, "kind": enforced_kind, "metadata": _metadata(doc),
            "spec": spec}


def enforced_kind(staged_kind: str) -> tuple[str, str]:
    """(apiVersion, kind) a staged kind is promoted to."""
    return _ENFORCED[staged_kind]


def _metadata(doc: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in dict(doc.get("metadata") or {}).items()
            if k not in _SERVER_FIELDS}
    annotations = {k: v for k, v in dict(meta.get("annotations") or {}).items()
                   if k != _LAST_APPLIED}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return meta


def _describe(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    name = "/".join(str(p) for p in (meta.get("namespace"), meta.get("name")) if p)
    return f"{doc.get('apiVersion')} {doc.get('kind')} {name or '(unnamed)'}"
