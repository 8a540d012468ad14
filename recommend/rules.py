"""Observed traffic → Allow rules, in Calico's categories and order (reference/calico.md §7.3).

Per direction each observation's remote end is classified:

========================  ===========  ===============================================
remote                    category     rule (ports always on ``destination.ports``)
========================  ===========  ===============================================
``net``/``pub``, egress,  Domains      ``destination.domains`` (exact names; with
with DNS names                         ``domain_wildcards`` sibling names → ``*.parent``)
``net``/``pub``, egress,  Service      ``destination.services`` (no ports: Calico takes
through a service                      the service's)
``wep``                   Namespace    workload scope: the peer's stable selector, plus
                                       ``namespaceSelector: projectcalico.org/name ==
                                       '<ns>'`` for another namespace; namespace scope:
                                       the namespace selector alone (as Calico)
``ns``                    NetworkSet   ``projectcalico.org/kind == 'NetworkSet' &&
                                       projectcalico.org/name == '<set>'`` in its
                                       namespace, or ``namespaceSelector: global()``
``net``/``pvt``, ``hep``  Private      ``nets``: the RFC 1918 blocks (hosts are assumed
                                       to be on private addresses)
``net``/``pub``           Public       protocol and ports only
========================  ===========  ===============================================

Rules merge per category, peer and protocol, with the observed ports unioned (exact; a
range only where :func:`recommend.ports.merge_ports` says); Domains merge names that saw the
same protocol and ports. Within a category rules sort by protocol, ports, then peer.
A workload that resolved names (egress to port 53, or DNS names on its flows) also gets
UDP and TCP 53 to the cluster DNS workload, so that its domain rules keep working.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from recommend.cluster import Cluster
from recommend.model import Category, Observation, PeerMatch, Rule, Target
from recommend.observe import workload_key
from recommend.ports import calico_protocol, merge_ports, takes_ports
from recommend.selectors import selector_text

__all__ = ["DEFAULT_OPTIONS", "PRIVATE_NETS", "RuleOptions", "build_rules", "namespace_selector",
           "wildcard_domains"]

PRIVATE_NETS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
NAME_LABEL = "projectcalico.org/name"
KIND_LABEL = "projectcalico.org/kind"
_CLUSTER_SUFFIXES = (".cluster.local", ".svc")
# Two-label parents that are public suffixes, not an organisation's domain: never `*.co.uk`.
_SUFFIX_LABELS = {"co", "com", "net", "org", "gov", "ac", "edu"}


@dataclass(frozen=True, slots=True)
class RuleOptions:
    domain_wildcards: bool = False


DEFAULT_OPTIONS = RuleOptions()


@dataclass(frozen=True, slots=True)
class _Part:
    """One observation's contribution to one rule."""

    category: Category
    peer: PeerMatch
    protocol: str | int
    port: int | None
    observation: Observation | None  # None: added for DNS
    domain: str | None = None


def namespace_selector(namespace: str) -> str:
    return selector_text([(NAME_LABEL, namespace)])


def build_rules(observations: Sequence[Observation], target: Target, cluster: Cluster,
                options: RuleOptions = DEFAULT_OPTIONS) -> tuple[tuple[Rule, ...],
                                                               tuple[Rule, ...], list[str]]:
    """Ingress and egress rules for ``target`` from its observations, and warnings."""
    warnings: list[str] = []
    parts = {"ingress": [], "egress": []}  # type: dict[str, list[_Part]]
    for obs in observations:
        parts[obs.direction] += _classify(obs, target, cluster, warnings)
    if _resolves_names(observations):
        parts["egress"] += _dns_parts(target, cluster, warnings)
    out = {d: _merge(d, ps, options, warnings) for d, ps in parts.items()}
    return out["ingress"], out["egress"], warnings


def _resolves_names(observations: Iterable[Observation]) -> bool:
    return any(o.direction == "egress" and (o.port == 53 or o.domains) for o in observations)


def _classify(obs: Observation, target: Target, cluster: Cluster,
              warnings: list[str]) -> list[_Part]:
    protocol = calico_protocol(obs.proto)
    port = obs.port if takes_ports(protocol) else None
    peer = obs.peer
    egress = obs.direction == "egress"
    if peer.type == "wep":
        match = _workload_peer(obs, target, cluster, warnings)
        return [_Part(Category.NAMESPACE, match, protocol, port, obs)]
    if peer.type == "ns":
        return [_Part(Category.NETWORK_SET, _set_peer(peer.namespace, peer.name_aggr),
                      protocol, port, obs)]
    if peer.type == "hep" or peer.name_aggr == "pvt":
        return [_Part(Category.PRIVATE, PeerMatch(nets=PRIVATE_NETS), protocol, port, obs)]
    domains = [d for d in obs.domains if not d.endswith(_CLUSTER_SUFFIXES)]
    if egress and domains:
        return [_Part(Category.DOMAINS, PeerMatch(), protocol, port, obs, d) for d in domains]
    if egress and obs.service:
        return [_Part(Category.SERVICE, PeerMatch(service=obs.service), protocol, None, obs)]
    return [_Part(Category.PUBLIC, PeerMatch(), protocol, port, obs)]


