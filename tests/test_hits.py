"""Flow-log policy-hit strings (``reference/calico.md`` §1.4): the classic Enterprise format,
the OSS >= 3.32 kind-prefixed format, the legacy 4-field ``all_policies`` format, rejects, and
a round trip through hits the evaluator renders.
"""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from policy import (
    Endpoint,
    Evaluator,
    Flow,
    HitSyntaxError,
    ParsedHit,
    Peer,
    PolicySet,
    load_text,
    parse_hit,
)

GNP, NP, KNP = "GlobalNetworkPolicy", "NetworkPolicy", "KubernetesNetworkPolicy"
SGNP, SNP = "StagedGlobalNetworkPolicy", "StagedNetworkPolicy"
SKNP = "StagedKubernetesNetworkPolicy"
PROFILE = "Profile"


def _fields(h: ParsedHit) -> tuple[object, ...]:
    return (h.index, h.tier, h.kind, h.namespace, h.name, h.action, h.rule)


CLASSIC = [
    # GlobalNetworkPolicy: <tier>.<name>
    ("0|security|security.pass|pass|0", (0, "security", GNP, None, "pass", "pass", 0)),
    ("2|default|default.allow-all|allow|3", (2, "default", GNP, None, "allow-all", "allow", 3)),
    # NetworkPolicy: <namespace>/<tier>.<name>
    ("1|default|storefront/default.trusted|allow|1",
     (1, "default", NP, "storefront", "trusted", "allow", 1)),
    ("0|security|ns/security.a.b|deny|0", (0, "security", NP, "ns", "a.b", "deny", 0)),
    # Kubernetes NetworkPolicy: <namespace>/knp.default.<name>
    ("0|default|storefront/knp.default.allow-frontend|allow|0",
     (0, "default", KNP, "storefront", "allow-frontend", "allow", 0)),
    # staged, current spelling <tier>.staged:<name>
    ("0|default|default.staged:default-deny|deny|-1",
     (0, "default", SGNP, None, "default-deny", "deny", -1)),
    ("0|namespace-isolation|curl-ns/namespace-isolation.staged:curl-ns-vfzgh|allow|3",
     (0, "namespace-isolation", SNP, "curl-ns", "curl-ns-vfzgh", "allow", 3)),
    ("0|default|dev/staged:knp.default.deny-all|deny|-1",
     (0, "default", SKNP, "dev", "deny-all", "deny", -1)),
    # staged, older spelling staged:<tier>.<name>
    ("0|tier1|ns2/staged:tier1.policy1|allow|2", (0, "tier1", SNP, "ns2", "policy1", "allow", 2)),
    ("4|tier1|staged:tier1.policy1|pass|0", (4, "tier1", SGNP, None, "policy1", "pass", 0)),
    # profile
    ("1|__PROFILE__|__PROFILE__.kns.curl-ns|allow|0",
     (1, "__PROFILE__", PROFILE, None, "kns.curl-ns", "allow", 0)),
    # end of tier
    ("3|security|security.block|deny|-1", (3, "security", GNP, None, "block", "deny", -1)),
    ("1|platform|shop/platform.guard|pass|-1", (1, "platform", NP, "shop", "guard", "pass", -1)),
]

OSS = [
    ("0|default|np:storefront/trusted|allow|1",
     (0, "default", NP, "storefront", "trusted", "allow", 1)),
    ("0|security|gnp:pass|pass|0", (0, "security", GNP, None, "pass", "pass", 0)),
    ("1|t|snp:ns/x|allow|0", (1, "t", SNP, "ns", "x", "allow", 0)),
    ("0|t|sgnp:x|deny|-1", (0, "t", SGNP, None, "x", "deny", -1)),
    ("0|default|sknp:ns/x|deny|-1", (0, "default", SKNP, "ns", "x", "deny", -1)),
    ("0|default|knp:ns/x|allow|2", (0, "default", KNP, "ns", "x", "allow", 2)),
    ("2|__PROFILE__|pro:kns.ns|allow|0", (2, "__PROFILE__", PROFILE, None, "kns.ns", "allow", 0)),
    ("1|security|eot:__NO_MATCH__|deny|-1",
     (1, "security", "EndOfTier", None, "__NO_MATCH__", "deny", -1)),
]

