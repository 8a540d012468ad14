"""Differential test of the batch walk against the per-row reference on random policy sets.

``tests/test_batch.py`` checks the batch evaluator on two fixed policy sets; here hypothesis
draws the policy set too: 1-3 tiers (random order, default action Deny or Pass), 1-8
policies of every kind (GlobalNetworkPolicy, NetworkPolicy, Kubernetes NetworkPolicy, staged
Calico and Kubernetes policies, staged deletes of existing names), random selectors over a
small label vocabulary and rules using every criterion the loader accepts (actions, protocol
and notProtocol, ports and notPorts with ranges and named ports, selectors, notSelector,
namespaceSelector, nets and notNets, service accounts, ICMP type/code, ipVersion, egress
domains, services), and global and namespaced network sets. Every generated document is
valid by construction: a set the loader refuses fails the test (nothing is skipped).

Flow tables (<= 40 rows) draw their endpoints from a small per-example pool of workloads
(with and without IPs, pods and aggregated ``name-*`` names), network sets, public and
private IPs, with missing ports, several protocols, both reporters, domains and services, so
that keys share peers and groups as in real logs. A second test splits the same tables into
chunks with per-chunk dictionary-encoded columns, as Parquet readers produce them.

Set ``BATCH_RANDOM_EXAMPLES`` to run more examples (e.g. ``BATCH_RANDOM_EXAMPLES=5000``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_batch import SCHEMA, _row, assert_batch_equals_reference

from policy import Evaluator, PolicySet, load_text
from policy.batch import BatchEvaluator
from policy.endpoints import Endpoint, NamedPortDef

EXAMPLES = int(os.environ.get("BATCH_RANDOM_EXAMPLES", "400"))

NAMESPACES = {"shop": {"team": "a", "env": "prod"}, "dev": {"team": "b"}}

# -- selectors ---------------------------------------------------------------------------

_ENDPOINT_ATOMS = [
    "app == 'web'", "app == 'api'", "app == 'db'", "app in {'web', 'api'}",
    "app != 'db'", "app not in {'web'}", "tier == 'fe'", "tier == 'be'", "has(tier)",
    "has(x)", "!has(x)", "!(app == 'api')", "all()", "type == 'public'",
    "type == 'partners'", "has(type)", "projectcalico.org/name == 'corp'",
    "projectcalico.org/serviceaccount == 'robot'",
]
_NAMESPACE_SELECTORS = ["team == 'a'", "team == 'b'", "has(team)", "all()", "global()",
                        "projectcalico.org/name == 'dev'", "env == 'prod'"]


@st.composite
def selectors(draw: st.DrawFn, depth: int = 2) -> str:
    atom = st.sampled_from(_ENDPOINT_ATOMS)
    if depth == 0:
        return draw(atom)
    shape = draw(st.sampled_from(["atom", "atom", "atom", "atom", "and", "or", "not"]))
    if shape == "atom":
        return draw(atom)
    if shape == "not":
        return f"!({draw(selectors(depth - 1))})"
    op = "&&" if shape == "and" else "||"
    return f"({draw(selectors(depth - 1))}) {op} ({draw(selectors(depth - 1))})"


# -- rules -------------------------------------------------------------------------------

_NETS = {4: ["10.0.0.0/8", "10.1.0.0/16", "8.0.0.0/8", "93.184.216.0/24", "192.168.0.0/16",
             "0.0.0.0/0", "52.0.0.0/8"],
         6: ["fd00::/8", "2001:db8::/32", "::/0"]}
_PORTS = [80, 443, 53, 8080, "8000:8100", "1:1024", "http", "dns", "40000:40010", 0]
_PORTED = ["TCP", "UDP", "SCTP"]


def _maybe(draw: st.DrawFn, p_true: float = 0.3) -> bool:
    return draw(st.integers(0, 99)) < int(p_true * 100)


def _port_list(draw: st.DrawFn, max_size: int = 2) -> list[Any]:
    return draw(st.lists(st.sampled_from(_PORTS), min_size=1, max_size=max_size))


def _domain_entity(draw: st.DrawFn, ported: bool) -> dict[str, Any]:
    """An egress Allow destination by domains (which exclude nets and selector)."""
    ent: dict[str, Any] = {"domains": draw(st.lists(st.sampled_from(
        ["*.example.com", "api.example.com", "x.partner.org", "*.org"]),
        min_size=1, max_size=2, unique=True))}
    if _maybe(draw, 0.3):
        ent["notSelector"] = draw(selectors(1))
    if ported and _maybe(draw, 0.5):
        ent["ports"] = _port_list(draw)
    return ent


def _service_entity(draw: st.DrawFn, ported: bool, dst: bool) -> dict[str, Any]:
    """A side by Kubernetes service (no selectors, nets or service accounts with it)."""
    ent: dict[str, Any] = {"services": {"name": draw(st.sampled_from(["db", "web"]))}}
    if _maybe(draw, 0.6):
        ent["services"]["namespace"] = draw(st.sampled_from(["shop", "dev"]))
    if not dst and ported and _maybe(draw, 0.4):
        ent["ports"] = _port_list(draw)
    return ent


def _service_accounts(draw: st.DrawFn) -> dict[str, Any]:
    sa: dict[str, Any] = {}
    if _maybe(draw, 0.7):
        sa["names"] = draw(st.lists(st.sampled_from(["robot", "default", "ghost"]),
                                    min_size=1, max_size=2, unique=True))
    if not sa or _maybe(draw, 0.3):
        sa["selector"] = draw(st.sampled_from(["role == 'robot'", "all()", "has(role)"]))
    return sa


@st.composite
def entities(draw: st.DrawFn, *, ported: bool, version: int | None, dst: bool,
             egress_allow: bool) -> dict[str, Any]:
    if dst and egress_allow and _maybe(draw, 0.15):
        return _domain_entity(draw, ported)
    if _maybe(draw, 0.12):
        return _service_entity(draw, ported, dst)
    ent: dict[str, Any] = {}
    if _maybe(draw, 0.35):
        ent["selector"] = draw(selectors(1))
    if _maybe(draw, 0.15):
        ent["notSelector"] = draw(selectors(1))
    if _maybe(draw, 0.2):
        ent["namespaceSelector"] = draw(st.sampled_from(_NAMESPACE_SELECTORS))
    v = version or draw(st.sampled_from([4, 4, 4, 6]))
    for key, p in (("nets", 0.2), ("notNets", 0.12)):
        if _maybe(draw, p):
            ent[key] = draw(st.lists(st.sampled_from(_NETS[v]), min_size=1, max_size=2))
    if _maybe(draw, 0.1):
        ent["serviceAccounts"] = _service_accounts(draw)
    if ported and _maybe(draw, 0.4 if dst else 0.15):
        ent["ports"] = _port_list(draw, 3)
    if ported and _maybe(draw, 0.15):
        ent["notPorts"] = _port_list(draw)
    return ent


@st.composite
def calico_rules(draw: st.DrawFn, egress: bool) -> dict[str, Any]:
    action = draw(st.sampled_from(["Allow", "Allow", "Deny", "Deny", "Pass", "Log"]))
    rule: dict[str, Any] = {"action": action}
    protocol = draw(st.sampled_from([None, None, "TCP", "TCP", "UDP", "SCTP", "ICMP",
                                     "ICMPv6", 47]))
    if protocol is not None:
        rule["protocol"] = protocol
    if _maybe(draw, 0.12):
        rule["notProtocol"] = draw(st.sampled_from(["TCP", "UDP", "ICMP", 47]))
    if protocol in ("ICMP", "ICMPv6"):
        rule.update(_icmp_fields(draw))
    version = None
    if _maybe(draw, 0.1):
        version = draw(st.sampled_from([4, 6]))
        rule["ipVersion"] = version
    ported = protocol in _PORTED
    for side, dst in (("source", False), ("destination", True)):
        if _maybe(draw, 0.75):
            ent = draw(entities(ported=ported, version=version, dst=dst,
                                egress_allow=egress and action == "Allow"))
            if ent:
                rule[side] = ent
    _one_ip_version(rule, version)
    return rule


def _icmp_fields(draw: st.DrawFn) -> dict[str, Any]:
    out = {}
    for key in ("icmp", "notICMP"):
        if _maybe(draw, 0.3):
            icmp: dict[str, int] = {"type": draw(st.sampled_from([0, 3, 8]))}
            if _maybe(draw, 0.4):
                icmp["code"] = draw(st.sampled_from([0, 1]))
            out[key] = icmp
    return out


def _one_ip_version(rule: dict[str, Any], version: int | None) -> None:
    """One rule may not mix IPv4 and IPv6 across its sides: drop the nets if it would."""
    versions = {6 if ":" in n else 4 for side in ("source", "destination")
                for k in ("nets", "notNets") for n in rule.get(side, {}).get(k, [])}
    if len(versions) > 1 or (version and versions - {version}):
        for side in ("source", "destination"):
            for k in ("nets", "notNets"):
                rule.get(side, {}).pop(k, None)


# -- Kubernetes policies -------------------------------------------------------------------

@st.composite
def label_selectors(draw: st.DrawFn, namespace: bool = False) -> dict[str, Any]:
    if namespace:
        choices = [{}, {"matchLabels": {"team": "a"}}, {"matchLabels": {"team": "b"}},
                   {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
                   {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}]
        return draw(st.sampled_from(choices))
    sel: dict[str, Any] = {}
    if _maybe(draw, 0.5):
        sel["matchLabels"] = {"app": draw(st.sampled_from(["web", "api", "db"]))}
    if _maybe(draw, 0.3):
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        expr: dict[str, Any] = {"key": draw(st.sampled_from(["app", "tier", "x"])),
                                "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = draw(st.lists(st.sampled_from(["web", "api", "fe", "be"]),
                                           min_size=1, max_size=2, unique=True))
        sel["matchExpressions"] = [expr]
    return sel


@st.composite
def k8s_rules(draw: st.DrawFn, egress: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    peers = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["pod", "ns", "both", "ip"]))
        if kind == "ip":
            block: dict[str, Any] = {"cidr": draw(st.sampled_from(["10.0.0.0/8", "8.0.0.0/8",
                                                                   "0.0.0.0/0"]))}
            if block["cidr"] != "8.0.0.0/8" and _maybe(draw, 0.5):
                block["except"] = ["10.1.0.0/16"]
            peers.append({"ipBlock": block})
            continue
        peer: dict[str, Any] = {}
        if kind in ("pod", "both"):
            peer["podSelector"] = draw(label_selectors())
        if kind in ("ns", "both"):
            peer["namespaceSelector"] = draw(label_selectors(namespace=True))
        peers.append(peer)
    if peers:
        rule["to" if egress else "from"] = peers
    ports = []
    for _ in range(draw(st.integers(0, 2))):
        port: dict[str, Any] = {}
        if _maybe(draw, 0.7):
            port["protocol"] = draw(st.sampled_from(["TCP", "UDP", "SCTP"]))
        value = draw(st.sampled_from([None, 80, 443, 53, 8080, "http", "dns"]))
        if value is not None:
            port["port"] = value
            if isinstance(value, int) and _maybe(draw, 0.2):
                port["endPort"] = value + 100
        ports.append(port)
    if ports:
        rule["ports"] = ports
    return rule


# -- documents ---------------------------------------------------------------------------

_TIER_NAMES = ["security", "platform", "ops"]


@st.composite
def policy_documents(draw: st.DrawFn) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    tiers = draw(st.lists(st.sampled_from(_TIER_NAMES), min_size=1, max_size=3, unique=True))
    for t in tiers:
        spec: dict[str, Any] = {"defaultAction": draw(st.sampled_from(["Deny", "Pass"]))}
        order = draw(st.sampled_from([None, 100, 200, 200, 300, 2_000_000]))
        if order is not None:
            spec["order"] = order
        docs.append({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
                     "metadata": {"name": t}, "spec": spec})
    all_tiers = [*tiers, "default"]
    enforced: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["GlobalNetworkPolicy", "NetworkPolicy", "K8s",
                                     "StagedNetworkPolicy", "StagedGlobalNetworkPolicy",
                                     "StagedKubernetesNetworkPolicy", "StagedDelete"]))
        if kind == "StagedDelete":
            if not enforced:
                continue
            target = draw(st.sampled_from(enforced))
            docs.append(_staged_delete(target))
            enforced.remove(target)
            continue
        if kind in ("K8s", "StagedKubernetesNetworkPolicy"):
            doc = draw(_k8s_policy(i, staged=kind != "K8s"))
        else:
            doc = draw(_calico_policy(i, kind, all_tiers))
        if not kind.startswith("Staged") and _maybe(draw, 0.25):
            # The same object staged with changes (Set): replaces it in the pending view.
            staged = draw(_k8s_policy(i, staged=True) if kind == "K8s" else
                          _calico_policy(i, "Staged" + kind, [doc["spec"].get("tier",
                                                                              "default")]))
            staged["metadata"] = dict(doc["metadata"])
            docs.append(staged)
        elif not kind.startswith("Staged"):
            enforced.append(doc)
        docs.append(doc)
    docs += draw(network_sets())
    return docs


def _staged_delete(target: dict[str, Any]) -> dict[str, Any]:
    if target["apiVersion"] == "networking.k8s.io/v1":
        kind, spec = "StagedKubernetesNetworkPolicy", {"stagedAction": "Delete"}
    else:
        kind = "Staged" + target["kind"]
        spec = {"stagedAction": "Delete", "tier": target["spec"].get("tier", "default"),
                "selector": "all()"}
    return {"apiVersion": "projectcalico.org/v3", "kind": kind,
            "metadata": dict(target["metadata"]), "spec": spec}


@st.composite
def _calico_policy(draw: st.DrawFn, i: int, kind: str, tiers: list[str]) -> dict[str, Any]:
    tier = draw(st.sampled_from(tiers))
    name = f"{tier}.p{i}" if tier != "default" or _maybe(draw, 0.5) else f"p{i}"
    meta: dict[str, Any] = {"name": name}
    namespaced = "Global" not in kind
    if namespaced:
        meta["namespace"] = draw(st.sampled_from(["shop", "dev"]))
    spec: dict[str, Any] = {}
    if tier != "default" or _maybe(draw, 0.5):
        spec["tier"] = tier
    order = draw(st.sampled_from([None, 1, 5, 10, 10]))
    if order is not None:
        spec["order"] = order
    if _maybe(draw, 0.6):
        spec["selector"] = draw(selectors(1))
    if not namespaced and _maybe(draw, 0.2):
        spec["namespaceSelector"] = draw(st.sampled_from(_NAMESPACE_SELECTORS[:-3]))
    if _maybe(draw, 0.08):
        spec["serviceAccountSelector"] = draw(st.sampled_from(["role == 'robot'", "all()"]))
    types = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"], None]))
    if types is not None:
        spec["types"] = types
    for key, egress in (("ingress", False), ("egress", True)):
        if types is None or key.capitalize() in types:
            rules = draw(st.lists(calico_rules(egress), max_size=4))
            if rules:
                spec[key] = rules
    if kind.startswith("Staged") and _maybe(draw, 0.3):
        spec["stagedAction"] = "Set"
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
            "spec": spec}


@st.composite
def _k8s_policy(draw: st.DrawFn, i: int, staged: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(label_selectors())}
    types = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"], None]))
    if types is not None:
        spec["policyTypes"] = types
    for key, egress in (("ingress", False), ("egress", True)):
        if types is None or key.capitalize() in types:
            rules = draw(st.lists(k8s_rules(egress), max_size=3))
            if rules:
                spec[key] = rules
    meta = {"name": f"k{i}", "namespace": draw(st.sampled_from(["shop", "dev"]))}
    if staged:
        return {"apiVersion": "projectcalico.org/v3", "kind": "StagedKubernetesNetworkPolicy",
                "metadata": meta, "spec": spec}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": spec}


_SET_NAMES = ["public", "partners", "corp"]


@st.composite
def network_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    docs = []
    for name in draw(st.lists(st.sampled_from(_SET_NAMES), max_size=3, unique=True)):
        meta: dict[str, Any] = {"name": name}
        namespaced = _maybe(draw, 0.25)
        if namespaced:
            meta["namespace"] = "shop"
        if _maybe(draw, 0.8):
            meta["labels"] = {"type": draw(st.sampled_from(["public", "partners"]))}
        spec: dict[str, Any] = {}
        nets = draw(st.lists(st.sampled_from(["8.0.0.0/8", "93.184.216.0/24", "52.0.0.0/8",
                                              "10.2.0.0/16", "2001:db8::/32"]), max_size=2))
        if nets:
            spec["nets"] = nets
        if _maybe(draw, 0.3):
            spec["allowedEgressDomains"] = draw(st.lists(st.sampled_from(
                ["*.partner.org", "api.example.com"]), min_size=1, max_size=2, unique=True))
        docs.append({"apiVersion": "projectcalico.org/v3",
                     "kind": "NetworkSet" if namespaced else "GlobalNetworkSet",
                     "metadata": meta, "spec": spec})
    return docs


# -- flows -------------------------------------------------------------------------------

_WEP_IPS = [None, None, "10.1.0.7", "10.1.0.8", "10.2.0.5", "192.168.1.4", "fd00::7"]
_OTHER_IPS = [None, "8.8.8.8", "93.184.216.34", "52.1.2.3", "10.2.0.9", "1.1.1.1",
              "2001:db8::1"]


@st.composite
def workloads(draw: st.DrawFn) -> dict[str, Any]:
    app = draw(st.sampled_from(["web", "api", "db", "robot"]))
    labels = [("app", app)] if app != "robot" or _maybe(draw, 0.5) else []
    if _maybe(draw, 0.4):
        labels.append(("tier", draw(st.sampled_from(["fe", "be"]))))
    if _maybe(draw, 0.2):
        labels.append(("x", ""))
    pod = _maybe(draw, 0.5)
    suffix = draw(st.sampled_from(["1", "2"]))
    return {"type": "wep", "namespace": draw(st.sampled_from(["shop", "dev"])),
            "name": f"{app}-{suffix}" if pod else "-", "name_aggr": f"{app}-*",
            "labels": labels, "ip": draw(st.sampled_from(_WEP_IPS))}


@st.composite
def others(draw: st.DrawFn) -> dict[str, Any]:
    if _maybe(draw, 0.5):
        namespaced = _maybe(draw, 0.25)
        return {"type": "ns", "namespace": "shop" if namespaced else "-", "name": "-",
                "name_aggr": draw(st.sampled_from(_SET_NAMES)), "labels": None,
                "ip": draw(st.sampled_from(_OTHER_IPS))}
    ip = draw(st.sampled_from(_OTHER_IPS))
    return {"type": "net", "namespace": "-", "name": "-",
            "name_aggr": "pub" if ip and not ip.startswith("10.") else "pvt",
            "labels": None, "ip": ip}


@st.composite
def flow_rows(draw: st.DrawFn, side: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    row = _row(draw(side), draw(side), draw(st.sampled_from(["src", "dst"])),
               draw(st.sampled_from(["tcp", "tcp", "udp", "icmp", "47", "sctp", None])),
               draw(st.sampled_from([80, 443, 53, 8080, 8050, 40005, None])),
               draw(st.sampled_from([None, 40005, 50000])),
               draw(st.sampled_from([None, [], ["api.example.com"], ["x.partner.org"],
                                     ["Web.Example.com", "x.org"]])))
    svc = draw(st.sampled_from([("-", "-"), ("-", "-"), ("shop", "db"), ("dev", "web")]))
    row["dest_service_namespace"], row["dest_service_name"] = svc
    return row


@st.composite
def flow_tables(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to 40 rows between endpoints of a small pool, so that keys share their peers."""
    pool = draw(st.lists(st.one_of(workloads(), workloads(), others()), min_size=2,
                         max_size=7))
    size = draw(st.integers(1, 40))
    return draw(st.lists(flow_rows(st.sampled_from(pool)), min_size=size, max_size=40))


