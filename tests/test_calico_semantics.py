"""Truth tables for Calico-only policy semantics (``reference/calico.md`` §1.4, §2-§6).

Every case is built from ``projectcalico.org/v3`` YAML documents as users write them, loaded
with :func:`policy.load_text`, and evaluated for one flow. Each row states the exact verdict
and, where a trace exists, the exact classic Enterprise hit strings
(``<index>|<tier>|<name part>|<action>|<rule>``).

Cast: namespaces ``storefront`` (``env=prod``) and ``dev`` (``env=dev``); pods FRONT, BACK
(named port ``http`` = TCP 8080), CURL_SF (service account ``curl-sa``, SA label
``role=admin``) and SCANNER (no ``app`` label) in storefront; CURL (``curl-sa``) in dev; EXT
is an address outside the cluster.
"""

from __future__ import annotations

import json
from ipaddress import ip_address

import pytest

import policy
from policy import DirectionVerdict, Endpoint, Flow, NamedPortDef, Peer, Verdict

TCP, UDP, ICMP, ICMPV6, SCTP = 6, 17, 1, 58, 132
NAMESPACES = {"storefront": {"env": "prod"}, "dev": {"env": "dev"}}
EXT = "203.0.113.9"
KNS_SF = "__PROFILE__|__PROFILE__.kns.storefront|allow|0"
KNS_DEV = "__PROFILE__|__PROFILE__.kns.dev|allow|0"


def pod(ns: str, name: str, ip: str, *, sa: str = "default", sa_labels: tuple = (),
        ports: tuple = (), **labels: str) -> Endpoint:
    return Endpoint(namespace=ns, name=name, labels=tuple(labels.items()),
                    namespace_labels=tuple(NAMESPACES[ns].items()), service_account=sa,
                    service_account_labels=sa_labels, named_ports=ports,
                    ips=(ip_address(ip),))


FRONT = pod("storefront", "frontend", "10.0.0.1", app="frontend")
BACK = pod("storefront", "backend", "10.0.0.2", ports=(NamedPortDef("http", TCP, 8080),),
           app="backend")
CURL_SF = pod("storefront", "curl", "10.0.0.3", sa="curl-sa", sa_labels=(("role", "admin"),),
              app="curl")
SCANNER = pod("storefront", "scanner", "10.0.0.9", role="scanner")
CURL = pod("dev", "curl", "10.0.1.1", sa="curl-sa", app="curl")


def peer(who: Endpoint | str | None, port: int | None = None, domains: tuple = ()) -> Peer:
    if isinstance(who, Endpoint):
        return Peer(endpoint=who, ip=who.ips[0], port=port, domains=frozenset(domains))
    return Peer(ip=ip_address(who) if who else None, port=port, domains=frozenset(domains))


def flow(src: Endpoint | str | None, dst: Endpoint | str | None, port: int | None = 80,
         proto: int = TCP, icmp: tuple = (None, None), *, domains: tuple = (),
         src_domains: tuple = ()) -> Flow:
    return Flow(peer(src, domains=src_domains), peer(dst, port, domains), proto, *icmp)


# -- YAML documents ---------------------------------------------------------------------------

def doc(kind: str, name: str, spec: str = "{}", ns: str | None = None,
        labels: str | None = None) -> str:
    meta = f"name: {name}" + (f", namespace: {ns}" if ns else "")
    meta += f", labels: {labels}" if labels else ""
    return f"apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{{meta}}}\nspec: {spec}\n"


def tier(name: str, spec: str = "{}") -> str:
    return doc("Tier", name, spec)


def gnp(name: str, spec: str = "{}") -> str:
    return doc("GlobalNetworkPolicy", name, spec)


def sgnp(name: str, spec: str = "{}") -> str:
    return doc("StagedGlobalNetworkPolicy", name, spec)


def np(name: str, spec: str = "{}", ns: str = "storefront") -> str:
    return doc("NetworkPolicy", name, spec, ns)


def snp(name: str, spec: str = "{}", ns: str = "storefront") -> str:
    return doc("StagedNetworkPolicy", name, spec, ns)


def gns(name: str, labels: str, spec: str) -> str:
    return doc("GlobalNetworkSet", name, spec, labels=labels)


def netset(name: str, ns: str, labels: str, spec: str) -> str:
    return doc("NetworkSet", name, spec, ns, labels)


def docs(*parts: str) -> str:
    return "---\n".join(parts)


def evaluate(text: str, f: Flow) -> Verdict:
    policy_set = policy.PolicySet.from_documents(policy.load_text(text))
    return policy.Evaluator(policy_set, namespaces=NAMESPACES).evaluate(f)


def out(dv: DirectionVerdict) -> tuple[str | None, list[str]]:
    return dv.action, dv.rendered()


TIERS = docs(tier("security", "{order: 100}"),
             tier("platform", "{order: 200, defaultAction: Pass}"))
P = pytest.param

# -- §2.1 ordering ----------------------------------------------------------------------------



def passing(t: str) -> str:
    return f"{{tier: {t}, ingress: [{{action: Pass}}]}}"


