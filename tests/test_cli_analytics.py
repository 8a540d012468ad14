"""``tierflow stats``, ``flows`` and ``catalog`` on a store built from the real lab capture
evaluated against the storefront policies (tests/test_cli_ingest.py lists its nine records).

Expected values are worked out from that listing: the capture has 3 HTTP connections
frontend → microservice1:8080 (allowed by default.dmz egress rule 0 and default.trusted
ingress rule 0), 1 UDP echo to :9999 (the same rules), 4 DNS lookups to CoreDNS (platform
allow-kube-dns egress rule 0 at the source; the kube-system profile at the destination), and
3 denied calls to public addresses (dmz egress rule 2 twice, trusted egress rule 3 once).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from tierflow.cli import cli

REPO = Path(__file__).resolve().parents[1]
CAPTURE = REPO / "sample_flows" / "capture"
POLICIES = REPO / "sample_flows" / "storefront" / "policies"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analytics") / "store"
    r = CliRunner().invoke(cli, ["ingest", "pcap", str(CAPTURE / "lab.pcap"), "--store",
                                 str(path), "--inventory", str(CAPTURE / "inventory.json"),
                                 "--policies", str(POLICIES)])
    assert r.exit_code == 0, r.output
    return path


def rows(*args: str | Path) -> list[dict[str, Any]]:
    r = CliRunner().invoke(cli, [*map(str, args), "--output", "json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.output.splitlines()]


def pick(row: dict[str, Any], *keys: str) -> tuple[Any, ...]:
    return tuple(row[k] for k in keys)


def test_stats_is_the_policies_board(store: Path) -> None:
    board = {pick(r, "tier", "policy", "direction", "rule"): r for r in rows("stats", "--store",
                                                                            store)}
    dmz_out = board[("default", "dmz", "egress", 0)]
    # 3 HTTP + 1 UDP connections, src-reported: connections out
    assert pick(dmz_out, "allowed_connections_out", "allowed_connections_in") == (4, 0)
    trusted_in = board[("default", "trusted", "ingress", 0)]
    assert pick(trusted_in, "allowed_connections_in", "allowed_connections_out") == (4, 0)
    # dst-reported at microservice1: bytes in = what the frontend sent
    assert trusted_in["allowed_bytes_in"] == dmz_out["allowed_bytes_out"]
    denied = board[("default", "dmz", "egress", 2)]
    assert pick(denied, "denied_connections_out", "allowed_connections_out") == (2, 0)
    assert board[("default", "trusted", "egress", 3)]["denied_connections_out"] == 1
    # security.pass passes every connection at a pod end: egress 4 to microservice1 +
    # 3 denied + 4 DNS = 11; ingress 4 at microservice1 + 4 DNS at CoreDNS = 8
    assert board[("security", "pass", "egress", 0)]["passed_connections_out"] == 11
    assert board[("security", "pass", "ingress", 0)]["passed_connections_in"] == 8
    assert board[("platform", "allow-kube-dns", "egress", 0)]["allowed_connections_out"] == 4
    assert board[("__PROFILE__", "kns.kube-system", "ingress", 0)][
        "allowed_connections_in"] == 4


def test_stats_with_policies_lists_unused_rules_in_order(store: Path) -> None:
    unused = rows("stats", "--store", store, "--policies", POLICIES, "--unused")
    keys = [pick(r, "tier", "policy", "direction", "rule") for r in unused]
    assert ("platform", "logging", "ingress", 0) in keys
    assert ("default", "dmz", "egress", 0) not in keys
    assert ("default", "restricted", "ingress", 0) in keys
    assert all(r["unused"] for r in unused)
    positions = [(r["tier_position"], r["policy_position"]) for r in unused]
    assert positions == sorted(positions)  # evaluation order: tiers, then policies
    assert next(r["tier"] for r in unused) == "platform"  # security.pass is hit


def test_stats_filters(store: Path) -> None:
    only = rows("stats", "--store", store, "--tier", "platform")
    assert {r["tier"] for r in only} == {"platform"}
    dmz = rows("stats", "--store", store, "--policy", "storefront/dmz")
    assert {(r["policy"], r["rule"]) for r in dmz} == {("dmz", 0), ("dmz", 2)}
    err = CliRunner().invoke(cli, ["stats", "--store", str(store), "--unused"])
    assert err.exit_code == 2
    assert "--unused needs --policies" in err.output


def test_flows_edges_and_views(store: Path) -> None:
    denied = rows("flows", "--store", store, "--action", "deny")
    assert [pick(r, "source_name_aggr", "dest_name_aggr", "connections", "dest_domains")
            for r in denied] == [
        ("frontend-864f4fcdfd-*", "pub", 2, ["api.twilio.com", "hooks.slack.com"]),
        ("microservice1-7b9d6c8f5d-*", "pub", 1, None)]
    dst = rows("flows", "--store", store, "--reporter", "dst", "--namespace", "kube-system")
    assert [pick(r, "dest_name_aggr", "dest_port", "proto", "connections") for r in dst] == \
        [("coredns-5d78c9869d-*", 53, "udp", 4)]
    unprotected = rows("flows", "--store", store, "--view", "unprotected")
    assert [pick(r, "namespace", "workload", "reporter", "connections") for r in unprotected] \
        == [("kube-system", "coredns-5d78c9869d-*", "dst", 4)]
    external = rows("flows", "--store", store, "--view", "external")
    assert sorted(pick(r, "destination", "action", "connections") for r in external) == [
        ("api.twilio.com", "deny", 1), ("hooks.slack.com", "deny", 1), ("pub", "deny", 1)]
    series = rows("flows", "--store", store, "--view", "timeseries")
    assert sum(r["allowed_connections"] for r in series) == 16  # 8 src + 8 dst records' flows
    assert sum(r["denied_connections"] for r in series) == 3


def test_flows_csv_and_window(store: Path) -> None:
    r = CliRunner().invoke(cli, ["flows", "--store", str(store), "--output", "csv",
                                 "--until", "2000-01-01T00:00:00Z"])
    assert r.exit_code == 0
    assert list(csv.reader(io.StringIO(r.output)))[1:] == []
    bad = CliRunner().invoke(cli, ["flows", "--store", str(store), "--since", "yesterday"])
    assert bad.exit_code == 2
    assert bad.output == ("tierflow: error: --since: 'yesterday' is not a duration (30m, 24h, "
                          "7d, 2w) or an ISO 8601 time (2026-11-27T10:00:00Z)\n")


def test_catalog_is_a_duckdb_file_of_views(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "flows.duckdb"
    r = CliRunner().invoke(cli, ["catalog", "--store", str(store), "--out", str(out)])
    assert r.exit_code == 0, r.output
    con = duckdb.connect(str(out), read_only=True)
    assert con.sql("SELECT count(*) FROM flows").fetchall() == [(9,)]
    assert con.sql("SELECT count(*) FROM policy_hits WHERE policy = 'dmz' AND "
                   "trace = 'enforced'").fetchall() == [(4,)]
    assert sorted(con.sql("SELECT name_aggr FROM endpoints").fetchall()) == [
        ("coredns-5d78c9869d-*",), ("frontend-864f4fcdfd-*",), ("microservice1-7b9d6c8f5d-*",)]
    tables = con.sql("SELECT table_name, table_type FROM information_schema.tables "
                     "ORDER BY 1").fetchall()
    assert tables == [("endpoints", "VIEW"), ("flows", "VIEW"), ("policy_hits", "VIEW")]


def test_report_writes_one_offline_html_file(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    r = CliRunner().invoke(cli, ["report", "--store", str(store), "--out", str(out),
                                 "--namespace", "storefront"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"{out}: ")
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "frontend-864f4fcdfd-*" in html and "<script src" not in html
    assert not list(tmp_path.glob(".*.tmp"))