# -- evaluators --------------------------------------------------------------------------

def _lookup(namespace: str, name: str) -> Endpoint | None:
    if namespace not in NAMESPACES or name.startswith("db"):
        return None
    ports: tuple[NamedPortDef, ...] = ()
    if name.startswith("api"):
        ports = (NamedPortDef("http", 6, 8080), NamedPortDef("dns", 17, 53))
    elif name.startswith("web"):
        ports = (NamedPortDef("http", 6, 80),)
    robot = name.startswith("robot")
    return Endpoint(namespace, name, service_account="robot" if robot else "default",
                    namespace_labels=tuple(sorted(NAMESPACES[namespace].items())),
                    service_account_labels=(("role", "robot"),) if robot else (),
                    named_ports=ports)


def _make(text: str, with_lookup: bool) -> Callable[[], BatchEvaluator]:
    def make() -> BatchEvaluator:
        ps = PolicySet.from_documents(load_text(text))
        return BatchEvaluator(Evaluator(ps, NAMESPACES), _lookup if with_lookup else None,
                              namespaces=NAMESPACES)
    return make


def _text(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policy_documents(), flow_tables(), st.booleans())
def test_batch_matches_reference_on_random_policy_sets(
        docs: list[dict[str, Any]], flow_rows: list[dict[str, Any]], with_lookup: bool) -> None:
    # Documents are valid by construction: a DocumentError here is a generator bug or a
    # loader that refuses what Calico accepts, and fails the test.
    assert_batch_equals_reference(flow_rows, _make(_text(docs), with_lookup))


@settings(max_examples=EXAMPLES // 4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policy_documents(), flow_tables(), st.booleans(), st.data())
def test_batch_matches_reference_on_chunked_dictionary_tables(
        docs: list[dict[str, Any]], flow_rows: list[dict[str, Any]], with_lookup: bool,
        data: st.DataObject) -> None:
    """The same, with the table split into chunks and some string columns dictionary
    encoded per chunk (as tables read from Parquet are): keys must not depend on layout."""
    make = _make(_text(docs), with_lookup)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(flow_rows)), max_size=3)))
    bounds = [0, *cuts, len(flow_rows)]
    encode = data.draw(st.lists(st.sampled_from(
        ["reporter", "proto", "source_name_aggr", "dest_name_aggr", "source_namespace",
         "dest_ip", "source_ip"]), max_size=4, unique=True))
    chunks = []
    for a, b in itertools.pairwise(bounds):
        chunk = pa.Table.from_pylist(flow_rows[a:b], schema=SCHEMA)
        for name in encode:
            i = chunk.schema.get_field_index(name)
            chunk = chunk.set_column(i, name, pc.dictionary_encode(chunk[name]))
        chunks.append(chunk)
    assert_batch_equals_reference(flow_rows, make, pa.concat_tables(chunks))
