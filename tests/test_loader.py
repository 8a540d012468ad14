"""Loading policy documents: input formats, Calico's defaulting, Kubernetes NetworkPolicy
conversion (``libcalico-go/lib/backend/k8s/conversion``) and validation messages.

Validation messages are asserted whole: each says file, document, field path, the value and
what is accepted (STYLE habit 7).
"""

from __future__ import annotations

import json
import textwrap

import pytest

import policy
from policy import DocumentError, PolicySet, load_text
from policy.model import Action, Direction, NamedPort, PolicyKind, PortRange, StagedAction

CALICO = "apiVersion: projectcalico.org/v3\n"
K8S = "apiVersion: networking.k8s.io/v1\n"
GNP = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
       "metadata": {"name": "a"}}
TIER = {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"},
        "spec": {"order": 5}}


def _doc(kind: str, meta: str, spec: str = "", api: str = CALICO) -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return f"{api}kind: {kind}\nmetadata: {meta}\n" + (f"spec:\n{body}\n" if spec else "")


def np(spec: str = "", kind: str = "NetworkPolicy", meta: str = "{name: p, namespace: ns}") -> str:
    return _doc(kind, meta, spec)


def gnp(spec: str = "", name: str = "p", kind: str = "GlobalNetworkPolicy") -> str:
    return _doc(kind, f"{{name: {name}}}", spec)


def knp(spec: str, staged: bool = False) -> str:
    if staged:
        return _doc("StagedKubernetesNetworkPolicy", "{name: web, namespace: shop}", spec)
    return _doc("NetworkPolicy", "{name: web, namespace: shop}", spec, api=K8S)


def one(text: str) -> policy.Policy:
    (doc,) = load_text(text, "p.yaml")
    assert isinstance(doc, policy.Policy)
    return doc


def error(text: str, source: str = "p.yaml") -> DocumentError:
    with pytest.raises(DocumentError) as info:
        PolicySet.from_documents(load_text(text, source))
    assert isinstance(info.value, ValueError)
    return info.value


# --- input formats ---------------------------------------------------------------------------


def _shape(docs: list[policy.Document]) -> list[tuple[str, str, int]]:
    return [(type(d).__name__, d.name, d.origin.index) for d in docs]


def test_multi_document_yaml() -> None:
    text = "# policies\n---\n" + _doc("Tier", "{name: t}", "order: 5") + "---\n" + gnp() + "---\n"
    docs = load_text(text, "f.yaml")
    assert _shape(docs) == [("Tier", "t", 0), ("Policy", "p", 1)]
    assert docs[1].origin.source == "f.yaml"


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        (json.dumps(GNP), [("Policy", "a", 0)]),
        (json.dumps([GNP, TIER], indent=2), [("Policy", "a", 0), ("Tier", "t", 1)]),
        (json.dumps(GNP) + "\n\n" + json.dumps(TIER) + "\n",
         [("Policy", "a", 0), ("Tier", "t", 1)]),
        # kubectl get -o json / -o yaml: one List, items flattened
        (json.dumps({"apiVersion": "v1", "kind": "List", "items": [GNP, TIER]}),
         [("Policy", "a", 0), ("Tier", "t", 0)]),
        ("apiVersion: v1\nkind: List\nitems:\n- " + textwrap.indent(gnp(), "  ").strip()
         + "\n---\n" + _doc("Tier", "{name: z}"), [("Policy", "p", 0), ("Tier", "z", 1)]),
        ("", []),
    ],
    ids=["json-object", "json-array", "json-lines", "kind-List-json", "kind-List-yaml", "empty"],
)
def test_formats(text: str, shape: list[tuple[str, str, int]]) -> None:
    assert _shape(load_text(text, "f")) == shape


def test_kubectl_networkpolicy_list() -> None:
    item = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "n", "namespace": "q", "uid": "1", "resourceVersion": "7"},
            "spec": {"podSelector": {}}}
    text = json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList",
                       "items": [item]})
    (p,) = load_text(text)
    assert isinstance(p, policy.Policy)
    assert (p.kind, p.namespace, p.name) == (PolicyKind.KUBERNETES_NETWORK_POLICY, "q", "n")