@pytest.mark.parametrize(("text", "expected"), [
    P(docs(tier("a", "{order: 100}"), tier("b", "{order: 20}"),
           gnp("a.p", passing("a")), gnp("b.p", passing("b"))),
      ("allow", ["0|b|b.p|pass|0", "1|a|a.p|pass|0", f"2|{KNS_SF}"]), id="tier-order-numeric"),
    P(docs(tier("b", "{order: 100}"), tier("a", "{order: 100}"),
           gnp("a.p", passing("a")), gnp("b.p", passing("b"))),
      ("allow", ["0|a|a.p|pass|0", "1|b|b.p|pass|0", f"2|{KNS_SF}"]), id="tier-tie-by-name"),
    P(docs(tier("a"), tier("z", "{order: 900}"), gnp("a.p", passing("a")),
           gnp("z.p", passing("z")), gnp("pass-on", "{ingress: [{action: Pass}]}")),
      ("allow", ["0|z|z.p|pass|0", "1|default|default.pass-on|pass|0", "2|a|a.p|pass|0",
                 f"3|{KNS_SF}"]), id="tier-without-order-after-default"),
    P(docs(gnp("a-allow", "{order: 10, ingress: [{action: Allow}]}"),
           gnp("b-deny", "{order: 9, ingress: [{action: Deny}]}")),
      ("deny", ["0|default|default.b-deny|deny|0"]), id="policy-order-numeric"),
    P(docs(gnp("a-allow", "{order: 9, ingress: [{action: Allow}]}"),
           gnp("b-deny", "{order: 10, ingress: [{action: Deny}]}")),
      ("allow", ["0|default|default.a-allow|allow|0"]), id="policy-order-reversed"),
    P(docs(gnp("b-allow", "{order: 5, ingress: [{action: Allow}]}"),
           gnp("a-deny", "{order: 5, ingress: [{action: Deny}]}")),
      ("deny", ["0|default|default.a-deny|deny|0"]), id="policy-tie-by-name"),
    P(docs(gnp("a-deny", "{ingress: [{action: Deny}]}"),
           gnp("z-allow", "{order: 1000, ingress: [{action: Allow}]}")),
      ("allow", ["0|default|default.z-allow|allow|0"]), id="policy-without-order-last"),
    P(docs(tier("b"), tier("a"), gnp("a.p", passing("a")), gnp("b.p", passing("b"))),
      ("allow", ["0|a|a.p|pass|0", "1|b|b.p|pass|0", f"2|{KNS_SF}"]), id="unordered-by-name"),
    P(docs(np("a-allow", "{order: 5, ingress: [{action: Allow}]}"),
           gnp("default.z-deny", "{order: 5, ingress: [{action: Deny}]}")),
      ("deny", ["0|default|default.z-deny|deny|0"]), id="tie-by-v1-name-np-vs-gnp"),
])
def test_ordering(text: str, expected: tuple) -> None:
    assert out(evaluate(text, flow(CURL, BACK)).ingress) == expected


# -- §2.2, §2.3 actions and tier default action -----------------------------------------------

DENY_UDP = "{action: Deny, protocol: UDP}"


@pytest.mark.parametrize(("text", "port", "expected"), [
    P(gnp("web", "{ingress: [{action: Deny, protocol: TCP, destination: {ports: [22]}}, "
                 "{action: Allow}]}"), 80,
      ("allow", ["0|default|default.web|allow|1"]), id="first-match-later-rule"),
    P(gnp("web", "{ingress: [{action: Deny, protocol: TCP, destination: {ports: [22]}}, "
                 "{action: Allow}]}"), 22,
      ("deny", ["0|default|default.web|deny|0"]), id="first-match-earlier-rule"),
    P(docs(gnp("security.p", "{tier: security, ingress: [{action: Allow}]}"),
           gnp("p", "{ingress: [{action: Deny}]}")), 80,
      ("allow", ["0|security|security.p|allow|0"]), id="allow-is-final"),
    P(docs(gnp("security.p", "{tier: security, ingress: [{action: Deny}]}"),
           gnp("p", "{ingress: [{action: Allow}]}")), 80,
      ("deny", ["0|security|security.p|deny|0"]), id="deny-is-final"),
    P(docs(gnp("security.p", "{tier: security, ingress: [{action: Pass}]}"),
           gnp("p", "{ingress: [{action: Allow}]}")), 80,
      ("allow", ["0|security|security.p|pass|0", "1|default|default.p|allow|0"]),
      id="pass-to-next-tier"),
    P(docs(gnp("security.p1", "{tier: security, order: 1, ingress: [{action: Pass}]}"),
           gnp("security.p2", "{tier: security, order: 2, ingress: [{action: Deny}]}")), 80,
      ("allow", ["0|security|security.p1|pass|0", f"1|{KNS_SF}"]), id="pass-skips-rest-of-tier"),
    P(docs(gnp("security.p", "{tier: security, ingress: [{action: Pass}]}"),
           gnp("p", "{selector: app == 'frontend', ingress: [{action: Deny}]}")), 80,
      ("allow", ["0|security|security.p|pass|0", f"1|{KNS_SF}"]),
      id="pass-skips-unselecting-tier"),
    P(gnp("p", "{ingress: [{action: Pass}]}"), 80,
      ("allow", ["0|default|default.p|pass|0", f"1|{KNS_SF}"]), id="pass-from-last-tier"),
    P(gnp("platform.p", f"{{tier: platform, ingress: [{DENY_UDP}]}}"), 80,
      ("allow", ["0|platform|platform.p|pass|-1", f"1|{KNS_SF}"]), id="tier-default-pass"),
    P(docs(gnp("platform.p", f"{{tier: platform, ingress: [{DENY_UDP}]}}"),
           gnp("p", "{ingress: [{action: Deny}]}")), 80,
      ("deny", ["0|platform|platform.p|pass|-1", "1|default|default.p|deny|0"]),
      id="tier-default-pass-then-deny"),
    P(gnp("security.p", f"{{tier: security, ingress: [{DENY_UDP}]}}"), 80,
      ("deny", ["0|security|security.p|deny|-1"]), id="tier-default-deny"),
    P(gnp("p", "{ingress: [{action: Log}, {action: Allow}]}"), 80,
      ("allow", ["0|default|default.p|allow|1"]), id="log-continues"),
    P(gnp("p", "{ingress: [{action: Log}]}"), 80,
      ("deny", ["0|default|default.p|deny|-1"]), id="log-only-ends-tier"),
    P(docs(gnp("security.p1", f"{{tier: security, order: 1, ingress: [{DENY_UDP}]}}"),
           gnp("security.p2", "{tier: security, order: 2, ingress: [{action: Allow}]}")), 80,
      ("allow", ["0|security|security.p2|allow|0"]), id="no-match-next-policy"),
])
def test_actions(text: str, port: int, expected: tuple) -> None:
    assert out(evaluate(docs(TIERS, text), flow(CURL, BACK, port)).ingress) == expected