def _workload_peer(obs: Observation, target: Target, cluster: Cluster,
                   warnings: list[str]) -> PeerMatch:
    ns = obs.peer.namespace
    if target.scope == "namespace":
        return PeerMatch(namespace_selector=namespace_selector(ns), namespace=ns)
    choice = cluster.choice(ns, workload_key(obs.peer.name_aggr), obs.peer_labels)
    if choice.warning:
        warnings.append(f"peer {obs.peer} {choice.warning}")
    return PeerMatch(selector=choice.selector,
                     namespace_selector=None if ns == target.namespace
                     else namespace_selector(ns),
                     labels=choice.labels, namespace=ns)


def _set_peer(namespace: str, name: str) -> PeerMatch:
    # Calico's recommender selects sets by the name and kind labels Enterprise gives them.
    selector = selector_text([(NAME_LABEL, name), (KIND_LABEL, "NetworkSet")])
    global_set = namespace in ("-", "")
    return PeerMatch(selector=selector,
                     namespace_selector="global()" if global_set
                     else namespace_selector(namespace),
                     namespace=None if global_set else namespace,
                     network_set=name if global_set else f"{namespace}/{name}")


def _dns_parts(target: Target, cluster: Cluster, warnings: list[str]) -> list[_Part]:
    dns = cluster.dns_peer()
    if dns.warning:
        warnings.append(dns.warning)
    if target.scope == "namespace":  # peers are whole namespaces at this scope
        match = PeerMatch(namespace_selector=namespace_selector(dns.namespace),
                          namespace=dns.namespace)
    else:
        match = PeerMatch(selector=dns.choice.selector,
                          namespace_selector=None if dns.namespace == target.namespace
                          else namespace_selector(dns.namespace),
                          labels=dns.choice.labels, namespace=dns.namespace)
    return [_Part(Category.NAMESPACE, match, proto, 53, None) for proto in ("UDP", "TCP")]


def _merge(direction: str, parts: list[_Part], options: RuleOptions,
           warnings: list[str]) -> tuple[Rule, ...]:
    groups: dict[tuple[object, ...], list[_Part]] = {}
    for p in parts:
        key = (p.category, p.peer, p.protocol, p.domain)
        groups.setdefault(key, []).append(p)
    rules = [_rule(direction, ps, warnings) for ps in groups.values()]
    plain = [r for r in rules if r.category is not Category.DOMAINS]
    return tuple(sorted(plain + _merge_domains(rules, options), key=Rule.sort_key))


def _rule(direction: str, parts: list[_Part], warnings: list[str]) -> Rule:
    first = parts[0]
    ports: tuple[int | str, ...] = ()
    if takes_ports(first.protocol) and first.category is not Category.SERVICE:
        if any(p.port is None for p in parts):
            warnings.append(f"{direction} {first.protocol} to {first.peer.describe()}: "
                            "records carry no destination port; the rule allows every port")
        else:
            ports = merge_ports(p.port for p in parts if p.port is not None)
    evidence = tuple(sorted({p.observation for p in parts if p.observation is not None},
                            key=Observation.sort_key))
    peer = first.peer
    if first.domain is not None:
        peer = PeerMatch(domains=(first.domain,))
    return Rule(direction, first.category, first.protocol, ports, peer, evidence,
                dns=any(p.observation is None for p in parts))


def _merge_domains(rules: list[Rule], options: RuleOptions) -> list[Rule]:
    """One rule per protocol and port set, listing every name seen with exactly those."""
    groups: dict[tuple[object, ...], list[Rule]] = {}
    for r in rules:
        if r.category is Category.DOMAINS:
            groups.setdefault((r.protocol, r.ports), []).append(r)
    out = []
    for (protocol, ports), rs in groups.items():
        names = sorted({d for r in rs for d in r.peer.domains})
        if options.domain_wildcards:
            names = wildcard_domains(names)
        evidence = tuple(sorted({o for r in rs for o in r.evidence}, key=Observation.sort_key))
        out.append(Rule(rs[0].direction, Category.DOMAINS, protocol, ports,  # type: ignore[arg-type]
                        PeerMatch(domains=tuple(names)), evidence))
    return out


def wildcard_domains(names: Iterable[str]) -> list[str]:
    """Names sharing a parent domain become ``*.parent`` (which, as in Calico, does not
    match the parent itself); a parent that is a public suffix is never wildcarded.

    >>> wildcard_domains(["a.s3.example.com", "b.s3.example.com", "api.twilio.com"])
    ['*.s3.example.com', 'api.twilio.com']
    """
    by_parent: dict[tuple[str, str], list[str]] = {}
    for name in sorted(set(names)):
        parent = name.partition(".")[2]
        key = ("parent", parent) if _wildcardable(parent) else ("name", name)
        by_parent.setdefault(key, []).append(name)
    out = set()
    for (_, parent), members in by_parent.items():
        out |= {f"*.{parent}"} if len(members) > 1 else set(members)
    return sorted(out)


def _wildcardable(parent: str) -> bool:
    labels = parent.split(".")
    return len(labels) >= 3 or (len(labels) == 2 and labels[0] not in _SUFFIX_LABELS)
