"""Staging and promotion (issue 6): document conversions as Calico's "Enforce" does them
(reference/calico.md §6), a policy directory edited in place without losing other documents
or comments, the ``stage``/``promote`` commands, the change model preview applies, and
``stats --staged`` re-evaluating history with a staged policy newer than the records.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from policy import DocumentError, PolicySet, load_text
from policy.changes import Change, ChangeError, apply_changes, parse_target
from policy.schema import schema_problems
from policy.staging import StagingError, enforced_document, staged_document
from tierflow.cli import cli
from tierflow.inputs import load_policies
from tierflow.policy_dir import PolicyDirectory

REPO = Path(__file__).resolve().parents[1]
STOREFRONT = REPO / "sample_flows" / "storefront"

K8S = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
       "metadata": {"name": "web", "namespace": "shop", "uid": "0f3c", "resourceVersion": "7",
                    "creationTimestamp": "2026-11-01T00:00:00Z", "labels": {"team": "a"},
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                    "owner": "a"}},
       "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}]}]},
       "status": {}}
GNP = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
       "metadata": {"name": "security.block"},
       "spec": {"tier": "security", "order": 10, "selector": "all()", "types": ["Egress"],
                "egress": [{"action": "Deny", "destination": {"nets": ["192.0.2.0/24"]}}]}}


# -- conversions -----------------------------------------------------------------------------

def test_staging_a_kubernetes_policy_keeps_its_spec_and_drops_server_fields() -> None:
    staged = staged_document(K8S)
    assert staged == {
        "apiVersion": "projectcalico.org/v3", "kind": "StagedKubernetesNetworkPolicy",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"team": "a"},
                     "annotations": {"owner": "a"}},
        "spec": {"stagedAction": "Set", **K8S["spec"]}}
    assert schema_problems(staged) == []
    back = enforced_document(staged)
    assert back == {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": staged["metadata"], "spec": K8S["spec"]}


@pytest.mark.parametrize("doc,kind", [(GNP, "StagedGlobalNetworkPolicy"),
                                      ({**GNP, "kind": "NetworkPolicy",
                                        "metadata": {"name": "security.block",
                                                     "namespace": "shop"}},
                                       "StagedNetworkPolicy")])
def test_calico_kinds_round_trip(doc: dict[str, Any], kind: str) -> None:
    staged = staged_document(doc)
    assert staged["kind"] == kind and staged["spec"]["stagedAction"] == "Set"
    assert schema_problems(staged) == []
    assert enforced_document(staged) == {**doc, "metadata": doc["metadata"]}


def test_staged_delete_promotes_to_nothing_and_ignore_is_refused() -> None:
    assert enforced_document(staged_document(GNP, "Delete")) is None
    ignored = staged_document(GNP, "Ignore")
    with pytest.raises(StagingError, match="stagedAction 'Ignore': only Set, Learn"):
        enforced_document(ignored)
    with pytest.raises(StagingError, match="is already staged"):
        staged_document(staged_document(GNP))
    with pytest.raises(StagingError, match=r"Tier .* is not a policy that can be staged"):
        staged_document({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
                         "metadata": {"name": "x"}})


# -- the change model ------------------------------------------------------------------------

BASE = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.block}
spec: {tier: security, selector: all(), types: [Egress], egress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: default.web, namespace: shop}
spec: {stagedAction: Set, selector: app == 'web', types: [Ingress], ingress: [{action: Deny}]}
"""


def test_changes_follow_calicos_preview_semantics() -> None:
    current = PolicySet.from_documents(load_text(BASE))
    staged = load_text(BASE)[2]
    changed = apply_changes(current, [Change.put(staged)])
    # The staged policy, previewed as if enforced, becomes a NetworkPolicy of that name.
    assert [(c.action, str(c.target)) for c in changed.changes] == [
        ("create", "NetworkPolicy/shop/default.web")]
    assert [p.kind.value for p in changed.policies.enforced()] == [
        "GlobalNetworkPolicy", "NetworkPolicy"]
    assert [p.name for p in changed.impacting] == ["default.web"] and not changed.everything
    gone = apply_changes(current, [Change.delete("GlobalNetworkPolicy/security.block")])
    assert [p.name for p in gone.policies.enforced()] == []
    assert [p.name for p in gone.impacting] == ["security.block"]
    tier = apply_changes(current, [Change.put(load_text(BASE)[0])])
    assert tier.everything and [c.action for c in tier.changes] == ["update"]
    same = apply_changes(current, [Change.put(load_text(BASE)[1])])
    assert same.impacting == () and same.policies == current


