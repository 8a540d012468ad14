"""The storefront lab sample (``sample_flows/storefront``, issue 8) and ``tierflow export
calico``.

``storefront.pcap`` is real traffic recorded by ``scripts/record_storefront.py``: each call of
the scenario (reference/calico.md §10) made twice, the denied ones once and dropped by the
lab's node. The expected records below were worked out by hand from the sample's policies,
not copied from the tool's output:

* every endpoint is selected by ``security.pass`` and ``platform.pass``, so a flow that no
  earlier policy decides carries ``security.pass|pass|0``, ``platform.pass|pass|0`` and is
  decided at position 2 in the default tier (the zone policies), or by the ``kns.<ns>``
  profile where no default-tier policy selects the endpoint;
* ``platform.logging`` admits TCP 8080 from ``has(fw-zone)`` to logging in the platform
  tier (position 1); ``platform.allow-kube-dns`` lets every pod resolve names (position 1);
  ``platform.twilio-integration`` lets microservice2 reach ``*.twilio.com`` and denies it
  the ``public`` network set (position 1);
* the zones: dmz may call trusted and logging, trusted may call trusted and restricted (so
  not logging), restricted admits trusted and restricted on its http port and may call
  anything; the staged ``default.restricted`` and ``default-deny`` change pending traces only.

With the ingest defaults (allowed flows aggregated at level 2, denied at level 1) the two
frontend replicas are one ``frontend-864f4fcdfd-*`` record per call.
"""

from __future__ import annotations

import io
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner, Result

from analytics.db import connect, query
from ingest.calico_export import (
    KEYS,
    POLICY_KEYS,
    store_records,
    to_calico_json,
    write_calico_log,
)
from ingest.calico_log import read_calico_log
from ingest.calico_records import RAW
from ingest.schema import FLOWS
from ingest.store import Store
from tierflow.cli import cli

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_flows" / "storefront"
PCAP = SAMPLE / "storefront.pcap"
CALICO = REPO / "sample_flows" / "calico" / "flows.log"
# The Felix tuning of the lab (calico.md §10) that sample_flows/storefront/flows.log uses.
FELIX = ("--interval", "15", "--aggregation-allowed", "1", "--aggregation-denied", "0",
         "--host", "lab-node")

FE, MS1, MS2 = "frontend-864f4fcdfd-*", "microservice1-7b9d6c8f5d-*", "microservice2-6c7f9b8d4b-*"
BE, LOG, DNS = "backend-5f8d7c6b9f-*", "logging-7d9f8c5b6c-*", "coredns-5d78c9869d-*"
CENTOS, NGINX = "centos-6f8b9d7c5d-*", "nginx-7c5ddbdf54-*"
DMZ, TRUSTED = "default|storefront/default.dmz", "default|storefront/default.trusted"
RESTRICTED = "default|storefront/default.restricted"
STAGED_RESTRICTED = "default|storefront/default.staged:restricted"
LOGGING = "1|platform|platform.logging|allow|0"
TWILIO = "platform|platform.twilio-integration"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ingest_pcap(store: Path, *options: str) -> dict[str, Any]:
    r = run("ingest", "pcap", PCAP, "--store", store, "--inventory", SAMPLE / "inventory.json",
            "--policies", SAMPLE / "policies", "--output", "json", *options)
    assert r.exit_code == 0, r.output
    return dict(json.loads(r.output))


def records(store: Path) -> list[dict[str, Any]]:
    """The store's records in a canonical order, without ``collector``."""
    rows = [row for t in store_records(Store(store)) for row in t.to_pylist()]
    for row in rows:
        del row["collector"]
    return sorted(rows, key=lambda r: json.dumps(r, default=str, sort_keys=True))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("storefront") / "store"
    done = ingest_pcap(path, "--host", "lab-node")
    assert (done["rejected"], done["written"]) == (0, 27)
    return path


