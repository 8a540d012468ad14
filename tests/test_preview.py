"""Policy impact preview (issue 6): the storefront scenario end to end, and the semantics of
reference/calico.md §8 on hand-made stores — each record decided where it was reported,
destination records synthesised or dropped when the source's egress flips, ``uncertain``
where the records lack what a rule reads, impacted-only evaluation giving the same answer as
evaluating everything, and the CLI's outputs, report and exit status.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from test_recommend_scenarios import PUB, PVT, WINDOW, both, flow, side, wep, write_store
from test_report import browser_check, needs_chromium

from analytics.db import connect
from analytics.preview import Preview, preview
from ingest.inventory import Inventory
from policy import PolicySet, load_text
from policy.changes import Change, apply_changes
from tierflow.cli import cli

REPO = Path(__file__).resolve().parents[1]
STOREFRONT = REPO / "sample_flows" / "storefront"
CALICO_LOG = REPO / "sample_flows" / "calico" / "flows.log"

WEB = wep("shop", "web-5d8f7c9b6d-*", {"app": "web"})
API = wep("shop", "api-7c9d8b6f5c-*", {"app": "api"})
ADMIN = wep("ops", "admin-6c5d4b3a2f-*", {"app": "admin"})

BASE = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: default.web-egress, namespace: shop}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {ports: [443]}
    - action: Deny
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: default.api-ingress, namespace: shop}
spec:
  selector: app == 'api'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'web'}
      destination: {ports: [8080]}
    - action: Deny
"""


def run(rows: list[dict[str, Any]], tmp_path: Path, policies: str, change: str = "",
        deletes: tuple[str, ...] = (), **kw: Any) -> Preview:
    store = write_store(tmp_path / "store", rows)
    current = PolicySet.from_documents(load_text(policies))
    changes = [Change.put(d) for d in load_text(change)] if change else []
    changes += [Change.delete(t) for t in deletes]
    return preview(connect(store), WINDOW, current, apply_changes(current, changes),
                   Inventory(), **kw)


def outcome(p: Preview, **match: Any) -> list[dict[str, Any]]:
    return [r for r in p.flows.to_pylist()
            if all(r[k] == v for k, v in match.items())]


# -- the storefront scenario (issue 6's "done when") ----------------------------------------

