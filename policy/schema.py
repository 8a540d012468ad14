"""Validation against the bundled Calico CRD schemas (OpenAPI v3 → JSON Schema).

Kubernetes' own ``networking.k8s.io/v1`` NetworkPolicy is checked against the ``spec`` schema
of Calico's StagedKubernetesNetworkPolicy CRD, which embeds it (less ``stagedAction``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

__all__ = ["SchemaProblem", "schema_problems"]

_PLURALS = {
    "Tier": "tiers",
    "NetworkPolicy": "networkpolicies",
    "GlobalNetworkPolicy": "globalnetworkpolicies",
    "StagedNetworkPolicy": "stagednetworkpolicies",
    "StagedGlobalNetworkPolicy": "stagedglobalnetworkpolicies",
    "StagedKubernetesNetworkPolicy": "stagedkubernetesnetworkpolicies",
    "NetworkSet": "networksets",
    "GlobalNetworkSet": "globalnetworksets",
}

SchemaProblem = tuple[str, object, str]  # (field path, value, message)


def _to_json_schema(node: Any) -> Any:
    """OpenAPI's ``nullable`` becomes a JSON-Schema null alternative; the rest carries over."""
    if isinstance(node, dict):
        out = {k: _to_json_schema(v) for k, v in node.items()}
        if out.pop("nullable", False):
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_to_json_schema(v) for v in node]
    return node


@cache
def _validator(api: str, kind: str) -> jsonschema.protocols.Validator | None:
    if api == "networking.k8s.io/v1" and kind == "NetworkPolicy":
        schema = copy.deepcopy(_crd_schema("StagedKubernetesNetworkPolicy"))
        schema["properties"]["spec"]["properties"].pop("stagedAction", None)
    elif api == "projectcalico.org/v3" and kind in _PLURALS:
        schema = _crd_schema(kind)
    else:
        return None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(_to_json_schema(schema))


def _crd_schema(kind: str) -> dict[str, Any]:
    text = (resources.files("policy") / "crds" / f"projectcalico.org_{_PLURALS[kind]}.yaml"
            ).read_text(encoding="utf-8")
    crd = yaml.safe_load(text)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v3")
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def schema_problems(doc: Mapping[str, Any]) -> list[SchemaProblem]:
    """Every schema violation of one document, as (field path, value, message)."""
    validator = _validator(str(doc.get("apiVersion")), str(doc.get("kind")))
    if validator is None:
        return []
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path))):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.path).lstrip(".")
        out.append((path, err.instance, f"violates the CRD schema: {err.message}"))
    return out