# --- defaulting ------------------------------------------------------------------------------

IN, OUT = Direction.INGRESS, Direction.EGRESS


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ("selector: all()", (IN,)),
        ("ingress: [{action: Allow}]", (IN,)),
        ("egress: [{action: Allow}]", (OUT,)),
        ("ingress: []\negress: [{action: Allow}]", (OUT,)),
        ("ingress: [{action: Allow}]\negress: [{action: Deny}]", (IN, OUT)),
        ("types: [Egress, Ingress]", (IN, OUT)),
        ("types: [Egress]\ningress: [{action: Allow}]", (OUT,)),
    ],
)
def test_calico_types_defaulting(spec: str, types: tuple[Direction, ...]) -> None:
    assert one(np(spec)).types == types
    assert one(gnp(spec)).types == types


def test_calico_defaults() -> None:
    p = one(np("selector: all()", meta="{name: p}"))
    assert (p.namespace, p.tier, p.order, p.staged_action, str(p.selector)) == (
        "default", "default", None, None, "all()")
    assert one(np("selector: all()", kind="StagedNetworkPolicy")).staged_action is StagedAction.SET
    assert one(gnp("selector: all()", kind="StagedGlobalNetworkPolicy")).staged_action \
        is StagedAction.SET
    assert one(gnp("stagedAction: Learn", kind="StagedGlobalNetworkPolicy")).staged_action \
        is StagedAction.LEARN
    assert one(knp("podSelector: {}", staged=True)).staged_action is StagedAction.SET
    assert one(gnp("selector: all()")).namespace is None


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ("podSelector: {}", (IN,)),
        ("podSelector: {}\ningress: [{}]", (IN,)),
        ("podSelector: {}\negress: [{}]", (IN, OUT)),
        ("podSelector: {}\negress: []", (IN,)),
        ("podSelector: {}\npolicyTypes: [Egress]", (OUT,)),
        ("podSelector: {}\npolicyTypes: [Egress, Ingress]", (IN, OUT)),
    ],
)
def test_k8s_policy_types_defaulting(spec: str, types: tuple[Direction, ...]) -> None:
    # As the API server defaults an omitted policyTypes: Ingress, plus Egress with egress rules.
    assert one(knp(spec)).types == types


# --- Kubernetes NetworkPolicy conversion -------------------------------------------------------

ORCH = 'projectcalico.org/orchestrator == "k8s"'
TCP, UDP, SCTP = 6, 17, 132


def _ports(*items: int | str | tuple[int, int]) -> tuple[PortRange | NamedPort, ...]:
    out: list[PortRange | NamedPort] = []
    for i in items:
        if isinstance(i, str):
            out.append(NamedPort(i))
        elif isinstance(i, tuple):
            out.append(PortRange(*i))
        else:
            out.append(PortRange(i, i))
    return tuple(out)


def test_knp_identity() -> None:
    p = one(knp("podSelector: {matchLabels: {app: web}}"))
    assert (p.kind, p.namespace, p.name, p.tier, p.order) == (
        PolicyKind.KUBERNETES_NETWORK_POLICY, "shop", "web", "default", 1000.0)
    assert p.v1_name == "knp.default.web"
    assert str(p.selector) == f'({ORCH} && app == "web")'
    staged = one(knp("podSelector: {}\nstagedAction: Delete", staged=True))
    assert staged.kind is PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY
    assert (staged.staged_action, staged.tier, staged.order) == (StagedAction.DELETE,
                                                                 "default", 1000.0)