# -- §2.3, §3.1 end of tier, types defaulting, end-of-tier name --------------------------------

EOT = ("deny", ["0|default|default.p|deny|-1"])
PROFILE_SF = ("allow", [f"0|{KNS_SF}"])


@pytest.mark.parametrize(("text", "egress", "ingress"), [
    P(gnp("p"), PROFILE_SF, EOT, id="no-rules-means-ingress-only"),
    P(gnp("p", f"{{ingress: [{DENY_UDP}]}}"), PROFILE_SF, EOT, id="ingress-rules-only"),
    P(gnp("p", f"{{egress: [{DENY_UDP}]}}"), EOT, PROFILE_SF, id="egress-rules-only"),
    P(gnp("p", f"{{ingress: [{{action: Allow}}], egress: [{DENY_UDP}]}}"), EOT,
      ("allow", ["0|default|default.p|allow|0"]), id="both-rule-lists"),
    P(gnp("p", "{types: [Ingress, Egress], ingress: [{action: Allow}]}"), EOT,
      ("allow", ["0|default|default.p|allow|0"]), id="explicit-egress-type-no-rules"),
    P(gnp("p", "{types: [Egress], ingress: [{action: Deny}]}"), EOT, PROFILE_SF,
      id="explicit-egress-type-ignores-ingress"),
    P(gnp("p", "{selector: app == 'other'}"), PROFILE_SF, PROFILE_SF, id="selects-nothing"),
    P(np("p", "{selector: app == 'backend'}", ns="dev"), PROFILE_SF, PROFILE_SF,
      id="np-other-namespace"),
    P(docs(gnp("p1", f"{{order: 1, ingress: [{DENY_UDP}]}}"),
           gnp("p2", f"{{order: 2, ingress: [{DENY_UDP}]}}"),
           gnp("p3", f"{{order: 3, selector: app == 'other', ingress: [{DENY_UDP}]}}")),
      PROFILE_SF, ("deny", ["0|default|default.p2|deny|-1"]), id="eot-names-last-selecting"),
    P(docs(gnp("p1", f"{{order: 1, ingress: [{DENY_UDP}]}}"),
           gnp("p2", f"{{order: 2, types: [Egress], egress: [{DENY_UDP}]}}")),
      ("deny", ["0|default|default.p2|deny|-1"]), ("deny", ["0|default|default.p1|deny|-1"]),
      id="eot-names-policy-of-direction"),
    P(docs(gnp("p1", f"{{order: 1, ingress: [{DENY_UDP}]}}"),
           gnp("p2", f"{{order: 2, ingress: [{DENY_UDP}]}}"),
           sgnp("p3", f"{{order: 3, ingress: [{DENY_UDP}]}}")),
      PROFILE_SF, ("deny", ["0|default|default.p2|deny|-1"]), id="eot-names-last-non-staged"),
])
def test_end_of_tier(text: str, egress: tuple, ingress: tuple) -> None:
    v = evaluate(text, flow(FRONT, BACK))
    assert (out(v.egress), out(v.ingress)) == (egress, ingress)


# -- §2.4, §2.5 profiles and direction --------------------------------------------------------

OPEN_DENY_IN = gnp("p", "{ingress: [{action: Deny}], egress: [{action: Allow}]}")
UNPOLICED = ("allow", [], False)


def side(dv: DirectionVerdict) -> tuple[str | None, list[str], bool]:
    return dv.action, dv.rendered(), dv.policed


