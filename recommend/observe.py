"""What recommendation learns from: allowed flows no policy decided, per workload and peer.

Following Calico's recommender (reference/calico.md §7.3 steps 1-2): records that are
``allow``, inside the window, whose enforced trace holds a profile hit (``__PROFILE__``: no
policy decided them); egress records reported by a source workload of the namespace,
ingress records reported by a destination workload of the namespace (reporters ``src,fwd``
and ``dst,fwd`` count at their reporting end). Calico reads the *pending* trace; this reads
the enforced one so that re-running recommendation after staging its output learns the same
rules instead of an empty set.

The SQL lives in ``recommend/sql/``. The records are grouped once by every column the plan
and the replay read (``groups.sql``), and the observations and the replay's records are both
read from those groups, so :func:`traffic` scans the store once. It is run by an injected
``query(sql, parameters)``, in practice ``functools.partial(analytics.db.query,
analytics.db.connect(store))``, so that recommendation never opens the store itself and only
``analytics`` touches DuckDB.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import pyarrow as pa

from analytics.window import Window
from recommend.model import Observation, PeerRef

__all__ = ["Query", "observations", "records", "traffic", "workload_key"]

# analytics.db.query bound to a connection: SQL text and bound parameters in, Arrow out.
Query = Callable[[str, dict[str, object] | None], pa.Table]

# A CronJob's Job pods are named <cronjob>-<scheduled minute since the epoch>-<random>, so
# every run has its own prefix; recommendation treats the runs as one workload.
_CRONJOB_RUN = re.compile(r"^(?P<base>.+)-\d{8,}-\*$")


@cache
def _sql(name: str) -> str:
    return resources.files("recommend").joinpath("sql", f"{name}.sql").read_text()


def _grouped(query: Query, window: Window, namespace: str | None, workload: str | None,
             *names: str) -> list[pa.Table]:
    """The results of queries ``names``, each over one grouping of the store's records
    (groups.sql): the flows are scanned once however many queries read the groups."""
    query(_sql("macros"), None)
    params: dict[str, object] = {**window.parameters(), "namespace": namespace,
                                 "workload": workload}
    query(_sql("groups"), params)
    try:
        return [query(_sql(name), None) for name in names]
    finally:
        query(_sql("drop_groups"), None)


def workload_key(name_aggr: str) -> str:
    """The workload a ``name_aggr`` belongs to: itself, or for a CronJob's run
    (``backup-28712345-*``) the CronJob's prefix (``backup-*``)."""
    m = _CRONJOB_RUN.match(name_aggr)
    return f"{m.group('base')}-*" if m else name_aggr


def traffic(query: Query, window: Window, namespace: str | None = None,
            workload: str | None = None) -> tuple[list[Observation], pa.Table]:
    """:func:`observations` and :func:`records` from one scan of the store."""
    observed, grouped = _grouped(query, window, namespace, workload, "observed", "records")
    return _sorted(observed), grouped


def observations(query: Query, window: Window, namespace: str | None = None,
                 workload: str | None = None) -> list[Observation]:
    """The observed traffic of the namespace (every namespace when ``None``), optionally only
    of workloads whose replica-set prefix starts with ``workload``, in a stable order."""
    return _sorted(*_grouped(query, window, namespace, workload, "observed"))


def records(query: Query, window: Window, namespace: str | None = None,
            workload: str | None = None) -> pa.Table:
    """The flow-log records behind :func:`observations`, for the replay proof: one row per
    distinct record (as the evaluator and the failure report see it), with ``records``, how
    many records it stands for, and ``num_flows``, their connections: twelve identical
    records of ``web`` to ``api`` on 8080 are one row with ``records`` 12."""
    [table] = _grouped(query, window, namespace, workload, "records")
    return table


def _sorted(observed: pa.Table) -> list[Observation]:
    return sorted((_observation(r) for r in observed.to_pylist()), key=Observation.sort_key)


def _observation(row: Mapping[str, Any]) -> Observation:
    service = (row["service_namespace"], row["service_name"])
    return Observation(
        direction=row["direction"], namespace=row["namespace"],
        workload=workload_key(row["workload"]),
        peer=PeerRef(row["peer_type"] or "net", row["peer_namespace"] or "-",
                     row["peer_name_aggr"] or "-"),
        proto=str(row["proto"]), port=row["dest_port"],
        domains=tuple(d.lower() for d in row["domains"] or ()),
        service=None if None in service or "-" in service else service,
        local_labels=_label_sets(row["local_labels"]),
        peer_labels=_label_sets(row["peer_labels"]),
        peer_ips=tuple(row["peer_ips"] or ()),
        connections=int(row["connections"] or 0), bytes=int(row["bytes"] or 0),
        packets=int(row["packets"] or 0), records=int(row["records"] or 0),
        first_seen=row["first_seen"], last_seen=row["last_seen"],
    )


def _label_sets(value: Iterable[Any] | None) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Distinct label maps (Arrow gives a map as a list of pairs), sorted; null maps skipped."""
    out = set()
    for labels in value or ():
        if labels is None:
            continue
        pairs = labels.items() if isinstance(labels, Mapping) else labels
        out.add(tuple(sorted((str(k), str(v)) for k, v in pairs)))
    return tuple(sorted(out))