def test_knp_protocols_outer_peers_inner() -> None:
    p = one(knp("""
        podSelector: {}
        ingress:
        - from:
          - podSelector: {matchLabels: {role: fe}}
          - namespaceSelector: {matchLabels: {team: a}}
          ports:
          - {port: 80}
          - {protocol: UDP, port: 53}
          - {protocol: SCTP, port: 9}
          - {port: 81}
          - {port: http}
          - {port: 8000, endPort: 8002}
    """))
    got = [(r.protocol, str(r.source.selector), str(r.source.namespace_selector),
            r.destination.ports) for r in p.ingress]
    tcp = _ports("http", (80, 81), (8000, 8002))
    fe, team = (f'({ORCH} && role == "fe")', "None"), (ORCH, 'team == "a"')
    assert got == [
        (SCTP, *fe, _ports(9)), (SCTP, *team, _ports(9)),
        (TCP, *fe, tcp), (TCP, *team, tcp),
        (UDP, *fe, _ports(53)), (UDP, *team, _ports(53)),
    ]
    assert all(r.action is Action.ALLOW and not r.destination.selector for r in p.ingress)


def test_knp_port_without_number_opens_the_protocol() -> None:
    p = one(knp("""
        podSelector: {}
        ingress:
        - ports: [{port: 80}, {protocol: TCP}, {port: 443}, {protocol: UDP, port: 53}]
    """))
    assert [(r.protocol, r.destination.ports, r.source.is_empty) for r in p.ingress] == [
        (TCP, (), True), (UDP, _ports(53), True)]


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        # SimplifyPorts: with two or more numeric port numbers, names first, then merged ranges
        ("[{port: 82}, {port: http}, {port: 80}, {port: 81}, {port: 90}]",
         _ports("http", (80, 82), 90)),
        ("[{port: 80}, {port: 80}]", _ports(80)),
        ("[{port: 8080, endPort: 8081}, {port: http}]", _ports("http", (8080, 8081))),
        # one numeric port number: Calico returns the list unchanged
        ("[{port: 80}, {port: http}]", _ports(80, "http")),
    ],
)
def test_knp_ports_of_one_protocol_merge(ports: str, expected: tuple[object, ...]) -> None:
    (rule,) = one(knp(f"podSelector: {{}}\ningress:\n- ports: {ports}")).ingress
    assert (rule.protocol, rule.destination.ports) == (TCP, expected)


def test_knp_allow_all_and_no_rules() -> None:
    (rule,) = one(knp("podSelector: {}\ningress: [{}]")).ingress
    assert (rule.action, rule.protocol, rule.source.is_empty, rule.destination.is_empty) == (
        Action.ALLOW, None, True, True)
    assert one(knp("podSelector: {}\ningress: []")).ingress == ()


def test_knp_egress_ipblock_and_expressions() -> None:
    p = one(knp("""
        podSelector: {}
        egress:
        - to:
          - ipBlock: {cidr: 10.0.1.1/8, except: [10.1.0.0/16, 10.2.0.0/16]}
          - namespaceSelector: {}
            podSelector:
              matchLabels: {z: '1', b: '2'}
              matchExpressions:
              - {key: a, operator: In, values: [x, y]}
              - {key: b, operator: NotIn, values: [z]}
              - {key: c, operator: Exists}
              - {key: d, operator: DoesNotExist}
          ports: [{port: 443}]
    """))
    block, pods = p.egress
    assert [str(n) for n in block.destination.nets] == ["10.0.0.0/8"]
    assert [str(n) for n in block.destination.not_nets] == ["10.1.0.0/16", "10.2.0.0/16"]
    assert (block.destination.selector, block.protocol, block.destination.ports) == (
        None, TCP, _ports(443))
    assert str(pods.destination.selector) == (
        f'({ORCH} && b == "2" && z == "1" && a in {{"x", "y"}} && b not in {{"z"}} '
        "&& has(c) && !has(d))")
    assert str(pods.destination.namespace_selector) == "all()"
    assert pods.source.is_empty and block.source.is_empty


# --- validation messages -------------------------------------------------------------------------

_RULE_ACCEPTED = ("accepted: action, protocol, notProtocol, icmp, notICMP, ipVersion, source, "
                  "destination, http, metadata")
_NP_ACCEPTED = ("accepted: tier, order, selector, serviceAccountSelector, types, ingress, egress, "
                "performanceHints")
_DOMAIN_WHOLE_LABEL = ("must use '*' only as a whole label that is not the last "
                       "(e.g. *.example.com)")