@pytest.mark.parametrize(("text", "f", "egress", "ingress", "action"), [
    P("", flow(CURL, BACK), ("allow", [f"0|{KNS_DEV}"], True),
      ("allow", [f"0|{KNS_SF}"], True), "allow", id="no-policy-profiles-each-end"),
    P(gnp("p", "{selector: app == 'curl', egress: [{action: Deny}]}"), flow(CURL, BACK),
      ("deny", ["0|default|default.p|deny|0"], True), ("allow", [f"0|{KNS_SF}"], True),
      "deny", id="egress-deny-at-source"),
    P(gnp("p", "{selector: app == 'backend', ingress: [{action: Deny}]}"), flow(CURL, BACK),
      ("allow", [f"0|{KNS_DEV}"], True), ("deny", ["0|default|default.p|deny|0"], True),
      "deny", id="ingress-deny-at-destination"),
    P(gnp("p", "{selector: app == 'backend', egress: [{action: Deny}]}"), flow(CURL, BACK),
      ("allow", [f"0|{KNS_DEV}"], True), ("allow", [f"0|{KNS_SF}"], True), "allow",
      id="destination-egress-policy-irrelevant"),
    P(OPEN_DENY_IN, flow(CURL, EXT, 443), ("allow", ["0|default|default.p|allow|0"], True),
      UNPOLICED, "allow", id="to-external-policed-at-source-only"),
    P(OPEN_DENY_IN, flow(EXT, BACK), UNPOLICED,
      ("deny", ["0|default|default.p|deny|0"], True), "deny", id="from-external-at-dest-only"),
    P(gnp("p", "{egress: [{action: Deny}]}"), flow(CURL, EXT, 443),
      ("deny", ["0|default|default.p|deny|0"], True), UNPOLICED, "deny",
      id="to-external-denied"),
    P(gnp("p", "{egress: [{action: Deny}]}"), flow(EXT, BACK), UNPOLICED,
      ("allow", [f"0|{KNS_SF}"], True), "allow", id="from-external-no-ingress-policy"),
])
def test_direction(text: str, f: Flow, egress: tuple, ingress: tuple, action: str) -> None:
    v = evaluate(text, f)
    assert (side(v.egress), side(v.ingress), v.action) == (egress, ingress, action)


# -- §6 staged policies -----------------------------------------------------------------------

WEB_ALLOW = np("web", "{ingress: [{action: Allow}]}")
WEB_ALLOWED = ("allow", ["0|default|storefront/default.web|allow|0"])


@pytest.mark.parametrize(("text", "enforced", "pending"), [
    P(sgnp("security.lockdown", "{tier: security}"), PROFILE_SF,
      ("deny", ["0|security|security.staged:lockdown|deny|-1"]), id="staged-only-tier"),
    P(docs(sgnp("security.lockdown", "{tier: security}"), WEB_ALLOW), WEB_ALLOWED,
      ("deny", ["0|security|security.staged:lockdown|deny|-1"]),
      id="staged-only-tier-before-enforced"),
    P(docs(sgnp("security.block", "{tier: security, order: 1, ingress: [{action: Deny}]}"),
           gnp("security.open", "{tier: security, order: 2, ingress: [{action: Allow}]}")),
      ("allow", ["0|security|security.open|allow|0"]),
      ("deny", ["0|security|security.staged:block|deny|0"]), id="staged-rule-pending-only"),
    P(docs(sgnp("security.triage", "{tier: security, ingress: [{action: Pass}]}"), WEB_ALLOW),
      WEB_ALLOWED,
      ("allow", ["0|security|security.staged:triage|pass|0",
                 "1|default|storefront/default.web|allow|0"]), id="staged-pass-keeps-position"),
    P(snp("web", "{ingress: [{action: Deny}]}"), PROFILE_SF,
      ("deny", ["0|default|storefront/default.staged:web|deny|0"]), id="staged-np-name"),
    P(snp("security.probe", "{tier: security, ingress: [{action: Allow}]}"), PROFILE_SF,
      ("allow", ["0|security|storefront/security.staged:probe|allow|0"]),
      id="staged-np-tier-name"),
    P(docs(WEB_ALLOW, snp("web", f"{{ingress: [{DENY_UDP}]}}")), WEB_ALLOWED,
      ("deny", ["0|default|storefront/default.staged:web|deny|-1"]),
      id="staged-set-replaces-same-name"),
    P(docs(WEB_ALLOW, snp("web", "{stagedAction: Set, ingress: [{action: Deny}]}")),
      WEB_ALLOWED, ("deny", ["0|default|storefront/default.staged:web|deny|0"]),
      id="staged-explicit-set"),
    P(docs(WEB_ALLOW, snp("web-v2", f"{{ingress: [{DENY_UDP}]}}")), WEB_ALLOWED, WEB_ALLOWED,
      id="staged-other-name-kept-both"),
    P(docs(WEB_ALLOW, sgnp("web", f"{{ingress: [{DENY_UDP}]}}")), WEB_ALLOWED, WEB_ALLOWED,
      id="staged-global-same-name-not-replacing"),
    P(docs(WEB_ALLOW, snp("web", "{ingress: [{action: Deny}]}", ns="dev")), WEB_ALLOWED,
      WEB_ALLOWED, id="staged-other-namespace-not-replacing"),
    P(docs(np("deny-all"), snp("deny-all", "{stagedAction: Delete}")),
      ("deny", ["0|default|storefront/default.deny-all|deny|-1"]), PROFILE_SF,
      id="staged-delete-removes"),
    P(docs(gnp("p"), sgnp("p", "{stagedAction: Delete}")), EOT, PROFILE_SF,
      id="staged-global-delete-removes"),
    P(docs(np("deny-all"), snp("other", "{stagedAction: Delete}")),
      ("deny", ["0|default|storefront/default.deny-all|deny|-1"]),
      ("deny", ["0|default|storefront/default.deny-all|deny|-1"]), id="staged-delete-other-name"),
])
def test_staged(text: str, enforced: tuple, pending: tuple) -> None:
    v = evaluate(docs(TIERS, text), flow(FRONT, BACK))
    assert (out(v.ingress), out(v.pending_ingress)) == (enforced, pending)
    assert (v.action, v.pending_action) == (enforced[0], pending[0])


# -- §3.3, §4, §5 selector scoping, service accounts, network sets -----------------------------