# (source, destination, port, proto, reporter, action, connections, dest_domains,
#  the deciding hit of the enforced trace, of the pending trace if it differs)
EXPECTED = [
    # backend → logging: restricted egress allows all; platform.logging admits has(fw-zone).
    # The staged restricted allows logging by its rule 0.
    (BE, LOG, 8080, "tcp", "dst", "allow", 2, None, LOGGING, None),
    (BE, LOG, 8080, "tcp", "src", "allow", 2, None, f"2|{RESTRICTED}|allow|0",
     f"2|{STAGED_RESTRICTED}|allow|0"),
    # centos → microservice1: no enforced policy in dev, the profile allows egress; trusted
    # ingress ends in its Deny rule 2 (the lab dropped it: no answer).
    (CENTOS, MS1, 8080, "tcp", "dst", "deny", 1, None, f"2|{TRUSTED}|deny|2", None),
    (CENTOS, MS1, 8080, "tcp", "src", "allow", 1, None,
     "2|__PROFILE__|__PROFILE__.kns.dev|allow|0",
     "2|default|default.staged:default-deny|deny|-1"),
    # centos → nginx: unprotected (profile) both ends; the staged default-deny denies.
    (CENTOS, NGINX, 80, "tcp", "dst", "allow", 2, None,
     "2|__PROFILE__|__PROFILE__.kns.dev|allow|0",
     "2|default|default.staged:default-deny|deny|-1"),
    (CENTOS, NGINX, 80, "tcp", "src", "allow", 2, None,
     "2|__PROFILE__|__PROFILE__.kns.dev|allow|0",
     "2|default|default.staged:default-deny|deny|-1"),
    # frontend → backend directly: dmz egress ends in its Deny rule 2; only the src record.
    (FE, BE, 8080, "tcp", "src", "deny", 1, None, f"2|{DMZ}|deny|2", None),
    # frontend (2 replicas) → logging: dmz egress rule 0 (app == logging); platform.logging.
    (FE, LOG, 8080, "tcp", "dst", "allow", 4, None, LOGGING, None),
    (FE, LOG, 8080, "tcp", "src", "allow", 4, None, f"2|{DMZ}|allow|0", None),
    # frontend → microservice1/2: dmz egress rule 0 (to trusted), trusted ingress rule 0.
    (FE, MS1, 8080, "tcp", "dst", "allow", 4, None, f"2|{TRUSTED}|allow|0", None),
    (FE, MS1, 8080, "tcp", "src", "allow", 4, None, f"2|{DMZ}|allow|0", None),
    (FE, MS2, 8080, "tcp", "dst", "allow", 4, None, f"2|{TRUSTED}|allow|0", None),
    (FE, MS2, 8080, "tcp", "src", "allow", 4, None, f"2|{DMZ}|allow|0", None),
    # microservice1 → backend: trusted egress rule 1 (to restricted), restricted ingress
    # rule 0 (http = 8080), the staged restricted alike.
    (MS1, BE, 8080, "tcp", "dst", "allow", 2, None, f"2|{RESTRICTED}|allow|0",
     f"2|{STAGED_RESTRICTED}|allow|0"),
    (MS1, BE, 8080, "tcp", "src", "allow", 2, None, f"2|{TRUSTED}|allow|1", None),
    # microservice1 → logging: logging is in no zone, trusted egress Deny rule 3.
    (MS1, LOG, 8080, "tcp", "src", "deny", 1, None, f"2|{TRUSTED}|deny|3", None),
    # microservice1 → microservice2: trusted egress rule 0, trusted ingress rule 1.
    (MS1, MS2, 8080, "tcp", "dst", "allow", 2, None, f"2|{TRUSTED}|allow|1", None),
    (MS1, MS2, 8080, "tcp", "src", "allow", 2, None, f"2|{TRUSTED}|allow|0", None),
    (MS2, BE, 8080, "tcp", "dst", "allow", 2, None, f"2|{RESTRICTED}|allow|0",
     f"2|{STAGED_RESTRICTED}|allow|0"),
    (MS2, BE, 8080, "tcp", "src", "allow", 2, None, f"2|{TRUSTED}|allow|1", None),
    # microservice2 resolves api.twilio.com twice and www.google.com once: allow-kube-dns
    # rule 0; CoreDNS has no default-tier policy.
    (MS2, DNS, 53, "udp", "dst", "allow", 3, None,
     "2|__PROFILE__|__PROFILE__.kns.kube-system|allow|0", None),
    (MS2, DNS, 53, "udp", "src", "allow", 3, None, "1|platform|platform.allow-kube-dns|allow|0",
     None),
    (MS2, LOG, 8080, "tcp", "src", "deny", 1, None, f"2|{TRUSTED}|deny|3", None),
    (MS2, MS1, 8080, "tcp", "dst", "allow", 2, None, f"2|{TRUSTED}|allow|1", None),
    (MS2, MS1, 8080, "tcp", "src", "allow", 2, None, f"2|{TRUSTED}|allow|0", None),
    # microservice2 → api.twilio.com (203.0.113.10, no network set: pub): twilio rule 0.
    (MS2, "pub", 443, "tcp", "src", "allow", 2, ["api.twilio.com"], f"1|{TWILIO}|allow|0",
     None),
    # microservice2 → www.google.com (142.250.72.14, in the "public" set): twilio rule 1.
    (MS2, "public", 443, "tcp", "src", "deny", 1, ["www.google.com"], f"1|{TWILIO}|deny|1",
     None),
]


