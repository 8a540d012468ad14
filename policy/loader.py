"""Text → documents → model values.

Accepts what users have: multi-document YAML, JSON (one object, an array, or JSON lines), and
``kind: List`` as ``kubectl get -o yaml|json`` prints it. Pure: callers read the files.

>>> [type(v).__name__ for v in load_text('''
... apiVersion: projectcalico.org/v3
... kind: Tier
... metadata: {name: security}
... spec: {order: 500}
... ''')]
['Tier']
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from policy.calico_docs import read_network_set, read_policy, read_tier
from policy.errors import DocumentError
from policy.fields import FieldReader
from policy.k8s_docs import read_k8s_policy
from policy.model import NetworkSet, Origin, Policy, PolicyKind, Tier

__all__ = ["Document", "iter_documents", "load_text", "read_document"]

Document = Tier | Policy | NetworkSet

CALICO_API = "projectcalico.org/v3"
K8S_API = "networking.k8s.io/v1"
_CALICO_POLICY_KINDS = {
    "NetworkPolicy": PolicyKind.NETWORK_POLICY,
    "GlobalNetworkPolicy": PolicyKind.GLOBAL_NETWORK_POLICY,
    "StagedNetworkPolicy": PolicyKind.STAGED_NETWORK_POLICY,
    "StagedGlobalNetworkPolicy": PolicyKind.STAGED_GLOBAL_NETWORK_POLICY,
}
_ACCEPTED = (
    f"{CALICO_API} Tier, NetworkPolicy, GlobalNetworkPolicy, StagedNetworkPolicy, "
    "StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy, NetworkSet, GlobalNetworkSet; "
    f"{K8S_API} NetworkPolicy; or a List of them"
)


def _parse_text(text: str, source: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
            return data if isinstance(data, list) else [data]
        except json.JSONDecodeError as e:
            if stripped.startswith("{"):
                return _json_lines(text, source)
            raise DocumentError(source, None, "", f"line {e.lineno} column {e.colno}",
                                f"is not valid JSON: {e.msg}") from e
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "?"
        raise DocumentError(source, None, "", where,
                            f"is not valid YAML: {getattr(e, 'problem', e)}") from e


def _json_lines(text: str, source: str) -> list[Any]:
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DocumentError(source, None, "", f"line {n}",
                                    f"is not valid JSON: {e.msg}") from e
    return docs


def iter_documents(text: str, source: str = "<string>") -> Iterator[tuple[FieldReader, Any]]:
    """Yield ``(reader, document)`` per document, flattening ``kind: List``."""
    for index, doc in enumerate(_parse_text(text, source)):
        if isinstance(doc, Mapping) and str(doc.get("kind", "")).endswith("List"):
            r = FieldReader(source, index)
            for i, item in enumerate(r.sequence(doc.get("items"), "items")):
                yield FieldReader(source, index, f"items[{i}]."), item
        else:
            yield FieldReader(source, index), doc


def read_document(r: FieldReader, doc: object) -> Document:
    """One parsed document → a Tier, Policy or NetworkSet; raises DocumentError."""
    m = r.mapping(doc, "")
    api, kind = m.get("apiVersion"), m.get("kind")
    origin = Origin(r.source, r.index or 0)
    if api == K8S_API:
        if kind != "NetworkPolicy":
            raise r.fail("kind", kind, f"must be NetworkPolicy for apiVersion {K8S_API}")
        return read_k8s_policy(r, m, staged=False, origin=origin)
    if api != CALICO_API:
        raise r.fail("apiVersion", api, f"must be {CALICO_API} or {K8S_API} ({_ACCEPTED})")
    if kind == "Tier":
        return read_tier(r, m, origin)
    if kind in _CALICO_POLICY_KINDS:
        return read_policy(r, m, _CALICO_POLICY_KINDS[kind], origin)
    if kind == "StagedKubernetesNetworkPolicy":
        return read_k8s_policy(r, m, staged=True, origin=origin)
    if kind in ("NetworkSet", "GlobalNetworkSet"):
        return read_network_set(r, m, origin)
    raise r.fail("kind", kind, f"must be one of: {_ACCEPTED}")


def load_text(text: str, source: str = "<string>") -> list[Document]:
    """Every document in ``text``; the first invalid one raises :class:`DocumentError`."""
    return [read_document(r, doc) for r, doc in iter_documents(text, source)]
