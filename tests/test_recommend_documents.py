"""Recommendation documents from the hand-made store of test_recommend_scenarios: CRD
validity and loader round trip for every format and scope, the namespace scope, the
Kubernetes format's losses (named by the replay), byte-stable output, and what a policy
allows beyond its evidence.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_recommend_scenarios import (
    POLICIES,
    _pod,
    inventory,
    policy_of,
    run,
    shop_rows,
    write_store,
)

from ingest.inventory import Inventory
from policy import PolicySet, load_text
from policy.schema import schema_problems


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("documents") / "store", shop_rows())


@pytest.mark.parametrize("fmt", ["calico-staged", "calico", "k8s"])
@pytest.mark.parametrize("scope", ["workload", "namespace"])
def test_every_document_validates_and_round_trips(shop: Path, fmt: str, scope: str) -> None:
    rec = run(shop, format=fmt, scope=scope)
    assert rec.outputs
    docs = []
    for o in rec.outputs:
        raw = yaml.safe_load(o.text)
        assert schema_problems(raw) == [], o.filename
        loaded = load_text(o.text, o.filename)
        docs += loaded
        # loading the output again gives the same policy: nothing is lost or reinterpreted
        assert load_text(yaml.safe_dump(raw)) == loaded
    PolicySet.from_documents([*load_text(POLICIES), *docs])


def test_namespace_scope_is_one_policy_per_namespace(shop: Path) -> None:
    rec = run(shop, scope="namespace")
    doc = policy_of(rec, "namespace-isolation.shop")
    assert doc["spec"]["selector"] == 'projectcalico.org/namespace == "shop"'
    assert doc["spec"]["tier"] == "namespace-isolation"
    assert rec.outputs[0].filename == "00-tier.namespace-isolation.yaml"
    peers = {r.get("destination", {}).get("namespaceSelector") for r in doc["spec"]["egress"]}
    assert 'projectcalico.org/name == "db"' in peers
    assert rec.proof.passed


def test_k8s_format_turns_domains_into_observed_addresses(shop: Path) -> None:
    rec = run(shop, format="k8s")
    web = policy_of(rec, "default.web")
    blocks = [p["ipBlock"]["cidr"] for r in web["spec"]["egress"] for p in r.get("to", [])
              if "ipBlock" in p]
    assert blocks == ["203.0.113.7/32", "192.0.2.0/24"]
    # What Kubernetes cannot say is left out with a warning, and the replay names exactly
    # the flows lost: names seen on an aggregated record (no address), ICMP, and a service
    # the inventory does not describe.
    lost = [(f.workload, f.peer, f.proto, f.domains, f.action) for f in rec.proof.failures]
    assert lost == [
        ("api-7c9d8b6f5c-*", "pub", "icmp", (), "deny"),
        # public addresses without IP against ipBlock rules: the verdict is unknown
        ("api-7c9d8b6f5c-*", "pub", "tcp", (), "uncertain"),
        ("web-5d8f7c9b6d-*", "pub", "tcp", ("a.s3.example.com", "b.s3.example.com"),
         "uncertain"),
    ]
    assert any("ICMP to any peer left out" in w for w in rec.warnings)
    assert any("service shop/payments left out" in w for w in rec.warnings)


def test_two_runs_are_byte_identical(shop: Path, tmp_path: Path) -> None:
    again = write_store(tmp_path / "again", list(reversed(shop_rows())))
    first, second = run(shop), run(again)
    assert [(o.filename, o.text) for o in first.outputs] == \
        [(o.filename, o.text) for o in second.outputs]


def test_allowances_beyond_the_observed_traffic(shop: Path) -> None:
    legacy = _pod("shop", "web-legacy-7f7f7f7f7f-ggggg", "web-legacy-7f7f7f7f7f-",
                  {"app": "web", "pod-template-hash": "7f7f7f7f7f"}, "10.244.0.30")
    inv = Inventory.from_objects([json.loads(json.dumps(legacy))]).merged(inventory())
    rec = run(shop, inventory=inv)
    notes = dict(rec.beyond)["shop/default.web"]
    assert notes[0] == ("the policy also applies to shop/web-legacy-7f7f7f7f7f-ggggg "
                        "(no traffic observed for them)")
    assert "shop/web-5d8f7c9b6d-* its stable labels also select other workloads' pods" \
        in rec.warnings
    api_notes = dict(rec.beyond)["shop/default.api"]
    assert any("any peer, in or outside the cluster" in n for n in api_notes)


