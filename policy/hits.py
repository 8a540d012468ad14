"""Parsing flow-log policy-hit strings in the three formats Calico has written.

* classic Enterprise: ``1|default|storefront/default.trusted|allow|1`` (also the older staged
  spelling ``ns/staged:tier.name``);
* OSS >= 3.32 / Goldmane: ``0|default|np:storefront/trusted|allow|1``, ``eot:__NO_MATCH__``;
* legacy ``all_policies`` without a rule index: ``0|__PROFILE__|__PROFILE__.kns.x|allow``.

>>> parse_hit("0|security|security.pass|pass|0").kind
'GlobalNetworkPolicy'
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.errors import HitSyntaxError

__all__ = ["ParsedHit", "parse_hit"]

PROFILE = "Profile"
END_OF_TIER = "EndOfTier"
_OSS_KINDS = {
    "np": "NetworkPolicy",
    "gnp": "GlobalNetworkPolicy",
    "snp": "StagedNetworkPolicy",
    "sgnp": "StagedGlobalNetworkPolicy",
    "sknp": "StagedKubernetesNetworkPolicy",
    "knp": "KubernetesNetworkPolicy",
    "kcnp": "ClusterNetworkPolicy",
    "pro": PROFILE,
}
_ACTIONS = ("allow", "deny", "pass", "eot-deny")


@dataclass(frozen=True, slots=True)
class ParsedHit:
    """One hit. ``name`` is the policy's own name (``trusted`` for ``default.trusted``);
    ``rule`` is ``-1`` for end of tier, ``-2`` when unknown (legacy format)."""

    index: int
    tier: str
    kind: str
    namespace: str | None
    name: str
    action: str
    rule: int

    @property
    def staged(self) -> bool:
        return self.kind.startswith("Staged")

    @property
    def end_of_tier(self) -> bool:
        return self.rule == -1 or self.kind == END_OF_TIER


def parse_hit(text: str) -> ParsedHit:
    parts = text.split("|")
    if len(parts) not in (4, 5):
        raise HitSyntaxError(text, f"has {len(parts)} '|'-separated fields")
    idx, tier, name, action = parts[:4]
    if not idx.isdigit():
        raise HitSyntaxError(text, f"index {idx!r} is not a position (0, 1, ...)")
    if action not in _ACTIONS:
        raise HitSyntaxError(text, f"action {action!r} is not one of {', '.join(_ACTIONS)}")
    rule = -2
    if len(parts) == 5:
        if not parts[4].lstrip("-").isdigit() or int(parts[4]) < -2:
            raise HitSyntaxError(text, f"rule index {parts[4]!r} is not -2, -1 or a rule index")
        rule = int(parts[4])
    if not tier or not name:
        raise HitSyntaxError(text, "tier and policy name must not be empty")
    kind, namespace, short = _name(name, tier, text)
    return ParsedHit(int(idx), tier, kind, namespace, short,
                     "deny" if action == "eot-deny" else action, rule)


def _name(name: str, tier: str, text: str) -> tuple[str, str | None, str]:
    head, sep, rest = name.partition(":")
    if sep and head in _OSS_KINDS:
        ns, slash, short = rest.rpartition("/")
        return _OSS_KINDS[head], (ns if slash else None), short
    if head == "eot" and sep:
        return END_OF_TIER, None, rest
    if tier == "__PROFILE__" or name.startswith("__PROFILE__."):
        return PROFILE, None, name.removeprefix("__PROFILE__.")
    ns, slash, local = name.partition("/")
    if not slash:
        ns, local = "", name
    if local.startswith("knp.default."):
        return "KubernetesNetworkPolicy", ns or None, local.removeprefix("knp.default.")
    if local.startswith("staged:knp.default."):
        return ("StagedKubernetesNetworkPolicy", ns or None,
                local.removeprefix("staged:knp.default."))
    staged = False
    if local.startswith("staged:"):  # older spelling: ns/staged:tier.name
        staged, local = True, local.removeprefix("staged:")
    if local.startswith(f"{tier}.staged:"):
        staged, local = True, f"{tier}." + local.removeprefix(f"{tier}.staged:")
    if not local.startswith(f"{tier}."):
        raise HitSyntaxError(text, f"policy name {name!r} does not start with its tier {tier!r}")
    short = local.removeprefix(f"{tier}.")
    kind = ("StagedNetworkPolicy" if staged else "NetworkPolicy") if slash else (
        "StagedGlobalNetworkPolicy" if staged else "GlobalNetworkPolicy")
    return kind, (ns if slash else None), short