NP_ALLOW = ("allow", ["0|default|storefront/default.p|allow|0"])
NP_EOT = ("deny", ["0|default|storefront/default.p|deny|-1"])
GNP_ALLOW = ("allow", ["0|default|default.p|allow|0"])
GNP_EOT = ("deny", ["0|default|default.p|deny|-1"])
SCANNERS = gns("scanners", "{role: scanner}", "{nets: [198.51.100.0/24]}")
SCANNERS_SF = netset("scanners", "storefront", "{role: scanner}", "{nets: [198.51.100.0/24]}")
SCANNERS_DEV = netset("scanners", "dev", "{role: scanner}", "{nets: [198.51.100.0/24]}")
SCAN_IP = "198.51.100.7"


def np_from(source: str, *extra: str) -> str:
    return docs(np("p", f"{{ingress: [{{action: Allow, source: {source}}}]}}"), *extra)


def gnp_from(source: str, *extra: str) -> str:
    return docs(gnp("p", f"{{ingress: [{{action: Allow, source: {source}}}]}}"), *extra)


NS_PROD = "{namespaceSelector: env == 'prod', ingress: [{action: Deny}]}"


@pytest.mark.parametrize(("text", "f", "expected"), [
    P(gnp("p", NS_PROD), flow(CURL, BACK), ("deny", ["0|default|default.p|deny|0"]),
      id="gnp-namespace-selector-applies"),
    P(gnp("p", NS_PROD), flow(FRONT, CURL), ("allow", [f"0|{KNS_DEV}"]),
      id="gnp-namespace-selector-other-ns"),
    P(gnp("p", "{namespaceSelector: env == 'prod', selector: app == 'frontend', "
               "ingress: [{action: Deny}]}"), flow(CURL, BACK), PROFILE_SF,
      id="gnp-namespace-selector-and-selector"),
    P(np_from("{namespaceSelector: env == 'dev'}"), flow(CURL, BACK), NP_ALLOW,
      id="rule-ns-selector-pcns"),
    P(np_from("{namespaceSelector: env == 'dev'}"), flow(FRONT, BACK), NP_EOT,
      id="rule-ns-selector-pcns-miss"),
    P(np_from("{namespaceSelector: projectcalico.org/name == 'dev'}"), flow(CURL, BACK),
      NP_ALLOW, id="rule-ns-selector-by-name"),
    P(np_from("{namespaceSelector: all(), selector: app == 'curl'}"), flow(CURL, BACK),
      NP_ALLOW, id="rule-ns-selector-all"),
    P(np_from("{namespaceSelector: all()}"), flow(EXT, BACK), NP_EOT,
      id="rule-ns-selector-all-not-external"),
    P(np_from("{namespaceSelector: all()}", SCANNERS), flow(SCAN_IP, BACK), NP_EOT,
      id="rule-ns-selector-all-not-global-set"),
    P(np_from("{namespaceSelector: global(), selector: role == 'scanner'}", SCANNERS),
      flow(SCAN_IP, BACK), NP_ALLOW, id="global-matches-global-set"),
    P(np_from("{namespaceSelector: global(), selector: role == 'scanner'}", SCANNERS_SF),
      flow(SCAN_IP, BACK), NP_EOT, id="global-not-namespaced-set"),
    P(np_from("{namespaceSelector: global(), selector: role == 'scanner'}"),
      flow(SCANNER, BACK), NP_EOT, id="global-not-pod"),
    P(np_from("{selector: app == 'curl'}"), flow(CURL_SF, BACK), NP_ALLOW,
      id="np-rule-selector-own-ns"),
    P(np_from("{selector: app == 'curl'}"), flow(CURL, BACK), NP_EOT,
      id="np-rule-selector-other-ns"),
    P(gnp_from("{selector: app == 'curl'}"), flow(CURL, BACK), GNP_ALLOW,
      id="gnp-rule-selector-any-ns"),
    P(np_from("{nets: [10.0.1.0/24]}"), flow(CURL, BACK), NP_ALLOW,
      id="np-rule-nets-not-ns-limited"),
    P(np("p", "{ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]}"),
      flow(CURL, BACK), NP_ALLOW, id="np-rule-ports-not-ns-limited"),
    P(np_from("{selector: role == 'scanner'}", SCANNERS_SF), flow(SCAN_IP, BACK), NP_ALLOW,
      id="np-selector-own-ns-set"),
    P(np_from("{selector: role == 'scanner'}", SCANNERS_DEV), flow(SCAN_IP, BACK), NP_EOT,
      id="np-selector-other-ns-set"),
    P(np_from("{selector: role == 'scanner'}", SCANNERS), flow(SCAN_IP, BACK), NP_EOT,
      id="np-selector-not-global-set"),
    P(gnp_from("{selector: role == 'scanner'}", SCANNERS), flow(SCAN_IP, BACK), GNP_ALLOW,
      id="gnp-selector-global-set"),
    P(gnp_from("{selector: role == 'scanner'}", SCANNERS), flow("198.51.101.7", BACK),
      GNP_EOT, id="gnp-selector-ip-outside-set"),
    P(gnp_from("{selector: role == 'scanner'}",
               gns("scanners", "{role: scanner}", "{nets: [10.0.1.0/24]}")),
      flow(CURL, BACK), GNP_ALLOW, id="endpoint-ip-inside-set"),
    P(gnp_from("{namespaceSelector: env == 'prod', selector: role == 'scanner'}",
               SCANNERS_SF), flow(SCAN_IP, BACK), GNP_ALLOW, id="set-inherits-ns-labels"),
    P(gnp_from("{namespaceSelector: env == 'prod', selector: role == 'scanner'}",
               SCANNERS_DEV), flow(SCAN_IP, BACK), GNP_EOT, id="set-other-ns-labels"),
    P(np_from("{serviceAccounts: {names: [curl-sa]}}"), flow(CURL_SF, BACK), NP_ALLOW,
      id="sa-names"),
    P(np_from("{serviceAccounts: {names: [curl-sa]}}"), flow(FRONT, BACK), NP_EOT,
      id="sa-names-miss"),
    P(np_from("{serviceAccounts: {names: [curl-sa]}}"), flow(CURL, BACK), NP_EOT,
      id="sa-names-other-ns"),
    P(gnp_from("{serviceAccounts: {names: [curl-sa]}}"), flow(CURL, BACK), GNP_ALLOW,
      id="gnp-sa-names-any-ns"),
    P(np_from("{serviceAccounts: {selector: role == 'admin'}}"), flow(CURL_SF, BACK),
      NP_ALLOW, id="sa-selector"),
    P(np_from("{serviceAccounts: {selector: role == 'admin'}}"), flow(FRONT, BACK), NP_EOT,
      id="sa-selector-miss"),
    P(np_from("{serviceAccounts: {names: [default], selector: role == 'admin'}}"),
      flow(CURL_SF, BACK), NP_EOT, id="sa-names-and-selector"),
    P(gnp_from("{notSelector: app == 'curl'}"), flow(EXT, BACK), GNP_ALLOW,
      id="gnp-not-selector-external"),
    P(gnp_from("{notSelector: app == 'curl'}"), flow(CURL, BACK), GNP_EOT,
      id="gnp-not-selector-excluded"),
    P(gnp_from("{notSelector: app == 'curl'}"), flow(FRONT, BACK), GNP_ALLOW,
      id="gnp-not-selector-other-pod"),
    P(gnp_from('{selector: "!has(app)"}'), flow(EXT, BACK), GNP_EOT,
      id="negated-selector-not-external"),
    P(gnp_from('{selector: "!has(app)"}'), flow(SCANNER, BACK), GNP_ALLOW,
      id="negated-selector-pod"),
    P(np_from("{notSelector: app == 'curl'}"), flow(CURL, BACK), NP_EOT,
      id="np-not-selector-ns-scoped"),
    P(np_from("{notSelector: app == 'curl'}"), flow(FRONT, BACK), NP_ALLOW,
      id="np-not-selector-own-ns"),
])
def test_selectors_and_scope(text: str, f: Flow, expected: tuple) -> None:
    assert out(evaluate(text, f).ingress) == expected


