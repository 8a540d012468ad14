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
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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

__all__ = ["KEY_COLUMNS", "BatchEvaluator", "BatchResult"]

_FLOW_COLUMNS = ("reporter", "proto", "dest_domains", "dest_service_namespace",
                 "dest_service_name", "source_port", "dest_port")
_SIDE = ("type", "namespace", "name", "name_aggr", "labels", "ip", "port")
KEY_COLUMNS = (
    "reporter", "proto", "dest_domains", "dest_service_namespace", "dest_service_name",
    *(f"source_{c}" for c in _SIDE), *(f"dest_{c}" for c in _SIDE),
)
_ACTIONS = ("allow", "deny", "uncertain")
_THREADS = min(2, os.cpu_count() or 1)

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
        gid, reps = keys.factorize(list(enc.values()))
        # Endpoint sides (type, namespace, names, labels, IP) repeat across keys: build each
        # distinct side's Endpoint once, so its label set and policy lookups are shared.
        peers = {side: self._sides(table, enc, reps, side) for side in ("source", "dest")}
        rows = _rows(table, _FLOW_COLUMNS, reps)
        act = np.empty(len(reps), dtype=np.int8)
        pact = np.empty(len(reps), dtype=np.int8)
        enforced, pending, outcomes = [], [], []
        rendered: dict[tuple[object, ...], list[str]] = {}
        same_views = self.evaluator.views_identical
        code = {a: i for i, a in enumerate(_ACTIONS)}
        flows = self._flows(rows, peers["source"], peers["dest"])
        for k, (row, flow) in enumerate(zip(rows, flows, strict=True)):
            direction = _direction(row["reporter"])
            e = self.evaluator.direction(flow, direction, pending=False)
            p = e if same_views else self.evaluator.direction(flow, direction, pending=True)
            act[k] = code[e.action or "uncertain"]
            pact[k] = code[p.action or "uncertain"]
            trace = rendered.get(e.hits) or rendered.setdefault(e.hits, e.rendered())
            enforced.append(trace)
            outcomes.append(e.outcome)
            pending.append(trace if p is e else
                           rendered.get(p.hits) or rendered.setdefault(p.hits, p.rendered()))
        dictionary = pa.array(_ACTIONS)
        return BatchResult(
            action=pa.DictionaryArray.from_arrays(pa.array(act[gid]), dictionary),
            pending_action=pa.DictionaryArray.from_arrays(pa.array(pact[gid]), dictionary),
            trace_id=gid, enforced=enforced, pending=pending, keys=len(reps),
            enforced_outcomes=outcomes,
        )

    def _encode_all(self, table: pa.Table) -> dict[str, keys.Encoded]:
        """Key codes of every key column. numpy and Arrow release the GIL on the bulk
        passes, so columns are encoded on two threads, the costly label maps first so that
        they run side by side; the endpoint look-up is the caller's code and may not be
        thread-safe, so the columns that call it are encoded on this thread meanwhile."""
        here = ("source_name", "dest_name") if self.lookup is not None else ()
        order = sorted((c for c in KEY_COLUMNS if c not in here),
                       key=lambda c: not c.endswith("_labels"))
        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            threaded = pool.map(lambda c: self._encode(table, c), order)
            encoded = {c: self._encode(table, c) for c in here}
            encoded.update(zip(order, threaded, strict=True))
        return {c: encoded[c] for c in KEY_COLUMNS}

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
               side: str) -> list[Peer]:
        """One port-less Peer per representative row, shared between equal sides."""
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
        distinct = [self._peer(row, side, frozenset(), frozenset()) for row in values]
        return [distinct[i] for i in inverse]

    def _flows(self, rows: Sequence[Mapping[str, object]], src: Sequence[Peer],
               dst: Sequence[Peer]) -> Iterator[Flow]:
        """Per key, the flow :meth:`_flow` builds, with the ported peers shared between keys
        (a source peer is its side and source port; a destination peer its side, port,
        domains and service)."""
        sources: dict[tuple[int, object], Peer] = {}
        dests: dict[tuple[object, ...], Peer] = {}
        for row, s, d in zip(rows, src, dst, strict=True):
            domains = tuple(_items(row["dest_domains"]))
            skey = (id(s), row["source_port"])
            dkey = (id(d), row["dest_port"], domains, row["dest_service_namespace"],
                    row["dest_service_name"])
            sp, dp = sources.get(skey), dests.get(dkey)
            if sp is None or dp is None:
                flow = self._flow(row, s, d)
                sp = sources.setdefault(skey, flow.src)
                dp = dests.setdefault(dkey, flow.dst)
            yield Flow(sp, dp, _proto(row["proto"]))

    def peer(self, row: Mapping[str, object], side: str) -> Peer:
        """The port-less peer of one endpoint side (``source``/``dest``) of a flow-log row:
        its workload endpoint as the policies see it, or its network set, or just an IP."""
        return self._peer(row, side, frozenset(), frozenset())

    def _flow(self, row: Mapping[str, object], src: Peer, dst: Peer) -> Flow:
        domains = frozenset(str(d).lower() for d in _items(row.get("dest_domains")))
        svc = (row.get("dest_service_namespace"), row.get("dest_service_name"))
        services = frozenset() if "-" in svc or None in svc else frozenset({svc})
        return Flow(
            Peer(src.endpoint, src.ip, row.get("source_port"), src.domains,  # type: ignore[arg-type]
                 src.services, src.network_set_names),
            Peer(dst.endpoint, dst.ip, row.get("dest_port"), domains,  # type: ignore[arg-type]
                 services, dst.network_set_names),  # type: ignore[arg-type]
            _proto(row.get("proto")))

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