def test_every_call_of_the_scenario_with_its_verdict_and_policy(store: Path) -> None:
    rows = query(connect(store), """
        SELECT source_name_aggr, dest_name_aggr, dest_port, proto, reporter, action,
               num_flows, dest_domains, enforced_policies[-1] AS enforced,
               pending_policies[-1] AS pending
        FROM flows ORDER BY ALL""").to_pylist()
    got = [(*list(r.values())[:9], None if r["pending"] == r["enforced"] else r["pending"])
           for r in rows]
    assert got == EXPECTED


def test_the_node_dropped_what_the_policies_deny(store: Path) -> None:
    """The lab's node dropped the denied calls as Calico would: each shows a SYN and its
    retransmission and no answer, at the source (and at microservice1 for centos's call,
    whose egress was allowed)."""
    rows = query(connect(store), """
        SELECT source_name_aggr, dest_name_aggr, reporter, action, packets_out, packets_in
        FROM flows WHERE packets_in = 0 OR packets_out = 0 ORDER BY ALL""").to_pylist()
    assert [tuple(r.values()) for r in rows] == [
        (CENTOS, MS1, "dst", "deny", 0, 2),
        (CENTOS, MS1, "src", "allow", 2, 0),
        (FE, BE, "src", "deny", 2, 0),
        (MS1, LOG, "src", "deny", 2, 0),
        (MS2, LOG, "src", "deny", 2, 0),
        (MS2, "public", "src", "deny", 2, 0),
    ]


def test_flows_log_is_the_export_of_the_capture(tmp_path: Path) -> None:
    """sample_flows/storefront/flows.log is what its README says: the capture ingested with
    the lab's Felix settings, exported; rebuilt here byte for byte."""
    ingest_pcap(tmp_path / "store", *FELIX)
    r = run("export", "calico", "--store", tmp_path / "store")
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout_bytes == (SAMPLE / "flows.log").read_bytes()


def test_export_then_ingest_calico_gives_the_same_records(store: Path, tmp_path: Path) -> None:
    log = tmp_path / "flows.log"
    r = run("export", "calico", "--store", store, "--out", log)
    assert r.exit_code == 0 and r.output == ""
    again = tmp_path / "again"
    done = json.loads(run("ingest", "calico", log, "--store", again, "--output", "json").output)
    assert (done["records_in"], done["rejected"], done["written"]) == (27, 0, 27)
    assert records(again) == records(store)
    assert [json.loads(line)["host"] for line in log.read_text().splitlines()] == ["lab-node"] * 27


def test_a_calico_log_round_trips_whole(tmp_path: Path) -> None:
    """Every record shape and hit format of the Calico sample: ingest, export, ingest gives
    the same records, collector included (both are Calico's)."""
    first, second, log = tmp_path / "first", tmp_path / "second", tmp_path / "out.log"
    run("ingest", "calico", CALICO, "--store", first, "--host", "worker-1")
    assert run("export", "calico", "--store", first, "--out", log).exit_code == 0
    run("ingest", "calico", log, "--store", second)
    before = [r for t in store_records(Store(first)) for r in t.to_pylist()]
    after = [r for t in store_records(Store(second)) for r in t.to_pylist()]
    assert len(before) == 62
    assert sorted(map(repr, after)) == sorted(map(repr, before))


def test_lines_have_felix_keys_in_felix_order(store: Path) -> None:
    first = run("export", "calico", "--store", store).stdout.splitlines()[0]
    line = json.loads(first)
    assert tuple(line) == KEYS
    assert tuple(line["policies"]) == POLICY_KEYS
    assert isinstance(line["start_time"], int) and line["source_labels"]["labels"]
    # What the reader reads is what the writer writes, no more and no less.
    assert {*KEYS} == {f.name for f in RAW}