LEGACY = [
    ("0|__PROFILE__|__PROFILE__.kns.kube-system|allow",
     (0, "__PROFILE__", PROFILE, None, "kns.kube-system", "allow", -2)),
    ("3|default|ns/default.p|deny", (3, "default", NP, "ns", "p", "deny", -2)),
    ("0|security|security.p|pass", (0, "security", GNP, None, "p", "pass", -2)),
]


@pytest.mark.parametrize(("text", "fields"), CLASSIC, ids=[c[0] for c in CLASSIC])
def test_classic_enterprise(text: str, fields: tuple[object, ...]) -> None:
    assert _fields(parse_hit(text)) == fields


@pytest.mark.parametrize(("text", "fields"), OSS, ids=[c[0] for c in OSS])
def test_oss_kind_prefixed(text: str, fields: tuple[object, ...]) -> None:
    assert _fields(parse_hit(text)) == fields


@pytest.mark.parametrize(("text", "fields"), LEGACY, ids=[c[0] for c in LEGACY])
def test_legacy_all_policies(text: str, fields: tuple[object, ...]) -> None:
    assert _fields(parse_hit(text)) == fields


@pytest.mark.parametrize(
    ("text", "staged", "end_of_tier"),
    [
        ("0|default|default.staged:p|deny|-1", True, True),
        ("0|default|ns/staged:knp.default.p|allow|0", True, False),
        ("0|t|snp:ns/x|allow|0", True, False),
        ("0|security|security.p|deny|-1", False, True),
        ("1|security|eot:__NO_MATCH__|deny|-1", False, True),
        ("0|default|ns/knp.default.p|allow|0", False, False),
        ("0|__PROFILE__|__PROFILE__.kns.x|allow", False, False),
    ],
)
def test_staged_and_end_of_tier_flags(text: str, staged: bool, end_of_tier: bool) -> None:
    h = parse_hit(text)
    assert (h.staged, h.end_of_tier) == (staged, end_of_tier)


def test_both_staged_spellings_agree() -> None:
    old, new = parse_hit("0|t|ns/staged:t.p|allow|1"), parse_hit("0|t|ns/t.staged:p|allow|1")
    assert old == new
    assert parse_hit("0|t|staged:t.p|deny|-1") == parse_hit("0|t|t.staged:p|deny|-1")


_FORMATS = ("expected '<index>|<tier>|<name>|<action>|<rule>' (classic Enterprise), "
            "'<index>|<tier>|<kind>:[<ns>/]<name>|<action>|<rule>' (OSS >= 3.32) "
            "or '<index>|<tier>|<name>|<action>' (legacy all_policies)")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0|default|default.p|allow|0|x", "has 6 '|'-separated fields"),
        ("0|default|default.p", "has 3 '|'-separated fields"),
        ("", "has 1 '|'-separated fields"),
        ("x|default|default.p|allow|0", "index 'x' is not a position (0, 1, ...)"),
        ("|default|default.p|allow|0", "index '' is not a position (0, 1, ...)"),
        ("-1|default|default.p|allow|0", "index '-1' is not a position (0, 1, ...)"),
        ("0|default|default.p|Allow|0", "action 'Allow' is not one of allow, deny, pass, eot-deny"),
        ("0|default|default.p|log|0", "action 'log' is not one of allow, deny, pass, eot-deny"),
        ("0|default|default.p|allow|x", "rule index 'x' is not -2, -1 or a rule index"),
        ("0|default|default.p|allow|", "rule index '' is not -2, -1 or a rule index"),
        ("0|default|default.p|allow|-3", "rule index '-3' is not -2, -1 or a rule index"),
        ("0||default.p|allow|0", "tier and policy name must not be empty"),
        ("0|security|other.p|allow|0",
         "policy name 'other.p' does not start with its tier 'security'"),
    ],
)
def test_rejects(text: str, reason: str) -> None:
    with pytest.raises(HitSyntaxError) as info:
        parse_hit(text)
    assert str(info.value) == f"invalid policy hit {text!r}: {reason}; {_FORMATS}"
    assert isinstance(info.value, ValueError)
    assert info.value.text == text


# --- round trip through the evaluator ----------------------------------------------------------

POLICIES = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.gate}
spec:
  tier: security
  order: 10
  types: [Egress]
  egress:
  - {action: Deny, protocol: UDP, destination: {ports: [9]}}
  - {action: Pass}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: security.quarantine}