@pytest.mark.parametrize("text,message", [
    ("NetworkPolicy/web", "NetworkPolicy is namespaced: write KIND/NS/NAME"),
    ("GlobalNetworkPolicy/shop/x", "cluster-wide: write KIND/NAME"),
    ("Pod/shop/x", "expected KIND/[NS/]NAME"),
    ("NetworkPolicy//x", "expected KIND/[NS/]NAME"),
])
def test_delete_targets_are_checked(text: str, message: str) -> None:
    with pytest.raises(ChangeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_target(text)


def test_impossible_changes_say_why() -> None:
    current = PolicySet.from_documents(load_text(BASE))
    with pytest.raises(ChangeError, match=r"the tier still holds security\.block"):
        apply_changes(current, [Change.delete("Tier/security")])
    with pytest.raises(ChangeError, match=r"no such policy \(known: GlobalNetworkPolicy/"):
        apply_changes(current, [Change.delete("NetworkPolicy/shop/nope")])
    delete_missing = load_text("""
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: default.nothing}
spec: {stagedAction: Delete, selector: all()}
""", "change.yaml")
    with pytest.raises(ChangeError, match="no enforced policy of that name to delete"):
        apply_changes(current, [Change.put(delete_missing[0])])


# -- the directory and the commands -----------------------------------------------------------

@pytest.fixture
def policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(STOREFRONT / "policies", target)
    return target


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_stage_then_promote_a_kubernetes_policy(policies: Path, tmp_path: Path) -> None:
    source = tmp_path / "web.json"
    source.write_text(json.dumps(K8S))
    r = invoke("stage", source, "--policies", policies)
    assert r.exit_code == 0, r.output
    written = policies / "stagedkubernetesnetworkpolicy.shop.web.yaml"
    assert "created " + str(written) in r.stdout
    staged = yaml.safe_load(written.read_text())
    assert staged["kind"] == "StagedKubernetesNetworkPolicy"
    assert load_policies([policies])  # the directory still loads as one set
    # Staging again replaces the staged object in place (no second file).
    r = invoke("stage", source, "--policies", policies)
    assert "replaced in " + str(written) in r.stdout
    assert sorted(p.name for p in policies.glob("staged*")) == [written.name]
    r = invoke("promote", "shop/web", "--policies", policies)
    assert r.exit_code == 0, r.output
    assert not written.exists()
    enforced = yaml.safe_load((policies / "networkpolicy.shop.web.yaml").read_text())
    assert enforced == {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "metadata": staged["metadata"], "spec": K8S["spec"]}


def test_promote_replaces_the_enforced_policy_in_place_keeping_comments(
        policies: Path) -> None:
    zones = policies / "40-storefront-zones.yaml"
    before = zones.read_text()
    r = invoke("promote", "storefront/default.restricted", "--policies", policies)
    assert r.exit_code == 0, r.output
    assert "replaced NetworkPolicy storefront/default.restricted in" in r.stdout
    after = zones.read_text()
    # The other zones' text, comments included, is untouched.
    assert after.split("# restricted:")[0] == before.split("# restricted:")[0]
    docs = list(yaml.safe_load_all(after))
    restricted = [d for d in docs if d["metadata"]["name"] == "default.restricted"]
    assert restricted[0]["spec"]["egress"][0]["destination"]["selector"] == "app == 'logging'"
    staged = list(yaml.safe_load_all((policies / "50-staged.yaml").read_text()))
    assert [d["metadata"]["name"] for d in staged if d] == ["default-deny"]
    staged_text = (policies / "50-staged.yaml").read_text()
    assert "# Default deny for the dev namespaces" in staged_text
    # The file's header stays; the removed document's own comments go with it.
    assert staged_text.startswith("# Proposed changes, staged:")
    assert "# A tighter restricted zone" not in staged_text


def test_staged_delete_removes_the_enforced_policy(policies: Path) -> None:
    r = invoke("stage", "--delete", "NetworkPolicy/storefront/default.dmz", "--policies",
               policies)
    assert r.exit_code == 0, r.output
    assert "(stagedAction Delete)" in r.stdout
    names = {p.name for p in load_policies([policies]).policies}
    assert "default.dmz" in names
    r = invoke("promote", "StagedNetworkPolicy/storefront/default.dmz", "--policies",
               policies)
    assert r.exit_code == 0, r.output
    kinds = {(p.kind.value, p.name) for p in load_policies([policies]).policies}
    assert not {k for k in kinds if k[1] == "default.dmz"}


def test_dry_run_writes_nothing(policies: Path) -> None:
    before = {p.name: p.read_text() for p in policies.iterdir()}
    r = invoke("promote", "storefront/default.restricted", "--policies", policies,
               "--dry-run")
    assert r.exit_code == 0 and "dry run: nothing written" in r.stderr
    assert {p.name: p.read_text() for p in policies.iterdir()} == before


def test_lists_and_json_files_are_edited_as_lists(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    staged = [staged_document(GNP), staged_document({**GNP, "metadata": {
        "name": "security.other"}})]
    tier = {"apiVersion": "projectcalico.org/v3", "kind": "Tier",
            "metadata": {"name": "security"}, "spec": {"order": 100}}
    (folder / "list.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                                      "items": [tier, *staged]}))
    (folder / "gnp.json").write_text(json.dumps([GNP]))
    # security.block exists enforced in gnp.json: promote replaces it there, as JSON, and
    # takes the staged object out of the List.
    changed = {**GNP, "spec": {**GNP["spec"], "order": 20}}
    items = yaml.safe_load((folder / "list.yaml").read_text())["items"]
    items[1]["spec"]["order"] = 20
    (folder / "list.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                                      "items": items}))
    r = invoke("promote", "security.block", "--policies", folder)
    assert r.exit_code == 0, r.output
    items = yaml.safe_load((folder / "list.yaml").read_text())["items"]
    assert [i["metadata"]["name"] for i in items] == ["security", "security.other"]
    assert json.loads((folder / "gnp.json").read_text()) == changed
    # security.other has no enforced counterpart: a new file.
    r = invoke("promote", "StagedGlobalNetworkPolicy/security.other", "--policies", folder)
    assert r.exit_code == 0, r.output
    assert "created GlobalNetworkPolicy security.other in" in r.stdout
    assert [i["kind"] for i in yaml.safe_load((folder / "list.yaml").read_text())["items"]] \
        == ["Tier"]


def test_errors_name_what_is_accepted(policies: Path, tmp_path: Path) -> None:
    r = invoke("promote", "storefront/nope", "--policies", policies)
    assert r.exit_code == 2
    assert "'storefront/nope': no such staged policy in" in r.stderr
    assert "StagedNetworkPolicy/storefront/default.restricted" in r.stderr
    sets = tmp_path / "sets.yaml"
    shutil.copy(STOREFRONT / "policies" / "30-networksets.yaml", sets)
    r = invoke("stage", sets, "--policies", policies)
    assert r.exit_code == 2 and "is not a policy: a network set takes effect at once" in \
        r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GNP, "metadata": {"name": "nowhere.block"},
                                   "spec": {**GNP["spec"], "tier": "nowhere"}}))
    r = invoke("stage", bad, "--policies", policies)
    assert r.exit_code == 2 and "must name a defined Tier" in r.stderr


def test_a_directory_with_invalid_yaml_is_refused_with_its_place(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "x.yaml").write_text("apiVersion: projectcalico.org/v3\nkind: [Tier\n")
    with pytest.raises(DocumentError,
                       match=r"x\.yaml: is not valid YAML: .* \(got 'line 3 column 1'\)"):
        PolicyDirectory(folder)


# -- stats --staged ----------------------------------------------------------------------------

def test_stats_staged_shows_a_staged_policy_newer_than_the_records(policies: Path,
                                                                   tmp_path: Path) -> None:
    store = tmp_path / "store"
    log = REPO / "sample_flows" / "calico" / "flows.log"
    assert invoke("ingest", "calico", log, "--store", store).exit_code == 0
    newer = tmp_path / "quarantine.yaml"
    newer.write_text(yaml.safe_dump({
        "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": "default.no-db", "namespace": "storefront"},
        "spec": {"tier": "default", "order": 5, "selector": "app == 'backend'",
                 "types": ["Egress"], "egress": [{"action": "Deny", "protocol": "TCP",
                                                  "destination": {"ports": [5432]}}]}}))
    assert invoke("stage", newer, "--policies", policies).exit_code == 0

    def row(*extra: str) -> dict[str, Any]:
        r = invoke("stats", "--store", store, "--policies", policies, "--inventory",
                   STOREFRONT / "inventory.json", "--policy", "storefront/no-db",
                   "--output", "json", *extra)
        assert r.exit_code == 0, r.output
        rows = [json.loads(x) for x in r.stdout.splitlines()]
        [rule0] = [x for x in rows if x["rule"] == 0]
        return rule0  # type: ignore[no-any-return]

    assert row()["denied_connections_out"] == 0 and row()["unused"]
    staged = row("--staged")
    # backend -> postgres (pvt:5432): 3 connections in the log, now denied by the staged rule.
    assert staged["staged"] and staged["kind"] == "StagedNetworkPolicy"
    assert staged["denied_connections_out"] == 3 and not staged["unused"]
    assert staged["allowed_connections_out"] == 0

    def enforced(*extra: str) -> list[dict[str, Any]]:
        r = invoke("stats", "--store", store, "--policies", policies, "--inventory",
                   STOREFRONT / "inventory.json", "--output", "json", *extra)
        return [x for x in map(json.loads, r.stdout.splitlines()) if not x["staged"]]

    # The enforced policies' counters are the recorded ones either way.
    assert enforced("--staged") == enforced()
