"""The node agent on real traffic (issue 7): ``tierflow agent`` runs in the lab's node
namespace (tests/netns_lab.py), pods talk HTTP and UDP, resolve ``api.twilio.com`` through the
lab's DNS server and call the "external" host; the agent is stopped with SIGTERM and the
store must hold what happened — replica-set prefixes, ports, protocols, src and dst records,
``dest_domains``, policy traces, and packet and byte counts equal to conntrack's own.

The lab's pods are cast as storefront workloads by ``sample_flows/capture/inventory.json``:
pod1 (10.244.1.11) is a frontend pod, pod2 (10.244.1.12) a microservice1 pod, the DNS server
(10.244.1.13) a CoreDNS pod.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from netns_lab import EXT_IPS, HTTP_POD2, Lab, netns_lab  # noqa: F401  (pytest fixture)

from analytics.db import connect, query
from ingest.ctnetlink import dump

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "sample_flows" / "capture" / "inventory.json"
POLICIES = REPO / "sample_flows" / "storefront" / "policies"
TIERFLOW = (sys.executable, "-c", "from tierflow.cli import main; main()")
WROTE_RECORDS = re.compile(r"flushed \S+: [1-9]\d* record\(s\)")  # not an empty interval

pytestmark = pytest.mark.netns


def start_agent(lab: Lab, store: Path, *extra: str,
                log: str = "agent.log") -> subprocess.Popen[str]:
    # "any", as the DaemonSet runs it: DNS answers from every interface of the node.
    proc = lab.spawn("node", *TIERFLOW, "agent", "--store", str(store), "--inventory",
                     str(INVENTORY), "--policies", str(POLICIES), "--iface", "any",
                     "--interval", "2", "--host", "lab-node", *extra, log=log)
    wait_for(lab.workdir / log, "watching conntrack", proc)
    return proc


def wait_for(path: Path, text: str | re.Pattern[str], proc: subprocess.Popen[str],
             timeout: float = 20) -> str:
    """Wait until the log holds ``text`` (a substring, or a compiled pattern)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text.search(content) if isinstance(text, re.Pattern) else text in content:
            return content
        if proc.poll() is not None:
            raise AssertionError(f"agent exited ({proc.returncode}): {content[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in {path} after {timeout} s: "
                         f"{path.read_text()[-3000:] if path.exists() else ''}")


def stop(proc: subprocess.Popen[str], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-3000:]
    return log.read_text()


def records(store: Path, sql: str) -> list[dict[str, Any]]:
    return query(connect(store), sql).to_pylist()  # type: ignore[no-any-return]


@pytest.fixture
def traffic(netns_lab: Lab,  # noqa: F811
            tmp_path: Path) -> tuple[Path, str, dict[tuple[str, int], list[int]]]:
    """Run the agent through the traffic; return the store, the agent's log and conntrack's
    counters per (destination, port) as dumped just before the agent stopped."""
    lab = netns_lab
    lab.conntrack_flush()
    store = tmp_path / "store"
    proc = start_agent(lab, store)
    for _ in range(3):
        assert lab.http_get("pod1", HTTP_POD2) == "200"
    assert lab.udp_echo("pod1", [b"ping", b"pong!"]) == 2
    assert lab.resolve("pod1", "api.twilio.com") == [EXT_IPS[0]]
    assert lab.http_get("pod1", "http://api.twilio.com/") == "200"
    time.sleep(0.5)
    seen: dict[tuple[str, int], list[int]] = {}
    for e in dump(lab.ns("node")):
        if e.orig_src == "10.244.1.11" and e.orig_dport in (8080, 9999, 80):
            c = seen.setdefault((e.orig_dst, e.orig_dport), [0, 0, 0, 0, 0])
            c[0] += 1
            for i, v in enumerate((e.packets_orig, e.bytes_orig, e.packets_reply,
                                   e.bytes_reply), 1):
                c[i] += v or 0
    time.sleep(2.5)  # at least one flush with everything in it, then stop mid-interval
    log = stop(proc, lab.workdir / "agent.log")
    return store, log, seen