spec:
  tier: security
  order: 5
  selector: quarantine == 'true'
  types: [Egress]
  egress: [{action: Deny}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: platform.web-guard, namespace: shop}
spec:
  tier: platform
  selector: app == 'web'
  types: [Egress]
  egress:
  - {action: Deny, protocol: TCP, destination: {ports: [23]}}
  - {action: Pass, protocol: TCP}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-out, namespace: shop}
spec:
  order: 100
  selector: app == 'web'
  egress:
  - {action: Allow, protocol: TCP, destination: {ports: [5432]}}
  - {action: Allow, protocol: TCP, destination: {selector: app == 'db', ports: [80]}}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: web-stage, namespace: shop}
spec:
  order: 50
  selector: app == 'web'
  egress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: a-dns, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - ports: [{protocol: TCP, port: 53}]
"""

WEB = Endpoint("shop", "web-1", labels=(("app", "web"),),
               ips=(ipaddress.ip_address("10.0.0.1"),))
DB = Endpoint("shop", "db-1", labels=(("app", "db"),), ips=(ipaddress.ip_address("10.0.0.2"),))
TOOL = Endpoint("ops", "tool-1", labels=(("quarantine", "true"),),
                ips=(ipaddress.ip_address("10.0.1.1"),))

Expected = list[tuple[str, str, str | None, str, str, int]]  # tier, kind, ns, name, action, rule
_GATE = ("security", GNP, None, "gate", "pass", 1)
_GUARD = ("platform", NP, "shop", "web-guard", "pass", 1)

ROUND_TRIP: list[tuple[str, Endpoint, int, int, Expected, Expected]] = [
    ("tcp-80", WEB, 6, 80,
     [_GATE, _GUARD, ("default", NP, "shop", "web-out", "allow", 1)],
     [_GATE, _GUARD, ("default", SNP, "shop", "web-stage", "deny", 0)]),
    ("tcp-53", WEB, 6, 53,
     [_GATE, _GUARD, ("default", KNP, "shop", "allow-dns", "allow", 0)],
     [_GATE, _GUARD, ("default", SKNP, "shop", "a-dns", "allow", 0)]),
    ("udp-53-end-of-tier", WEB, 17, 53,
     [_GATE, ("platform", NP, "shop", "web-guard", "deny", -1)],
     [_GATE, ("platform", NP, "shop", "web-guard", "deny", -1)]),
    ("profile", TOOL, 6, 80,
     [_GATE, ("__PROFILE__", PROFILE, None, "kns.ops", "allow", 0)],
     [("security", SGNP, None, "quarantine", "deny", 0)]),
]


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(PolicySet.from_documents(load_text(textwrap.dedent(POLICIES), "rt.yaml")))


def _parsed(rendered: list[str]) -> Expected:
    hits = [parse_hit(s) for s in rendered]
    assert [h.index for h in hits] == list(range(len(hits)))
    return [(h.tier, h.kind, h.namespace, h.name, h.action, h.rule) for h in hits]


@pytest.mark.parametrize(("src", "proto", "port", "enforced", "pending"),
                         [c[1:] for c in ROUND_TRIP], ids=[c[0] for c in ROUND_TRIP])
def test_round_trip(evaluator: Evaluator, src: Endpoint, proto: int, port: int,
                    enforced: Expected, pending: Expected) -> None:
    flow = Flow(Peer(src, src.ips[0]), Peer(DB, DB.ips[0], port), proto)
    verdict = evaluator.evaluate(flow)
    assert _parsed(verdict.egress.rendered()) == enforced
    assert _parsed(verdict.pending_egress.rendered()) == pending


def test_round_trip_names_the_evaluated_policy(evaluator: Evaluator) -> None:
    flow = Flow(Peer(WEB, WEB.ips[0]), Peer(DB, DB.ips[0], 53), 6)
    verdict = evaluator.evaluate(flow)
    for hits in (verdict.egress.hits, verdict.pending_egress.hits):
        for i, hit in enumerate(hits):
            parsed = parse_hit(hit.render(i))
            assert hit.policy is not None
            assert parsed.kind == hit.policy.kind.value
            assert parsed.namespace == hit.policy.namespace
            assert parsed.tier == hit.policy.tier
            # the hit carries the name without its tier prefix (security.gate -> gate)
            assert hit.policy.name in (parsed.name, f"{parsed.tier}.{parsed.name}")
            assert parsed.rule == hit.rule