@pytest.fixture(scope="module")
def storefront(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("storefront") / "store"
    r = CliRunner().invoke(cli, ["ingest", "calico", str(CALICO_LOG), "--store", str(store)])
    assert r.exit_code == 0, r.output
    return store


@pytest.fixture
def without_logging_rule() -> Path:
    """The bundled change: the backend's staged policy (default.restricted) without its egress
    rule to logging — checked to be exactly that."""
    docs = list(yaml.safe_load_all((STOREFRONT / "policies" / "50-staged.yaml").read_text()))
    restricted = docs[0]
    egress = restricted["spec"]["egress"]
    restricted["spec"]["egress"] = [r for r in egress
                                    if r.get("destination", {}).get("selector")
                                    != "app == 'logging'"]
    assert len(restricted["spec"]["egress"]) == len(egress) - 1
    path = STOREFRONT / "changes" / "restricted-without-logging.yaml"
    assert yaml.safe_load(path.read_text()) == restricted
    return path


def preview_cli(store: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, [
        "preview", "--store", str(store), "--policies", str(STOREFRONT / "policies"),
        "--inventory", str(STOREFRONT / "inventory.json"), *args])


def test_storefront_backend_to_logging_turns_to_deny(storefront: Path,
                                                     without_logging_rule: Path) -> None:
    r = preview_cli(storefront, "--change", str(without_logging_rule), "--only-changed",
                    "--output", "json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    logging = [x for x in rows if x["source_name_aggr"].startswith("backend-")
               and x["dest_name_aggr"].startswith("logging-")]
    src = [x for x in logging if x["reporter"] == "src"]
    dst = [x for x in logging if x["reporter"] == "dst"]
    assert [(x["change"], x["before"], x["after"], x["connections"]) for x in src] == [
        ("allow-to-deny", "allow", "deny", 3)]
    # Before: the enforced restricted zone allows all egress (rule 0); after: the staged
    # policy, previewed as enforced, ends in its Deny (rule 1 once the logging rule is gone).
    assert src[0]["before_policy"].endswith("|default|storefront/default.restricted|allow|0")
    assert src[0]["after_policy"].endswith("|default|storefront/default.restricted|deny|1")
    # The logging pod's own record of that traffic would no longer exist.
    assert [(x["change"], x["after"], x["note"][:20]) for x in dst] == [
        ("allow-to-deny", "deny", "denied at the source")]
    assert "change: update NetworkPolicy/storefront/default.restricted" in r.stderr
    assert "allow-to-deny: 3 flow(s), 7 connection(s)" in r.stderr


def test_fail_on_gates_ci(storefront: Path, without_logging_rule: Path) -> None:
    r = preview_cli(storefront, "--change", str(without_logging_rule), "--only-changed",
                    "--fail-on", "allow-to-deny")
    assert r.exit_code == 1
    assert "--fail-on allow-to-deny: 3 allowed flow(s) would be denied" in r.stderr
    # Opening up: nothing allowed turns to deny, so allow-to-deny passes and any fails.
    opened = ["--delete", "NetworkPolicy/storefront/default.dmz", "--only-changed"]
    assert preview_cli(storefront, *opened, "--fail-on", "allow-to-deny").exit_code == 0
    assert preview_cli(storefront, *opened, "--fail-on", "any").exit_code == 1


def test_report_marks_changed_flows_red(storefront: Path, without_logging_rule: Path,
                                        tmp_path: Path) -> None:
    out = tmp_path / "preview.html"
    r = preview_cli(storefront, "--change", str(without_logging_rule), "--only-changed",
                    "--report", str(out))
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "<h2>Policy impact preview</h2>" in text
    assert "update NetworkPolicy/storefront/default.restricted" in text
    figure = text.split('id="tf-sunburst-figure">', 1)[1].split("</script>", 1)[0]
    labels = json.loads(figure)["data"][0]["labels"]
    changed = [x for x in labels if x.startswith("\u26a0")]
    assert changed and all("logging" in x or "pvt" in x for x in changed)
    assert "default-src 'none'" in text  # the report's offline guarantee holds here too


@needs_chromium
def test_preview_report_in_chromium(storefront: Path, without_logging_rule: Path,
                                    tmp_path: Path) -> None:
    out = tmp_path / "preview.html"
    assert preview_cli(storefront, "--change", str(without_logging_rule), "--only-changed",
                       "--report", str(out)).exit_code == 0
    check, dom = browser_check(out, tmp_path)
    assert check["charts"]["tf-sunburst"]["surfaces"] > 0
    assert dom.count("allow-to-deny") >= 3  # the changed flows' table, as rendered


def test_table_output_and_usage_errors(storefront: Path) -> None:
    r = preview_cli(storefront, "--delete", "NetworkPolicy/storefront/default.dmz")
    assert r.exit_code == 0, r.output
    assert "deny-to-allow" in r.stdout and "unchanged" in r.stdout
    r = preview_cli(storefront)
    assert r.exit_code == 2 and "give --change FILE or --delete" in r.output
    r = preview_cli(storefront, "--delete", "NetworkPolicy/storefront/nope")
    assert r.exit_code == 2
    assert "--delete NetworkPolicy/storefront/nope: no such policy (known:" in r.stderr


# -- semantics ---------------------------------------------------------------------------------

def test_deleting_a_deny_synthesises_the_destination_record(tmp_path: Path) -> None:
    rows = [flow(WEB, API, 8080, action="deny"),  # web's egress allows only 443
            flow(ADMIN, WEB, 80, reporter="dst")]
    p = run(rows, tmp_path, BASE, deletes=("NetworkPolicy/shop/default.web-egress",))
    [src] = outcome(p, reporter="src")
    assert (src["change"], src["before"], src["after"]) == ("deny-to-allow", "deny", "allow")
    # The connection would now reach api, whose ingress allows web on 8080.
    [dst] = outcome(p, reporter="dst", dest_name_aggr=API["name_aggr"])
    assert dst["synthesised"] and dst["change"] == "deny-to-allow"
    assert dst["after_policy"].endswith("|default|shop/default.api-ingress|allow|0")
    assert p.synthesised == 1


def test_a_synthesised_destination_record_can_still_be_denied(tmp_path: Path) -> None:
    rows = [flow(WEB, API, 9090, action="deny")]
    p = run(rows, tmp_path, BASE, deletes=("NetworkPolicy/shop/default.web-egress",))
    [dst] = outcome(p, reporter="dst")
    assert dst["synthesised"]
    assert (dst["before"], dst["after"], dst["change"]) == ("deny", "deny", "unchanged")
    assert dst["after_policy"].endswith("|default|shop/default.api-ingress|deny|1")


def test_no_destination_record_is_synthesised_for_a_network_peer(tmp_path: Path) -> None:
    p = run([flow(WEB, PUB, 80, action="deny")], tmp_path, BASE,
            deletes=("NetworkPolicy/shop/default.web-egress",))
    assert [r["change"] for r in p.flows.to_pylist()] == ["deny-to-allow"]
    assert p.synthesised == 0


def test_destination_records_of_a_newly_denied_source_are_dropped(tmp_path: Path) -> None:
    tighter = BASE.replace("ports: [443]", "ports: [8443]")
    rows = [*both(WEB, API, 443), flow(WEB, API, 8080, reporter="dst")]
    p = run(rows, tmp_path, BASE, tighter)
    [src] = outcome(p, reporter="src")
    assert src["change"] == "allow-to-deny"
    dst443 = outcome(p, reporter="dst", dest_port=443)
    # api's ingress denies 443 anyway (rule 1): deny before, and after there would be no
    # destination record at all. The 8080 record has no source record and is left alone.
    assert [(r["change"], r["before"], r["after"], r["note"][:20]) for r in dst443] == [
        ("unchanged", "deny", "deny", "denied at the source")]
    [dst8080] = outcome(p, reporter="dst", dest_port=8080)
    assert dst8080["change"] == "unchanged" and dst8080["after"] == "allow"


def test_dropped_destination_record_that_was_allowed(tmp_path: Path) -> None:
    policies = BASE.replace("destination: {ports: [8080]}", "destination: {}")
    tighter = policies.replace("ports: [443]", "ports: [8443]")
    p = run(both(WEB, API, 443), tmp_path, policies, tighter, only_changed=True)
    got = {r["reporter"]: (r["change"], r["before"], r["after"]) for r in p.flows.to_pylist()}
    assert got == {"src": ("allow-to-deny", "allow", "deny"),
                   "dst": ("allow-to-deny", "allow", "deny")}
    [dst] = outcome(p, reporter="dst")
    assert dst["note"].startswith("denied at the source")
    assert dst["after_policy"].endswith("|default|shop/default.web-egress|deny|1")


NETS = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: default.web-egress, namespace: shop}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      destination: {nets: [10.0.0.0/8]}
    - action: Deny
