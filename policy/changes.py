"""Policy changes as Calico's Policy Impact Preview takes them (``reference/calico.md`` §8).

A change creates or updates a document, or deletes an object named ``KIND/[NS/]NAME``.
:func:`apply_changes` gives the policy set *after* the changes, as the dataplane would
enforce it, and what a flow must touch to be affected:

* a staged policy is previewed as if enforced: with ``stagedAction`` Set (or Learn) it
  becomes its enforced kind and replaces the enforced policy of the same name, with
  ``Delete`` it deletes that enforced policy (Calico's "Enforce", §6);
* a Tier or a network set change can move any flow (tier order, set labels and CIDRs are
  read by every policy), so it impacts everything;
* otherwise a flow is impacted only when one of the changed policies, before or after,
  applies to the endpoint that reports it: every other flow walks the same policies with
  the same inputs before and after, so its verdict and trace cannot change.

>>> from policy import load_text
>>> before = PolicySet.from_documents(load_text('''
... apiVersion: projectcalico.org/v3
... kind: GlobalNetworkPolicy
... metadata: {name: default.a}
... spec: {selector: all(), types: [Ingress], ingress: [{action: Allow}]}
... '''))
>>> after = apply_changes(before, [Change.delete("GlobalNetworkPolicy/default.a")])
>>> [p.name for p in after.policies.policies], [c.action for c in after.changes]
([], ['delete'])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from policy.errors import PolicyError
from policy.loader import Document
from policy.model import DEFAULT_TIER, NetworkSet, Policy, PolicyKind, StagedAction, Tier
from policy.policyset import PolicySet

__all__ = ["AppliedChange", "Change", "ChangeError", "Changed", "apply_changes",
           "parse_target"]

#: Kinds a ``--delete`` target may name, with their spellings (case-insensitive).
_KIND_NAMES = {
    **{k.value.lower(): k.value for k in PolicyKind},
    "networkpolicy.networking.k8s.io": PolicyKind.KUBERNETES_NETWORK_POLICY.value,
    "tier": "Tier", "networkset": "NetworkSet", "globalnetworkset": "GlobalNetworkSet",
}
_ACCEPTED = ("NetworkPolicy/NS/NAME, GlobalNetworkPolicy/NAME, StagedNetworkPolicy/NS/NAME, "
             "StagedGlobalNetworkPolicy/NAME, StagedKubernetesNetworkPolicy/NS/NAME, "
             "KubernetesNetworkPolicy/NS/NAME (or NetworkPolicy.networking.k8s.io/NS/NAME), "
             "Tier/NAME, NetworkSet/NS/NAME, GlobalNetworkSet/NAME")


class ChangeError(PolicyError):
    """A change that cannot be applied: names the change and what is accepted."""


@dataclass(frozen=True, slots=True)
class Target:
    """An object named by kind, namespace and name (``KIND/[NS/]NAME``)."""

    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return "/".join(p for p in (self.kind, self.namespace, self.name) if p)


@dataclass(frozen=True, slots=True)
class Change:
    """One requested change: a document to create or update, or an object to delete."""

    document: Document | None = None
    target: Target | None = None

    @classmethod
    def put(cls, document: Document) -> Change:
        return cls(document=document)

    @classmethod
    def delete(cls, text: str) -> Change:
        return cls(target=parse_target(text))


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """What a change did to the enforced set: ``create``, ``update`` or ``delete`` of
    ``target``; ``source`` is the document or the ``--delete`` text it came from."""

    action: str
    target: Target
    source: str


@dataclass(frozen=True, slots=True)
class Changed:
    """The policy set after the changes, what each change did, and the policies (before and
    after) whose selection decides which flows are impacted; ``everything``: a Tier or a
    network set changed, so every flow is."""

    policies: PolicySet
    changes: tuple[AppliedChange, ...]
    impacting: tuple[Policy, ...]
    everything: bool


def parse_target(text: str) -> Target:
    """``KIND/[NS/]NAME`` → a :class:`Target`; raises :class:`ChangeError`."""
    parts = text.split("/")
    kind = _KIND_NAMES.get(parts[0].lower()) if parts else None
    if kind is None or len(parts) not in (2, 3) or not all(parts):
        raise ChangeError(f"--delete {text!r}: expected KIND/[NS/]NAME, one of {_ACCEPTED}")
    namespaced = kind == "NetworkSet" or (kind in PolicyKind.__members__.values()
                                          and PolicyKind(kind).namespaced)
    if namespaced != (len(parts) == 3):
        need = "KIND/NS/NAME" if namespaced else "KIND/NAME"
        raise ChangeError(f"--delete {text!r}: {kind} is "
                          f"{'namespaced' if namespaced else 'cluster-wide'}: write {need}")
    return Target(kind, parts[1] if len(parts) == 3 else None, parts[-1])


def apply_changes(current: PolicySet, changes: Sequence[Change]) -> Changed:
    """The set the dataplane would enforce after ``changes``, applied in order."""
    tiers = {t.name: t for t in current.tiers}
    policies = {p.key: p for p in current.policies}
    sets = {(s.kind, s.namespace, s.name): s for s in current.network_sets}
    applied: list[AppliedChange] = []
    impacting: list[Policy] = []
    everything = False
    for change in changes:
        if change.target is not None:
            removed = _delete(change.target, tiers, policies, sets)
            applied.append(AppliedChange("delete", change.target, f"--delete {change.target}"))
            everything |= not isinstance(removed, Policy)
            if isinstance(removed, Policy) and not removed.staged:
                impacting.append(removed)
            continue
        doc = change.document
        source = f"{doc.origin}" if doc is not None else "?"
        if isinstance(doc, Tier):
            applied.append(AppliedChange("update" if doc.name in tiers else "create",
                                         Target("Tier", None, doc.name), source))
            tiers[doc.name] = doc
            everything = True
        elif isinstance(doc, NetworkSet):
            key = (doc.kind, doc.namespace, doc.name)
            applied.append(AppliedChange("update" if key in sets else "create",
                                         Target(doc.kind, doc.namespace, doc.name), source))
            sets[key] = doc
            everything = True
        elif isinstance(doc, Policy):
            enforced = _as_enforced(doc)
            target = Target(doc.kind.enforced.value, doc.namespace, doc.name)
            old = policies.pop(doc.enforced_key, None)
            if old is not None:
                impacting.append(old)
            if enforced is None:  # stagedAction: Delete
                applied.append(AppliedChange("delete", target, source))
                if old is None:
                    raise ChangeError(f"{source}: stagedAction Delete of {target}: there is "
                                      "no enforced policy of that name to delete")
                continue
            applied.append(AppliedChange("update" if old else "create", target, source))
            policies[enforced.key] = enforced
            if old == enforced:  # the same policy again: nothing it decides can change
                impacting.remove(old)
            else:
                impacting.append(enforced)
    after = PolicySet(tuple(sorted(tiers.values(), key=Tier.sort_key)),
                      tuple(sorted(policies.values(), key=lambda p: p.key)),
                      tuple(sorted(sets.values(), key=lambda s: (s.kind, s.identity))))
    _check_tiers(after)
    return Changed(after, tuple(applied), tuple(impacting), everything)


def _as_enforced(doc: Policy) -> Policy | None:
    """A staged policy as enforced (None for ``stagedAction: Delete``); enforced as is."""
    if not doc.staged:
        return doc
    if doc.staged_action is StagedAction.DELETE:
        return None
    if doc.staged_action is StagedAction.IGNORE:
        raise ChangeError(f"{doc.origin}: {doc.kind.value} {doc.namespace or ''}/{doc.name} "
                          "has stagedAction Ignore (a dismissed recommendation): preview it "
                          "with stagedAction Set")
    return replace(doc, kind=doc.kind.enforced, staged_action=None)


def _delete(target: Target, tiers: dict[str, Tier],
            policies: dict[tuple[str, str, str], Policy],
            sets: dict[tuple[str, str | None, str], NetworkSet]) -> Document:
    if target.kind == "Tier":
        if target.name not in tiers or target.name == DEFAULT_TIER:
            raise ChangeError(f"--delete {target}: " + (
                "the default tier cannot be deleted" if target.name == DEFAULT_TIER else
                f"no such tier (known: {', '.join(sorted(tiers))})"))
        users = sorted(p.name for p in policies.values() if p.tier == target.name)
        if users:
            raise ChangeError(f"--delete {target}: the tier still holds {', '.join(users)} "
                              "(delete them first, as Calico requires)")
        return tiers.pop(target.name)
    if target.kind in ("NetworkSet", "GlobalNetworkSet"):
        key = (target.kind, target.namespace, target.name)
        if key not in sets:
            raise ChangeError(f"--delete {target}: no such {target.kind} "
                              f"(known: {_known(f'{k[0]}/{s.identity}' for k, s in sets.items())})")
        return sets.pop(key)
    pkey = (target.kind, target.namespace or "", target.name)
    if pkey not in policies:
        raise ChangeError(f"--delete {target}: no such policy (known: "
                          f"{_known('/'.join(p for p in k if p) for k in policies)})")
    return policies.pop(pkey)


def _known(names: Iterable[str]) -> str:
    found = sorted(names)
    shown = ", ".join(found[:12])
    return (shown + f", ... {len(found) - 12} more") if len(found) > 12 else shown or "none"


def _check_tiers(after: PolicySet) -> None:
    names = {t.name for t in after.tiers}
    for p in after.policies:
        if p.tier not in names:
            raise ChangeError(f"{p.origin}: {p.kind.value} {p.name} is in tier {p.tier!r}, "
                              f"which the policies after the change do not define (defined: "
                              f"{', '.join(sorted(names))}); add the Tier to the change")
