"""The Calico Enterprise ``flows.log`` reader on a real-format sample and on bad, growing,
resumed and batched input.

``sample_flows/calico/flows.log`` is worker-1's log of the storefront lab (reference/calico.md
§10) across Felix versions, oldest first: lines 1-3 hold hits without a rule index in
``all_policies`` only, lines 4-9 ``all_policies`` only with rule indexes and the older staged
spelling, lines 10-47 the current format (``enforced_policies``/``pending_policies``, no host),
lines 48-56 worker-2's records as exported from Elasticsearch (``host``, ``@timestamp``,
``cluster``, ``generated_time``, ``id`` and all four hit lists), lines 57-62 hits in the
OSS >= 3.32 spelling with ``host`` in each record.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.calico_log import LogBatch, read_calico_log
from ingest.schema import FLOWS, conform

SAMPLE = Path(__file__).parent.parent / "sample_flows" / "calico" / "flows.log"
SEC, PLAT = "0|security|security.pass|pass|0", "1|platform|platform.pass|pass|0"
LINES = SAMPLE.read_bytes().splitlines(keepends=True)
GOOD = LINES[11]  # a current-format record, aggregated at level 2


def read(data: bytes, **kw: Any) -> list[LogBatch]:
    return list(read_calico_log(io.BytesIO(data), name="flows.log", **kw))


def rows(batches: list[LogBatch]) -> list[dict[str, Any]]:
    return [row for b in batches for row in b.table.to_pylist()]


def ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    batches = read(SAMPLE.read_bytes(), host="worker-1")
    assert len(batches) == 1 and batches[0].rejects == []
    assert batches[0].lines == 62 and batches[0].end_offset == SAMPLE.stat().st_size
    assert batches[0].table.schema == FLOWS
    return rows(batches)


def test_sample_lands_whole(sample: list[dict[str, Any]]) -> None:
    assert len(sample) == 62
    assert {r["collector"] for r in sample} == {"calico"}
    hosts = [r["host"] for r in sample]
    assert hosts == (["worker-1"] * 47 + ["worker-2"] * 9 + ["control-plane"] * 2
                     + ["worker-1"] * 4)
    assert {(r["source_type"], r["dest_type"]) for r in sample} == {
        ("wep", "wep"), ("net", "wep"), ("ns", "wep"), ("wep", "ns"), ("wep", "net"),
        ("hep", "hep")}


def test_current_format_level_2_record(sample: list[dict[str, Any]]) -> None:
    trusted = [SEC, PLAT, "2|default|storefront/default.trusted|allow|0"]
    assert sample[11] == {
        "start_time": ts(1715684400), "end_time": ts(1715684415),
        "source_ip": None, "source_name": "-", "source_name_aggr": "microservice1-7b9d6c8f5d-*",
        "source_namespace": "storefront", "source_type": "wep", "source_port": None,
        "source_labels": [("app", "microservice1"), ("fw-zone", "trusted"),
                          ("pod-template-hash", "7b9d6c8f5d")],
        "dest_ip": None, "dest_name": "-", "dest_name_aggr": "microservice2-6c7f9b8d4b-*",
        "dest_namespace": "storefront", "dest_type": "wep", "dest_port": 8080,
        "dest_labels": [("app", "microservice2"), ("fw-zone", "trusted"),
                        ("pod-template-hash", "6c7f9b8d4b")],
        "dest_service_namespace": "storefront", "dest_service_name": "microservice2",
        "dest_service_port": "http", "dest_service_port_num": 80, "dest_domains": None,
        "proto": "tcp", "action": "allow", "reporter": "src",
        "enforced_policies": trusted, "pending_policies": trusted,
        "bytes_in": 20480, "bytes_out": 2480, "packets_in": 17, "packets_out": 19,
        "num_flows": 2, "num_flows_started": 2, "num_flows_completed": 2,
        "host": "worker-1", "collector": "calico",
        "all_policies": None, "transit_policies": None, "nat_outgoing_ports": None,
        "transit_bytes_in": 0, "transit_bytes_out": 0, "transit_packets_in": 0,
        "transit_packets_out": 0, "http_requests_allowed_in": 0, "http_requests_denied_in": 0,
        "process_name": "/usr/local/bin/peira", "process_id": "28311", "process_args": ["-"],
        "num_process_names": 1, "num_process_ids": 1, "num_process_args": 0,
        "original_source_ips": None, "num_original_source_ips": 0,
        "tcp_mean_send_congestion_window": 10, "tcp_min_send_congestion_window": 10,
        "tcp_mean_smooth_rtt": 412, "tcp_max_smooth_rtt": 1290, "tcp_mean_min_rtt": 85,
        "tcp_max_min_rtt": 97, "tcp_mean_mss": 1398, "tcp_min_mss": 1398,
        "tcp_total_retransmissions": 0, "tcp_lost_packets": 0, "tcp_unrecovered_to": 0,
    }


def test_oldest_format_record(sample: list[dict[str, Any]]) -> None:
    """Calico Enterprise 2.x: no services, process or TCP fields; hits without a rule index."""
    profile = ["0|__PROFILE__|__PROFILE__.kns.storefront|allow"]
    row = sample[1]
    assert {k: v for k, v in row.items() if v is not None} == {
        "start_time": ts(1715683200), "end_time": ts(1715683215),
        "source_name": "-", "source_name_aggr": "pub", "source_namespace": "-",
        "source_type": "net",
        "dest_name": "-", "dest_name_aggr": "frontend-864f4fcdfd-*", "dest_namespace": "storefront",
        "dest_type": "wep", "dest_port": 8080,
        "dest_labels": [("app", "frontend"), ("fw-zone", "dmz"),
                        ("pod-template-hash", "864f4fcdfd")],
        "proto": "tcp", "action": "allow", "reporter": "dst",
        "enforced_policies": profile, "pending_policies": profile, "all_policies": profile,
        "bytes_in": 1630, "bytes_out": 20480, "packets_in": 14, "packets_out": 12,
        "num_flows": 2, "num_flows_started": 2, "num_flows_completed": 2,
        "host": "worker-1", "collector": "calico",
    }
    assert row["source_labels"] is None and row["dest_service_name"] is None


def test_level_0_denied_record(sample: list[dict[str, Any]]) -> None:
    row = sample[31]
    assert {k: row[k] for k in (
        "source_ip", "source_name", "source_name_aggr", "source_namespace", "source_type",
        "source_port", "source_labels", "dest_ip", "dest_name", "dest_port", "dest_service_name",
        "dest_service_port", "dest_service_port_num", "action", "reporter", "enforced_policies",
        "bytes_in", "bytes_out", "packets_in", "packets_out", "num_flows")} == {
        "source_ip": "203.0.113.50", "source_name": "-", "source_name_aggr": "pub",
        "source_namespace": "-", "source_type": "net", "source_port": 51734,
        "source_labels": None, "dest_ip": "10.244.1.10", "dest_name": "frontend-864f4fcdfd-2hhv4",
        "dest_port": 8080, "dest_service_name": "-", "dest_service_port": "-",
        "dest_service_port_num": None, "action": "deny", "reporter": "dst",
        "enforced_policies": [SEC, PLAT, "2|default|storefront/default.dmz|deny|1"],
        "bytes_in": 120, "bytes_out": 0, "packets_in": 2, "packets_out": 0, "num_flows": 1,
    }


def test_network_set_domains_nat_and_hep(sample: list[dict[str, Any]]) -> None:
    google, ubuntu, api = sample[17], sample[29], sample[18]
    assert (google["dest_type"], google["dest_name_aggr"], google["dest_labels"],
            google["dest_domains"], google["pending_policies"][2]) == (
        "ns", "public", [("type", "public")], ["www.google.com"],
        "2|default|default.staged:default-deny|deny|-1")
    assert (ubuntu["dest_type"], ubuntu["dest_name_aggr"], ubuntu["dest_domains"],
            ubuntu["nat_outgoing_ports"], ubuntu["tcp_total_retransmissions"]) == (
        "net", "pub", ["archive.ubuntu.com"], [40112, 40117], 2)
    assert (api["source_type"], api["source_name_aggr"], api["dest_name_aggr"],
            api["dest_service_name"], api["dest_service_port_num"], api["dest_labels"]) == (
        "hep", "worker-1", "control-plane", "kubernetes", 443,
        [("kubernetes.io/hostname", "control-plane"), ("kubernetes.io/os", "linux"),
         ("node-role.kubernetes.io/control-plane", "")])
    icmp = sample[20]
    assert (icmp["proto"], icmp["source_port"], icmp["dest_port"], icmp["action"]) == (
        "icmp", None, None, "deny")
    assert sample[30]["original_source_ips"] == ["198.51.100.23"]


def test_all_policies_only_gives_enforced_without_staged_renumbered(
        sample: list[dict[str, Any]]) -> None:
    backend = sample[5]  # staged hit in the older spelling at index 2, enforced one at 3
    given = [SEC, PLAT, "2|default|storefront/staged:default.restricted|allow|0",
             "3|default|storefront/default.restricted|allow|0"]
    assert backend["all_policies"] == given
    assert backend["pending_policies"] == given
    assert backend["enforced_policies"] == [
        SEC, PLAT, "2|default|storefront/default.restricted|allow|0"]
    unordered = sample[4]  # Felix stores hits in no particular order
    assert unordered["all_policies"][0] == "2|default|storefront/default.trusted|allow|0"
    assert unordered["enforced_policies"] == [
        SEC, PLAT, "2|default|storefront/default.trusted|allow|0"]
    dev = sample[6]
    assert dev["enforced_policies"] == [SEC, PLAT, "2|__PROFILE__|__PROFILE__.kns.dev|allow|0"]
    assert dev["pending_policies"][2] == "2|default|default.staged:default-deny|deny|-1"


def test_given_enforced_wins_over_all_policies(sample: list[dict[str, Any]]) -> None:
    nginx = sample[54]  # exported from Elasticsearch: all four lists
    assert nginx["all_policies"] == [SEC, PLAT, "2|default|default.staged:default-deny|deny|-1",
                                     "3|__PROFILE__|__PROFILE__.kns.dev|allow|0"]
    assert nginx["enforced_policies"] == [SEC, PLAT, "2|__PROFILE__|__PROFILE__.kns.dev|allow|0"]
    assert nginx["pending_policies"] == [SEC, PLAT, "2|default|default.staged:default-deny|deny|-1"]
    assert nginx["host"] == "worker-2" and nginx["process_id"] == "*"


def test_newer_oss_hit_format(sample: list[dict[str, Any]]) -> None:
    row = sample[58]
    assert row["enforced_policies"] == [
        "0|security|gnp:security.pass|pass|0", "1|platform|gnp:platform.pass|pass|0",
        "2|default|np:storefront/default.restricted|allow|0"]
    assert row["pending_policies"][2] == "2|default|snp:storefront/default.restricted|deny|2"
    assert sample[59]["pending_policies"][2] == "2|default|sgnp:default-deny|deny|-1"
    assert sample[56]["host"] == "control-plane"


def good(**change: Any) -> bytes:
    record = json.loads(GOOD)
    for key, value in change.items():
        if value is _DROP:
            del record[key]
        else:
            record[key] = value
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


_DROP = object()
BYTE = len(GOOD)  # the bad line is line 2, after one good line


REJECTS = [
    # a bare JSON null (pyarrow 26 crashes on a block that starts with one): rejected by line
    (b"null\n", "json", "None (expected one JSON object per line)"),
    (b'{"start_time":1715684400,"end_time"\n', "json",
     "'715684400,\"end_time\"' (expected one JSON object per line "
     "(Expecting ':' delimiter: column 36))"),
    (GOOD[:200] + b"}\n", "json",  # Felix killed mid-line, the next record's "}" after it
     "'utgoing_ports\":null,\"source_port}' (expected one JSON object per line "
     "(Unterminated string starting at: column 189))"),
    (b'[1, 2]\n', "json", "[1, 2] (expected one JSON object per line)"),
    (GOOD.rstrip() + b" " + GOOD, "json",
     "'_unrecovered_to\":0} {\"start_time\":171568' (expected one JSON object per line "
     f"(Extra data: column {len(GOOD) + 1}))"),
    (GOOD.replace(b'"tcp"', b'"tc\xff"'), "json",
     "'ns\":null,\"proto\":\"tc\ufffd\",\"action\":\"allow\",\"' (expected UTF-8 text)"),
    (good(start_time=_DROP), "start_time", "None (expected an integer Unix time in seconds)"),
    (good(start_time="1715684400"), "start_time",
     "'1715684400' (expected an integer Unix time in seconds)"),
    (good(end_time=1715684400.5), "end_time",
     "1715684400.5 (expected an integer Unix time in seconds)"),
    (good(end_time=1715684385), "end_time",
     "1715684385 (expected a Unix time not before start_time 1715684400)"),
    (good(action="alow"), "action", "'alow' (expected allow or deny)"),
    (good(reporter="source"), "reporter",
     "'source' (expected one of src, dst, fwd, src,fwd, dst,fwd)"),
    (good(source_type="pod"), "source_type", "'pod' (expected one of wep, hep, ns, net)"),
    (good(dest_type=_DROP), "dest_type", "None (expected one of wep, hep, ns, net)"),
    (good(dest_port=70000), "dest_port", "70000 (expected a port 0-65535 or null)"),
    (good(source_port=-1), "source_port", "-1 (expected a port 0-65535 or null)"),
    (good(nat_outgoing_ports=[40112, 65536]), "nat_outgoing_ports",
     "65536 (expected ports 0-65535)"),
    (good(bytes_in=-5), "bytes_in", "-5 (expected a count of 0 or more)"),
    (good(packets_out="7"), "packets_out", "'7' (expected an integer or null)"),
    (good(source_labels={"labels": ["app=x", "fw-zone"]}), "source_labels",
     "'fw-zone' (expected labels as key=value)"),
    (good(dest_labels={"labels": ["=x"]}), "dest_labels", "'=x' (expected labels as key=value)"),
    (good(dest_labels=["app=x"]), "dest_labels",
     "['app=x'] (expected {\"labels\": [\"key=value\", ...]} or null)"),
    (good(policies={"enforced_policies": [SEC, "1|default|foo|allow|0"],
                    "pending_policies": [SEC]}), "policies.enforced_policies",
     "'1|default|foo|allow|0' (expected a policy hit index|tier|name|action|rule (policy name "
     "'foo' does not start with its tier 'default'))"),
    (good(policies={"all_policies": ["x|default|default.a|allow|0"]}), "policies.all_policies",
     "'x|default|default.a|allow|0' (expected a policy hit index|tier|name|action|rule "
     "(index 'x' is not a position (0, 1, ...)))"),
    (good(policies={"enforced_policies": [SEC], "pending_policies": [SEC],
                    "transit_policies": ["0|default|default.fwd|forward|0"]}),
     "policies.transit_policies",
     "'0|default|default.fwd|forward|0' (expected a policy hit index|tier|name|action|rule "
     "(action 'forward' is not one of allow, deny, pass, eot-deny))"),
]


@pytest.mark.parametrize(("bad", "field", "message"), REJECTS)
def test_bad_line_is_rejected_and_others_land(bad: bytes, field: str, message: str) -> None:
    batches = read(GOOD + bad + GOOD)
    assert [b.table.num_rows for b in batches] == [2]
    assert batches[0].lines == 3 and batches[0].end_offset == 2 * len(GOOD) + len(bad)
    [reject] = batches[0].rejects
    assert reject.field == field
    assert reject.raw == bad.rstrip(b"\n").decode("utf-8", errors="replace")
    assert reject.message() == f"flows.log: line 2 (byte {BYTE}): {field}: {message}"


def test_transit_hits_and_forwarded_reporter() -> None:
    fwd = "0|security|security.hep-forward|allow|0"
    record = json.loads(GOOD)
    record.update(reporter="dst,fwd", transit_bytes_in=5120, transit_packets_in=4,
                  policies={**record["policies"], "transit_policies": [fwd]})
    [batch] = read(json.dumps(record).encode() + b"\n")
    [row] = batch.table.to_pylist()
    assert (row["reporter"], row["transit_policies"], row["transit_bytes_in"],
            row["transit_packets_in"]) == ("dst,fwd", [fwd], 5120, 4)


def test_batches_larger_than_a_block_split_lines_exactly() -> None:
    """A batch is parsed as blocks of at most 8,192 lines; numbering runs across them."""
    line = (b'{"start_time":1,"end_time":16,"action":"allow","reporter":"src",'
            b'"source_type":"net","dest_type":"net","bytes_in":%d}\n')
    lines = [line % i if i not in (8191, 8192, 12000) else b"{\n" for i in range(20001)]
    batches = read(b"".join(lines), batch_lines=10000)
    assert [(b.lines, b.table.num_rows) for b in batches] == [
        (10000, 9998), (10000, 9999), (1, 1)]
    assert [r.position for b in batches for r in b.rejects] == [
        f"line {i + 1} (byte {sum(map(len, lines[:i]))})" for i in (8191, 8192, 12000)]
    values = [v for b in batches for v in b.table.column("bytes_in").to_pylist()]
    assert values == [i for i in range(20001) if i not in (8191, 8192, 12000)]


def test_host_stays_null_without_one() -> None:
    [batch] = read(GOOD + LINES[50])
    assert batch.table.column("host").to_pylist() == [None, "worker-2"]


def test_many_bad_lines_in_a_long_block() -> None:
    """Halving isolates each bad line; line numbers and byte offsets stay exact."""
    lines = [good(action="alow") if i % 10 == 3 else good(bytes_in=i) for i in range(100)]
    [batch] = read(b"".join(lines))
    assert batch.table.column("bytes_in").to_pylist() == [i for i in range(100) if i % 10 != 3]
    offsets = [sum(len(x) for x in lines[:i]) for i in range(100)]
    assert [r.position for r in batch.rejects] == [
        f"line {i + 1} (byte {offsets[i]})" for i in range(3, 100, 10)]


def test_blank_lines_and_crlf_are_consumed_silently() -> None:
    data = b"\n" + GOOD + b"   \n" + GOOD.rstrip(b"\n") + b"\r\n\t\r\n" + good(action="alow")
    [batch] = read(data)
    assert (batch.table.num_rows, batch.lines, batch.end_offset) == (2, 6, len(data))
    assert [r.position for r in batch.rejects] == [
        f"line 6 (byte {len(data) - len(good(action='alow'))})"]


def test_unknown_keys_are_ignored() -> None:
    record = json.loads(GOOD)
    record.update(new_field={"nested": [1, {"x": None}]}, policies={
        **record["policies"], "future_policies": ["whatever"]})
    [batch] = read(json.dumps(record).encode() + b"\n")
    assert batch.rejects == [] and batch.table.num_rows == 1


def test_partial_last_line_waits_for_the_writer(tmp_path: Path) -> None:
    log = tmp_path / "flows.log"
    second = LINES[12]
    log.write_bytes(GOOD + second[:100])  # Felix is mid-line
    with log.open("rb") as f:
        [batch] = read_calico_log(f, name="flows.log", host="worker-1")
    assert (batch.table.num_rows, batch.lines, batch.end_offset) == (1, 1, len(GOOD))
    with log.open("ab") as f:
        f.write(second[100:])
    with log.open("rb") as f:
        [batch] = read_calico_log(f, name="flows.log", start_offset=len(GOOD), host="worker-1")
    assert (batch.table.num_rows, batch.end_offset) == (1, len(GOOD) + len(second))
    assert batch.table.to_pylist() == read(second, host="worker-1")[0].table.to_pylist()


def test_nothing_complete_yields_nothing() -> None:
    assert read(b"") == []
    assert read(GOOD[:-1]) == []


def test_resume_from_end_offset_reads_only_new_records(tmp_path: Path) -> None:
    log = tmp_path / "flows.log"
    log.write_bytes(SAMPLE.read_bytes())
    with log.open("rb") as f:
        first = list(read_calico_log(f, name="flows.log", host="worker-1"))
    resume = first[-1].end_offset
    with log.open("ab") as f:
        f.write(good(bytes_in=1) + b"{broken\n" + good(bytes_in=2))
    with log.open("rb") as f:
        [batch] = read_calico_log(f, name="flows.log", start_offset=resume, host="worker-1")
    assert batch.table.column("bytes_in").to_pylist() == [1, 2]
    second = resume + len(good(bytes_in=1))
    assert [r.position for r in batch.rejects] == [f"line 2 (byte {second})"]
    assert batch.end_offset == log.stat().st_size


def test_unseekable_source_is_read_from_where_it_is() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            return self.data.readinto(b)

    batches = list(read_calico_log(io.BufferedReader(Pipe(GOOD * 3)), name="-", batch_lines=2))
    assert [(b.table.num_rows, b.end_offset) for b in batches] == [(2, 2 * len(GOOD)),
                                                                  (1, 3 * len(GOOD))]


def test_batches_of_seven_give_the_same_rows() -> None:
    data = SAMPLE.read_bytes().replace(LINES[20], LINES[20] + b"\n" + good(action="alow"))
    whole = read(data, host="worker-1")
    small = read(data, host="worker-1", batch_lines=7)
    assert [b.lines for b in small] == [7] * 9 + [1]
    assert all(b.table.schema == FLOWS for b in small)
    assert [b.end_offset for b in small][-1] == whole[0].end_offset == len(data)
    assert rows(small) == rows(whole)
    assert [r.message() for b in small for r in b.rejects] == [
        r.message() for r in whole[0].rejects] == [
        f"flows.log: line 23 (byte {data.index(good(action='alow'))}): action: 'alow' "
        "(expected allow or deny)"]


def test_batch_lines_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"batch_lines must be 1 or more \(got 0\)"):
        read(GOOD, batch_lines=0)


def test_parquet_round_trip_is_lossless(tmp_path: Path) -> None:
    # Batches of 7: chunks whose dictionaries differ, as a store file holds them.
    table = pa.concat_tables(b.table for b in read(SAMPLE.read_bytes(), host="worker-1",
                                                   batch_lines=7))
    pq.write_table(table, tmp_path / "flows.parquet", compression="zstd")
    back = pq.read_table(tmp_path / "flows.parquet")
    assert back.to_pylist() == table.to_pylist()
    # Parquet has no second unit (timestamps come back as ms) and names list items "element":
    # conform restores the exact schema.
    def exact(t: pa.Table) -> pa.Table:
        return t.unify_dictionaries().combine_chunks()

    assert exact(conform(back)).equals(exact(table))
    assert conform(back).schema.equals(FLOWS, check_metadata=True)


_NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_LABELS = st.dictionaries(_NAMES, st.text("abcxyz012-_.", max_size=8), max_size=4)
_HITS = st.lists(st.builds(
    lambda i, tier, name, action, rule: f"{i}|{tier}|{tier}.{name}|{action}|{rule}",
    st.integers(0, 9), _NAMES, _NAMES, st.sampled_from(["allow", "deny", "pass"]),
    st.integers(-1, 20)), max_size=4)
_COUNT = st.integers(0, 1 << 40)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(st.integers(0, 1 << 33))
    return {
        "start_time": start, "end_time": start + draw(st.integers(0, 3600)),
        "source_ip": draw(st.none() | st.ip_addresses().map(str)),
        "source_name": draw(_NAMES), "source_name_aggr": draw(_NAMES),
        "source_namespace": draw(_NAMES),
        "source_port": draw(st.none() | st.integers(0, 65535)),
        "source_type": draw(st.sampled_from(["wep", "hep", "ns", "net"])),
        "source_labels": draw(st.none() | _LABELS.map(
            lambda d: {"labels": [f"{k}={v}" for k, v in d.items()]})),
        "dest_port": draw(st.none() | st.integers(0, 65535)),
        "dest_type": draw(st.sampled_from(["wep", "hep", "ns", "net"])),
        "dest_domains": draw(st.none() | st.lists(_NAMES, max_size=3)),
        "proto": draw(st.sampled_from(["tcp", "udp", "icmp", "sctp", "47"])),
        "action": draw(st.sampled_from(["allow", "deny"])),
        "reporter": draw(st.sampled_from(["src", "dst", "fwd", "src,fwd", "dst,fwd"])),
        "policies": {"enforced_policies": draw(_HITS), "pending_policies": draw(_HITS)},
        "bytes_in": draw(_COUNT), "packets_out": draw(_COUNT),
        "host": draw(st.none() | _NAMES),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=20), st.integers(1, 8))
def test_generated_records_read_back_equal(recs: list[dict[str, Any]], batch_lines: int) -> None:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    batches = read(data, host="node", batch_lines=batch_lines)
    assert [r for b in batches for r in b.rejects] == []
    for rec, row in zip(recs, rows(batches), strict=True):
        labels = rec["source_labels"]
        assert row["source_labels"] == (None if labels is None else [
            tuple(label.split("=", 1)) for label in labels["labels"]])
        assert row["start_time"] == ts(rec["start_time"]) and row["end_time"] == ts(rec["end_time"])
        assert row["enforced_policies"] == rec["policies"]["enforced_policies"]
        assert row["pending_policies"] == rec["policies"]["pending_policies"]
        assert row["host"] == (rec["host"] or "node")
        for key in ("source_ip", "source_name", "source_port", "source_type", "dest_port",
                    "dest_type", "dest_domains", "proto", "action", "reporter", "bytes_in",
                    "packets_out"):
            assert row[key] == rec[key], key
