"""The batch evaluator: verdicts and traces for Arrow tables of flow records.

Rows are keyed by everything the verdict can depend on — reporter, both endpoints' type,
namespace, aggregated name, labels and IP, the ports, protocol, destination domains and
service — and each distinct key is evaluated once (selectors once per distinct label set,
cached by the :class:`~policy.evaluate.Evaluator`). Keying is columnar and exact
(:mod:`policy.keys`): a hash collision can cost time, never a wrong verdict.

The input uses the flow-log columns (``reference/calico.md`` §1.2); ``reporter`` ``src``
rows are decided by egress at the source, ``dst`` rows by ingress at the destination.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from policy import keys
from policy.endpoints import Endpoint, Peer
from policy.evaluate import DirectionVerdict, Evaluator, Flow
from policy.model import Direction, NetworkSet
from policy.rules import protocol_number
from policy.walk import Flows, Walk

__all__ = ["KEY_COLUMNS", "BatchEvaluator", "BatchResult"]

_FLOW_COLUMNS = ("reporter", "proto", "dest_domains", "dest_service_namespace",
                 "dest_service_name", "source_port", "dest_port")
_SIDE = ("type", "namespace", "name", "name_aggr", "labels", "ip", "port")
KEY_COLUMNS = (
    "reporter", "proto", "dest_domains", "dest_service_namespace", "dest_service_name",
    *(f"source_{c}" for c in _SIDE), *(f"dest_{c}" for c in _SIDE),
)
# Key columns with those that usually determine others first (a pod's name, then its
# namespace and labels), which lets factorize leave the determined ones out.
_FACTORIZE_ORDER = (*(f"{side}_{c}" for side in ("source", "dest")
                      for c in ("name_aggr", "name", "namespace", "type", "labels", "ip",
                                "port")),
                    "reporter", "proto", "dest_domains", "dest_service_namespace",
                    "dest_service_name")
assert sorted(_FACTORIZE_ORDER) == sorted(KEY_COLUMNS)
_ACTIONS = ("allow", "deny", "uncertain")


EndpointLookup = Callable[[str, str], Endpoint | None]


@dataclass(frozen=True)
class BatchResult:
    """Per-row verdicts and trace ids, and the distinct traces they refer to."""

    action: pa.DictionaryArray  # allow | deny | uncertain (enforced)
    pending_action: pa.DictionaryArray
    trace_id: np.ndarray  # row → index into enforced/pending trace lists
    enforced: list[list[str]]
    pending: list[list[str]]
    keys: int  # distinct keys evaluated
    # Per distinct key, the whole enforced decision (every branch when uncertain), to tell
    # whether two policy sets decide a key alike (DirectionVerdict.outcome).
    enforced_outcomes: Sequence[object] = field(default_factory=list)

    def enforced_policies(self) -> pa.ListArray:
        return pa.array(self.enforced, type=pa.list_(pa.string())).take(pa.array(self.trace_id))

    def pending_policies(self) -> pa.ListArray:
        return pa.array(self.pending, type=pa.list_(pa.string())).take(pa.array(self.trace_id))


class BatchEvaluator:
    """Evaluate tables of flow records against one compiled policy set.

    ``endpoint_lookup(namespace, name)`` may supply what flow records lack (service account,
    named ports); without it a workload is known by its namespace and labels only.
    """

    def __init__(self, evaluator: Evaluator, endpoint_lookup: EndpointLookup | None = None,
                 namespaces: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.evaluator = evaluator
        self.lookup = endpoint_lookup
        self.namespaces = {k: tuple(sorted(v.items())) for k, v in (namespaces or {}).items()}
        self.uses = _Uses.of(evaluator)

    def evaluate(self, table: pa.Table) -> BatchResult:
        missing = [c for c in KEY_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"flow table lacks columns {', '.join(missing)} (flow-log schema)")
        enc = self._encode_all(table)
        gid, reps = keys.factorize([enc[c] for c in _FACTORIZE_ORDER])
        # Endpoint sides (type, namespace, names, labels, IP) repeat across keys: build each
        # distinct side's Endpoint once, so its label set and policy lookups are shared.
        walk = Walk(self.evaluator, self._flows(table, enc, reps))
        code = {a: i for i, a in enumerate(_ACTIONS)}
        rendered: dict[tuple[object, ...], list[str]] = {}

        def decide(pending: bool) -> tuple[np.ndarray, np.ndarray, list[list[str]],
                                           list[DirectionVerdict]]:
            ids, verdicts = walk.verdicts(pending)
            act = np.array([code[v.action or "uncertain"] for v in verdicts], dtype=np.int8)
            traces = [rendered.get(v.hits) or rendered.setdefault(v.hits, v.rendered())
                      for v in verdicts]
            return ids, act[ids], [traces[i] for i in ids.tolist()], verdicts

        ids, act, enforced, verdicts = decide(pending=False)
        outcomes = [v.outcome for v in verdicts]
        if self.evaluator.views_identical:
            pact, pending = act, enforced
        else:
            _, pact, pending, _ = decide(pending=True)
        dictionary = pa.array(_ACTIONS)
        return BatchResult(
            action=pa.DictionaryArray.from_arrays(pa.array(act[gid]), dictionary),
            pending_action=pa.DictionaryArray.from_arrays(pa.array(pact[gid]), dictionary),
            trace_id=gid, enforced=enforced, pending=pending, keys=len(reps),
            enforced_outcomes=[outcomes[i] for i in ids.tolist()],
        )

    def _encode_all(self, table: pa.Table) -> dict[str, keys.Encoded]:
        """Key codes of every key column (one thread: with label maps coded per chunk-local
        pair, a second thread no longer pays for itself)."""
        return {c: self._encode(table, c) for c in KEY_COLUMNS}

    def _encode(self, table: pa.Table, column: str) -> keys.Encoded:
        """Key codes of ``column``, coarsened where no policy can tell values apart: source
        ports when no rule has source ports, domains when nothing matches domains, and an
        IP by the network sets containing it when no rule has nets or an IP version. The
        evaluation still sees each group's real representative row, so this is exact."""
        uses = self.uses
        if column == "source_port" and not uses.source_ports:
            return keys.encode(pa.nulls(table.num_rows, pa.int32()))
        if column == "dest_domains" and not uses.domains:
            return keys.encode(pa.nulls(table.num_rows, pa.int32()))
        if column.endswith("_ip") and not uses.ips:
            return keys.encode(self._membership(table[column]))
        if column in ("source_name", "dest_name"):
            if self.lookup is None:  # a name tells nothing beyond the other columns
                return keys.encode(pa.nulls(table.num_rows, pa.int32()))
            return keys.encode(self._profiles(table, column.removesuffix("_name")))
        return keys.encode(table[column])

    def _profiles(self, table: pa.Table, side: str) -> pa.Array:
        """Per row, an id of what the pod's name tells the evaluator beyond the other key
        columns: the service account and named ports the look-up gives (nothing without a
        look-up, nothing for a non-pod). Pods alike in these share keys."""
        cols = [keys.encode(table[f"{side}_{c}"]) for c in ("type", "namespace", "name",
                                                          "name_aggr")]
        gid, reps = keys.factorize(cols)
        rows = _rows(table, [f"{side}_{c}" for c in ("type", "namespace", "name", "name_aggr")],
                     reps)
        ids: dict[object, int] = {}
        per_rep = np.fromiter((ids.setdefault(self._profile(side, r), len(ids)) for r in rows),
                              dtype=np.int64, count=len(rows))
        return pa.array(per_rep[gid])

    def _profile(self, side: str, row: Mapping[str, object]) -> object:
        if self.lookup is None or row[f"{side}_type"] != "wep":
            return None
        name = str(row[f"{side}_name"] or "-")
        known = self.lookup(str(row[f"{side}_namespace"] or "-"),
                            name if name != "-" else str(row[f"{side}_name_aggr"] or "-"))
        if known is None:
            return None
        return (known.service_account, known.service_account_labels, known.named_ports)

    def _membership(self, ips: pa.ChunkedArray) -> pa.Array:
        """Per row, an id of the set of network sets containing its IP (null stays null)."""
        encoded = pc.dictionary_encode(ips).combine_chunks()
        sets = self.evaluator.network_sets
        ids: dict[tuple[int, ...], int] = {}
        per_value = np.fromiter(
            (ids.setdefault(_containing(sets, ip), len(ids))
             for ip in encoded.dictionary.to_pylist()), dtype=np.int64,
            count=len(encoded.dictionary))
        return pa.array(per_value).take(encoded.indices)

    def _sides(self, table: pa.Table, enc: Mapping[str, keys.Encoded], reps: np.ndarray,
               side: str) -> tuple[list[Peer], np.ndarray]:
        """The distinct port-less Peers of one side of the keys, and each key's."""
        cols = [f"{side}_{c}" for c in _SIDE if c != "port"]
        if all(enc[c].entries is None for c in cols):  # exact codes: group on them
            inverse, first = keys.factorize([keys.Encoded(
                enc[c].codes[reps], cardinality=enc[c].cardinality, constant=enc[c].constant)
                for c in cols])
        else:
            stacked = np.stack([enc[c].codes[reps] for c in cols], axis=1)
            _, first, inverse = np.unique(stacked, axis=0, return_index=True,
                                          return_inverse=True)
            inverse = inverse.reshape(-1)
            # Label maps are compared by fingerprint above; confirm exactly, else keep apart.
            if not all(keys.same_rows(enc[c], reps, reps[first[inverse]]).all() for c in cols):
                first, inverse = np.arange(len(reps)), np.arange(len(reps))
        values = _rows(table, cols, reps[first])
        return [self._peer(row, side, frozenset(), frozenset()) for row in values], inverse

    def _flows(self, table: pa.Table, enc: Mapping[str, keys.Encoded],
               reps: np.ndarray) -> Flows:
        """The keys as the walk takes them, built column by column: the distinct ported
        peers (a source peer is its side and source port; a destination peer its side, port,
        domains and service) once each, and per key their ids, protocol and direction."""
        taken = pa.array(reps, type=pa.int64())

        def codes(column: str) -> tuple[np.ndarray, list[object]]:
            return _codes(table[column].take(taken))

        src_sides, src_side = self._sides(table, enc, reps, "source")
        dst_sides, dst_side = self._sides(table, enc, reps, "dest")
        domains = np.zeros(len(reps), dtype=np.int64)
        if self.uses.domains:  # else no policy looks at them: any row's will do
            seen: dict[tuple[object, ...], int] = {}
            domains = np.fromiter(
                (seen.setdefault(tuple(_items(v)), len(seen))
                 for v in table["dest_domains"].take(taken).to_pylist()),
                dtype=np.int64, count=len(reps))
        src, src_first = _factorize(src_side, codes("source_port")[0])
        dst, dst_first = _factorize(dst_side, codes("dest_port")[0], domains,
                                    codes("dest_service_namespace")[0],
                                    codes("dest_service_name")[0])
        src_rows = _rows(table, _FLOW_COLUMNS, reps[src_first])
        dst_rows = _rows(table, _FLOW_COLUMNS, reps[dst_first])
        src_peers = [self._src_peer(row, src_sides[i]) for row, i in
                     zip(src_rows, src_side[src_first].tolist(), strict=True)]
        dst_peers = [self._dst_peer(row, dst_sides[i]) for row, i in
                     zip(dst_rows, dst_side[dst_first].tolist(), strict=True)]
        proto, protos = codes("proto")
        reporter, reporters = codes("reporter")
        ingress = np.array([_direction(r) is Direction.INGRESS for r in reporters],
                           dtype=np.bool_)
        return Flows(ingress[reporter], src, dst, proto, src_peers, dst_peers,
                     [_proto(p) for p in protos])

    @staticmethod
    def _src_peer(row: Mapping[str, object], side: Peer) -> Peer:
        return Peer(side.endpoint, side.ip, row.get("source_port"),  # type: ignore[arg-type]
                    side.domains, side.services, side.network_set_names)

    @staticmethod
    def _dst_peer(row: Mapping[str, object], side: Peer) -> Peer:
        domains = frozenset(str(d).lower() for d in _items(row.get("dest_domains")))
        svc = (row.get("dest_service_namespace"), row.get("dest_service_name"))
        services = frozenset() if "-" in svc or None in svc else frozenset({svc})
        return Peer(side.endpoint, side.ip, row.get("dest_port"), domains,  # type: ignore[arg-type]
                    services, side.network_set_names)  # type: ignore[arg-type]

    def peer(self, row: Mapping[str, object], side: str) -> Peer:
        """The port-less peer of one endpoint side (``source``/``dest``) of a flow-log row:
        its workload endpoint as the policies see it, or its network set, or just an IP."""
        return self._peer(row, side, frozenset(), frozenset())

    def _flow(self, row: Mapping[str, object], src: Peer, dst: Peer) -> Flow:
        return Flow(self._src_peer(row, src), self._dst_peer(row, dst), _proto(row.get("proto")))

    def evaluate_row(self, row: Mapping[str, object]) -> tuple[DirectionVerdict,
                                                                DirectionVerdict]:
        """The per-row reference path: enforced and pending verdicts of one flow-log row."""
        flow = self.flow(row)
        direction = _direction(row["reporter"])
        ev = self.evaluator
        return (ev.direction(flow, direction, pending=False),
                ev.direction(flow, direction, pending=True))

    def flow(self, row: Mapping[str, object]) -> Flow:
        """A flow-log row (dict of the flow-log columns) as an evaluator Flow."""
        return self._flow(row, self.peer(row, "source"), self.peer(row, "dest"))

    def _peer(self, row: Mapping[str, object], side: str, domains: frozenset[str],
              services: frozenset[tuple[str, str]]) -> Peer:
        get = row.get
        ip_text = get(f"{side}_ip")
        ip = ipaddress.ip_address(str(ip_text)) if ip_text else None
        port = get(f"{side}_port")
        kind, ns = get(f"{side}_type"), str(get(f"{side}_namespace") or "-")
        name = str(get(f"{side}_name") or "-")
        aggr = str(get(f"{side}_name_aggr") or "-")
        if kind == "wep":
            ep = self._endpoint(ns, name if name != "-" else aggr, get(f"{side}_labels"))
            return Peer(ep, ip, port, domains, services)  # type: ignore[arg-type]
        if kind == "ns":
            identity = aggr if ns == "-" else f"{ns}/{aggr}"
            return Peer(None, ip, port, domains, services,  # type: ignore[arg-type]
                        network_set_names=(identity,))
        return Peer(None, ip, port, domains, services)  # type: ignore[arg-type]

    def _endpoint(self, ns: str, name: str, labels: object) -> Endpoint:
        pairs = tuple(sorted(_label_pairs(labels)))
        known = self.lookup(ns, name) if self.lookup else None
        if known is not None:
            return Endpoint(ns, name, pairs, known.service_account, known.namespace_labels,
                            known.service_account_labels, known.named_ports, known.ips,
                            known.generate_name)
        return Endpoint(ns, name, pairs, service_account=None,
                        namespace_labels=self.namespaces.get(ns, ()))


