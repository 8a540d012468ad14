"""Calico's policy evaluation with its trace, for the enforced and the pending policy set.

Per endpoint and direction (``reference/calico.md`` §2): tiers in order; in each tier that has
a policy selecting the endpoint for that direction, policies in order, first matching rule;
Allow/Deny decide, Pass goes to the next tier, Log continues; no decision in a tier → the
tier's default action as an end-of-tier hit (rule ``-1``) naming the tier's last selecting
policy; after the last tier the ``kns.<namespace>`` profile allows. Egress is decided at the
source endpoint, ingress at the destination; non-endpoints are not policed.

Matching is three-valued: a criterion that depends on something the flow does not carry
(an aggregated flow has no IP or source port) is *unknown*, both branches are followed, and a
direction whose branches disagree has no verdict (``None``: uncertain), as Calico's Policy
Impact Preview reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from policy.compile import CompiledEntity, CompiledPolicy, CompiledRule, compile_policy
from policy.domains import DomainPattern
from policy.endpoints import KIND, NAME, NAMESPACE, LabelSet, Peer
from policy.model import Action, Direction, NamedPort, NetworkSet, Policy, Tier
from policy.policyset import PolicySet
from policy.selector import Selector

__all__ = ["DirectionVerdict", "Evaluator", "Flow", "Hit", "Verdict"]

_ICMP = (1, 58)
PROFILE_TIER = "__PROFILE__"


@dataclass(frozen=True, slots=True)
class Flow:
    """What is evaluated: two peers, protocol number, and ICMP type/code for ICMP."""

    src: Peer
    dst: Peer
    protocol: int | None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def ip_version(self) -> int | None:
        ip = self.src.ip or self.dst.ip
        return ip.version if ip is not None else None


@dataclass(frozen=True, slots=True)
class Hit:
    """One entry of a policy trace."""

    tier: str
    name: str  # the hit-string name part, e.g. "storefront/default.trusted"
    action: str  # allow | deny | pass
    rule: int  # rule index; -1 end of tier
    policy: Policy | None = field(default=None, compare=False)

    def render(self, index: int) -> str:
        return f"{index}|{self.tier}|{self.name}|{self.action}|{self.rule}"

    @property
    def end_of_tier(self) -> bool:
        return self.rule == -1


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    """The decision for one direction at one endpoint (``policed`` False: not an endpoint)."""

    action: str | None  # "allow" | "deny" | None when uncertain
    hits: tuple[Hit, ...] = ()
    policed: bool = True
    # When uncertain, every way the walk could go: (action, hits) per branch, ``hits`` being
    # the first. Two uncertain verdicts are the same decision only if these are equal.
    branches: tuple[tuple[str, tuple[Hit, ...]], ...] = ()

    @property
    def outcome(self) -> tuple[tuple[str | None, tuple[Hit, ...]], ...]:
        """Everything the decision says, comparable across policy sets."""
        return self.branches or ((self.action, self.hits),)

    def rendered(self) -> list[str]:
        return [h.render(i) for i, h in enumerate(self.hits)]


UNPOLICED = DirectionVerdict("allow", (), policed=False)


@dataclass(frozen=True, slots=True)
class Verdict:
    egress: DirectionVerdict
    ingress: DirectionVerdict
    pending_egress: DirectionVerdict
    pending_ingress: DirectionVerdict

    @property
    def action(self) -> str | None:
        return _combine(self.egress.action, self.ingress.action)

    @property
    def pending_action(self) -> str | None:
        return _combine(self.pending_egress.action, self.pending_ingress.action)


def _combine(a: str | None, b: str | None) -> str | None:
    if a == "deny" or b == "deny":
        return "deny"
    if a is None or b is None:
        return None
    return "allow"


@dataclass(frozen=True, slots=True)
class _SetInfo:
    labels: LabelSet
    network_set: NetworkSet
    egress_domains: tuple[DomainPattern, ...]


_View = tuple[tuple[Tier, tuple[CompiledPolicy, ...]], ...]


class Evaluator:
    """One compiled policy set; evaluate flows against its enforced and pending views.

    ``namespaces`` maps a namespace name to its labels, which namespaced network sets
    inherit (as ``pcns.*``) like pods do.
    """

    def __init__(self, policy_set: PolicySet,
                 namespaces: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.policy_set = policy_set
        compiled = {p.key: compile_policy(p) for p in policy_set.policies}
        self._enforced = self._view(policy_set.tiers, [compiled[p.key] for p in
                                                       policy_set.enforced()])
        self._pending = self._view(policy_set.tiers, [compiled[p.key] for p in
                                                      policy_set.pending()])
        self._sets = tuple(
            _SetInfo(_set_labels(s, namespaces or {}), s,
                     tuple(DomainPattern(d) for d in s.allowed_egress_domains))
            for s in policy_set.network_sets)
        self.network_sets = policy_set.network_sets
        self.views_identical = policy_set.enforced() == policy_set.pending()
        self._index = {False: _PolicyIndex(self._enforced), True: _PolicyIndex(self._pending)}
        self._applicable: dict[tuple[int, LabelSet, Direction], _View] = {}
        self._views: dict[tuple[object, ...], _View] = {}
        self._sel_cache: dict[tuple[Selector, LabelSet], bool] = {}
        self._peer_sets: dict[tuple[object, ...], tuple[tuple[LabelSet, ...], tuple[LabelSet,
                                                                                     ...]]] = {}

    @staticmethod
    def _view(tiers: tuple[Tier, ...], policies: list[CompiledPolicy]) -> _View:
        by_tier: dict[str, list[CompiledPolicy]] = {t.name: [] for t in tiers}
        for cp in policies:
            by_tier[cp.policy.tier].append(cp)
        return tuple((t, tuple(sorted(by_tier[t.name], key=lambda c: c.policy.sort_key())))
                     for t in tiers)

    # -- public API ----------------------------------------------------------------------

    def evaluate(self, flow: Flow) -> Verdict:
        return Verdict(
            egress=self.direction(flow, Direction.EGRESS, pending=False),
            ingress=self.direction(flow, Direction.INGRESS, pending=False),
            pending_egress=self.direction(flow, Direction.EGRESS, pending=True),
            pending_ingress=self.direction(flow, Direction.INGRESS, pending=True),
        )

    def direction(self, flow: Flow, direction: Direction, *, pending: bool) -> DirectionVerdict:
        """The verdict and trace at the policed end of ``flow`` for one direction."""
        local = flow.src if direction is Direction.EGRESS else flow.dst
        if local.endpoint is None:
            return UNPOLICED
        tiers = self.applicable(local.endpoint.selector_labels, direction, pending=pending)
        outcomes = self._walk(tiers, direction, flow, local.endpoint.namespace)
        actions = {a for a, _ in outcomes}
        if len(actions) == 1:
            return DirectionVerdict(actions.pop(), outcomes[0][1])
        return DirectionVerdict(None, outcomes[0][1], branches=tuple(outcomes))

    def applicable(self, labels: LabelSet, direction: Direction, *, pending: bool) -> _View:
        """Tiers that have a policy selecting these endpoint labels for this direction."""
        key = (int(pending), labels, direction)
        found = self._applicable.get(key)
        if found is None:
            view = self._pending if pending else self._enforced
            by_tier: dict[int, list[CompiledPolicy]] = {}
            for ti, cp in self._index[pending].candidates(labels):
                if cp.selects(direction) and cp.applies_to.matches(labels):
                    by_tier.setdefault(ti, []).append(cp)
            found = tuple((view[ti][0], tuple(cps)) for ti, cps in by_tier.items())
            # One object per distinct view, so that endpoints meeting the same policies can
            # be told by identity (the batch walk groups keys by it).
            shape = tuple((ti, tuple(id(cp) for cp in cps)) for ti, cps in by_tier.items())
            found = self._applicable[key] = self._views.setdefault((pending, shape), found)
        return found

    # -- the walk ------------------------------------------------------------------------

    def _walk(self, tiers: _View, direction: Direction, flow: Flow,
              namespace: str) -> list[tuple[str, tuple[Hit, ...]]]:
        results: list[tuple[str, tuple[Hit, ...]]] = []
        stack: list[tuple[int, int, int, tuple[Hit, ...]]] = [(0, 0, 0, ())]
        while stack:
            ti, pi, ri, hits = stack.pop()
            outcome: str | None = None
            while ti < len(tiers) and outcome is None:
                tier, policies = tiers[ti]
                decided: Action | None = None
                while pi < len(policies) and decided is None:
                    cp = policies[pi]
                    rules = cp.rules(direction)
                    while ri < len(rules):
                        rule = rules[ri]
                        m = self.match_rule(rule, flow)
                        if m is None:  # unknown: explore "not matched" later
                            stack.append((ti, pi, ri + 1, hits))
                        if m is not False and rule.action is not Action.LOG:
                            hits = (*hits, Hit(tier.name, cp.hit_name, rule.action.lower(),
                                               rule.index, cp.policy))
                            decided = rule.action
                            break
                        ri += 1
                    pi, ri = pi + 1, 0
                if decided in (Action.ALLOW, Action.DENY):
                    outcome = decided.lower()
                elif decided is None:
                    hits = (*hits, end_of_tier(tier, policies))
                    if tier.default_action is Action.DENY:
                        outcome = "deny"
                ti, pi, ri = ti + 1, 0, 0
            if outcome is None:
                hits = (*hits, profile_hit(namespace))
                outcome = "allow"
            results.append((outcome, hits))
        return results

    # -- matching ------------------------------------------------------------------------

    def match_rule(self, rule: CompiledRule, flow: Flow) -> bool | None:
        m = protocol_match(rule, flow.protocol)
        if m is False:
            return False
        unknown = m is None
        if rule.icmp is not None or rule.not_icmp is not None:
            m = _icmp(rule, flow)
            if m is False:
                return False
            unknown |= m is None
        if rule.ip_version is not None and flow.ip_version not in (None, rule.ip_version):
            return False
        for ent, peer, domains in ((rule.src, flow.src, False),
                                   (rule.dst, flow.dst, rule.allow_set_domains)):
            m = self.match_entity(ent, peer, flow.protocol, domains)
            if m is False:
                return False
            unknown |= m is None
        return None if unknown else True

    def match_entity(self, ent: CompiledEntity, peer: Peer, protocol: int | None,
                     set_domains: bool) -> bool | None:
        """Does one side of a rule match this peer (``None``: unknown)? Besides the peer,
        only the protocol matters (named ports resolve per protocol)."""
        unknown = False
        if ent.nets or ent.not_nets:
            if peer.ip is None:
                unknown = True
            elif (ent.nets and not any(peer.ip in n for n in ent.nets)) or \
                    any(peer.ip in n for n in ent.not_nets):
                return False
        if ent.selector is not None and not self._selects(ent.selector, peer, set_domains):
            return False
        if ent.not_selector is not None and self._selects(ent.not_selector, peer, False):
            return False
        if ent.ports or ent.not_ports:
            m = _ports(ent, peer, protocol)
            if m is False:
                return False
            unknown |= m is None
        if ent.services is not None and \
                (ent.services.namespace, ent.services.name) not in peer.services:
            return False
        if ent.domains and not any(p.matches(d) for p in ent.domains for d in peer.domains):
            return False
        return None if unknown else True

    def _selects(self, selector: Selector, peer: Peer, set_domains: bool) -> bool:
        by_ip, by_domain = self._label_sets(peer)
        for labels in by_ip + (by_domain if set_domains else ()):
            key = (selector, labels)
            m = self._sel_cache.get(key)
            if m is None:
                m = self._sel_cache[key] = selector.matches(labels)
            if m:
                return True
        return False

    def _label_sets(self, peer: Peer) -> tuple[tuple[LabelSet, ...], tuple[LabelSet, ...]]:
        """Label sets a selector may match for this peer: the endpoint's, those of network
        sets containing its IP, and (egress Allow only) of sets allowing one of its names."""
        key = (peer.endpoint, peer.ip, peer.network_set_names, peer.domains)
        found = self._peer_sets.get(key)
        if found is None:
            by_ip = [peer.endpoint.selector_labels] if peer.endpoint else []
            for s in self._sets:
                if peer.network_set_names is not None:
                    member = s.network_set.identity in peer.network_set_names
                else:
                    member = peer.ip is not None and any(peer.ip in n
                                                         for n in s.network_set.nets)
                if member:
                    by_ip.append(s.labels)
            by_domain = [s.labels for s in self._sets
                         if any(p.matches(d) for p in s.egress_domains for d in peer.domains)]
            found = self._peer_sets[key] = (tuple(by_ip), tuple(by_domain))
        return found


class _PolicyIndex:
    """Policies indexed by a ``label == value`` their selector requires, so that finding the
    policies of an endpoint tests a handful of selectors, not all of them. Policies are
    numbered in walk order (tier, then policy order)."""

    def __init__(self, view: _View) -> None:
        self.entries: list[tuple[int, CompiledPolicy]] = []  # walk order → (tier, policy)
        self.always: set[int] = set()
        self.by_pair: dict[tuple[str, str], set[int]] = {}
        for ti, (_, policies) in enumerate(view):
            for cp in policies:
                n = len(self.entries)
                self.entries.append((ti, cp))
                required = cp.applies_to.required_equalities()
                if not required:
                    self.always.add(n)
                else:  # a policy can only select labels containing every required pair,
                    pair = min(required)  # so indexing it under any one of them is exact
                    self.by_pair.setdefault(pair, set()).add(n)

    def candidates(self, labels: LabelSet) -> list[tuple[int, CompiledPolicy]]:
        """``(tier, policy)`` of the policies that may select ``labels``, in walk order."""
        out = set(self.always)
        for pair in labels.items():
            found = self.by_pair.get(pair)
            if found:
                out |= found
        return [self.entries[n] for n in sorted(out)]


def _icmp(rule: CompiledRule, flow: Flow) -> bool | None:
    if flow.protocol not in _ICMP:
        return rule.icmp is None
    for match, negate in ((rule.icmp, False), (rule.not_icmp, True)):
        if match is None:
            continue
        if flow.icmp_type is None:
            return None
        same = match.type == flow.icmp_type and match.code in (None, flow.icmp_code)
        if same == negate:
            return False
    return True


def protocol_match(rule: CompiledRule, proto: int | None) -> bool | None:
    """The rule's protocol and notProtocol against a flow's protocol (``None``: unknown)."""
    unknown = False
    if rule.protocol is not None:
        if proto is None:
            unknown = True
        elif proto != rule.protocol:
            return False
    if rule.not_protocol is not None:
        if proto is None:
            unknown = True
        elif proto == rule.not_protocol:
            return False
    return None if unknown else True


def _ports(ent: CompiledEntity, peer: Peer, protocol: int | None) -> bool | None:
    if peer.port is None:
        return None

    def hit(ports: tuple[object, ...]) -> bool:
        for p in ports:
            if isinstance(p, NamedPort):
                if peer.endpoint is not None and protocol is not None and \
                        peer.endpoint.named_port(p.name, protocol) == peer.port:
                    return True
            elif p.first <= peer.port <= p.last:  # type: ignore[attr-defined]
                return True
        return False

    if ent.ports and not hit(ent.ports):
        return False
    return not (ent.not_ports and hit(ent.not_ports))


def profile_hit(namespace: str) -> Hit:
    """The allow of the namespace's ``kns`` profile, after the last tier."""
    return Hit(PROFILE_TIER, f"{PROFILE_TIER}.kns.{namespace}", "allow", 0)


def end_of_tier(tier: Tier, policies: tuple[CompiledPolicy, ...]) -> Hit:
    # Calico Enterprise names the tier's last non-staged selecting policy.
    enforced = [cp for cp in policies if not cp.policy.staged]
    cp = (enforced or list(policies))[-1]
    return Hit(tier.name, cp.hit_name, tier.default_action.lower(), -1, cp.policy)


def _set_labels(s: NetworkSet, namespaces: Mapping[str, Mapping[str, str]]) -> LabelSet:
    labels = {NAME: s.name, KIND: "NetworkSet"}
    if s.namespace is not None:
        labels.update({f"pcns.{k}": v for k, v in namespaces.get(s.namespace, {}).items()})
        labels[f"pcns.{NAME}"] = s.namespace
        labels[NAMESPACE] = s.namespace
    labels.update(dict(s.labels))
    return LabelSet(labels)
