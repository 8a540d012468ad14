"""Policy impact preview on recorded history (``reference/calico.md`` §8), and the
re-evaluation behind ``stats --staged``.

:func:`preview` re-evaluates the recorded flows of a window under the policies in force
("before") and with the changes applied ("after"), as Calico's Policy Impact Preview does:

* each record is decided where it was reported: a ``src`` record by egress at the source, a
  ``dst`` record by ingress at the destination;
* records are summed per distinct evaluation key first (``sql/preview_records.sql``), so the
  evaluator sees each key once whatever the window's size;
* only keys whose reporting endpoint one of the changed policies (before or after) selects
  are evaluated twice; every other key walks the same policies with the same inputs on both
  sides, so it cannot change (:mod:`policy.changes`); a Tier or network-set change makes
  every key impacted;
* when a source's egress turns from deny to allow, the connection would now reach the
  destination: a ``dst`` record is synthesised and decided by the destination's ingress
  under the changed policies; when it turns from allow to deny, the destination's records of
  that flow would no longer exist: they are shown denied at the source;
* a verdict the record cannot decide (a ``nets`` rule and a record without IPs, a named port
  without the pod) is ``uncertain`` — never guessed.

The result has one row per visible flow (reporter, both ends, protocol, port, service) and
outcome, with connection, packet and byte counts, first and last seen, and the traces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from analytics.db import query, sql_text
from analytics.window import Window
from ingest.inventory import Inventory
from policy import Evaluator, HitSyntaxError, PolicySet, parse_hit
from policy import keys as keycodes
from policy.batch import KEY_COLUMNS, BatchEvaluator
from policy.changes import AppliedChange, Changed
from policy.compile import compile_policy
from policy.model import Direction

__all__ = ["CHANGES", "Preview", "evaluation_input", "preview", "reevaluate"]

#: Outcome of a flow, most serious first.
CHANGES = ("allow-to-deny", "uncertain", "deny-to-allow", "unchanged")
_SIDE = ("type", "namespace", "name", "name_aggr", "labels")
_SUMS = ("records", "connections", "packets_in", "packets_out", "bytes_in", "bytes_out")
_VISIBLE = ("reporter", "source_type", "source_namespace", "source_name_aggr", "dest_type",
            "dest_namespace", "dest_name_aggr", "dest_service_namespace", "dest_service_name",
            "proto", "dest_port")


@dataclass(frozen=True)
class Preview:
    """The flows of the window with their verdicts before and after the changes."""

    flows: pa.Table  # one row per visible flow and outcome; see module doc
    changes: tuple[AppliedChange, ...]
    records: int  # records in the window read (all of it, unless only_changed pruned it)
    keys: int  # distinct evaluation keys
    impacted: int  # keys a changed policy selects (evaluated before and after)
    synthesised: int  # destination records synthesised for newly allowed egress

    def changed(self) -> pa.Table:
        """Only the flows whose verdict changes or cannot be decided."""
        return self.flows.filter(pc.not_equal(self.flows["change"], "unchanged"))

    def totals(self) -> dict[str, dict[str, int]]:
        """Per outcome: flows, records, connections, packets, bytes."""
        out: dict[str, dict[str, int]] = {c: dict.fromkeys(
            ("flows", "records", "connections", "packets", "bytes"), 0) for c in CHANGES}
        for row in self.flows.select(["change", "records", "connections", "packets",
                                      "bytes"]).to_pylist():
            t = out[row["change"]]
            t["flows"] += 1
            for k in ("records", "connections", "packets", "bytes"):
                t[k] += row[k] or 0
        return out

    def allow_to_deny(self) -> int:
        """Flows that were allowed — as recorded, or before the change — and would be
        denied, or might be (uncertain): what ``--fail-on allow-to-deny`` gates on."""
        rows = self.changed().select(["change", "recorded_action", "before", "after"])
        return sum(1 for r in rows.to_pylist()
                   if r["change"] == "allow-to-deny"
                   or (r["after"] in ("deny", "uncertain")
                       and "allow" in (r["recorded_action"], r["before"])))


def evaluation_input(con: duckdb.DuckDBPyConnection, window: Window,
                     namespaces: Sequence[str] | None = None, *,
                     recorded_pending: bool = True) -> pa.Table:
    """The window's records summed per evaluation key (``sql/preview_records.sql``); with
    ``namespaces``, only records with an end in one of them. Without ``recorded_pending``
    (which only :func:`reevaluate` reads) records are not told apart by their recorded
    pending trace, and the column is null: fewer groups, and a quarter less time."""
    params = {**window.parameters(), "pruned": namespaces is not None,
              "namespaces": list(namespaces or []), "with_pending": recorded_pending}
    return query(con, sql_text("preview_records"), params)  # type: ignore[arg-type]


def _namespaces(changed: Changed) -> list[str] | None:
    """The namespaces whose records a change can touch, when only namespaced policies
    change (a namespaced policy selects endpoints of its own namespace only; the destination
    records of their flows have the source's namespace): else None, every record."""
    if changed.everything or any(p.namespace is None for p in changed.impacting):
        return None
    return sorted({str(p.namespace) for p in changed.impacting})


def _batch(policy_set: PolicySet, inventory: Inventory) -> BatchEvaluator:
    return BatchEvaluator(Evaluator(policy_set, inventory.namespaces),
                          lambda ns, name: inventory.endpoint(f"{ns}/{name}"),
                          inventory.namespaces)


def _enforced_only(policy_set: PolicySet) -> PolicySet:
    """Staged policies never set a verdict: leave them out, so one walk per key suffices."""
    return policy_set.with_policies(policy_set.enforced())


def preview(con: duckdb.DuckDBPyConnection, window: Window, current: PolicySet,
            changed: Changed, inventory: Inventory | None = None, *,
            only_changed: bool = False) -> Preview:
    """Every flow of ``window`` before and after ``changed`` (see the module doc).
    ``only_changed`` skips what no change can touch: keys no changed policy selects are not
    evaluated, and when only namespaced policies change, records with no end in their
    namespaces are not even read."""
    inventory = inventory or Inventory()
    table = evaluation_input(con, window, _namespaces(changed) if only_changed else None,
                             recorded_pending=False)
    n = table.num_rows
    records = int(pc.sum(table["records"]).as_py() or 0)
    before_batch = _batch(_enforced_only(current), inventory)
    after_batch = _batch(_enforced_only(changed.policies), inventory)
    impacted = (np.ones(n, dtype=bool) if changed.everything
                else _impacted(table, before_batch, changed))
    state = _State(n)
    chosen = impacted.copy() if only_changed else np.ones(n, dtype=bool)
    state.evaluate(before_batch, table, np.flatnonzero(chosen), before=True)
    state.evaluate(after_batch, table, np.flatnonzero(impacted), before=False)
    # Destination records whose source now denies: evaluated too, though no change selects
    # them, because they would disappear (they take the source's verdict).
    extra = _dropped_at_source(table, state) & ~chosen
    state.evaluate(before_batch, table, np.flatnonzero(extra), before=True)
    chosen |= extra
    _dropped_at_source(table, state)
    idx = np.flatnonzero(chosen)
    rows = table.take(pa.array(idx))
    out = _outcomes(rows, state.before[idx], [state.before_trace[i] for i in idx.tolist()],
                    state.after_action()[idx], [state.after_of(i) for i in idx.tolist()],
                    [state.note[i] for i in idx.tolist()],
                    [state.same(i) for i in idx.tolist()], synthesised=False)
    synthesised = _synthesise(table, idx, state, after_batch)
    if synthesised is not None:
        out = pa.concat_tables([out, synthesised])
    return Preview(_visible(out), changed.changes, records, n, int(impacted.sum()),
                   0 if synthesised is None else synthesised.num_rows)


class _State:
    """Per key of the input: verdicts and traces before, and after where they differ."""

    def __init__(self, n: int) -> None:
        self.before = np.full(n, "", dtype=object)
        self.before_trace: list[tuple[str, ...]] = [()] * n
        self.before_outcome: list[object] = [None] * n
        self.after = np.full(n, None, dtype=object)  # None: same as before
        self.after_trace: dict[int, tuple[str, ...]] = {}
        self.after_outcome: dict[int, object] = {}  # None: rewritten (denied at the source)
        self.note = [""] * n

    def evaluate(self, batch: BatchEvaluator, table: pa.Table, idx: np.ndarray, *,
                 before: bool) -> None:
        if not idx.size:
            return
        v = _verdicts(batch, table.take(pa.array(idx)))
        if before:
            self.before[idx] = v.action
            for i, t, o in zip(idx.tolist(), v.trace, v.outcome, strict=True):
                self.before_trace[i], self.before_outcome[i] = t, o
        else:
            self.after[idx] = v.action
            self.after_trace.update(zip(idx.tolist(), v.trace, strict=True))
            self.after_outcome.update(zip(idx.tolist(), v.outcome, strict=True))

    def after_action(self) -> np.ndarray:
        return np.where(self.after == None, self.before, self.after)  # noqa: E711

    def after_of(self, i: int) -> tuple[str, ...]:
        return self.after_trace.get(i, self.before_trace[i])

    def same(self, i: int) -> bool:
        """Whether key ``i`` is decided exactly alike before and after (not evaluated after:
        no changed policy selects it, so it is)."""
        return i not in self.after_outcome or \
            self.after_outcome[i] == self.before_outcome[i]


@dataclass(frozen=True)
class _Verdicts:
    action: np.ndarray  # object array of allow | deny | uncertain
    trace: list[tuple[str, ...]]
    outcome: list[object]  # the whole decision (DirectionVerdict.outcome)


def _verdicts(batch: BatchEvaluator, table: pa.Table) -> _Verdicts:
    if table.num_rows == 0:
        return _Verdicts(np.array([], dtype=object), [], [])
    result = batch.evaluate(table)
    names = np.array(result.action.dictionary.to_pylist(), dtype=object)
    codes = result.action.indices.to_numpy(zero_copy_only=False)
    traces = [tuple(t) for t in result.enforced]
    ids = result.trace_id.tolist()
    return _Verdicts(names[codes], [traces[i] for i in ids],
                     [result.enforced_outcomes[i] for i in ids])


def _impacted(table: pa.Table, batch: BatchEvaluator, changed: Changed) -> np.ndarray:
    """Rows whose reporting endpoint a changed policy (before or after) selects in the
    direction the record is decided by."""
    compiled = [compile_policy(p) for p in changed.impacting]
    if not compiled or table.num_rows == 0:
        return np.zeros(table.num_rows, dtype=bool)
    out = np.zeros(table.num_rows, dtype=bool)
    is_dst = ~_is_src(table)
    for side, direction, mask in (("source", Direction.EGRESS, ~is_dst),
                                  ("dest", Direction.INGRESS, is_dst)):
        rows = np.flatnonzero(mask)
        if not rows.size:
            continue
        sub = table.take(pa.array(rows))
        cols = [f"{side}_{c}" for c in _SIDE]
        gid, reps = keycodes.factorize([keycodes.encode(sub[c]) for c in cols])
        chosen = [cp for cp in compiled if cp.selects(direction)]
        hits = np.zeros(len(reps), dtype=bool)
        for k, row in enumerate(sub.select(cols).take(pa.array(reps)).to_pylist()):
            peer = batch.peer(row, side)
            if peer.endpoint is not None:
                labels = peer.endpoint.selector_labels
                hits[k] = any(cp.applies_to.matches(labels) for cp in chosen)
        out[rows] = hits[gid]
    return out


def _dropped_at_source(table: pa.Table, state: _State) -> np.ndarray:
    """Destination records of flows whose source egress turns from allow to deny would not
    exist after the change: they take the source's verdict and trace. Returns them."""
    found = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows == 0:
        return found
    is_src = _is_src(table)
    flipped = is_src & (state.before == "allow") & (state.after_action() == "deny")
    if not flipped.any():
        return found
    cols = [c for c in KEY_COLUMNS if c not in ("reporter", "source_port")]
    gid, _ = keycodes.factorize([keycodes.encode(table[c]) for c in cols])
    # Per key group, the flipped source record (any one: they share the group's key).
    source_of = np.full(int(gid.max()) + 1, -1, dtype=np.int64)
    flipped_rows = np.flatnonzero(flipped)
    source_of[gid[flipped_rows]] = flipped_rows
    partner = np.where(is_src, -1, source_of[gid])
    found = partner >= 0
    for i in np.flatnonzero(found & (state.before != "")).tolist():  # evaluated: mark
        j = int(partner[i])
        state.after[i] = "deny"
        state.after_trace[i] = state.after_of(j)
        state.after_outcome[i] = None
        state.note[i] = ("denied at the source: its egress now denies, so there would be "
                         "no destination record")
    return found


def _is_src(table: pa.Table) -> np.ndarray:
    starts = pc.starts_with(pc.cast(table["reporter"], pa.string()), "src")  # and src,fwd
    return pc.fill_null(starts, False).to_numpy(zero_copy_only=False)


def _synthesise(table: pa.Table, idx: np.ndarray, state: _State,
                batch: BatchEvaluator) -> pa.Table | None:
    """For source records whose egress turns from deny to allow towards a workload, the
    destination record the connection would now produce, decided by ingress after."""
    if not idx.size:
        return None
    after = state.after_action()
    to_wep = pc.fill_null(pc.equal(pc.cast(table["dest_type"], pa.string()), "wep"),
                          False).to_numpy(zero_copy_only=False)
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[idx] = True
    chosen = np.flatnonzero(mask & _is_src(table) & to_wep & (state.before == "deny")
                            & (after == "allow"))
    if not chosen.size:
        return None
    sub = table.take(pa.array(chosen))
    reporter = pa.array(["dst"] * sub.num_rows).cast(pa.string())
    sub = sub.set_column(sub.schema.get_field_index("reporter"), "reporter", reporter)
    verdicts = _verdicts(batch, sub)
    note = ["synthesised: the connection the source now allows, decided by the "
            "destination's ingress"] * sub.num_rows
    return _outcomes(sub, np.array(["deny"] * sub.num_rows, dtype=object),
                     [state.before_trace[i] for i in chosen.tolist()], verdicts.action,
                     verdicts.trace, note, [False] * sub.num_rows, synthesised=True)


def _change(before: str, after: str, same: bool) -> str:
    """A key decided exactly alike is unchanged; else uncertain when either side is (the
    records cannot say which way the walk goes), else the verdicts compared."""
    if same:
        return "unchanged"
    if "uncertain" in (before, after):
        return "uncertain"
    return "unchanged" if before == after else f"{before}-to-{after}"


def _outcomes(rows: pa.Table, before: np.ndarray, before_trace: Sequence[tuple[str, ...]],
              after: np.ndarray, after_trace: Sequence[tuple[str, ...]], note: Sequence[str],
              same: Sequence[bool], *, synthesised: bool) -> pa.Table:
    change = [_change(b, a, s) for b, a, s in
              zip(before.tolist(), after.tolist(), same, strict=True)]
    strings = pa.list_(pa.string())
    cols: dict[str, Any] = {c: rows[c] for c in (*_VISIBLE, "recorded_action", *_SUMS,
                                                  "first_seen", "last_seen")}
    cols["reporter"] = pc.cast(rows["reporter"], pa.string())
    cols.update(change=pa.array(change, pa.string()), before=pa.array(before.tolist(), pa.string()),
                after=pa.array(after.tolist(), pa.string()),
                before_trace=pa.array([list(t) for t in before_trace], strings),
                after_trace=pa.array([list(t) for t in after_trace], strings),
                synthesised=pa.array([synthesised] * rows.num_rows, pa.bool_()),
                note=pa.array(list(note), pa.string()))
    return pa.table({k: (pc.cast(v, pa.string()) if pa.types.is_dictionary(v.type) else v)
                     for k, v in cols.items()})


def _visible(table: pa.Table) -> pa.Table:
    """One row per visible flow and outcome, most serious first."""
    keys = [*_VISIBLE, "recorded_action", "change", "before", "after", "before_trace",
            "after_trace", "synthesised", "note"]
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    rank = {c: i for i, c in enumerate(CHANGES)}
    grouped = (frame.group_by(keys, maintain_order=True)
               .agg(*(pl.col(c).sum() for c in _SUMS),
                    pl.col("first_seen").min(), pl.col("last_seen").max())
               .with_columns(packets=pl.col("packets_in") + pl.col("packets_out"),
                             bytes=pl.col("bytes_in") + pl.col("bytes_out"),
                             before_policy=pl.col("before_trace").list.last(),
                             after_policy=pl.col("after_trace").list.last(),
                             _rank=pl.col("change").replace_strict(rank, return_dtype=pl.Int8)))
    ordered = grouped.sort(["_rank", "source_namespace", "source_name_aggr", "dest_namespace",
                            "dest_name_aggr", "dest_port", "proto", "reporter", "before",
                            "after"], nulls_last=True)
    return ordered.select(
        "change", "reporter", "source_type", "source_namespace", "source_name_aggr",
        "dest_type", "dest_namespace", "dest_name_aggr", "dest_service_namespace",
        "dest_service_name", "proto", "dest_port", "recorded_action", "before", "after",
        "before_policy", "after_policy", "records", "connections", "packets", "bytes",
        "first_seen", "last_seen", "synthesised", "note", "before_trace", "after_trace",
    ).to_arrow()


def reevaluate(table: pa.Table, policy_set: PolicySet,
               inventory: Inventory | None = None) -> pa.Table:
    """``table`` (:func:`evaluation_input`) as if the staged policies of ``policy_set`` had
    existed when it was logged: the recorded verdict, enforced trace and the recorded pending
    hits of enforced policies are kept (so enforced policies' counters stay what was
    recorded), and the staged policies' hits come from a re-evaluation with them as
    enforced."""
    inventory = inventory or Inventory()
    if not table.num_rows:
        pending = pa.array([], pa.list_(pa.string()))
    else:
        result = _batch(policy_set, inventory).evaluate(table)
        fresh = [[h for h in trace if _staged_hit(h)] for trace in result.pending]
        recorded = table["recorded_pending"].to_pylist()
        pending = pa.array([[h for h in (old or []) if not _staged_hit(h)] + fresh[t]
                            for old, t in zip(recorded, result.trace_id.tolist(),
                                              strict=True)], pa.list_(pa.string()))
    return pa.table({
        "reporter": pc.cast(table["reporter"], pa.string()),
        "enforced_policies": table["recorded_policies"],
        "pending_policies": pending,
        "packets_in": table["packets_in"], "packets_out": table["packets_out"],
        "bytes_in": table["bytes_in"], "bytes_out": table["bytes_out"],
        "num_flows": table["connections"],
        "start_time": table["first_seen"], "end_time": table["last_seen"],
    })


@lru_cache(maxsize=65536)
def _staged_hit(hit: str) -> bool:
    """Whether a policy-hit string names a staged policy, in any of Calico's hit formats
    (:func:`policy.parse_hit`); a hit it cannot read is not taken for a staged one."""
    try:
        return parse_hit(hit).staged
    except HitSyntaxError:
        return False


def totals_line(p: Preview) -> str:
    """One line: what the change does to the window."""
    t = p.totals()
    parts = [f"{c}: {t[c]['flows']} flow(s), {t[c]['connections']:,} connection(s)"
             for c in CHANGES if t[c]["flows"] and c != "unchanged"]
    what = "; ".join(parts) or "no flow changes its verdict"
    return (f"preview: {p.records:,} record(s) read, {p.keys:,} distinct key(s), "
            f"{p.impacted:,} impacted by {len(p.changes)} change(s): {what}")

