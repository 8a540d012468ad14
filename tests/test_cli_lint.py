"""``tierflow policy lint``: the storefront sample is clean; broken documents give one line per
problem naming file, document index and field, from Calico's semantic rules and from the
bundled CRD schemas; ``--output json`` gives the same problems as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from policy import load_text
from tierflow.cli import cli

REPO = Path(__file__).resolve().parents[1]
STOREFRONT_POLICIES = REPO / "sample_flows" / "storefront" / "policies"

# Four documents: a good Tier, a semantic error, a schema-only error, and an error that both
# the schema (type number) and Calico's reader (must be a number) see.
MULTI = """\
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: platform
spec:
  order: 700
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: platform.logging
spec:
  tier: platform
  selector: app == 'logging'
  ingress:
    - action: Allow
      protocol: TCPP
      destination:
        ports: [8080]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: platform.preload
spec:
  tier: platform
  performanceHints: [PreloadEverywhere]
  selector: all()
  ingress:
    - action: Pass
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: security
spec:
  order: abc
"""
SELECTOR = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: default.dmz
  namespace: storefront
spec:
  selector: fw-zone == dmz
  types: [Ingress]
"""
NAMES_AND_PORTS = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: logging
spec:
  tier: platform
  selector: app == 'logging'
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: default.trusted
  namespace: storefront
spec:
  selector: fw-zone == 'trusted'
  egress:
    - action: Allow
      destination:
        ports: [8080]
