"""The proof: replay the records a recommendation was built from through the evaluator, with
the existing policies in front and the recommendation enforced.

Staged documents are promoted to their enforced kind first (reference/calico.md §6:
"promotion ... copies the spec"), replacing an existing policy of the same name; tiers the
recommendation brings are added. Every record must stay allowed; the ones that do not are
listed with their trace, whose last hit is the one that decided.

Aggregated records carry no IP, so a rule with ``nets`` (or a Kubernetes ``ipBlock``) cannot
be decided for them: the evaluator says *uncertain*. The record still says where the address
was: in a ``pvt`` block (or on a host, assumed private), or in a named network set. The replay
then tries one address of each of those blocks (each RFC 1918 block; each CIDR of the set)
and counts the record as allowed, "by representative address", only when every one is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.inventory import Inventory
from policy import Document, Evaluator, NetworkSet, Policy, PolicySet, Tier
from policy.batch import BatchEvaluator

__all__ = ["Failure", "Proof", "enforced_set", "replay"]

REPRESENTATIVE_PRIVATE = ("10.0.0.1", "172.16.0.1", "192.168.0.1")


@dataclass(frozen=True, slots=True, order=True)
class Failure:
    """Observed traffic the recommendation would not allow, with the deciding trace."""

    namespace: str
    workload: str
    direction: str
    peer: str
    proto: str
    port: int | None
    domains: tuple[str, ...]
    action: str  # deny | uncertain
    trace: tuple[str, ...]
    records: int = 0
    connections: int = 0

    @property
    def deciding(self) -> str:
        return self.trace[-1] if self.trace else "(no trace)"

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        names = f" ({', '.join(self.domains)})" if self.domains else ""
        return (f"{self.direction} {self.namespace}/{self.workload} "
                f"{'->' if self.direction == 'egress' else '<-'} {self.peer}{names} "
                f"{self.proto}{port}: {self.action} by {self.deciding} "
                f"({self.connections} connection(s) in {self.records} record(s))")


@dataclass(frozen=True, slots=True)
class Proof:
    records: int
    connections: int
    allowed_records: int
    allowed_connections: int
    representative: int  # records allowed only by representative addresses (no IP)
    failures: tuple[Failure, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        pct = 100.0 if not self.connections else \
            100.0 * self.allowed_connections / self.connections
        return (f"replay: {self.allowed_connections} of {self.connections} observed "
                f"connection(s) stay allowed ({pct:.1f} %), {self.allowed_records} of "
                f"{self.records} record(s)"
                + (f", {self.representative} by representative address"
                   if self.representative else ""))


def enforced_set(existing: PolicySet, documents: Iterable[Document]) -> PolicySet:
    """``existing`` with the recommended documents enforced: staged kinds promoted, same-name
    policies replaced, new tiers added."""
    promoted: list[Policy] = []
    tiers = {t.name: t for t in existing.tiers}
    for doc in documents:
        if isinstance(doc, Tier):
            tiers.setdefault(doc.name, doc)
        elif isinstance(doc, Policy):
            promoted.append(replace(doc, kind=doc.kind.enforced, staged_action=None)
                            if doc.staged else doc)
    keys = {p.key for p in promoted}
    policies = [p for p in existing.policies if p.key not in keys] + promoted
    return replace(existing.with_policies(policies),
                   tiers=tuple(sorted(tiers.values(), key=Tier.sort_key)))


def replay(records: pa.Table, policy_set: PolicySet,
           inventory: Inventory | None = None) -> Proof:
    """Evaluate ``records`` (recommend/sql/records.sql) against ``policy_set``.

    A row stands for ``records`` identical records (1 without that column, as for rows of
    the flow log itself) with ``num_flows`` connections in all: each distinct record is
    evaluated once, and the proof counts what it stands for."""
    inventory = inventory or Inventory()
    batch = BatchEvaluator(Evaluator(policy_set, inventory.namespaces),
                           lambda ns, name: inventory.endpoint(f"{ns}/{name}"),
                           inventory.namespaces)
    if records.num_rows == 0:
        return Proof(0, 0, 0, 0, 0, ())
    result = batch.evaluate(records)
    # Columnar: only the rows that are not allowed are looked at one by one.
    codes = result.action.indices.to_numpy(zero_copy_only=False)
    names = result.action.dictionary.to_pylist()
    not_allowed = np.flatnonzero(codes != names.index("allow")).tolist()
    actions = {i: names[codes[i]] for i in not_allowed}
    sets = {s.identity: s for s in policy_set.network_sets}
    retry = {i: _addresses(records, i, sets) for i in not_allowed
             if actions[i] == "uncertain"}
    rescued = _representative(batch, records, {i: a for i, a in retry.items() if a})
    failing = [i for i in not_allowed if i not in rescued]
    traces = {i: tuple(result.enforced[result.trace_id[i]]) for i in failing}
    weights, flows = _weights(records)
    total, connections = int(weights.sum()), int(flows.sum())
    return Proof(total, connections, total - int(weights[failing].sum()),
                 connections - int(flows[failing].sum()), int(weights[sorted(rescued)].sum()),
                 _failures(records, failing, actions, traces, weights, flows))


def _weights(records: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per row, how many records it stands for and their connections (null: none)."""
    counts = (pc.fill_null(records["records"], 0).to_numpy()
              if "records" in records.column_names else np.ones(records.num_rows))
    flows = pc.fill_null(records["num_flows"], 0).to_numpy()
    return counts.astype(np.int64), flows.astype(np.int64)