# -- §3.2, §3.3 nets, ports, protocols, ICMP ------------------------------------------------

@pytest.mark.parametrize(("rule", "f", "matches"), [
    P("source: {nets: [10.0.1.0/24]}", flow(CURL, BACK), True, id="nets"),
    P("source: {nets: [10.0.2.0/24]}", flow(CURL, BACK), False, id="nets-miss"),
    P("source: {nets: [10.0.2.0/24, 10.0.0.0/16]}", flow(CURL, BACK), True, id="nets-any"),
    P("source: {notNets: [10.0.1.0/24]}", flow(CURL, BACK), False, id="not-nets"),
    P("source: {notNets: [192.168.0.0/16]}", flow(CURL, BACK), True, id="not-nets-other"),
    P("source: {nets: [10.0.0.0/8], notNets: [10.0.1.0/24]}", flow(CURL, BACK), False,
      id="nets-and-not-nets"),
    P("destination: {nets: [10.0.0.2/32]}", flow(CURL, BACK), True, id="dst-nets"),
    P("protocol: TCP, destination: {ports: [80]}", flow(CURL, BACK, 80), True, id="port"),
    P("protocol: TCP, destination: {ports: [80]}", flow(CURL, BACK, 81), False,
      id="port-miss"),
    P("protocol: TCP, destination: {ports: ['80:90']}", flow(CURL, BACK, 80), True,
      id="range-first"),
    P("protocol: TCP, destination: {ports: ['80:90']}", flow(CURL, BACK, 90), True,
      id="range-last"),
    P("protocol: TCP, destination: {ports: ['80:90']}", flow(CURL, BACK, 91), False,
      id="range-above"),
    P("protocol: TCP, destination: {ports: ['80:90']}", flow(CURL, BACK, 79), False,
      id="range-below"),
    P("protocol: TCP, destination: {notPorts: [22]}", flow(CURL, BACK, 22), False,
      id="not-ports"),
    P("protocol: TCP, destination: {notPorts: [22]}", flow(CURL, BACK, 80), True,
      id="not-ports-other"),
    P("protocol: TCP, destination: {ports: ['80:90'], notPorts: [85]}",
      flow(CURL, BACK, 85), False, id="range-minus-not-port"),
    P("protocol: TCP, destination: {ports: [http]}", flow(CURL, BACK, 8080), True,
      id="named-port"),
    P("protocol: TCP, destination: {ports: [http]}", flow(CURL, BACK, 80), False,
      id="named-port-other-number"),
    P("protocol: UDP, destination: {ports: [http]}", flow(CURL, BACK, 8080, UDP), False,
      id="named-port-wrong-protocol"),
    P("protocol: TCP, destination: {ports: [http, 443]}", flow(CURL, BACK, 443), True,
      id="named-port-in-list"),
    P("protocol: TCP, destination: {ports: [http]}", flow(FRONT, CURL, 8080), False,
      id="named-port-not-on-dst"),
    P("protocol: TCP", flow(CURL, BACK), True, id="protocol"),
    P("protocol: TCP", flow(CURL, BACK, proto=UDP), False, id="protocol-miss"),
    P("protocol: udp", flow(CURL, BACK, proto=UDP), True, id="protocol-lowercase"),
    P("protocol: 132", flow(CURL, BACK, proto=SCTP), True, id="protocol-number"),
    P("notProtocol: UDP", flow(CURL, BACK), True, id="not-protocol"),
    P("notProtocol: UDP", flow(CURL, BACK, proto=UDP), False, id="not-protocol-miss"),
    P("protocol: ICMP, icmp: {type: 8}", flow(CURL, BACK, None, ICMP, (8, 0)), True,
      id="icmp-type"),
    P("protocol: ICMP, icmp: {type: 8}", flow(CURL, BACK, None, ICMP, (0, 0)), False,
      id="icmp-type-miss"),
    P("protocol: ICMP, icmp: {type: 3, code: 4}", flow(CURL, BACK, None, ICMP, (3, 4)), True,
      id="icmp-code"),
    P("protocol: ICMP, icmp: {type: 3, code: 4}", flow(CURL, BACK, None, ICMP, (3, 1)), False,
      id="icmp-code-miss"),
    P("protocol: ICMP, notICMP: {type: 8}", flow(CURL, BACK, None, ICMP, (0, 0)), True,
      id="not-icmp"),
    P("protocol: ICMP, notICMP: {type: 8}", flow(CURL, BACK, None, ICMP, (8, 0)), False,
      id="not-icmp-miss"),
    P("protocol: ICMP, notICMP: {type: 3, code: 4}", flow(CURL, BACK, None, ICMP, (3, 1)),
      True, id="not-icmp-other-code"),
    P("protocol: ICMP, icmp: {type: 8}", flow(CURL, BACK), False, id="icmp-rule-tcp-flow"),
    P("protocol: ICMPv6, icmp: {type: 128}", flow(CURL, BACK, None, ICMPV6, (128, 0)), True,
      id="icmpv6-type"),
    P("ipVersion: 6", flow(CURL, BACK), False, id="ip-version-miss"),
])
def test_rule_criteria(rule: str, f: Flow, matches: bool) -> None:
    text = gnp("p", f"{{ingress: [{{action: Allow, {rule}}}]}}")
    assert out(evaluate(text, f).ingress) == (GNP_ALLOW if matches else GNP_EOT)