"""


def test_nets_rule_against_a_record_without_ip_is_uncertain(tmp_path: Path) -> None:
    with_ip = side("net", "-", "pvt", ip="10.1.2.3")
    outside = side("net", "-", "pvt", ip="192.168.1.1")
    rows = [flow(WEB, PVT, 5432), flow(WEB, with_ip, 5433), flow(WEB, outside, 5434)]
    p = run(rows, tmp_path, "", NETS)
    got = {r["dest_port"]: (r["change"], r["before"], r["after"])
           for r in p.flows.to_pylist()}
    assert got == {5432: ("uncertain", "allow", "uncertain"),
                   5433: ("unchanged", "allow", "allow"),
                   5434: ("allow-to-deny", "allow", "deny")}
    assert p.allow_to_deny() == 2  # the denied one, and the one that might be


def test_only_impacted_keys_are_evaluated_and_the_answer_is_the_same(tmp_path: Path) -> None:
    other = wep("ops", "batch-5c4b3a2f1e-*", {"app": "batch"})
    rows = [*both(WEB, API, 8080), *both(WEB, API, 443), flow(other, PUB, 443),
            flow(other, ADMIN, 22), flow(ADMIN, other, 22, reporter="dst")]
    tighter = BASE.replace("ports: [443]", "ports: [8443]")
    full = run(rows, tmp_path, BASE, tighter)
    only = run(rows, tmp_path / "again", BASE, tighter, only_changed=True)
    # web's egress policy selects the two web src records only.
    assert (full.keys, full.impacted) == (7, 2)
    assert only.changed().to_pylist() == full.changed().to_pylist()
    assert only.changed().num_rows == 1  # web -> api:443 (its dst record was denied already)


def test_a_tier_change_impacts_everything(tmp_path: Path) -> None:
    tiered = BASE + """
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
"""
    p = run(both(WEB, API, 8080), tmp_path, tiered, """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 50}
""")
    assert p.impacted == p.keys == 2
    assert {r["change"] for r in p.flows.to_pylist()} == {"unchanged"}


def test_staged_policies_are_previewed_as_enforced(tmp_path: Path) -> None:
    staged_delete = """
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: default.api-ingress, namespace: shop}
spec:
  stagedAction: Delete
  selector: app == 'api'
  types: [Ingress]
"""
    p = run([flow(ADMIN, API, 8080, reporter="dst", action="deny")], tmp_path, BASE,
            staged_delete)
    [row] = p.flows.to_pylist()
    assert (row["change"], row["after_policy"]) == (
        "deny-to-allow", "0|__PROFILE__|__PROFILE__.kns.shop|allow|0")
    assert [(c.action, str(c.target)) for c in p.changes] == [
        ("delete", "NetworkPolicy/shop/default.api-ingress")]


def test_staged_policies_in_force_do_not_set_the_before_verdict(tmp_path: Path) -> None:
    staged = BASE + """
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: default.api-ingress, namespace: shop}
spec:
  selector: app == 'api'
  types: [Ingress]
  ingress: [{action: Deny}]