def _addresses(records: pa.Table, i: int, sets: Mapping[str, NetworkSet]) -> tuple[str, ...]:
    """Representative addresses for row ``i``'s remote end when the record has no IP."""
    side = "dest" if records["reporter"][i].as_py() == "src" else "source"
    if records[f"{side}_ip"][i].as_py() is not None:
        return ()
    kind, ns, name = (records[f"{side}_{c}"][i].as_py() for c in ("type", "namespace",
                                                                   "name_aggr"))
    if kind == "hep" or (kind == "net" and name == "pvt"):
        return REPRESENTATIVE_PRIVATE
    found = sets.get(name if ns in (None, "-") else f"{ns}/{name}") if kind == "ns" else None
    return tuple(str(next(iter(n.hosts()), n.network_address)) for n in found.nets) \
        if found else ()


def _representative(batch: BatchEvaluator, records: pa.Table,
                    addresses: Mapping[int, tuple[str, ...]]) -> set[int]:
    """Rows allowed for every one of their representative addresses."""
    by_addresses: dict[tuple[str, ...], list[int]] = {}
    for row, candidates in addresses.items():
        by_addresses.setdefault(candidates, []).append(row)
    out = set()
    for candidates, rows in by_addresses.items():
        subset = records.take(pa.array(rows))
        ok = [True] * len(rows)
        for address in candidates:
            allowed = batch.evaluate(_with_remote_ip(subset, address)).action.to_pylist()
            ok = [o and a == "allow" for o, a in zip(ok, allowed, strict=True)]
        out |= {r for r, o in zip(rows, ok, strict=True) if o}
    return out


def _with_remote_ip(table: pa.Table, address: str) -> pa.Table:
    for side, reporter in (("dest", "src"), ("source", "dst")):
        col = f"{side}_ip"
        mine = pc.equal(table["reporter"], reporter)
        filled = pc.if_else(mine, pa.scalar(address), table[col])
        table = table.set_column(table.schema.get_field_index(col), col, filled)
    return table


def _failures(records: pa.Table, rows: Sequence[int], actions: Mapping[int, str],
              traces: Mapping[int, tuple[str, ...]], weights: np.ndarray,
              flows: np.ndarray) -> tuple[Failure, ...]:
    grouped: dict[Failure, tuple[int, int]] = {}
    for i in rows:
        row = {c: records[c][i].as_py() for c in _COLUMNS}
        failure = _failure(row, actions[i], traces[i])
        counted, connections = grouped.get(failure, (0, 0))
        grouped[failure] = (counted + int(weights[i]), connections + int(flows[i]))
    return tuple(sorted(replace(f, records=n, connections=c)
                        for f, (n, c) in grouped.items()))


_COLUMNS = ("direction", "local_namespace", "local_workload", "source_type",
            "source_namespace", "source_name_aggr", "dest_type", "dest_namespace",
            "dest_name_aggr", "proto", "dest_port", "dest_domains")


def _failure(row: Mapping[str, object], action: str, trace: tuple[str, ...]) -> Failure:
    side = "dest" if row["direction"] == "egress" else "source"
    kind, ns, name = (str(row[f"{side}_{c}"]) for c in ("type", "namespace", "name_aggr"))
    peer = name if kind == "net" or ns == "-" else f"{ns}/{name}"
    domains = row["dest_domains"] if row["direction"] == "egress" else None
    return Failure(str(row["local_namespace"]), str(row["local_workload"]),
                   str(row["direction"]), peer, str(row["proto"]),
                   row["dest_port"],  # type: ignore[arg-type]
                   tuple(sorted(domains or ())),  # type: ignore[call-overload]
                   action, trace)
