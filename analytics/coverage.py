"""The board joined with the policies in force: evaluation order, rules with no hit in the
window (unused), and the endpoints each policy applies to.

The store knows only the hits it saw; the policy documents say what exists. Every policy
rule (ingress and egress, by index, plus the end-of-tier row ``-1``) becomes a board row
keyed exactly as a hit string of that rule parses (``policy.hits``), so a policy that never
matched shows up with zero counters and ``unused = True``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from policy import Endpoint, PolicySet
from policy.compile import compile_policy
from policy.hits import parse_hit

__all__ = ["PolicyRule", "policy_rules", "store_endpoints", "with_policies"]

_KEY = ("tier", "kind", "namespace", "policy", "direction", "rule")


@dataclass(frozen=True)
class PolicyRule:
    """One rule of one policy, keyed like the board, with its place in evaluation order."""

    tier: str
    kind: str
    namespace: str | None
    policy: str
    direction: str
    rule: int  # -1: the tier's end-of-tier action triggered by this policy
    tier_position: int
    policy_position: int
    endpoints: int  # workloads in the store this policy applies to
    rules_in_direction: int

    @property
    def key(self) -> tuple[object, ...]:
        return (self.tier, self.kind, self.namespace, self.policy, self.direction, self.rule)


def policy_rules(policy_set: PolicySet, endpoints: Sequence[Endpoint] = ()) -> list[PolicyRule]:
    """Every rule of every policy (enforced and staged), in evaluation order."""
    tier_pos = {t.name: i for i, t in enumerate(policy_set.tiers)}
    ordered = sorted(policy_set.policies, key=lambda p: (tier_pos[p.tier], p.sort_key()))
    out = []
    for pos, p in enumerate(ordered):
        compiled = compile_policy(p)
        selected = sum(1 for e in endpoints if compiled.applies_to.matches(e.selector_labels))
        parsed = parse_hit(f"0|{p.tier}|{compiled.hit_name}|allow|0")
        for direction in p.types:
            count = len(compiled.rules(direction))
            for rule in (*range(count), -1):
                out.append(PolicyRule(p.tier, parsed.kind, parsed.namespace, parsed.name,
                                      direction.value.lower(), rule, tier_pos[p.tier], pos,
                                      selected, count))
    return out


def with_policies(board: pa.Table, policy_set: PolicySet,
                  endpoints: Sequence[Endpoint] = ()) -> pa.Table:
    """``board`` in evaluation order with every rule of ``policy_set``: adds ``tier_position``,
    ``policy_position``, ``endpoints`` and ``unused`` (no hit in the window; end-of-tier rows
    count as used only when hit). Hits of policies not in the set stay, at the end."""
    rules = policy_rules(policy_set, endpoints)
    seen = {_key(r): r for r in board.to_pylist()}
    zero = {c: 0 for c in board.column_names if c.startswith(("allowed_", "denied_",
                                                                "passed_"))}
    rows = []
    for r in rules:
        hit = seen.pop(r.key, None)
        if hit is None and r.rule == -1 and r.rules_in_direction:
            continue  # an end-of-tier row only exists when the tier's default was reached
            # (a direction without rules keeps it, so the policy itself is listed)
        row = dict(hit) if hit else {
            **dict(zip(_KEY, r.key, strict=True)), "staged": r.kind.startswith("Staged"),
            "end_of_tier": False, **zero, "first_hit": None, "last_hit": None}
        rows.append({**row, "tier_position": r.tier_position,
                     "policy_position": r.policy_position, "endpoints": r.endpoints,
                     "unused": hit is None})
    rows += [{**row, "tier_position": None, "policy_position": None, "endpoints": None,
              "unused": False} for row in seen.values()]
    schema = board.schema.append(pa.field("tier_position", pa.int64())).append(
        pa.field("policy_position", pa.int64())).append(pa.field("endpoints", pa.int64())
                                                         ).append(pa.field("unused", pa.bool_()))
    return pa.Table.from_pylist(rows, schema=schema)


def store_endpoints(rows: Iterable[Mapping[str, object]],
                    namespaces: Mapping[str, Mapping[str, str]]) -> list[Endpoint]:
    """Endpoints from the ``endpoints`` view (namespace, prefix, labels), as selectors see
    them (namespace labels from the inventory when known; service accounts unknown)."""
    out = []
    for r in rows:
        ns = str(r["namespace"])
        labels = r["labels"] or []
        pairs = tuple(sorted(labels.items() if isinstance(labels, Mapping) else labels))
        out.append(Endpoint(ns, str(r["name_aggr"]), pairs, service_account=None,
                            namespace_labels=tuple(sorted((namespaces.get(ns) or {
                                "kubernetes.io/metadata.name": ns}).items()))))
    return out


def _key(row: Mapping[str, object]) -> tuple[object, ...]:
    return tuple(row[c] for c in _KEY)

