"""``tierflow ingest``, ``sql`` and ``compact`` end to end on real inputs: the lab capture
(real packets), Calico's flows.log format, real conntrack snapshots; exactly-once re-runs,
growing files, a job killed with SIGKILL mid-write, the lock, bad input kept aside."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from analytics.db import connect, query
from ingest.store import Store
from tierflow.cli import cli

REPO = Path(__file__).resolve().parents[1]
CAPTURE = REPO / "sample_flows" / "capture"
CALICO = REPO / "sample_flows" / "calico" / "flows.log"
CONNTRACK = REPO / "sample_flows" / "conntrack"
POLICIES = REPO / "sample_flows" / "storefront" / "policies"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def summary(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def sql(store: Path, text: str) -> list[dict[str, Any]]:
    return query(connect(store), text).to_pylist()


def test_capture_with_inventory_and_policies(tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = summary(run("ingest", "pcap", CAPTURE / "lab.pcap", "--store", store,
                       "--inventory", CAPTURE / "inventory.json", "--policies", POLICIES,
                       "--host", "node-1"))
    assert {k: done[k] for k in ("files", "records_in", "rejected", "written")} == \
        {"files": 1, "records_in": 96, "rejected": 0, "written": 9}
    rows = sql(store, """
        SELECT source_name_aggr AS src, dest_name_aggr AS dst, dest_port AS port, proto,
               action, reporter, num_flows AS n, dest_domains AS domains,
               enforced_policies[-1] AS decided_by, host, collector
        FROM flows ORDER BY src, dst, port, reporter, domains""")
    allowed_by = "2|default|storefront/default.{}|allow|0"
    dns_dst = "2|__PROFILE__|__PROFILE__.kns.kube-system|allow|0"
    expected = [
        ("frontend-864f4fcdfd-*", "coredns-5d78c9869d-*", 53, "udp", "allow", "dst", 4, None,
         dns_dst),
        ("frontend-864f4fcdfd-*", "coredns-5d78c9869d-*", 53, "udp", "allow", "src", 4, None,
         "1|platform|platform.allow-kube-dns|allow|0"),
        ("frontend-864f4fcdfd-*", "microservice1-7b9d6c8f5d-*", 8080, "tcp", "allow", "dst", 3,
         None, allowed_by.format("trusted")),
        ("frontend-864f4fcdfd-*", "microservice1-7b9d6c8f5d-*", 8080, "tcp", "allow", "src", 3,
         None, allowed_by.format("dmz")),
        ("frontend-864f4fcdfd-*", "microservice1-7b9d6c8f5d-*", 9999, "udp", "allow", "dst", 1,
         None, allowed_by.format("trusted")),
        ("frontend-864f4fcdfd-*", "microservice1-7b9d6c8f5d-*", 9999, "udp", "allow", "src", 1,
         None, allowed_by.format("dmz")),
        ("frontend-864f4fcdfd-*", "pub", 80, "tcp", "deny", "src", 1, ["api.twilio.com"],
         "2|default|storefront/default.dmz|deny|2"),
        ("frontend-864f4fcdfd-*", "pub", 80, "tcp", "deny", "src", 1, ["hooks.slack.com"],
         "2|default|storefront/default.dmz|deny|2"),
        ("microservice1-7b9d6c8f5d-*", "pub", 80, "tcp", "deny", "src", 1, None,
         "2|default|storefront/default.trusted|deny|3"),
    ]
    assert [tuple(r.values())[:9] for r in rows] == expected
    assert {(r["host"], r["collector"]) for r in rows} == {("node-1", "pcap")}
    again = summary(run("ingest", "pcap", CAPTURE / "lab.pcap", "--store", store))
    assert (again["files"], again["skipped_files"], again["written"]) == (0, 1, 0)
    assert sql(store, "SELECT count(*) AS n FROM flows") == [{"n": 9}]


def test_capture_without_inventory_records_each_connection_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    summary(run("ingest", "pcap", CAPTURE / "lab.pcap", "--store", store, "--aggregation", "0"))
    rows = sql(store, "SELECT source_type, dest_type, reporter, action, count(*) AS records, "
                      "sum(num_flows)::BIGINT AS conns, "
                      "sum(packets_in + packets_out)::BIGINT AS packets "
                      "FROM flows GROUP BY ALL")
    # tshark -z conv,tcp -z conv,udp: 6 TCP + 5 UDP conversations, 72 + 16 frames (the other
    # 8 of the 96 frames are ARP)
    assert rows == [{"source_type": "net", "dest_type": "net", "reporter": "src",
                     "action": "allow", "records": 11, "conns": 11, "packets": 88}]


def calico_lines(n: int) -> bytes:
    """``n`` small, valid flows.log lines; ``bytes_out`` is the line number."""
    return b"".join(json.dumps({
        "start_time": 1764237600 + (i % 7200), "end_time": 1764237615 + (i % 7200),
        "source_ip": None, "source_name": "-", "source_name_aggr": "frontend-864f4fcdfd-*",
        "source_namespace": "storefront", "source_type": "wep", "source_port": None,
        "dest_ip": None, "dest_name": "-", "dest_name_aggr": "pub", "dest_namespace": "-",
        "dest_type": "net", "dest_port": 443, "proto": "tcp", "action": "allow",
        "reporter": "src", "bytes_in": 1, "bytes_out": i, "packets_in": 1, "packets_out": 1,
        "num_flows": 1, "num_flows_started": 1, "num_flows_completed": 1,
    }).encode() + b"\n" for i in range(n))


def test_calico_log_exactly_once_through_growth_and_bad_lines(tmp_path: Path) -> None:
    log, store = tmp_path / "flows.log", tmp_path / "store"
    log.write_bytes(CALICO.read_bytes() + b'{"start_time": "soon"}\n' + b'{"start_ti')
    first = summary(run("ingest", "calico", log, "--store", store, "--host", "worker-1"))
    sample = CALICO.read_bytes().count(b"\n")
    assert {k: first[k] for k in ("files", "records_in", "rejected", "written",
                                  "pending_bytes")} == \
        {"files": 1, "records_in": sample + 1, "rejected": 1, "written": sample,
         "pending_bytes": len(b'{"start_ti')}
    assert first["messages"][0].startswith(f"{log}: line {sample + 1} ")
    rejects = list((store / "rejects" / "calico").rglob("*.jsonl"))
    assert [json.loads(x)["raw"] for x in rejects[0].read_text().splitlines()] == \
        ['{"start_time": "soon"}']
    # The writer replaces its unfinished line by two complete ones.
    log.write_bytes(log.read_bytes()[: -len(b'{"start_ti')] + calico_lines(2))
    second = summary(run("ingest", "calico", log, "--store", store))
    assert (second["records_in"], second["written"], second["pending_bytes"]) == (2, 2, 0)
    third = summary(run("ingest", "calico", log, "--store", store))
    assert (third["skipped_files"], third["written"]) == (1, 0)
    assert sql(store, "SELECT count(*) AS n FROM flows") == [{"n": sample + 2}]


def test_rotated_log_resumes_and_the_new_file_starts_from_zero(tmp_path: Path) -> None:
    log, store = tmp_path / "flows.log", tmp_path / "store"
    data = calico_lines(30)
    log.write_bytes(data[: data.index(b"\n", 2000) + 1])
    n1 = summary(run("ingest", "calico", log, "--store", store))["written"]
    log.write_bytes(data)  # Felix appended, then rotated: flows.log -> flows.log.1
    log.rename(tmp_path / "flows.log.1")
    log.write_bytes(calico_lines(3))
    n2 = summary(run("ingest", "calico", tmp_path / "flows.log.1", log, "--store", store))
    assert n1 + n2["written"] == 33
    assert sorted(r["b"] for r in sql(store, "SELECT bytes_out AS b FROM flows")) == \
        sorted([*range(30), *range(3)])


KILLED = """
import sys
from tierflow.cli import main
sys.argv = ["tierflow", "ingest", "calico", sys.argv[1], "--store", sys.argv[2],
            "--batch-lines", "2000", "--output", "json"]
