"""Connection segments → Calico flow-log records: identities, services, domains, reporters,
policy verdicts and traces, then Calico's aggregation.

A pod-to-pod connection yields a ``src`` record (egress, at the initiating pod) and a ``dst``
record (ingress, at the receiving pod); if egress denies, only the ``src`` record exists, as the
packet never reached the destination (``reference/calico.md`` §1.6). A connection from or to
something that is not a workload is reported by the workload end only, and one between two
non-workloads once, by its initiator — so a capture without an inventory records every
connection exactly once, with both ends typed ``net``.

``bytes_in``/``bytes_out`` are relative to the reporting endpoint. ``dest_domains`` are filled
for ``src`` records to non-workload destinations from the DNS answers the client received for
that IP before the connection started and still within their TTL (at most five, as Felix's
``flowLogsFileDomainsLimit``). Aggregation follows §1.5: levels 0–3 chosen per action (default
allowed 2, denied 1), counters summed, labels intersected, ``num_flows`` the distinct
connections; one record per distinct enforced trace, as Felix emits them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import polars as pl
import pyarrow as pa

from ingest.identity import EndpointInfo, Resolver, ServiceInfo
from ingest.schema import FLOWS, conform
from policy.batch import BatchEvaluator

__all__ = ["Aggregation", "FlowBuilder", "proto_name"]

_LABELS = pa.map_(pa.string(), pa.string())
_PROTO_NAMES = {1: "icmp", 4: "ipip", 6: "tcp", 17: "udp", 50: "esp", 58: "icmp6", 132: "sctp"}


def proto_name(number: int) -> str:
    """Calico's ``proto`` value: a name for the protocols Felix names, else the number."""
    return _PROTO_NAMES.get(number, str(number))


@dataclass(frozen=True)
class Aggregation:
    """Aggregation levels per action and the flush interval (Felix's defaults)."""

    allowed: int = 2
    denied: int = 1
    domains_limit: int = 5

    def __post_init__(self) -> None:
        for name, level in (("allowed", self.allowed), ("denied", self.denied)):
            if level not in (0, 1, 2, 3):
                raise ValueError(f"aggregation level for {name} flows must be 0, 1, 2 or 3 "
                                 f"(got {level!r})")


@dataclass
class _Sides:
    """Per-segment endpoint info ids (into ``infos``) and service ids (into ``services``)."""

    infos: list[EndpointInfo]
    src: np.ndarray
    dst: np.ndarray
    services: list[ServiceInfo | None]
    service: np.ndarray

    @cached_property
    def table(self) -> pa.Table:
        """type, namespace, name, name_aggr, labels per info id."""
        return _info_table(self.infos)