# -- §3.4, §5 domains and allowedEgressDomains ------------------------------------------------

@pytest.mark.parametrize(("patterns", "names", "matches"), [
    P(["api.example.com"], ["api.example.com"], True, id="exact"),
    P(["api.example.com"], ["www.example.com"], False, id="exact-other"),
    P(["example.com"], ["a.example.com"], False, id="exact-not-subdomain"),
    P(["*.example.com"], ["a.example.com"], True, id="wildcard-one-label"),
    P(["*.example.com"], ["a.b.example.com"], True, id="wildcard-two-labels"),
    P(["*.example.com"], ["example.com"], False, id="wildcard-not-apex"),
    P(["*.example.com"], ["badexample.com"], False, id="wildcard-label-boundary"),
    P(["www.*.com"], ["www.sun.com"], True, id="inner-wildcard"),
    P(["www.*.com"], ["www.a.b.com"], True, id="inner-wildcard-two-labels"),
    P(["www.*.com"], ["www.com"], False, id="inner-wildcard-empty"),
    P(["API.Example.COM"], ["api.example.com"], True, id="rule-case-insensitive"),
    P(["api.example.com"], ["Api.EXAMPLE.com"], True, id="name-case-insensitive"),
    P(["api.example.com"], ["cdn.other.net", "api.example.com"], True, id="any-known-name"),
    P(["api.example.com"], [], False, id="no-known-name"),
])
def test_domains(patterns: list, names: list, matches: bool) -> None:
    text = gnp("p", "{selector: app == 'curl', egress: [{action: Allow, "
                    f"destination: {{domains: {json.dumps(patterns)}}}}}]}}")
    v = evaluate(text, flow(CURL, EXT, 443, domains=tuple(names)))
    assert out(v.egress) == (GNP_ALLOW if matches else GNP_EOT)


PARTNERS = gns("partners", "{role: partners}",
               '{nets: [192.0.2.0/24], allowedEgressDomains: ["*.partner.io"]}')
TO_PARTNERS = "destination: {selector: role == 'partners'}"
EGRESS_ALLOW = gnp("p", f"{{selector: app == 'curl', egress: [{{action: Allow, {TO_PARTNERS}}}]}}")
EGRESS_DENY = gnp("p", f"{{selector: app == 'curl', egress: [{{action: Deny, {TO_PARTNERS}}}, "
                       "{action: Allow}]}")
INGRESS_ALLOW = gnp("p", "{selector: app == 'backend', ingress: [{action: Allow, "
                         "source: {selector: role == 'partners'}}]}")