main()
"""


def test_kill_9_during_ingest_then_rerun_lands_every_line_once(tmp_path: Path) -> None:
    log, store = tmp_path / "flows.log", tmp_path / "store"
    total = 60_000
    log.write_bytes(calico_lines(total))
    script = tmp_path / "job.py"  # not ingest.py: it would shadow the ingest package
    script.write_text(KILLED)
    killed = 0
    for delay in (0.8, 1.1, 1.4, 1.7, 2.0):
        p = subprocess.Popen([sys.executable, str(script), str(log), str(store)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        err = p.communicate()[1]
        assert p.returncode in (0, -signal.SIGKILL), err
    assert killed >= 1
    done = subprocess.run([sys.executable, str(script), str(log), str(store)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["rejected"] == 0
    got = sql(store, "SELECT count(*) AS n, count(DISTINCT bytes_out) AS d, min(bytes_out) AS lo,"
                     " max(bytes_out) AS hi FROM flows")
    assert got == [{"n": total, "d": total, "lo": 0, "hi": total - 1}]
    assert not list((store / "_staging").iterdir())


def test_conntrack_snapshots(tmp_path: Path) -> None:
    store = tmp_path / "store"
    snaps = sorted(CONNTRACK.glob("snap-*.txt"))
    done = summary(run("ingest", "conntrack", *snaps, "--store", store, "--aggregation", "0",
                       "--interval", "15", "--at", "2026-11-27T14:29:22",
                       "--at", "2026-11-27T14:29:25", "--at", "2026-11-27T14:29:28"))
    assert (done["files"], done["records_in"], done["written"]) == (3, 26, 13)
    rows = sql(store, "SELECT source_ip, source_port, dest_ip, dest_port, bytes_out, bytes_in,"
                      " num_flows_completed AS c FROM flows WHERE dest_port = 9000")
    assert rows == [{"source_ip": "10.244.1.11", "source_port": 34712, "dest_ip": "10.244.1.12",
                     "dest_port": 9000, "bytes_out": 3424, "bytes_in": 3320, "c": 1}]
    again = summary(run("ingest", "conntrack", *snaps, "--store", store))
    assert (again["skipped_files"], again["written"]) == (3, 0)


def test_sql_outputs_and_errors(tmp_path: Path) -> None:
    store = tmp_path / "store"
    summary(run("ingest", "calico", CALICO, "--store", store))
    q = ("SELECT reporter, count(*) AS n FROM flows WHERE action = 'deny' "
         "GROUP BY reporter ORDER BY reporter")
    as_json = [json.loads(x) for x in run("sql", "--store", store, q, "--output", "json")
               .output.splitlines()]
    assert as_json == sql(store, q)
    assert all(r["n"] > 0 for r in as_json)
    as_csv = list(csv.reader(io.StringIO(run("sql", "--store", store, q, "--output", "csv")
                                         .output)))
    assert as_csv[0] == ["reporter", "n"]
    assert [[r["reporter"], str(r["n"])] for r in as_json] == as_csv[1:]
    table = run("sql", "--store", store, q)
    assert as_json[0]["reporter"] in table.output
    bad = CliRunner().invoke(cli, ["sql", "--store", str(store), "SELECT nope FROM flows"])
    assert bad.exit_code == 2
    assert bad.output.startswith("tierflow: error: Binder Error: Referenced column \"nope\"")
    assert len(bad.output.strip().splitlines()) == 1


def test_compact_keeps_query_results(tmp_path: Path) -> None:
    store, log = tmp_path / "store", tmp_path / "flows.log"
    log.write_bytes(calico_lines(5000))
    summary(run("ingest", "calico", log, "--store", store, "--batch-lines", "500"))
    q = "SELECT hour, count(*) AS n, sum(bytes_out) AS b FROM flows GROUP BY hour ORDER BY hour"
    before = sql(store, q)
    files = len(Store(store).files())
    out = run("compact", "--store", store)
    assert out.exit_code == 0
    assert out.output == f"compacted 2 partition(s): {files} files -> 2, 5000 rows\n"
    assert sql(store, q) == before


def test_a_second_job_waits_for_the_lock_or_gives_up(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Store(store).writer():
        r = CliRunner().invoke(cli, ["ingest", "calico", str(CALICO), "--store", str(store),
                                     "--wait", "0.2"])
    assert r.exit_code == 2
    assert r.output == (f"tierflow: error: {store}/_state/lock: another tierflow job holds the "
                        "store lock (waited 0.2 s)\n")


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["ingest", "conntrack", str(CONNTRACK / "snap-1.txt"),
                                 "--store", str(tmp_path), "--at", "2026-11-27T14:29:22",
                                 "--at", "2026-11-27T14:29:23"])
    assert r.exit_code == 2
    assert "--at given 2 time(s) for 1 file(s)" in r.output


def test_real_process_prints_one_json_line_when_not_a_terminal(tmp_path: Path) -> None:
    p = subprocess.run([str(Path(sys.executable).parent / "tierflow"), "ingest", "pcap",
                        str(CAPTURE / "lab.pcap"), "--store", str(tmp_path / "s")],
                       capture_output=True, text=True, check=True)
    assert p.stderr == ""
    assert json.loads(p.stdout)["written"] > 0


def test_a_capture_that_grew_is_not_ingested_twice(tmp_path: Path) -> None:
    cap, store = tmp_path / "grow.pcap", tmp_path / "store"
    data = (CAPTURE / "lab.pcap").read_bytes()
    cap.write_bytes(data[:6000])  # tcpdump mid-write: a prefix of the file
    first = summary(run("ingest", "pcap", cap, "--store", store))
    cap.write_bytes(data)
    again = summary(run("ingest", "pcap", cap, "--store", store))
    assert (again["files"], again["skipped_files"], again["written"]) == (0, 1, 0)
    assert again["messages"] == [
        f"{cap}: already ingested at 6000 bytes, now {len(data)}; captures are ingested whole "
        "once (rotate with tcpdump -G/-C and ingest the closed files)"]
    assert sql(store, "SELECT count(*) AS n FROM flows") == [{"n": first["written"]}]