"""
UNPARSABLE = """\
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: [oops
"""
KUBECTL_LIST = {"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
     "metadata": {"name": "public", "labels": {"type": "public"}},
     "spec": {"nets": ["1.0.0.0/8"]}},
    {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
     "metadata": {"name": "default.backend", "namespace": "storefront"},
     "spec": {"selector": "app == 'backend'",
              "ingress": [{"action": "Allow", "source": {"selectr": "app == 'frontend'"}}]}},
    {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
     "metadata": {"name": "twilio"},
     "spec": {"nets": ["54.172.60.0/23"], "allowedEgressDomains": ["api.twilio.*"]}},
]}
STAGED_K8S = """\
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata:
  name: db
  namespace: shop
spec:
  stagedAction: Replace
  podSelector: {}
"""


def lint(*args: str) -> Result:
    return CliRunner().invoke(cli, ["policy", "lint", *args], catch_exceptions=False)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    d = tmp_path / "broken"
    (d / "zones").mkdir(parents=True)
    (d / "a-multi.yaml").write_text(MULTI)
    (d / "b-selector.yml").write_text(SELECTOR)
    (d / "c-names.yaml").write_text(NAMES_AND_PORTS)
    (d / "d-unparsable.yaml").write_text(UNPARSABLE)
    (d / "e-list.json").write_text(json.dumps(KUBECTL_LIST, indent=2))
    (d / "zones" / "staged.yaml").write_text(STAGED_K8S)
    (d / "notes.txt").write_text("not a policy file: ignored\n")
    return d


def expected_problems(d: Path) -> list[dict[str, object]]:
    def p(file: str, doc: int | None, field: str, message: str) -> dict[str, object]:
        return {"file": str(d / file), "document": doc, "field": field, "message": message}

    return [
        p("a-multi.yaml", 1, "spec.ingress[0].protocol",
          "must be one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255 (got 'TCPP')"),
        p("a-multi.yaml", 2, "spec.performanceHints[0]",
          "violates the CRD schema: 'PreloadEverywhere' is not one of "
          "['AssumeNeededOnEveryNode'] (got 'PreloadEverywhere')"),
        p("a-multi.yaml", 3, "spec.order", "must be a number (got 'abc')"),
        p("b-selector.yml", 0, "spec.selector",
          "must be a valid selector: expected a quoted string (values must be quoted) at "
          "position 11 (got 'fw-zone == dmz')"),
        p("c-names.yaml", 0, "metadata.name",
          "must start with 'platform.' because the policy is in tier 'platform' "
          "(got 'logging')"),
        p("c-names.yaml", 1, "spec.egress[0].protocol",
          "must be TCP, UDP or SCTP because destination.ports is set (rules that specify "
          "ports must set protocol to TCP, UDP or SCTP) (got None)"),
        p("d-unparsable.yaml", None, "",
          "is not valid YAML: expected ',' or ']', but got '<stream end>' "
          "(got 'line 5 column 1')"),
        p("e-list.json", 0, "items[1].spec.ingress[0].source.selectr",
          "is not a known field (accepted: nets, notNets, selector, notSelector, "
          "namespaceSelector, ports, notPorts, serviceAccounts, services, domains) "
          "(got \"app == 'frontend'\")"),
        p("e-list.json", 0, "items[2].spec.allowedEgressDomains[0]",
          "must use '*' only as a whole label that is not the last (e.g. *.example.com) "
          "(got 'api.twilio.*')"),
        p("zones/staged.yaml", 0, "spec.stagedAction",
          "must be one of Set, Delete, Learn, Ignore (got 'Replace')"),
    ]


def as_text(problem: dict[str, object]) -> str:
    where = problem["file"] if problem["document"] is None else \
        f"{problem['file']} doc {problem['document']}"
    field = f"{problem['field']} " if problem["field"] else ""
    return f"{where}: {field}{problem['message']}"


def test_storefront_policies_are_clean() -> None:
    result = lint(str(STOREFRONT_POLICIES))
    assert result.exit_code == 0, result.stdout
    assert result.stdout == ""
    assert result.stderr == "13 document(s) checked, 0 problem(s)\n"


def test_storefront_policy_files_one_by_one_are_clean() -> None:
    files = sorted(STOREFRONT_POLICIES.glob("*.yaml"))
    assert [f.name for f in files] == ["00-tiers.yaml", "10-security.yaml", "20-platform.yaml",
                                       "30-networksets.yaml", "40-storefront-zones.yaml",
                                       "50-staged.yaml"]
    result = lint(*map(str, files))
    assert result.exit_code == 0, result.stdout
    assert result.stderr == "13 document(s) checked, 0 problem(s)\n"


def test_broken_documents_text(broken: Path) -> None:
    result = lint(str(broken))
    assert result.exit_code == 1
    problems = expected_problems(broken)
    assert result.stdout.splitlines() == [as_text(p) for p in problems]
    # spot-check the rendering itself, independent of as_text
    assert result.stdout.splitlines()[0] == (
        f"{broken}/a-multi.yaml doc 1: spec.ingress[0].protocol must be one of TCP, UDP, "
        "ICMP, ICMPv6, SCTP, UDPLite or 1-255 (got 'TCPP')")
    assert result.stdout.splitlines()[6].startswith(f"{broken}/d-unparsable.yaml: is not ")
    # 4 + 1 + 2 + 3 List items + 1; d-unparsable.yaml is not counted: it could not be read
    assert result.stderr == f"11 document(s) checked, {len(problems)} problem(s)\n"


def test_broken_documents_json(broken: Path) -> None:
    result = lint(str(broken), "--output", "json")
    assert result.exit_code == 1
    assert [json.loads(line) for line in result.stdout.splitlines()] == \
        expected_problems(broken)
    assert result.stderr == ""


def test_schema_only_violation(tmp_path: Path) -> None:
    """performanceHints is not checked by Calico's reader: only the CRD schema catches it."""
    doc = MULTI.split("---\n")[2]
    load_text(doc)  # Calico's semantic reader accepts it
    path = tmp_path / "preload.yaml"
    path.write_text(doc)
    result = lint(str(path))
    assert result.exit_code == 1
    assert result.stdout == (f"{path} doc 0: spec.performanceHints[0] violates the CRD schema: "
                             "'PreloadEverywhere' is not one of ['AssumeNeededOnEveryNode'] "
                             "(got 'PreloadEverywhere')\n")


def test_cross_document_rules(tmp_path: Path) -> None:
    """An undefined tier and a name defined twice are found across files."""
    (tmp_path / "a.yaml").write_text("""\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass}
spec: {tier: security, ingress: [{action: Pass}]}
""")
    result = lint(str(tmp_path / "a.yaml"))
    assert result.exit_code == 1
    assert result.stdout == (f"{tmp_path}/a.yaml doc 0: spec.tier must name a defined Tier "
                             "(defined: default) (got 'security')\n")

    (tmp_path / "b.yaml").write_text((STOREFRONT_POLICIES / "00-tiers.yaml").read_text())
    (tmp_path / "c.yaml").write_text("""\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass}
spec: {tier: security, egress: [{action: Pass}]}
""")
    result = lint(str(tmp_path))
    assert result.exit_code == 1
    assert result.stdout == (f"{tmp_path}/c.yaml doc 0: metadata.name "
                             "is defined twice (each object may appear once across the inputs) "
                             "(got 'GlobalNetworkPolicy//security.pass')\n")
    assert result.stderr == "4 document(s) checked, 1 problem(s)\n"


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    result = lint(str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (f"tierflow: error: {tmp_path}/missing.yaml: does not exist "
                             f"(give policy files or directories) "
                             f"(got '{tmp_path}/missing.yaml')\n")


def test_lint_needs_a_path() -> None:
    result = lint()
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: Missing argument 'PATHS...'."