def test_labels_and_policies_keep_null_apart_from_empty() -> None:
    base = {"start_time": 1795801500, "end_time": 1795801515, "proto": "tcp",
            "action": "allow", "reporter": "src", "source_type": "net", "dest_type": "net"}
    rows = [{**base, "source_labels": None, "dest_labels": [],
             "enforced_policies": None, "pending_policies": None},
            {**base, "source_labels": [("app", "web"), ("a", "")], "dest_labels": None,
             "enforced_policies": [], "pending_policies": ["0|t|t.p|allow|0"]}]
    table = pa.Table.from_pylist(rows, schema=FLOWS)
    out = to_calico_json(table).select(["source_labels", "dest_labels", "policies"]).to_pylist()
    assert out == [
        {"source_labels": None, "dest_labels": {"labels": []}, "policies": None},
        {"source_labels": {"labels": ["app=web", "a="]}, "dest_labels": None,
         "policies": {"enforced_policies": [], "pending_policies": ["0|t|t.p|allow|0"],
                      "transit_policies": None, "all_policies": None}}]
    buf = io.BytesIO()
    assert write_calico_log([table.slice(1), table.slice(0, 1)], buf) == 2
    back = [r for b in read_calico_log(io.BytesIO(buf.getvalue()), name="x") for r in
            b.table.to_pylist()]
    assert [r["source_labels"] for r in back] == [[("app", "web"), ("a", "")], None]
    assert [r["enforced_policies"] for r in back] == [[], None]


def test_window(store: Path) -> None:
    """A record is exported when its interval overlaps [--since, --until)."""
    def count(*window: str) -> int:
        r = run("export", "calico", "--store", store, *window)
        assert r.exit_code == 0, r.output
        return len(r.stdout.splitlines())

    # The capture lasts a few seconds: its records share one 300-s interval [start, end).
    (start, end), = {(r["start_time"], r["end_time"]) for r in records(store)}
    at = {name: (start + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ")
          for name, s in (("start", 0), ("start+1", 1), ("end-1", 299), ("end", 300),
                          ("hour before", -3600), ("hour after", 3600))}
    assert end - start == timedelta(seconds=300)
    assert count() == 27
    assert count("--since", at["end-1"]) == 27
    assert count("--since", at["end"]) == 0
    assert count("--until", at["start+1"]) == 27
    assert count("--until", at["start"]) == 0
    assert count("--since", at["hour before"], "--until", at["hour after"]) == 27
    assert count("--since", at["hour after"]) == 0


@pytest.mark.parametrize(("args", "message"), [
    (("--store", "{tmp}/nope"), "{tmp}/nope: no such store directory (ingest into it first, "
     "e.g. tierflow ingest pcap FILE --store DIR)"),
    (("--store", "{tmp}"), "{tmp}: not a tierflow store (no flows/ or _state/ in it; give the "
     "directory that tierflow ingest --store wrote)"),
    (("--store", "{store}", "--since", "yesterday"), "--since: 'yesterday' is not a duration "
     "(30m, 24h, 7d, 2w) or an ISO 8601 time (2026-11-27T10:00:00Z)"),
    (("--store", "{store}", "--since", "2026-11-28", "--until", "2026-11-27"),
     "--until '2026-11-27' is not after --since '2026-11-28'"),
    (("--store", "{store}", "--out", "{tmp}/no/flows.log"),
     "--out '{tmp}/no/flows.log': directory '{tmp}/no' does not exist"),
    (("--store", "{store}", "--out", "{tmp}"), "--out '{tmp}' is a directory (give a file "
     "name)"),
])
def test_bad_arguments_are_one_line_errors(store: Path, tmp_path: Path, args: tuple[str, ...],
                                           message: str) -> None:
    keep = tmp_path / "flows.log"
    keep.write_text("old\n")
    fill = {"tmp": str(tmp_path), "store": str(store)}
    out = () if "--out" in args else ("--out", str(keep))
    r = run("export", "calico", *(a.format(**fill) for a in args), *out)
    assert r.exit_code == 2
    assert r.output == f"tierflow: error: {message.format(**fill)}\n"
    assert keep.read_text() == "old\n"  # an export that fails leaves the old file
    assert sorted(os.listdir(tmp_path)) == ["flows.log"]  # and no temporary file


def test_usage_errors() -> None:
    r = CliRunner().invoke(cli, ["export", "calico"])
    assert r.exit_code == 2 and "Missing option '--store'" in r.output
    r = CliRunner().invoke(cli, ["export", "elastic", "--store", "x"])
    assert r.exit_code == 2 and "No such command 'elastic'" in r.output
