"""The Arrow schemas that ingest produces and the store keeps.

``FLOWS`` is one Calico Enterprise flow-log record per row (``reference/calico.md`` §1.2):
column names are Calico's JSON keys, so Calico's own logs round-trip and Calico users' queries
carry over. The columns of ``DESIGN.md``'s flow record come first; Calico's optional fields
(process, TCP, NAT, transit, L7 counters) follow and stay null for captured traffic.

``SEGMENTS`` is what a traffic source (pcap, conntrack, the agent) hands to the flow builder:
one connection's activity within one flush interval, with the initiator as ``src``.
``DNS`` is what the sources saw of DNS answers, which give ``dest_domains``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = ["DNS", "FLOWS", "SCHEMA_VERSION", "SEGMENTS", "Reject", "conform", "empty"]

SCHEMA_VERSION = "1"

_DICT = pa.dictionary(pa.int32(), pa.string())
_TS = pa.timestamp("s", tz="UTC")
_LABELS = pa.map_(pa.string(), pa.string())
_STRINGS = pa.list_(pa.string())


def _side(prefix: str) -> list[pa.Field]:
    return [
        pa.field(f"{prefix}_ip", pa.string()),
        pa.field(f"{prefix}_name", _DICT),
        pa.field(f"{prefix}_name_aggr", _DICT),
        pa.field(f"{prefix}_namespace", _DICT),
        pa.field(f"{prefix}_type", _DICT),
        pa.field(f"{prefix}_port", pa.int32()),
        pa.field(f"{prefix}_labels", _LABELS),
    ]


FLOWS = pa.schema(
    [
        pa.field("start_time", _TS, nullable=False),
        pa.field("end_time", _TS, nullable=False),
        *_side("source"),
        *_side("dest"),
        pa.field("dest_service_namespace", _DICT),
        pa.field("dest_service_name", _DICT),
        pa.field("dest_service_port", _DICT),
        pa.field("dest_service_port_num", pa.int32()),
        pa.field("dest_domains", _STRINGS),
        pa.field("proto", _DICT),
        pa.field("action", _DICT),
        pa.field("reporter", _DICT),
        pa.field("enforced_policies", _STRINGS),
        pa.field("pending_policies", _STRINGS),
        pa.field("bytes_in", pa.int64()),
        pa.field("bytes_out", pa.int64()),
        pa.field("packets_in", pa.int64()),
        pa.field("packets_out", pa.int64()),
        pa.field("num_flows", pa.int64()),
        pa.field("num_flows_started", pa.int64()),
        pa.field("num_flows_completed", pa.int64()),
        pa.field("host", _DICT),
        pa.field("collector", _DICT),
        # Calico's optional fields: null unless the source is a Calico log that has them.
        pa.field("all_policies", _STRINGS),
        pa.field("transit_policies", _STRINGS),
        pa.field("nat_outgoing_ports", pa.list_(pa.int32())),
        pa.field("transit_bytes_in", pa.int64()),
        pa.field("transit_bytes_out", pa.int64()),
        pa.field("transit_packets_in", pa.int64()),
        pa.field("transit_packets_out", pa.int64()),
        pa.field("http_requests_allowed_in", pa.int64()),
        pa.field("http_requests_denied_in", pa.int64()),
        pa.field("process_name", pa.string()),
        pa.field("process_id", pa.string()),
        pa.field("process_args", _STRINGS),
        pa.field("num_process_names", pa.int64()),
        pa.field("num_process_ids", pa.int64()),
        pa.field("num_process_args", pa.int64()),
        pa.field("original_source_ips", _STRINGS),
        pa.field("num_original_source_ips", pa.int64()),
        *(pa.field(f"tcp_{name}", pa.int64()) for name in (
            "mean_send_congestion_window", "min_send_congestion_window", "mean_smooth_rtt",
            "max_smooth_rtt", "mean_min_rtt", "max_min_rtt", "mean_mss", "min_mss",
            "total_retransmissions", "lost_packets", "unrecovered_to")),
    ],
    metadata={b"tierflow.schema": b"flows", b"tierflow.schema_version": SCHEMA_VERSION.encode()},
)

SEGMENTS = pa.schema(
    [
        # The flush interval this row covers, [start_time, end_time).
        pa.field("start_time", _TS, nullable=False),
        pa.field("end_time", _TS, nullable=False),
        # One id per connection within one batch; a connection spanning intervals repeats it.
        pa.field("conn_id", pa.int64(), nullable=False),
        # First packet of the connection (for DNS look-ups and inventory-at-a-time).
        pa.field("conn_start", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("proto", pa.uint8(), nullable=False),  # IP protocol number
        pa.field("src_ip", pa.string(), nullable=False),  # the initiator
        pa.field("dst_ip", pa.string(), nullable=False),  # the responder (post-DNAT if known)
        pa.field("src_port", pa.int32()),  # null for ICMP and port-less protocols
        pa.field("dst_port", pa.int32()),
        pa.field("orig_dst_ip", pa.string()),  # pre-DNAT destination, when it differs
        pa.field("orig_dst_port", pa.int32()),
        pa.field("icmp_type", pa.int16()),
        pa.field("icmp_code", pa.int16()),
        pa.field("packets_fwd", pa.int64(), nullable=False),  # initiator → responder
        pa.field("bytes_fwd", pa.int64(), nullable=False),  # at the IP layer
        pa.field("packets_rev", pa.int64(), nullable=False),
        pa.field("bytes_rev", pa.int64(), nullable=False),
        pa.field("started", pa.bool_(), nullable=False),  # first seen in this interval
        pa.field("completed", pa.bool_(), nullable=False),  # ended in this interval
    ],
    metadata={b"tierflow.schema": b"segments"},
)

DNS = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),  # when the answer came
        pa.field("client_ip", pa.string(), nullable=False),  # who asked
        pa.field("name", pa.string(), nullable=False),  # the name asked (lower case, no dot)
        pa.field("ip", pa.string(), nullable=False),  # an address it resolved to
        pa.field("ttl", pa.int64(), nullable=False),  # seconds
    ],
    metadata={b"tierflow.schema": b"dns"},
)


@dataclass(frozen=True, slots=True)
class Reject:
    """One piece of input that could not be used, and why; the store keeps it aside.

    ``position`` locates it in ``source`` (``line 12``, ``byte 4096``, ``packet 17 at byte
    880``); ``raw`` is the rejected input itself (text, or bytes for binary sources).
    """

    source: str
    position: str
    field: str
    value: str
    expected: str
    raw: str | bytes = ""

    def message(self) -> str:
        return (f"{self.source}: {self.position}: {self.field}: {self.value!s:.80} "
                f"(expected {self.expected})")


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema = FLOWS) -> pa.Table:
    """``table`` with exactly ``schema``'s columns in order and types; missing ones null."""
    n = table.num_rows
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            arrays.append(col if col.type == f.type else col.cast(f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