@dataclass(frozen=True)
class _Uses:
    """Which flow facts any policy of the set (enforced or staged) can look at."""

    source_ports: bool
    domains: bool
    ips: bool  # beyond network-set membership: nets/notNets rules, ipVersion

    @classmethod
    def of(cls, evaluator: Evaluator) -> _Uses:
        rules = [r for p in evaluator.policy_set.policies
                 for r in (*p.ingress, *p.egress)]
        return cls(
            source_ports=any(r.source.ports or r.source.not_ports for r in rules),
            domains=any(r.destination.domains or r.source.domains for r in rules)
            or any(s.allowed_egress_domains for s in evaluator.policy_set.network_sets),
            ips=any(r.ip_version is not None or e.nets or e.not_nets
                    for r in rules for e in (r.source, r.destination)),
        )


def _rows(table: pa.Table, columns: Sequence[str], rows: np.ndarray) -> list[dict[str, object]]:
    """``table.select(columns).take(rows).to_pylist()``, with dictionary columns decoded
    once per dictionary value rather than once per row (several times faster)."""
    taken = pa.array(rows, type=pa.int64())
    values = [_pylist(table[c].take(taken)) for c in columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[object]]:
    """Per element, an index into the returned distinct values (null among them)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    encoded = pc.dictionary_encode(column.combine_chunks(), null_encoding="encode")
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            encoded.dictionary.to_pylist())


def _factorize(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group ids of equal tuples of small integer codes, and a member of each group."""
    return keys.factorize([keys.Encoded(c.astype(np.uint64), cardinality=int(c.max()) + 1
                                        if len(c) else 1) for c in columns])