class FlowBuilder:
    """Turns SEGMENTS (and the DNS answers seen) into FLOWS records.

    ``evaluator`` decides ``action`` and the enforced/pending traces from the policies in
    force; without one, every record is ``allow`` with no policy columns (nothing is claimed
    about policies that were not given).
    """

    def __init__(self, resolver: Resolver, evaluator: BatchEvaluator | None = None,
                 aggregation: Aggregation = Aggregation(), host: str = "-",
                 collector: str = "pcap") -> None:
        self.resolver = resolver
        self.evaluator = evaluator
        self.aggregation = aggregation
        self.host = host
        self.collector = collector
        self.traces: list[list[str]] = []  # distinct traces of the last build (ids index it)

    def build(self, segments: pa.Table, dns: pa.Table | None = None) -> pa.Table:
        if segments.num_rows == 0:
            return FLOWS.empty_table()
        seg = pl.from_arrow(segments)
        assert isinstance(seg, pl.DataFrame)
        sides, domains = self._resolve(seg, dns)
        rows = self._reported(seg, sides, domains)
        rows = self._decide(rows)
        return self._aggregate(rows, sides)

    # -- identities ----------------------------------------------------------------------

    def _resolve(self, seg: pl.DataFrame, dns: pa.Table | None) -> tuple[_Sides, pl.Series]:
        infos: list[EndpointInfo] = []
        index: dict[EndpointInfo, int] = {}

        def intern(info: EndpointInfo | None) -> int:
            if info is None:
                return -1
            if info not in index:
                index[info] = len(infos)
                infos.append(info)
            return index[info]

        src_wep = self._workloads(seg, "src_ip", intern)
        dst_wep = self._workloads(seg, "dst_ip", intern)
        domains = self._domains(seg, dst_wep < 0, dns)
        namespaces = pl.Series([i.namespace for i in infos] + [None], dtype=pl.String)
        src = self._externals(seg["src_ip"], src_wep, namespaces[dst_wep], intern)
        dst = self._externals(seg["dst_ip"], dst_wep, namespaces[src_wep], intern, domains)
        services, service = self._services(seg)
        return _Sides(infos, src, dst, services, service), domains

    def _workloads(self, seg: pl.DataFrame, column: str,
                   intern: Callable[[EndpointInfo | None], int]) -> np.ndarray:
        """Info id of the pod holding each IP at its connection's start, or -1: once per
        distinct IP, and per connection only for IPs that several pods held over time."""
        resolver = self.resolver
        distinct = seg[column].unique().to_list()
        ids: dict[str, int] = {}
        moving = []
        for text in distinct:
            ip = _ip(text)
            if resolver.time_dependent(ip):
                moving.append(text)
                continue
            ep = resolver.workload(ip, 0.0)
            ids[text] = intern(resolver.describe_workload(ep) if ep else None)
        out = seg[column].replace_strict(ids, default=-1, return_dtype=pl.Int64).to_numpy().copy()
        when = seg["conn_start"].dt.epoch("us").to_numpy() / 1e6
        column_values = seg[column]
        for text in moving:  # the pod created last before the connection started
            rows = np.flatnonzero((column_values == text).to_numpy())
            stamps, pods = resolver.inventory.timeline(_ip(text))  # type: ignore[union-attr]
            pick = np.maximum(np.searchsorted(stamps, when[rows], side="right") - 1, 0)
            info = np.array([intern(resolver.describe_workload(p)) for p in pods])
            out[rows] = info[pick]
        return np.asarray(out, dtype=np.int64)

    def _externals(self, ips: pl.Series, own: np.ndarray, preferred: pl.Series,
                   intern: Callable[[EndpointInfo | None], int],
                   domains: pl.Series | None = None) -> np.ndarray:
        """Fill the non-workload sides, once per distinct (IP, namespace of the pod at the
        other end, domains): a network set (preferring that namespace's sets; a CIDR match
        before a domain match) or ``net``."""
        rows = np.flatnonzero(own < 0)
        if not len(rows):
            return own
        names = (domains if domains is not None else
                 pl.Series([None] * len(own), dtype=pl.List(pl.String))).gather(rows)
        pairs = pl.DataFrame({"ip": ips.gather(rows), "ns": preferred.gather(rows),
                              "domains": names})
        keys = ["ip", "ns", "domains"]
        distinct = pairs.unique(maintain_order=True)
        ids = [intern(self.resolver.describe_external(_ip(ip), ns, tuple(d or ())))
               for ip, ns, d in distinct.iter_rows()]
        mapped = pairs.join(distinct.with_columns(id=pl.Series(ids, dtype=pl.Int64)),
                            on=keys, how="left", nulls_equal=True,
                            maintain_order="left")["id"].to_numpy()
        out = own.copy()
        out[rows] = mapped
        return out

    def _services(self, seg: pl.DataFrame) -> tuple[list[ServiceInfo | None], np.ndarray]:
        keys = seg.select(
            ip=pl.coalesce("orig_dst_ip", "dst_ip"), port=pl.coalesce("orig_dst_port", "dst_port"),
            proto="proto")
        distinct = keys.unique(maintain_order=True).with_row_index("sid")
        found: list[ServiceInfo | None] = [
            self.resolver.service(_ip(ip), port, proto)
            for ip, port, proto in distinct.select("ip", "port", "proto").iter_rows()]
        sid = keys.join(distinct, on=["ip", "port", "proto"], how="left", nulls_equal=True,
                        maintain_order="left")["sid"]
        return found, sid.to_numpy().astype(np.int64)

    # -- domains -------------------------------------------------------------------------

    def _domains(self, seg: pl.DataFrame, external: np.ndarray,
                 dns: pa.Table | None) -> pl.Series:
        """Names the client resolved to the destination IP, valid at the connection's start
        (for destinations that are not workloads)."""
        n = seg.height
        if dns is None or dns.num_rows == 0:
            return pl.Series("dest_domains", [None] * n, dtype=pl.List(pl.String))
        answers = pl.from_arrow(dns)
        assert isinstance(answers, pl.DataFrame)
        answers = answers.with_columns(expires=pl.col("time") + pl.duration(seconds="ttl"))
        wanted = seg.select("src_ip", "dst_ip", "conn_start").with_row_index("row").filter(
            pl.Series(external))
        matched = wanted.join(answers, left_on=["src_ip", "dst_ip"],
                              right_on=["client_ip", "ip"]).filter(
            (pl.col("time") <= pl.col("conn_start"))
            & (pl.col("conn_start") <= pl.col("expires")))
        limit = self.aggregation.domains_limit
        per_row = matched.group_by("row").agg(
            pl.col("name").unique().sort().head(limit).alias("dest_domains"))
        full = pl.DataFrame({"row": np.arange(n, dtype=np.uint32)}).join(
            per_row, on="row", how="left", maintain_order="left")
        return full["dest_domains"]

    # -- reporters and verdicts ----------------------------------------------------------

    def _reported(self, seg: pl.DataFrame, sides: _Sides, domains: pl.Series) -> pa.Table:
        """One row per (segment, reporter): ``src`` rows then ``dst`` rows."""
        is_wep = np.array([i.type == "wep" for i in sides.infos] + [False], dtype=bool)
        src_wep, dst_wep = is_wep[sides.src], is_wep[sides.dst]
        src_rows = np.flatnonzero(src_wep | ~dst_wep)
        dst_rows = np.flatnonzero(dst_wep)
        base = seg.with_columns(dest_domains=domains)
        parts = [self._side_rows(base, sides, src_rows, "src"),
                 self._side_rows(base, sides, dst_rows, "dst")]
        return pa.concat_tables(parts)

    def _side_rows(self, seg: pl.DataFrame, sides: _Sides, rows: np.ndarray,
                   reporter: str) -> pa.Table:
        s = seg[rows]
        fwd, rev = ("fwd", "rev") if reporter == "src" else ("rev", "fwd")
        out = s.select(
            "start_time", "end_time", "conn_id", "conn_start", "started", "completed",
            seg=pl.Series(rows, dtype=pl.Int64),
            source_ip="src_ip", dest_ip="dst_ip",
            source_port=pl.col("src_port").cast(pl.Int32),
            dest_port=pl.col("dst_port").cast(pl.Int32),
            proto=pl.col("proto").replace_strict(_PROTO_NAMES, default=pl.col("proto")
                                                  .cast(pl.String), return_dtype=pl.String),
            reporter=pl.lit(reporter),
            src_info=pl.Series(sides.src[rows], dtype=pl.Int64),
            dst_info=pl.Series(sides.dst[rows], dtype=pl.Int64),
            # Calico fills dest_domains on src-reported records only.
            dest_domains=pl.col("dest_domains") if reporter == "src" else
            pl.lit(None, dtype=pl.List(pl.String)),
            # bytes_out is what the reporting endpoint sent.
            bytes_out=f"bytes_{fwd}", bytes_in=f"bytes_{rev}",
            packets_out=f"packets_{fwd}", packets_in=f"packets_{rev}",
        )
        table = out.to_arrow()
        infos = sides.table
        for side, ids in (("source", sides.src[rows]), ("dest", sides.dst[rows])):
            picked = infos.take(pa.array(ids))
            for col in picked.column_names:
                table = table.append_column(f"{side}_{col}", picked[col])
        services = _service_table(sides.services).take(pa.array(sides.service[rows]))
        for col in services.column_names:
            table = table.append_column(col, services[col])
        return table

    def _decide(self, rows: pa.Table) -> pa.Table:
        """Action and trace ids; drops ``dst`` rows whose egress at a source pod denied."""
        n = rows.num_rows
        reporter = np.asarray(rows["reporter"].to_numpy(zero_copy_only=False))
        own_type = np.where(reporter == "src",
                            np.asarray(rows["source_type"].to_numpy(zero_copy_only=False)),
                            np.asarray(rows["dest_type"].to_numpy(zero_copy_only=False)))
        if self.evaluator is None:
            none = pa.array(np.full(n, -1, dtype=np.int64))
            return rows.append_column("action", pa.array(np.full(n, "allow"), pa.string())) \
                .append_column("enforced_id", none).append_column("pending_id", none)
        result = self.evaluator.evaluate(rows)
        verdict = np.asarray(result.action.dictionary.to_numpy(zero_copy_only=False),
                             dtype=object)[result.action.indices.to_numpy()]
        # "uncertain" needs facts the source lacks; the traffic itself says what happened.
        replied = np.asarray(rows["packets_in"].to_numpy()) > 0
        verdict = np.where(verdict == "uncertain", np.where(replied, "allow", "deny"), verdict)
        enforced_id, pending_id = self._trace_ids(result.enforced, result.pending)
        # Policies apply at workloads only; a record between non-workloads has no trace.
        at_workload = own_type == "wep"
        rows = rows.append_column("action", pa.array(verdict.astype(str), pa.string())) \
            .append_column("enforced_id", pa.array(
                np.where(at_workload, enforced_id[result.trace_id], -1))) \
            .append_column("pending_id", pa.array(
                np.where(at_workload, pending_id[result.trace_id], -1)))
        seg = np.asarray(rows["seg"].to_numpy())
        egress_denied = (reporter == "src") & (own_type == "wep") & (verdict == "deny")
        unreachable = np.isin(seg, seg[egress_denied]) & (reporter == "dst")
        return rows.filter(pa.array(~unreachable))

    def _trace_ids(self, enforced: list[list[str]], pending: list[list[str]]
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Per evaluated key, the id of its enforced and of its pending trace among the
        distinct traces (``self.traces``): records group by the trace, not by the key."""
        ids: dict[tuple[str, ...], int] = {}
        self.traces = []

        def intern(trace: list[str]) -> int:
            key = tuple(trace)
            if key not in ids:
                ids[key] = len(self.traces)
                self.traces.append(trace)
            return ids[key]

        return (np.array([intern(t) for t in enforced], dtype=np.int64),
                np.array([intern(t) for t in pending], dtype=np.int64))

    # -- aggregation ---------------------------------------------------------------------

    def _aggregate(self, rows: pa.Table, sides: _Sides) -> pa.Table:
        agg = self.aggregation
        df = pl.from_arrow(rows)
        assert isinstance(df, pl.DataFrame)
        level = pl.when(pl.col("action") == "allow").then(agg.allowed).otherwise(agg.denied)
        df = df.with_columns(level=level).with_columns(
            source_port=pl.when(pl.col("level") >= 1).then(None).otherwise("source_port"),
            source_ip=pl.when(pl.col("level") >= 2).then(None).otherwise("source_ip"),
            dest_ip=pl.when(pl.col("level") >= 2).then(None).otherwise("dest_ip"),
            source_name=pl.when(pl.col("level") >= 2).then(pl.lit("-")).otherwise("source_name"),
            dest_name=pl.when(pl.col("level") >= 2).then(pl.lit("-")).otherwise("dest_name"),
            dest_port=pl.when(pl.col("level") >= 3).then(None).otherwise("dest_port"),
            dest_service_port=pl.when(pl.col("level") >= 3).then(pl.lit("-"))
            .otherwise("dest_service_port"),
        ).sort("conn_start", "seg")
        key = ["start_time", "end_time", "proto", "action", "reporter", "enforced_id",
               *(f"{s}_{c}" for s in ("source", "dest")
                 for c in ("ip", "port", "type", "namespace", "name", "name_aggr")),
               "dest_service_namespace", "dest_service_name", "dest_service_port",
               "dest_service_port_num"]
        out = df.group_by(key, maintain_order=True).agg(
            pl.col("bytes_in", "bytes_out", "packets_in", "packets_out").sum(),
            num_flows=pl.col("conn_id").n_unique(),
            num_flows_started=pl.col("started").sum(),
            num_flows_completed=pl.col("completed").sum(),
            dest_domains=pl.col("dest_domains").list.explode(keep_nulls=False, empty_as_null=False)
            .unique().sort()
            .head(agg.domains_limit),
            src_infos=pl.col("src_info").unique(), dst_infos=pl.col("dst_info").unique(),
            # Felix replaces the pending trace each interval: the latest connection's stands.
            pending_id=pl.col("pending_id").last(),
        )
        return self._finish(out, sides)

    def _finish(self, out: pl.DataFrame, sides: _Sides) -> pa.Table:
        table = out.with_columns(
            dest_domains=pl.when(pl.col("dest_domains").list.len() > 0)
            .then("dest_domains").otherwise(None),
            host=pl.lit(self.host), collector=pl.lit(self.collector),
        ).drop("src_infos", "dst_infos").to_arrow()
        for side, col in (("source", "src_infos"), ("dest", "dst_infos")):
            table = table.append_column(f"{side}_labels", _labels(out[col], sides))
        if self.evaluator is not None:
            for col in ("enforced", "pending"):
                ids = table[f"{col}_id"].to_numpy()
                traces = pa.array([*self.traces, None], pa.list_(pa.string()))
                table = table.append_column(f"{col}_policies", traces.take(
                    pa.array(np.where(ids < 0, len(self.traces), ids))))
        return conform(table.sort_by([("start_time", "ascending")]))


def _labels(ids: pl.Series, sides: _Sides) -> pa.Array:
    """Per record, the labels of its one endpoint (taken columnar), or for records that
    aggregate several endpoints the labels all of them have."""
    n = ids.list.len().to_numpy()
    picked = ids.list.first().fill_null(0).to_numpy().astype(np.int64)
    multi = np.flatnonzero(n > 1)
    extra = [_common_labels(sides.infos, group) for group in ids.gather(multi).to_list()]
    picked[multi] = len(sides.infos) + np.arange(len(multi))
    base = sides.table["labels"].combine_chunks()
    more = _label_maps(extra)
    return pa.concat_arrays([base, more]).take(pa.array(picked))


def _common_labels(infos: Sequence[EndpointInfo], ids: Sequence[int]
                   ) -> tuple[tuple[str, str], ...] | None:
    """Labels every aggregated endpoint has (key and value), as Felix intersects them."""
    sets = [infos[i].labels for i in ids]
    if any(s is None for s in sets):
        return None if all(s is None for s in sets) else ()
    common = set(sets[0] or ())
    for s in sets[1:]:
        common &= set(s or ())
    return tuple(sorted(common))


def _info_table(infos: Sequence[EndpointInfo]) -> pa.Table:
    return pa.table({
        "type": pa.array([i.type for i in infos], pa.string()),
        "namespace": pa.array([i.namespace for i in infos], pa.string()),
        "name": pa.array([i.name for i in infos], pa.string()),
        "name_aggr": pa.array([i.name_aggr for i in infos], pa.string()),
        "labels": _label_maps([i.labels for i in infos]),
    })


def _label_maps(labels: Sequence[tuple[tuple[str, str], ...] | None]) -> pa.MapArray:
    """A map<string,string> array built from flat keys and values (pa.array of tuples is
    far slower)."""
    sizes = np.fromiter((len(v) if v is not None else 0 for v in labels), np.int32,
                        count=len(labels))
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    flat = [kv for v in labels if v for kv in v]
    keys = pa.array([k for k, _ in flat], pa.string())
    values = pa.array([v for _, v in flat], pa.string())
    mask = pa.array([v is None for v in labels], pa.bool_())
    return pa.MapArray.from_arrays(offsets, keys, values, mask=mask)


def _service_table(services: Sequence[ServiceInfo | None]) -> pa.Table:
    """``dest_service_*`` per service id: ``-`` and null when the destination was none."""
    return pa.table({
        "dest_service_namespace": pa.array([v.namespace if v else "-" for v in services],
                                           pa.string()),
        "dest_service_name": pa.array([v.name if v else "-" for v in services], pa.string()),
        "dest_service_port": pa.array([v.port_name if v else "-" for v in services],
                                      pa.string()),
        "dest_service_port_num": pa.array([v.port if v else None for v in services],
                                          pa.int32()),
    })


@lru_cache(maxsize=65536)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)