_KINDS = ("projectcalico.org/v3 Tier, NetworkPolicy, GlobalNetworkPolicy, StagedNetworkPolicy, "
          "StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy, NetworkSet, "
          "GlobalNetworkSet; networking.k8s.io/v1 NetworkPolicy; or a List of them")
_API = f"apiVersion must be projectcalico.org/v3 or networking.k8s.io/v1 ({_KINDS})"

ERRORS = [
    ("unknown-field", np("selector: all()\nbogus: 1"),
     f"spec.bogus is not a known field ({_NP_ACCEPTED}) (got 1)"),
    ("unknown-rule-field", np("ingress:\n- action: Allow\n  prot: TCP"),
     f"spec.ingress[0].prot is not a known field ({_RULE_ACCEPTED}) (got 'TCP')"),
    ("bad-protocol", np("ingress:\n- action: Allow\n  protocol: TCPP"),
     "spec.ingress[0].protocol must be one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255 "
     "(got 'TCPP')"),
    ("protocol-256", np("egress:\n- action: Allow\n  notProtocol: 256"),
     "spec.egress[0].notProtocol must be one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255 "
     "(got 256)"),
    ("ports-without-protocol", np("ingress:\n- action: Allow\n  destination: {ports: [80]}"),
     "spec.ingress[0].protocol must be TCP, UDP or SCTP because destination.ports is set (rules "
     "that specify ports must set protocol to TCP, UDP or SCTP) (got None)"),
    ("ports-with-icmp",
     np("ingress:\n- action: Allow\n  protocol: ICMP\n  source: {notPorts: [1]}"),
     "spec.ingress[0].protocol must be TCP, UDP or SCTP because source.notPorts is set (rules "
     "that specify ports must set protocol to TCP, UDP or SCTP) (got 'ICMP')"),
    ("icmp-code-without-type", np("ingress:\n- action: Allow\n  protocol: ICMP\n  icmp: {code: 3}"),
     "spec.ingress[0].icmp.code requires icmp type to be set (got 3)"),
    ("icmp-without-protocol", np("ingress:\n- action: Allow\n  icmp: {type: 8}"),
     "spec.ingress[0].protocol must be ICMP or ICMPv6 because icmp is set (got None)"),
    ("noticmp-with-tcp", np("ingress:\n- action: Allow\n  protocol: TCP\n  notICMP: {type: 8}"),
     "spec.ingress[0].protocol must be ICMP or ICMPv6 because notICMP is set (got 'TCP')"),
    ("domains-on-ingress", np("ingress:\n- action: Allow\n  destination: {domains: [a.com]}"),
     "spec.ingress[0].destination.domains is only allowed in the destination of egress rules "
     "(got ['a.com'])"),
    ("domains-in-source", np("egress:\n- action: Allow\n  source: {domains: [a.com]}"),
     "spec.egress[0].source.domains is only allowed in the destination of egress rules "
     "(got ['a.com'])"),
    ("domains-on-deny", np("egress:\n- action: Deny\n  destination: {domains: [a.com]}"),
     "spec.egress[0].action must be Allow when destination.domains is set (got 'Deny')"),
    ("domains-with-nets",
     np("egress:\n- action: Allow\n  destination: {domains: [a.com], nets: [10.0.0.0/8]}"),
     "spec.egress[0].destination.domains cannot be combined with nets or selector "
     "(got ['a.com'])"),
    ("domain-partial-label", np("egress:\n- action: Allow\n  destination: {domains: [www.g*.com]}"),
     f"spec.egress[0].destination.domains[0] {_DOMAIN_WHOLE_LABEL} (got 'www.g*.com')"),
    ("domain-two-stars", np("egress:\n- action: Allow\n  destination: {domains: ['*.*.com']}"),
     "spec.egress[0].destination.domains[0] must contain at most one '*' (got '*.*.com')"),
    ("domain-last-label", np("egress:\n- action: Allow\n  destination: {domains: [example.*]}"),
     f"spec.egress[0].destination.domains[0] {_DOMAIN_WHOLE_LABEL} (got 'example.*')"),
    ("bad-cidr", np("ingress:\n- action: Allow\n  source: {nets: [10.0.0.0/33]}"),
     "spec.ingress[0].source.nets[0] must be an IPv4 or IPv6 CIDR such as 10.0.0.0/8 "
     "(got '10.0.0.0/33')"),
    ("bad-selector", np("selector: app == frontend"),
     "spec.selector must be a valid selector: expected a quoted string (values must be quoted) "
     "at position 7 (got 'app == frontend')"),
    ("bad-rule-selector", np("ingress:\n- action: Allow\n  source: {selector: 'has(a'}"),
     "spec.ingress[0].source.selector must be a valid selector: no closing ')' after has( at "
     "position 5 (got 'has(a')"),
    ("tier-prefix", gnp("tier: security", name="x"),
     "metadata.name must start with 'security.' because the policy is in tier 'security' "
     "(got 'x')"),
    ("tier-prefix-np", np("tier: security", meta="{name: other.x, namespace: ns}"),
     "metadata.name must start with 'security.' because the policy is in tier 'security' "
     "(got 'other.x')"),
    ("dotted-default-tier-name", gnp("selector: all()", name="foo.bar"),
     "metadata.name in the default tier must have no dot or start with 'default.' "
     "(got 'foo.bar')"),
    ("default-tier-order", _doc("Tier", "{name: default}", "order: 100"),
     "spec.order of the default tier must be 1000000 (Calico fixes it) (got 100)"),
    ("default-tier-action", _doc("Tier", "{name: default}", "defaultAction: Pass"),
     "spec.defaultAction of the default tier must be Deny (got 'Pass')"),
    ("missing-apiVersion", "kind: Tier\nmetadata: {name: a}\n", f"{_API} (got None)"),
    ("wrong-apiVersion", "apiVersion: projectcalico.org/v1\nkind: Tier\nmetadata: {name: a}\n",
     f"{_API} (got 'projectcalico.org/v1')"),
    ("missing-kind", CALICO + "metadata: {name: a}\n", f"kind must be one of: {_KINDS} (got None)"),
    ("unknown-kind", _doc("HostEndpoint", "{name: a}"),
     f"kind must be one of: {_KINDS} (got 'HostEndpoint')"),
    ("stagedAction-on-enforced-kind", np("stagedAction: Set"),
     f"spec.stagedAction is not a known field ({_NP_ACCEPTED}) (got 'Set')"),
    ("bad-stagedAction", np("stagedAction: Sett", kind="StagedNetworkPolicy"),
     "spec.stagedAction must be one of Set, Delete, Learn, Ignore (got 'Sett')"),
    ("bad-staged-knp-action", knp("podSelector: {}\nstagedAction: nope", staged=True),
     "spec.stagedAction must be one of Set, Delete, Learn, Ignore (got 'nope')"),
    ("matchExpressions-In-no-values",
     knp("podSelector: {matchExpressions: [{key: a, operator: In, values: []}]}"),
     "spec.podSelector.matchExpressions[0].values must be non-empty for operator In (got [])"),
    ("ipBlock-except-outside",
     knp("podSelector: {}\ningress:\n- from: [{ipBlock: {cidr: 10.0.0.0/8, except: [1.0.0.0/8]}}]"),
     "spec.ingress[0].from[0].ipBlock.except[0] must be inside 10.0.0.0/8 (got '1.0.0.0/8')"),
    ("endPort-without-port", knp("podSelector: {}\negress:\n- ports: [{endPort: 90}]"),
     "spec.egress[0].ports[0].endPort requires port to be set (got 90)"),
    ("knp-protocol", knp("podSelector: {}\ningress:\n- ports: [{protocol: ICMP}]"),
     "spec.ingress[0].ports[0].protocol must be one of TCP, UDP, SCTP (got 'ICMP')"),
    ("knp-podSelector-required", knp("ingress: []"),
     "spec.podSelector is required (use {} to select every pod) (got None)"),
]


