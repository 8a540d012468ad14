"""``tierflow recommend`` on the real lab capture, and the tables its pieces follow.

The store is ``sample_flows/capture/lab.pcap`` ingested with only the storefront tiers, so
every flow is unprotected (its trace ends in a profile): 3 HTTP connections frontend →
microservice1:8080, 1 UDP echo to :9999, 4 DNS lookups to CoreDNS, 2 HTTP calls to
api.twilio.com / hooks.slack.com and 1 from microservice1 to a public address.

Snapshots: ``tests/snapshots/recommend_storefront.yaml`` (every file written, in order) and
``recommend_storefront.md`` (the report). ``TIERFLOW_UPDATE_SNAPSHOTS=1`` rewrites them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from policy import PolicySet, load_text
from policy.schema import schema_problems
from recommend.cluster import stable_name
from recommend.observe import workload_key
from recommend.ports import calico_protocol, merge_ports
from recommend.rules import wildcard_domains
from recommend.selectors import workload_selector
from tierflow.cli import cli

REPO = Path(__file__).resolve().parents[1]
CAPTURE = REPO / "sample_flows" / "capture"
POLICIES = REPO / "sample_flows" / "storefront" / "policies"
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
SINCE = "2026-11-27T00:00:00Z"


def ingest(path: Path) -> Path:
    r = CliRunner().invoke(cli, ["ingest", "pcap", str(CAPTURE / "lab.pcap"), "--store",
                                 str(path), "--inventory", str(CAPTURE / "inventory.json"),
                                 "--policies", str(POLICIES / "00-tiers.yaml"),
                                 "--output", "text"])
    assert r.exit_code == 0, r.output
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest(tmp_path_factory.mktemp("recommend") / "store")


def recommend(store: Path, out: Path, *extra: str, policies: Path = POLICIES / "00-tiers.yaml",
              code: int = 0) -> tuple[str, str]:
    args = ["recommend", "--store", str(store), "--policies", str(policies), "--inventory",
            str(CAPTURE / "inventory.json"), "--since", SINCE, "--out", str(out), *extra]
    if "--all-namespaces" not in extra:
        args += ["--namespace", "storefront"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == code, r.output + r.stderr
    return r.stdout, r.stderr


def written(out: Path) -> str:
    return "---\n".join(f"# file: {f.name}\n{f.read_text()}" for f in sorted(out.glob("*.yaml")))


def snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("TIERFLOW_UPDATE_SNAPSHOTS"):
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs (TIERFLOW_UPDATE_SNAPSHOTS=1 updates)"


def test_recommendation_matches_the_snapshot(store: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out", tmp_path / "report.md"
    stdout, _ = recommend(store, out, "--report", str(report))
    snapshot("recommend_storefront.yaml", written(out))
    snapshot("recommend_storefront.md", report.read_text())
    assert "replay: 15 of 15 observed connection(s) stay allowed (100.0 %)" in stdout
    assert stdout.rstrip().splitlines()[-2].endswith("PASSED")


def test_written_policies_validate_and_load(store: Path, tmp_path: Path) -> None:
    recommend(store, tmp_path)
    docs = []
    for f in sorted(tmp_path.glob("*.yaml")):
        raw = yaml.safe_load(f.read_text())
        assert schema_problems(raw) == []
        docs += load_text(f.read_text(), str(f))
    ps = PolicySet.from_documents([*load_text((POLICIES / "00-tiers.yaml").read_text()), *docs])
    assert [(p.kind, p.namespace, p.name) for p in ps.policies] == [
        ("StagedNetworkPolicy", "storefront", "default.frontend"),
        ("StagedNetworkPolicy", "storefront", "default.microservice1")]
    frontend = ps.policies[0]
    assert str(frontend.selector) == 'app == "frontend"'  # pod-template-hash dropped
    dns = [r for r in frontend.egress if r.destination.ports and
           r.destination.ports[0].first == 53]
    assert sorted(r.protocol for r in dns) == [6, 17]  # TCP and UDP 53 to CoreDNS


def test_two_runs_are_byte_identical(store: Path, tmp_path: Path) -> None:
    other = ingest(tmp_path / "store2")
    for s, d in ((store, "a"), (other, "b")):
        recommend(s, tmp_path / d, "--report", str(tmp_path / f"{d}.md"), "--all-namespaces")
    assert written(tmp_path / "a") == written(tmp_path / "b")
    assert (tmp_path / "a.md").read_bytes() == (tmp_path / "b.md").read_bytes()


def test_existing_policies_in_front_can_break_the_proof(store: Path, tmp_path: Path) -> None:
    # With the storefront zone policies in force, default.dmz and default.trusted (ordered
    # before the recommendation in the default tier) deny the calls to public addresses.
    stdout, stderr = recommend(store, tmp_path, policies=POLICIES, code=1)
    assert "replay: 12 of 15 observed connection(s) stay allowed (80.0 %)" in stdout
    assert stderr.splitlines()[-2:] == [
        "  not allowed: egress storefront/frontend-864f4fcdfd-* -> pub (api.twilio.com, "
        "hooks.slack.com) tcp:80: deny by 2|default|storefront/default.dmz|deny|2 "
        "(2 connection(s) in 1 record(s))",
        "  not allowed: egress storefront/microservice1-7b9d6c8f5d-* -> pub tcp:80: deny by "
        "2|default|storefront/default.trusted|deny|3 (1 connection(s) in 1 record(s))"]


def test_k8s_format_without_addresses_fails_the_proof_and_says_why(store: Path,
                                                                    tmp_path: Path) -> None:
    _, stderr = recommend(store, tmp_path, "--format", "k8s", code=1)
    assert ("tierflow: warning: default.frontend egress: TCP 80 to domains api.twilio.com, "
            "hooks.slack.com left out (the records carry no destination addresses for "
            "these names)") in stderr
    assert "not allowed: egress storefront/frontend-864f4fcdfd-* -> pub" in stderr


def test_namespace_scope_writes_the_tier_and_one_policy(store: Path, tmp_path: Path) -> None:
    stdout, stderr = recommend(store, tmp_path, "--scope", "namespace")
    assert sorted(f.name for f in tmp_path.glob("*.yaml")) == [
        "00-tier.namespace-isolation.yaml", "storefront.namespace-isolation.storefront.yaml"]
    assert "tier 'namespace-isolation' is not among the policies given" in stderr
    assert stdout.rstrip().endswith("PASSED")


@pytest.mark.parametrize(("args", "message"), [
    ([], "give --namespace NS or --all-namespaces (one of them)"),
    (["--namespace", "storefront", "--all-namespaces"],
     "give --namespace NS or --all-namespaces (one of them)"),
    (["--namespace", "storefront", "--scope", "namespace", "--workload", "front"],
     "tierflow: error: --workload selects workloads; it needs --scope workload "
     "(got --scope 'namespace')"),
    (["--namespace", "storefront", "--tier", "Security"],
     "tierflow: error: --tier must be a lower-case DNS label (a-z, 0-9, '-', at most 63 "
     "characters) (got 'Security')"),
    (["--namespace", "storefront", "--since", "yesterday"],
     "tierflow: error: --since: 'yesterday' is not a duration"),
])
def test_bad_requests_name_the_problem(store: Path, tmp_path: Path, args: list[str],
                                       message: str) -> None:
    r = CliRunner().invoke(cli, ["recommend", "--store", str(store), "--policies",
                                 str(POLICIES / "00-tiers.yaml"), "--out", str(tmp_path),
                                 *args])
    assert r.exit_code == 2
    assert message in r.stderr


# -- tables ----------------------------------------------------------------------------


@pytest.mark.parametrize(("labels", "others", "selector"), [
    ({"app": "web", "pod-template-hash": "5d8f"}, [], 'app == "web"'),
    ({"app.kubernetes.io/name": "api", "app": "legacy"}, [], 'app.kubernetes.io/name == "api"'),
    ({"k8s-app": "kube-dns", "pod-template-hash": "5d78"}, [], 'k8s-app == "kube-dns"'),
    ({"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "cache",
      "app.kubernetes.io/component": "master", "app.kubernetes.io/version": "7.0.1",
      "helm.sh/chart": "redis-17.3.2", "app.kubernetes.io/managed-by": "Helm"}, [],
     '(app.kubernetes.io/component == "master" && app.kubernetes.io/instance == "cache" && '
     'app.kubernetes.io/name == "redis")'),
    ({"tier": "backend", "team": "a", "controller-revision-hash": "7bb8",
      "pod-template-generation": "1"}, [], '(team == "a" && tier == "backend")'),
    ({"app": "db", "statefulset.kubernetes.io/pod-name": "db-0",
      "controller-revision-hash": "db-6d5f"}, [], 'app == "db"'),
    ({"release": "prod", "chart": "x-1.0", "heritage": "Helm", "version": "1"}, [],
     'release == "prod"'),
    ({"app": "backup", "job-name": "backup-28712345", "controller-uid": "9f1c",
      "batch.kubernetes.io/job-name": "backup-28712345"}, [], 'app == "backup"'),
    # narrowest: another workload shares `app`, so every stable label is used
    ({"app": "web", "track": "stable"}, [{"app": "web", "track": "canary"}],
     '(app == "web" && track == "stable")'),
    ({"app": "web"}, [{"app": "web", "track": "canary"}], 'app == "web"'),
    ({"pod-template-hash": "abc"}, [], 'pod-template-hash == "abc"'),
])
def test_stable_selector_table(labels: dict[str, str], others: list[dict[str, str]],
                               selector: str) -> None:
    assert workload_selector([labels], others).selector == selector


def test_stable_selector_warnings_and_intersection() -> None:
    assert workload_selector([{"app": "web"}], [{"app": "web", "x": "1"}]).warning == \
        "its stable labels also select other workloads' pods"
    assert workload_selector([{"pod-template-hash": "abc"}]).warning == (
        "has no stable labels; the selector uses pod-template-hash, which change on rollout")
    # records of one workload with differing labels: only the common ones select it
    both = workload_selector([{"app": "a", "zone": "1"}, {"app": "a", "zone": "2"}])
    assert both.labels == (("app", "a"),)


@pytest.mark.parametrize(("ports", "merged"), [
    ([80], (80,)),
    ([443, 80, 443], (80, 443)),
    ([8080, 8081], (8080, 8081)),  # a range of two is no shorter
    ([8080, 8081, 8082], ("8080:8082",)),
    ([1, 2, 3, 5, 6, 7, 9], ("1:3", "5:7", 9)),
    ([53, 5353, 5354, 5355, 5356], (53, "5353:5356")),
    ([], ()),
])
def test_port_merging_table(ports: list[int], merged: tuple[int | str, ...]) -> None:
    assert merge_ports(ports) == merged


@pytest.mark.parametrize(("proto", "calico"), [
    ("tcp", "TCP"), ("udp", "UDP"), ("icmp", "ICMP"), ("1", "ICMP"), ("icmp6", "ICMPv6"),
    ("sctp", "SCTP"), ("udplite", "UDPLite"), ("47", 47),
])
def test_protocol_table(proto: str, calico: str | int) -> None:
    assert calico_protocol(proto) == calico


def test_unknown_protocol_names_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"flow-log proto 'tpc' is not a protocol name"):
        calico_protocol("tpc")


@pytest.mark.parametrize(("workload", "labels", "name"), [
    ("frontend-864f4fcdfd-*", {"pod-template-hash": "864f4fcdfd"}, "frontend"),
    ("api-7c9d8b6f5c-*", {}, "api-7c9d8b6f5c"),  # no hash label: the prefix stays
    ("postgres-*", {"controller-revision-hash": "postgres-6d5f"}, "postgres"),
    ("standalone", {}, "standalone"),
    ("Odd_Name-*", {}, "odd-name"),
])
def test_stable_name_table(workload: str, labels: dict[str, str], name: str) -> None:
    assert stable_name(workload, labels) == name


def test_cronjob_runs_share_a_workload_key() -> None:
    assert workload_key("backup-28712345-*") == "backup-*"
    assert workload_key("frontend-864f4fcdfd-*") == "frontend-864f4fcdfd-*"


@pytest.mark.parametrize(("names", "wild"), [
    (["a.s3.example.com", "b.s3.example.com"], ["*.s3.example.com"]),
    (["hooks.slack.com", "api.slack.com", "slack.com"], ["*.slack.com", "slack.com"]),
    (["api.twilio.com"], ["api.twilio.com"]),
    (["a.co.uk", "b.co.uk"], ["a.co.uk", "b.co.uk"]),  # never a public suffix
])
def test_domain_wildcard_table(names: list[str], wild: list[str]) -> None:
    assert wildcard_domains(names) == wild


def test_html_report_is_one_escaped_page(store: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    recommend(store, tmp_path / "out", "--report", str(page))
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text
    assert "<p>Applies to app == &quot;frontend&quot; (workload: frontend-864f4fcdfd-*).</p>" \
        in text
    assert "<td>pub (api.twilio.com, hooks.slack.com)</td><td>tcp/80</td><td>2</td>" in text
