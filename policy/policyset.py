"""A consistent set of tiers, policies and network sets, and its enforced and pending views.

Pending view (``reference/calico.md`` §1.4, §6): staged policies are treated as enforced. A
staged policy with ``stagedAction`` Set (or Learn/Ignore, which Felix also programs) takes the
place of the enforced policy of the same name, if any, in its own tier and order;
``stagedAction: Delete`` removes the enforced policy of that name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from policy.errors import DocumentError
from policy.loader import Document
from policy.model import (
    DEFAULT_TIER,
    DEFAULT_TIER_ORDER,
    NetworkSet,
    Policy,
    StagedAction,
    Tier,
)

__all__ = ["PolicySet"]

_DEFAULT = Tier(DEFAULT_TIER, DEFAULT_TIER_ORDER)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Tiers in evaluation order (the ``default`` tier always present), policies, sets."""

    tiers: tuple[Tier, ...]
    policies: tuple[Policy, ...]
    network_sets: tuple[NetworkSet, ...] = ()

    @classmethod
    def from_documents(cls, docs: Iterable[Document]) -> PolicySet:
        """Check cross-document rules: unique names, and every policy's tier defined."""
        tiers: dict[str, Tier] = {DEFAULT_TIER: _DEFAULT}
        policies: dict[tuple[str, str, str], Policy] = {}
        sets: dict[str, NetworkSet] = {}
        for doc in docs:
            if isinstance(doc, Tier):
                if doc.name in tiers and tiers[doc.name] is not _DEFAULT:
                    raise _dup(doc.origin.source, doc.origin.index, f"Tier {doc.name}")
                tiers[doc.name] = doc
            elif isinstance(doc, Policy):
                if doc.key in policies:
                    raise _dup(doc.origin.source, doc.origin.index, "/".join(doc.key))
                policies[doc.key] = doc
            else:
                set_key = f"{doc.kind}/{doc.identity}"
                if set_key in sets:
                    raise _dup(doc.origin.source, doc.origin.index, set_key)
                sets[set_key] = doc
        for p in policies.values():
            if p.tier not in tiers:
                raise DocumentError(
                    p.origin.source, p.origin.index, "spec.tier", p.tier,
                    f"must name a defined Tier (defined: {', '.join(sorted(tiers))})",
                )
        return cls(
            tiers=tuple(sorted(tiers.values(), key=Tier.sort_key)),
            policies=tuple(sorted(policies.values(), key=lambda p: p.key)),
            network_sets=tuple(sorted(sets.values(), key=lambda s: (s.kind, s.identity))),
        )

    def tier(self, name: str) -> Tier:
        return next(t for t in self.tiers if t.name == name)

    def enforced(self) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if not p.staged)

    def pending(self) -> tuple[Policy, ...]:
        replaced = {p.enforced_key for p in self.policies if p.staged}
        out = [p for p in self.policies if not p.staged and p.key not in replaced]
        out += [p for p in self.policies
                if p.staged and p.staged_action is not StagedAction.DELETE]
        return tuple(out)

    def with_policies(self, policies: Iterable[Policy]) -> PolicySet:
        return replace(self, policies=tuple(sorted(policies, key=lambda p: p.key)))


def _dup(source: str, index: int, what: str) -> DocumentError:
    return DocumentError(source, index, "metadata.name", what,
                         "is defined twice (each object may appear once across the inputs)")
