"""Calico's tier walk for many flows at once: the batch evaluator's inner loop.

:meth:`Evaluator.direction` walks one flow through tiers, policies and rules. Here the flows
(distinct evaluation keys) that meet the same policies — same direction, same applicable
tiers, same namespace — walk together, as arrays: each rule is matched against all of them
at once, its two sides judged once per distinct peer (and protocol, where named ports make
it matter) by the per-flow code itself (:meth:`Evaluator.match_entity`,
:func:`~policy.evaluate.protocol_match`), and a flow leaves the walk exactly where the
per-flow walk would stop, with the same hits. A flow whose match is *unknown* at a rule it
reaches (the per-flow walk would follow both branches) is handed to the per-flow walk whole
— once per distinct way the group's rules match, as nothing else reaches that walk — so every
verdict, trace and uncertain outcome is the per-flow one; Log rules are skipped, as they never
change a decision or a trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policy.compile import CompiledEntity, CompiledPolicy, CompiledRule
from policy.endpoints import Peer
from policy.evaluate import (
    UNPOLICED,
    DirectionVerdict,
    Evaluator,
    Flow,
    Hit,
    end_of_tier,
    profile_hit,
    protocol_match,
)
from policy.model import Action, Direction, NamedPort, Tier

__all__ = ["Flows", "Walk"]

# Three-valued matches, ordered so that the minimum of two criteria is their conjunction.
_FALSE, _UNKNOWN, _TRUE = 0, 1, 2
_ALLOW, _DENY = 0, 1


def _code(m: bool | None) -> int:
    return _UNKNOWN if m is None else _TRUE if m else _FALSE


@dataclass(frozen=True)
class Flows:
    """The distinct flows to decide, as arrays over them: flow ``k`` has its source peer
    ``src_peers[src[k]]``, destination ``dst_peers[dst[k]]`` and protocol
    ``protocols[proto[k]]``; ``ingress[k]`` says whether it is decided at its destination."""

    ingress: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    proto: np.ndarray
    src_peers: Sequence[Peer]
    dst_peers: Sequence[Peer]
    protocols: Sequence[int | None]

    def __len__(self) -> int:
        return len(self.src)

    def flow(self, k: int) -> Flow:
        return Flow(self.src_peers[self.src[k]], self.dst_peers[self.dst[k]],
                    self.protocols[self.proto[k]])


@dataclass(frozen=True)
class _Group:
    direction: Direction
    view: tuple[tuple[Tier, tuple[CompiledPolicy, ...]], ...]
    namespace: str


class Walk:
    """Decide :class:`Flows` against an evaluator's enforced or pending view.

    Side matches are cached per rule side and peer for the life of the walk, so the pending
    view reuses what the enforced view found for the policies they share.
    """

    def __init__(self, evaluator: Evaluator, flows: Flows) -> None:
        self.ev = evaluator
        self.f = flows
        self._sides: dict[tuple[int, bool, bool], np.ndarray] = {}
        self._protos: dict[int, np.ndarray] = {}
        self._nodes: list[tuple[Hit, ...]] = [()]  # traces, as a trie of hits
        self._children: dict[tuple[int, int], int] = {}  # (node, id of the hit) → node
        self._hits: dict[tuple[object, ...], Hit] = {}

    def verdicts(self, pending: bool) -> tuple[np.ndarray, list[DirectionVerdict]]:
        """Per flow, an index into the returned verdicts (one per distinct decision)."""
        f = self.f
        n = len(f)
        out = np.empty(n, dtype=np.int64)
        verdicts: list[DirectionVerdict] = []
        decided: dict[tuple[int, int], int] = {}
        groups, of_flow = self._groups(pending)
        order = np.argsort(of_flow, kind="stable")
        bounds = np.searchsorted(of_flow[order], np.arange(len(groups) + 1))
        for g, group in enumerate(groups):
            members = order[bounds[g]:bounds[g + 1]]
            if not len(members):
                continue
            if group is None:
                out[members] = len(verdicts)
                verdicts.append(UNPOLICED)
                continue
            outcome, trace, handed = self._walk(group, members)
            if handed.any():
                out[members[handed]] = len(verdicts) + self._branching(
                    group, members[handed], pending, verdicts)
            walked = ~handed
            pairs = outcome[walked].astype(np.int64) + 2 * trace[walked]
            distinct, inverse = np.unique(pairs, return_inverse=True)
            ids = np.empty(len(distinct), dtype=np.int64)
            for i, pair in enumerate(distinct.tolist()):
                t, o = divmod(pair, 2)
                found = decided.get((o, t))
                if found is None:
                    found = decided[(o, t)] = len(verdicts)
                    verdicts.append(DirectionVerdict("allow" if o == _ALLOW else "deny",
                                                     self._nodes[t]))
                ids[i] = found
            out[members[walked]] = ids[inverse.reshape(-1)]
        return out, verdicts

    def _branching(self, group: _Group, flows: np.ndarray, pending: bool,
                   verdicts: list[DirectionVerdict]) -> np.ndarray:
        """Decide flows the walk handed over, with the per-flow walk: once per distinct
        match vector over every rule of the group's policies (Log rules included), since the
        per-flow walk looks at a flow through those matches only. Appends the verdicts;
        returns each flow's index among those appended."""
        rules = [rule for _, policies in group.view for cp in policies
                 for rule in cp.rules(group.direction)]
        matches = np.stack([self._match(rule, flows) for rule in rules], axis=1)
        _, first, inverse = np.unique(matches, axis=0, return_index=True, return_inverse=True)
        for k in flows[first].tolist():
            verdicts.append(self.ev.direction(self.f.flow(k), group.direction,
                                              pending=pending))
        return inverse.reshape(-1)

    # -- grouping ------------------------------------------------------------------------

    def _groups(self, pending: bool) -> tuple[list[_Group | None], np.ndarray]:
        """Groups of flows that walk together (``None``: not policed), and each flow's."""
        f = self.f
        n_src = len(f.src_peers)
        local = np.where(f.ingress, f.dst + n_src, f.src)
        distinct, inverse = np.unique(local, return_inverse=True)
        groups: list[_Group | None] = []
        index: dict[tuple[object, ...], int] = {}
        of_local = np.empty(len(distinct), dtype=np.int64)
        for i, u in enumerate(distinct.tolist()):
            ingress = u >= n_src
            peer = f.dst_peers[u - n_src] if ingress else f.src_peers[u]
            ep = peer.endpoint
            if ep is None:
                key: tuple[object, ...] = (None,)
                group = None
            else:
                direction = Direction.INGRESS if ingress else Direction.EGRESS
                view = self.ev.applicable(ep.selector_labels, direction, pending=pending)
                key = (direction, id(view), ep.namespace)
                group = _Group(direction, view, ep.namespace)
            found = index.get(key)
            if found is None:
                found = index[key] = len(groups)
                groups.append(group)
            of_local[i] = found
        return groups, of_local[inverse.reshape(-1)]

    # -- the walk ------------------------------------------------------------------------

    def _walk(self, group: _Group, members: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outcome (allow/deny), trace node and handed-over flag per member."""
        n = len(members)
        outcome = np.full(n, -1, dtype=np.int8)
        trace = np.zeros(n, dtype=np.int64)
        handed = np.zeros(n, dtype=np.bool_)
        live = np.arange(n)
        for tier, policies in group.view:
            if not len(live):
                break
            undecided = self._tier(group.direction, tier, policies, members, live,
                                   outcome, trace, handed)
            if len(undecided):
                trace[undecided] = self._extend(trace[undecided],
                                                self._end_hit(tier, policies))
                if tier.default_action is Action.DENY:
                    outcome[undecided] = _DENY
            live = live[(outcome[live] < 0) & ~handed[live]]
        if len(live):
            trace[live] = self._extend(trace[live], self._profile_hit(group.namespace))
            outcome[live] = _ALLOW
        return outcome, trace, handed

    def _tier(self, direction: Direction, tier: Tier, policies: tuple[CompiledPolicy, ...],
              members: np.ndarray, undecided: np.ndarray, outcome: np.ndarray,
              trace: np.ndarray, handed: np.ndarray) -> np.ndarray:
        """Walk one tier's policies for the ``undecided`` members (positions): record their
        hits and Allow/Deny outcomes, flag the unknown as handed over; return the members
        no rule of the tier decided."""
        for cp in policies:
            for rule in cp.rules(direction):
                if not len(undecided):
                    return undecided
                if rule.action is Action.LOG:
                    continue
                m = self._match(rule, members[undecided])
                unknown = m == _UNKNOWN
                if unknown.any():
                    handed[undecided[unknown]] = True
                    undecided, m = undecided[~unknown], m[~unknown]
                hit = m == _TRUE
                if not hit.any():
                    continue
                at = undecided[hit]
                trace[at] = self._extend(trace[at], self._rule_hit(tier, cp, rule))
                if rule.action is Action.ALLOW:
                    outcome[at] = _ALLOW
                elif rule.action is Action.DENY:
                    outcome[at] = _DENY
                undecided = undecided[~hit]  # Pass: on to the next tier
        return undecided

    # One Hit object per distinct hit, so that the trie is keyed by identity.

    def _rule_hit(self, tier: Tier, cp: CompiledPolicy, rule: CompiledRule) -> Hit:
        hit = self._hits.get((id(rule), id(cp)))
        if hit is None:
            hit = self._hits[(id(rule), id(cp))] = Hit(
                tier.name, cp.hit_name, rule.action.lower(), rule.index, cp.policy)
        return hit

    def _end_hit(self, tier: Tier, policies: tuple[CompiledPolicy, ...]) -> Hit:
        hit = self._hits.get((tier.name, id(policies)))
        if hit is None:
            hit = self._hits[(tier.name, id(policies))] = end_of_tier(tier, policies)
        return hit

    def _profile_hit(self, namespace: str) -> Hit:
        hit = self._hits.get((namespace,))
        if hit is None:
            hit = self._hits[(namespace,)] = profile_hit(namespace)
        return hit

    def _extend(self, parents: np.ndarray, hit: Hit) -> np.ndarray:
        """The trace nodes ``parents`` followed by ``hit``."""
        first = int(parents[0])
        if (parents == first).all():  # the usual case: one trace so far
            return np.full(len(parents), self._child(first, hit), dtype=np.int64)
        distinct, inverse = np.unique(parents, return_inverse=True)
        children = np.fromiter((self._child(p, hit) for p in distinct.tolist()),
                               dtype=np.int64, count=len(distinct))
        return children[inverse.reshape(-1)]

    def _child(self, parent: int, hit: Hit) -> int:
        child = self._children.get((parent, id(hit)))
        if child is None:
            child = self._children[(parent, id(hit))] = len(self._nodes)
            self._nodes.append((*self._nodes[parent], hit))
        return child

    # -- matching ------------------------------------------------------------------------

    def _match(self, rule: CompiledRule, flows: np.ndarray) -> np.ndarray:
        """The rule's three-valued match for each of ``flows`` (flow indices)."""
        f = self.f
        if rule.icmp is not None or rule.not_icmp is not None or rule.ip_version is not None:
            # ICMP type/code and IP version are properties of the whole flow.
            return np.fromiter((_code(self.ev.match_rule(rule, f.flow(k)))
                                for k in flows.tolist()), dtype=np.int8, count=len(flows))
        table = self._protos.get(id(rule))
        if table is None:
            table = self._protos[id(rule)] = np.array(
                [_code(protocol_match(rule, p)) for p in f.protocols], dtype=np.int8)
        m = table[f.proto[flows]]
        for ent, dst, set_domains in ((rule.src, False, False),
                                      (rule.dst, True, rule.allow_set_domains)):
            if _trivial(ent) or not m.any():
                continue
            m = np.minimum(m, self._side(ent, dst, set_domains, flows))
        return m  # type: ignore[no-any-return]

    def _side(self, ent: CompiledEntity, dst: bool, set_domains: bool,
              flows: np.ndarray) -> np.ndarray:
        """``match_entity`` of one rule side for each of ``flows``, computed once per
        distinct peer (and protocol, when the side names ports)."""
        f = self.f
        peers = f.dst_peers if dst else f.src_peers
        ids = (f.dst if dst else f.src)[flows]
        named = _named_ports(ent)
        width = len(f.protocols)
        if named:
            ids = ids * width + f.proto[flows]
        key = (id(ent), dst, set_domains)
        table = self._sides.get(key)
        if table is None:
            table = self._sides[key] = np.full(len(peers) * (width if named else 1), -1,
                                               dtype=np.int8)
        found = table[ids]
        missing = found < 0
        if missing.any():
            for i in np.unique(ids[missing]).tolist():
                peer, proto = (peers[i // width], f.protocols[i % width]) if named else \
                    (peers[i], None)
                table[i] = _code(self.ev.match_entity(ent, peer, proto, set_domains))
            found = table[ids]
        return found  # type: ignore[no-any-return]


def _trivial(ent: CompiledEntity) -> bool:
    """A rule side with no criteria matches every peer."""
    return not (ent.nets or ent.not_nets or ent.selector is not None
                or ent.not_selector is not None or ent.ports or ent.not_ports
                or ent.services is not None or ent.domains)


def _named_ports(ent: CompiledEntity) -> bool:
    return any(isinstance(p, NamedPort) for p in (*ent.ports, *ent.not_ports))