def test_flows_land_in_the_store_as_calico_records(
        traffic: tuple[Path, str, dict[tuple[str, int], list[int]]]) -> None:
    store, log, seen = traffic
    assert "flushed" in log and "signal SIGTERM: flushing the open interval" in log
    rows = records(store, """
        SELECT reporter, source_name_aggr AS src, dest_name_aggr AS dst, dest_port AS port,
               proto, action, sum(num_flows) AS conns, sum(num_flows_started) AS started,
               sum(packets_out) AS pkts_out, sum(bytes_out) AS bytes_out,
               sum(packets_in) AS pkts_in, sum(bytes_in) AS bytes_in,
               list_distinct(flatten(list(coalesce(dest_domains, [])))) AS domains,
               any_value(enforced_policies[-1]) AS decided, any_value(collector) AS collector
        FROM flows WHERE source_name_aggr LIKE 'frontend-%'
        GROUP BY ALL ORDER BY dst, port, reporter""")
    by = {(r["reporter"], r["dst"], r["port"]): r for r in rows}
    http_src = by[("src", "microservice1-7b9d6c8f5d-*", 8080)]
    http_dst = by[("dst", "microservice1-7b9d6c8f5d-*", 8080)]
    assert (http_src["proto"], http_src["conns"], http_src["started"]) == ("tcp", 3, 3)
    assert http_dst["conns"] == 3 and http_src["collector"] == "agent"
    # Counts agree with conntrack's: out is what the reporting pod sent.
    n, po, bo, pr, br = seen[("10.244.1.12", 8080)]
    assert n == 3
    assert (http_src["pkts_out"], http_src["bytes_out"], http_src["pkts_in"],
            http_src["bytes_in"]) == (po, bo, pr, br)
    assert (http_dst["pkts_in"], http_dst["bytes_in"], http_dst["pkts_out"],
            http_dst["bytes_out"]) == (po, bo, pr, br)
    assert http_src["decided"].endswith("|default|storefront/default.dmz|allow|0")
    assert http_dst["decided"].endswith("|default|storefront/default.trusted|allow|0")
    udp = by[("src", "microservice1-7b9d6c8f5d-*", 9999)]
    assert (udp["proto"], udp["conns"], udp["pkts_out"]) == ("udp", 1, 2)
    # The external call: typed pub, named by the DNS answer the agent sniffed, denied by
    # the dmz zone's egress policy (the lab does not enforce; the record says what would).
    ext = by[("src", "pub", 80)]
    assert ext["domains"] == ["api.twilio.com"] and ext["action"] == "deny"
    assert ext["decided"].endswith("|default|storefront/default.dmz|deny|2")
    n, po, bo, pr, br = seen[(EXT_IPS[0], 80)]
    assert (ext["conns"], ext["pkts_out"], ext["bytes_out"]) == (n, po, bo)
    dns = [r for r in rows if r["port"] == 53 and r["reporter"] == "src"]
    assert dns and dns[0]["dst"] == "coredns-5d78c9869d-*" and dns[0]["proto"] == "udp"


def test_stats_say_nothing_was_lost(
        traffic: tuple[Path, str, dict[tuple[str, int], list[int]]]) -> None:
    store, log, _ = traffic
    stats = (store / "_state" / "agent-lab-node.json").read_text()
    assert re.search(r'"events_lost": 0', stats) and re.search(r'"frames_dropped": 0', stats)
    # Two lookups of api.twilio.com (getent, then curl), one A answer each: the copies of
    # each answer that "any" reads on the other bridge ports are skipped, not counted.
    assert re.search(r'"dns_answers": 2,', stats), stats
    assert re.search(r'"frame_copies": [1-9]', stats), stats
    assert "events lost 0, frames dropped 0" in log