@pytest.mark.parametrize(("text", "f", "direction", "expected"), [
    P(EGRESS_ALLOW, flow(CURL, EXT, 443, domains=("api.partner.io",)), "egress", GNP_ALLOW,
      id="egress-allow-honours-domains"),
    P(EGRESS_ALLOW, flow(CURL, EXT, 443, domains=("API.eu.Partner.io",)), "egress",
      GNP_ALLOW, id="egress-allow-domains-case-wildcard"),
    P(EGRESS_ALLOW, flow(CURL, EXT, 443, domains=("api.other.io",)), "egress", GNP_EOT,
      id="egress-allow-unlisted-domain"),
    P(EGRESS_ALLOW, flow(CURL, EXT, 443, domains=("partner.io",)), "egress", GNP_EOT,
      id="egress-allow-apex-not-listed"),
    P(EGRESS_ALLOW, flow(CURL, "192.0.2.5", 443), "egress", GNP_ALLOW,
      id="egress-allow-set-nets"),
    P(EGRESS_DENY, flow(CURL, EXT, 443, domains=("api.partner.io",)), "egress",
      ("allow", ["0|default|default.p|allow|1"]), id="egress-deny-ignores-domains"),
    P(EGRESS_DENY, flow(CURL, "192.0.2.5", 443), "egress",
      ("deny", ["0|default|default.p|deny|0"]), id="egress-deny-honours-nets"),
    P(INGRESS_ALLOW, flow(EXT, BACK, src_domains=("api.partner.io",)), "ingress", GNP_EOT,
      id="ingress-source-ignores-domains"),
    P(INGRESS_ALLOW, flow("192.0.2.5", BACK), "ingress", GNP_ALLOW,
      id="ingress-source-honours-nets"),
])
def test_allowed_egress_domains(text: str, f: Flow, direction: str, expected: tuple) -> None:
    v = evaluate(docs(text, PARTNERS), f)
    assert out(getattr(v, direction)) == expected


# -- uncertainty: unknown IP or port --------------------------------------------------------



def back_in(rules: str) -> str:
    return f"{{selector: app == 'backend', ingress: [{rules}]}}"


NETS_8 = "{nets: [10.0.0.0/8]}"
UNKNOWN_TO_BACK = Flow(Peer(), peer(BACK, 80), TCP)
CURL_TO_UNKNOWN = Flow(peer(CURL), Peer(endpoint=BACK, port=80), TCP)
CURL_OUT = gnp("out", "{selector: app == 'curl', egress: [{action: Allow, "
                      "destination: {nets: [10.0.0.0/24]}}]}")


@pytest.mark.parametrize(("text", "f", "egress", "ingress", "action"), [
    P(gnp("p", back_in(f"{{action: Allow, source: {NETS_8}}}")), UNKNOWN_TO_BACK,
      "allow", None, None, id="nets-branches-disagree"),
    P(gnp("p", back_in(f"{{action: Allow, source: {NETS_8}}}")),
      Flow(peer("10.1.2.3"), peer(BACK, 80), TCP), "allow", "allow", "allow",
      id="nets-known-ip"),
    P(gnp("p", back_in(f"{{action: Allow, source: {NETS_8}}}, {{action: Allow}}")),
      UNKNOWN_TO_BACK, "allow", "allow", "allow", id="nets-branches-agree-allow"),
    P(gnp("p", back_in(f"{{action: Deny, source: {NETS_8}}}")), UNKNOWN_TO_BACK,
      "allow", "deny", "deny", id="nets-branches-agree-deny"),
    P(gnp("p", back_in("{action: Allow, source: {notNets: [10.0.0.0/8]}}")),
      UNKNOWN_TO_BACK, "allow", None, None, id="not-nets-branches-disagree"),
    P(gnp("p", back_in(f"{{action: Allow, protocol: UDP, source: {NETS_8}}}")),
      UNKNOWN_TO_BACK, "allow", "deny", "deny", id="known-criterion-decides"),
    P(gnp("p", back_in("{action: Allow, protocol: TCP, destination: {ports: [80]}}")),
      flow(FRONT, BACK, None), "allow", None, None, id="unknown-port"),
    P(docs(CURL_OUT, gnp("in", back_in("{action: Deny}"))), CURL_TO_UNKNOWN, None, "deny",
      "deny", id="deny-beats-uncertain"),
    P(CURL_OUT, CURL_TO_UNKNOWN, None, "allow", None, id="uncertain-and-allow"),
])
def test_uncertainty(text: str, f: Flow, egress: str | None, ingress: str | None,
                     action: str | None) -> None:
    v = evaluate(text, f)
    assert (v.egress.action, v.ingress.action, v.action) == (egress, ingress, action)


def test_not_protocol_with_unknown_protocol_is_uncertain() -> None:
    """A flow whose protocol is unknown cannot be said to match `notProtocol: UDP`."""
    docs = policy.load_text(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\n"
        "metadata: {name: default.p, namespace: ns}\nspec:\n  selector: app == 'a'\n"
        "  ingress: [{action: Allow, notProtocol: UDP}]\n")
    ev = policy.Evaluator(policy.PolicySet.from_documents(docs), {"ns": {}})
    dst = Peer(endpoint=Endpoint(namespace="ns", name="a", labels=(("app", "a"),)), port=80)
    unknown = ev.evaluate(Flow(Peer(ip=ip_address("10.9.9.9")), dst, None))
    assert unknown.ingress.action is None
    tcp = ev.evaluate(Flow(Peer(ip=ip_address("10.9.9.9")), dst, 6))
    assert tcp.ingress.action == "allow"
    udp = ev.evaluate(Flow(Peer(ip=ip_address("10.9.9.9")), dst, 17))
    assert udp.ingress.action == "deny"