def _pylist(column: pa.ChunkedArray) -> list[object]:
    if not pa.types.is_dictionary(column.type):
        return column.to_pylist()  # type: ignore[no-any-return]
    array = column.combine_chunks()
    words = array.dictionary.to_pylist()
    if array.null_count:
        return [None if i is None else words[i] for i in array.indices.to_pylist()]
    return [words[i] for i in array.indices.to_numpy(zero_copy_only=False).tolist()]


def _containing(sets: tuple[NetworkSet, ...], ip: object) -> tuple[int, ...]:
    if ip is None:
        return (-1,)
    address = ipaddress.ip_address(str(ip))
    return tuple(i for i, s in enumerate(sets) if any(address in n for n in s.nets))


@lru_cache(maxsize=256)
def _proto(proto: object) -> int | None:
    """Flow-log ``proto`` (``tcp``, ``icmp6``, ``"47"``) as a protocol number."""
    if proto is None:
        return None
    return protocol_number(str(proto).upper()) or {"ICMP6": 58}.get(str(proto).upper())


def _items(value: object) -> Iterable[object]:
    return value if isinstance(value, list | tuple) else ()


def _label_pairs(labels: object) -> Iterable[tuple[str, str]]:
    if labels is None:
        return ()
    if isinstance(labels, Mapping):
        return labels.items()
    return ((str(k), str(v)) for k, v in labels)  # type: ignore[attr-defined]


def _direction(reporter: object) -> Direction:
    """``dst`` and ``dst,fwd`` records are decided by ingress, ``src`` and ``src,fwd`` by
    egress (``reference/calico.md`` §1.6)."""
    return Direction.INGRESS if str(reporter).startswith("dst") else Direction.EGRESS