@pytest.mark.parametrize(("text", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_validation_message(text: str, message: str) -> None:
    err = error(text)
    assert str(err) == f"p.yaml doc 0: {message}"
    assert (err.source, err.index) == ("p.yaml", 0)
    assert message.startswith(err.field)


def test_error_names_document_index_and_list_item() -> None:
    bad = _doc("Tier", "{name: c}", "order: x")
    err = error(_doc("Tier", "{name: a}") + "---\n" + _doc("Tier", "{name: b}") + "---\n" + bad)
    assert str(err) == "p.yaml doc 2: spec.order must be a number (got 'x')"
    listed = "kind: List\napiVersion: v1\nitems:\n- " + textwrap.indent(bad, "  ").strip()
    err = error(gnp() + "---\n" + listed, "l.yaml")
    assert str(err) == "l.yaml doc 1: items[0].spec.order must be a number (got 'x')"
    assert (err.index, err.field, err.value) == (1, "items[0].spec.order", "x")


def test_valid_domains_and_tier_names_load() -> None:
    domains = "['*.Example.com', 'www.*.com']"
    p = one(np(f"egress:\n- action: Allow\n  destination: {{domains: {domains}}}"))
    assert p.egress[0].destination.domains == ("*.example.com", "www.*.com")
    assert one(gnp("tier: security", name="security.x")).tier == "security"
    assert one(gnp("selector: all()", name="default.x")).name == "default.x"
    (tier,) = load_text(_doc("Tier", "{name: default}", "order: 1000000"))
    assert isinstance(tier, policy.Tier) and tier.order == 1_000_000


def test_duplicate_objects() -> None:
    twice = np("selector: all()", meta="{name: a, namespace: x}")
    err = error(twice + "---\n" + twice, "d.yaml")
    assert str(err) == ("d.yaml doc 1: metadata.name is defined twice (each object may appear "
                        "once across the inputs) (got 'NetworkPolicy/x/a')")
    tier = _doc("Tier", "{name: security}", "order: 1")
    assert error(tier + "---\n" + tier).index == 1
    # Same name in another namespace, or as a staged or Kubernetes policy, is another object.
    other = [np(meta="{name: a, namespace: y}"), np(kind="StagedNetworkPolicy",
                                                    meta="{name: a, namespace: x}"),
             _doc("NetworkPolicy", "{name: a, namespace: x}", "podSelector: {}", api=K8S)]
    ps = PolicySet.from_documents(load_text("---\n".join([twice, *other])))
    assert len(ps.policies) == 4


@pytest.mark.parametrize("kind", ["GlobalNetworkSet", "NetworkSet"])
def test_duplicate_network_sets(kind: str) -> None:
    meta = "{name: s}" if kind == "GlobalNetworkSet" else "{name: s, namespace: a}"
    twice = _doc(kind, meta, "nets: [10.0.0.0/8]")
    err = error(twice + "---\n" + twice, "d.yaml")
    assert (err.source, err.index, err.field) == ("d.yaml", 1, "metadata.name")
    assert "is defined twice" in str(err)


def test_policy_in_undefined_tier() -> None:
    err = error(_doc("Tier", "{name: other}") + "---\n" + gnp("tier: security", "security.p"))
    assert str(err) == ("p.yaml doc 1: spec.tier must name a defined Tier "
                        "(defined: default, other) (got 'security')")


def test_yaml_syntax_error_names_the_line() -> None:
    text = CALICO + "kind: Tier\nmetadata: {name: a\nspec: [}\n"
    err = error(text)
    assert str(err) == ("p.yaml: is not valid YAML: expected ',' or '}', but got ':' "
                        "(got 'line 4 column 5')")
    assert err.index is None


def test_json_syntax_errors_name_the_line() -> None:
    assert str(error('[{"a": 1,}]', "p.json")) == (
        "p.json: is not valid JSON: Expecting property name enclosed in double quotes "
        "(got 'line 1 column 10')")
    lines = json.dumps(TIER) + '\n{"kind": \n'
    assert str(error(lines, "p.jsonl")) == (
        "p.jsonl: is not valid JSON: Expecting value (got 'line 2')")


def test_k8s_api_version_with_a_calico_kind() -> None:
    # The apiVersion is a known one; the kind is what does not fit it.
    err = error(_doc("Tier", "{name: a}", api=K8S))
    assert (err.field, err.value) == ("kind", "Tier")
