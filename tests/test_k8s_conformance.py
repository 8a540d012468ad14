"""Kubernetes NetworkPolicy conformance through the CLI: every truth table of
``conformance/k8s_netpol_cases.json`` (from the Kubernetes e2e network-policy suite) is run
with ``tierflow simulate`` on a kubectl-style inventory, as a user would run it.

A probe is allowed iff egress is allowed at ``from`` and ingress at ``to``; each case is one
test, named by its id, and a failure lists the probes that disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from k8s_cluster import kubectl_list

from tierflow.cli import cli

CONFORMANCE = json.loads(
    (Path(__file__).parent / "conformance" / "k8s_netpol_cases.json").read_text())
CASES: list[dict[str, Any]] = CONFORMANCE["cases"]
PROBE_FIELDS = ("from", "to", "port", "protocol")


def test_cases_are_present() -> None:
    assert CONFORMANCE["format"] == "k8s-netpol-truth-table/1"
    assert len(CASES) >= 35
    assert len({c["id"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_k8s_netpol_case(case: dict[str, Any], tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.json"
    policies = tmp_path / "policies.json"
    probes = tmp_path / "probes.jsonl"
    inventory.write_text(json.dumps(kubectl_list(CONFORMANCE["cluster"],
                                                 case.get("cluster_overrides"))))
    policies.write_text(json.dumps(case["policies"]))
    probes.write_text("".join(json.dumps({k: p[k] for k in PROBE_FIELDS}) + "\n"
                              for p in case["probes"]))

    result = CliRunner().invoke(cli, ["simulate", "--policies", str(policies),
                                      "--inventory", str(inventory), "--probes", str(probes)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(case["probes"])

    wrong = []
    for probe, got in zip(case["probes"], out, strict=True):
        assert (got["from"], got["to"], got["port"], got["protocol"]) == tuple(
            probe[k] for k in PROBE_FIELDS)
        want = "allow" if probe["expected"] else "deny"
        if got["verdict"] != want:
            wrong.append(f"{probe['from']} -> {probe['to']} {probe['protocol']}/"
                         f"{probe['port']}: want {want}, got {got['verdict']} "
                         f"(egress {got['egress']['enforced_policies']}, "
                         f"ingress {got['ingress']['enforced_policies']})")
    assert not wrong, f"{case['id']} {case['name']}: {len(wrong)} probe(s) disagree:\n" + \
        "\n".join(wrong[:20])