"""
    p = run([flow(WEB, API, 8080, reporter="dst")], tmp_path, staged,
            deletes=("StagedNetworkPolicy/shop/default.api-ingress",))
    [row] = p.flows.to_pylist()
    assert (row["before"], row["after"], row["change"]) == ("allow", "allow", "unchanged")


def test_a_change_behind_an_uncertain_rule_is_uncertain(tmp_path: Path) -> None:
    """The record has no IP, so an earlier nets rule may or may not deny it: the verdict
    before is uncertain (deny, or whatever comes next). Changing what comes next changes one
    branch: the first branch's trace is the same, the decision is not."""
    guard = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: default.known-bad}
spec:
  order: 1
  selector: all()
  types: [Egress]
  egress: [{action: Deny, destination: {nets: [198.51.100.0/24]}}]
"""
    policies = guard + "---" + BASE
    tighter = BASE.replace("ports: [443]", "ports: [8443]")
    p = run([flow(WEB, PUB, 443)], tmp_path, policies, tighter)
    [row] = p.flows.to_pylist()
    assert (row["before"], row["after"], row["change"]) == ("uncertain", "deny", "uncertain")
    assert row["before_policy"] == row["after_policy"]  # the deny branch, both times
    # Deleted and created again: evaluated both times, decided exactly alike: unchanged.
    store = write_store(tmp_path / "again", [flow(WEB, PUB, 443)])
    current = PolicySet.from_documents(load_text(policies))
    changes = [Change.delete("NetworkPolicy/shop/default.web-egress"),
               *(Change.put(d) for d in load_text(BASE))]
    again = preview(connect(store), WINDOW, current, apply_changes(current, changes))
    assert (again.impacted, [r["change"] for r in again.flows.to_pylist()]) == (
        1, ["unchanged"])


def test_aggregated_records_read_named_ports_of_their_pods(storefront: Path,
                                                           tmp_path: Path) -> None:
    """A record names a replica set's pods (``backend-5f8d7c6b9f-*``); the pods of one
    template share named ports and service account, so a rule on the named port ``http``
    decides the aggregated records as it decides the pods' own."""
    docs = list(yaml.safe_load_all((STOREFRONT / "policies" / "40-storefront-zones.yaml")
                                   .read_text()))
    [restricted] = [d for d in docs if d["metadata"]["name"] == "default.restricted"]
    restricted["spec"]["ingress"] = restricted["spec"]["ingress"][1:]  # trusted -> http gone
    change = tmp_path / "restricted.yaml"
    change.write_text(yaml.safe_dump(restricted))
    r = preview_cli(storefront, "--change", str(change), "--only-changed", "--output", "json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    to_backend = [x for x in rows if x["dest_name_aggr"].startswith("backend-")
                  and x["source_name_aggr"].startswith("microservice2-")]
    # Every connection microservice2 made to the backend's http port, aggregated or not.
    assert [(x["change"], x["connections"]) for x in to_backend] == [("allow-to-deny", 6)]


def test_fail_on_counts_allowed_flows_whose_before_is_uncertain(storefront: Path,
                                                                tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((STOREFRONT / "policies" / "40-storefront-zones.yaml")
                                   .read_text()))
    [dmz] = [d for d in docs if d["metadata"]["name"] == "default.dmz"]
    dmz["spec"]["ingress"] = [{"action": "Deny"}]
    change = tmp_path / "dmz.yaml"
    change.write_text(yaml.safe_dump(dmz))
    r = preview_cli(storefront, "--change", str(change), "--only-changed",
                    "--fail-on", "allow-to-deny")
    # One definite, and two recorded allowed whose nets rule the records cannot decide.
    assert r.exit_code == 1
    assert "3 allowed flow(s) would be denied or might be (uncertain)" in r.stderr


def test_preview_refuses_a_directory_that_is_not_a_store(tmp_path: Path,
                                                         storefront: Path) -> None:
    r = preview_cli(tmp_path, "--delete", "NetworkPolicy/storefront/default.dmz")
    assert r.exit_code == 2 and "not a tierflow store" in r.output
    r = preview_cli(storefront, "--delete", "NetworkPolicy/storefront/default.dmz",
                    "--report", str(tmp_path / "missing" / "r.html"))
    assert r.exit_code == 2 and "missing/r.html: its directory does not exist" in r.output