def test_a_policy_edit_is_picked_up_without_losing_the_interval(
        netns_lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    lab = netns_lab
    lab.conntrack_flush()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "deny.yaml").write_text("""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: default.deny-http}
spec:
  selector: app == 'microservice1'
  types: [Ingress]
  ingress: [{action: Deny}]
""")
    store = tmp_path / "store"
    proc = lab.spawn("node", *TIERFLOW, "agent", "--store", str(store), "--inventory",
                     str(INVENTORY), "--policies", str(policies), "--interval", "2",
                     "--host", "lab-node", "--no-dns", log="reload.log")
    log = lab.workdir / "reload.log"
    wait_for(log, "watching conntrack", proc)
    assert lab.http_get("pod1", HTTP_POD2) == "200"
    # A flush that holds the request (an interval may have ended, empty, before it).
    wait_for(log, WROTE_RECORDS, proc)
    (policies / "deny.yaml").write_text((policies / "deny.yaml").read_text().replace(
        "Deny}", "Allow}"))
    wait_for(log, "reloaded the inventory and policies", proc)
    assert lab.http_get("pod1", HTTP_POD2) == "200"
    stop(proc, log)
    rows = records(store, """SELECT action, enforced_policies[-1] AS hit, num_flows
                             FROM flows WHERE reporter = 'dst' AND dest_port = 8080
                             ORDER BY start_time""")
    assert [r["action"] for r in rows] == ["deny", "allow"]
    assert sum(r["num_flows"] for r in rows) == 2


def test_the_packet_path_for_nodes_without_conntrack(netns_lab: Lab,  # noqa: F811
                                                     tmp_path: Path) -> None:
    lab = netns_lab
    store = tmp_path / "store"
    proc = lab.spawn("node", *TIERFLOW, "agent", "--store", str(store), "--inventory",
                     str(INVENTORY), "--policies", str(POLICIES), "--source", "packets",
                     "--iface", "br0", "--interval", "2", "--host", "lab-node",
                     log="packets.log")
    log = lab.workdir / "packets.log"
    wait_for(log, "watching packets", proc)
    for _ in range(2):
        assert lab.http_get("pod1", HTTP_POD2) == "200"
    assert lab.resolve("pod1", "api.twilio.com") == [EXT_IPS[0]]
    assert lab.http_get("pod1", "http://api.twilio.com/") == "200"
    time.sleep(0.5)
    text = stop(proc, log)
    assert "frames dropped 0" in text
    rows = records(store, """
        SELECT reporter, dest_name_aggr AS dst, dest_port AS port, sum(num_flows) AS conns,
               list_distinct(flatten(list(coalesce(dest_domains, [])))) AS domains,
               any_value(collector) AS collector
        FROM flows WHERE source_name_aggr LIKE 'frontend-%' GROUP BY ALL""")
    by = {(r["reporter"], r["dst"], r["port"]): r for r in rows}
    assert by[("src", "microservice1-7b9d6c8f5d-*", 8080)]["conns"] == 2
    assert by[("dst", "microservice1-7b9d6c8f5d-*", 8080)]["conns"] == 2
    assert by[("src", "pub", 80)]["domains"] == ["api.twilio.com"]


def test_a_crash_loses_at_most_the_open_interval(netns_lab: Lab,  # noqa: F811
                                                 tmp_path: Path) -> None:
    lab = netns_lab
    lab.conntrack_flush()
    store = tmp_path / "store"
    proc = start_agent(lab, store, "--no-dns", log="crash.log")
    log = lab.workdir / "crash.log"
    assert lab.http_get("pod1", HTTP_POD2) == "200"
    wait_for(log, WROTE_RECORDS, proc)  # a flush has written the request's records
    assert lab.http_get("pod1", HTTP_POD2) == "200"  # in the open interval: may be lost
    proc.kill()  # SIGKILL: no flush, no cleanup
    proc.wait(10)
    rows = records(store, """SELECT reporter, sum(num_flows_started) AS started FROM flows
                             WHERE dest_port = 8080 GROUP BY ALL ORDER BY reporter""")
    # The first request's interval was committed; the store is consistent and readable.
    assert [r["reporter"] for r in rows] == ["dst", "src"]
    assert all(1 <= r["started"] <= 2 for r in rows)
    # A new agent starts on the same store and takes up where the dead one left.
    again = start_agent(lab, store, "--no-dns", log="again.log")
    assert lab.http_get("pod1", HTTP_POD2) == "200"
    time.sleep(2.5)
    stop(again, lab.workdir / "again.log")
    total = records(store, "SELECT sum(num_flows_started) AS n FROM flows "
                           "WHERE dest_port = 8080 AND reporter = 'src'")[0]["n"]
    assert total >= 2
