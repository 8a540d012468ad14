"""Policy impact preview over a day of flow records: tierflow's ``preview`` against
re-evaluating every record through the batch evaluator (what one would write with the
evaluator and a Parquet reader) and against the per-record reference evaluator, on 2 cores.

The store: ``--rows`` records (default 20 million) over 24 h of 5-minute intervals, written
through ``ingest.store.Store(...).writer()`` one hour per commit; level-2 aggregated records
(IPs null, names ``-``) with pod labels, src- and dst-reported, between 3,000 workloads in 100
namespaces (60,000 talking pairs, a few busy, a long tail) plus CoreDNS. The policies: a
security tier (a deny to a known-bad network set, then pass), a platform tier (DNS allowed,
then pass) and, in 90 of the namespaces, three Calico NetworkPolicies in the default tier
(web ingress, api ingress from web, and a same-namespace policy for ingress and egress) — 274
policies. Each
record's recorded action and traces are what those policies decide (evaluated per distinct
key when the store is generated). The store is kept in ``--store`` (default
TMPDIR/tierflow-bench-preview-ROWS) and reused.

Changes previewed:

* one policy: ``default.same-namespace`` of one namespace loses its egress rules;
* 100 policies: ``default.allow-web`` of all 90 namespaces moves to port 8081, and
  ``default.allow-api`` of 10 of them admits ``app == 'ui'`` as well.

Approaches, each in its own process pinned to 2 CPUs:

* tierflow: ``analytics.preview.preview(connect(store, threads=2), Window(), current,
  apply_changes(current, changes), inventory, only_changed=True)`` — as ``tierflow preview
  --only-changed`` runs it; and the full listing (every flow, ``only_changed=False``);
* batch evaluator over every record: the store read in 1-million-row batches of the key
  columns (``pyarrow.dataset``), each batch evaluated under both sets by
  ``policy.batch.BatchEvaluator`` (which dedups keys per batch), verdicts compared — on the
  first 2 hours, scaled to the day (it takes minutes per hour), and checked against tierflow
  on the same hours;
* the reference evaluator (``BatchEvaluator.evaluate_row``, one record at a time) on a
  100,000-record sample, extrapolated to the window (labelled so).

The bench asserts that tierflow and the batch evaluator over every record find the same
changed records (connections per change class, on each record's own verdict: the destination
records preview synthesises, or shows denied at the source, are left out of the comparison)
so a wrong answer cannot look fast.

Usage: ``python bench/bench_preview.py [--rows 20000000] [--store DIR] [--repeat 2]
[--out bench/results/preview.txt]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml
from bench_board import _counters, _dict, _status, cpu_model

from analytics.db import connect
from analytics.preview import preview
from analytics.window import Window
from ingest.inventory import Inventory
from ingest.store import Store
from policy import Evaluator, PolicySet, load_text
from policy.batch import KEY_COLUMNS, BatchEvaluator
from policy.changes import Change, apply_changes

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
DAY0 = datetime(2026, 11, 26, tzinfo=UTC)
INTERVAL = 300
INTERVALS = 24 * 3600 // INTERVAL
NAMESPACES = 100
UNPROTECTED = 10
PER_NAMESPACE = 30
WORKLOADS = NAMESPACES * PER_NAMESPACE
PAIRS = 60_000
APPS = ("web", "api", "worker", "cache", "db", "auth", "search", "billing", "cart", "ui")
PORTS = (8080, 8443, 9090, 6379, 5432, 8080, 9200, 8080, 8080, 3000)
DNS_SHARE = 0.1
SEED = 20261127
SAMPLE = 100_000
SAMPLE_HOURS = 2  # the batch evaluator over every record: first hours, scaled to the day
BATCH = 1_000_000
ONE_NS = 7


def team(ns: int) -> str:
    return f"team-{ns:03d}"


# -- the cluster and its policies --------------------------------------------------------------

def policy_docs() -> list[dict[str, Any]]:
    calico = "projectcalico.org/v3"

    def gnp(name: str, order: int, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": calico, "kind": "GlobalNetworkPolicy",
                "metadata": {"name": name},
                "spec": {"tier": name.split(".", maxsplit=1)[0], "order": order, **spec}}

    docs: list[dict[str, Any]] = [
        {"apiVersion": calico, "kind": "Tier", "metadata": {"name": "security"},
         "spec": {"order": 100}},
        {"apiVersion": calico, "kind": "Tier", "metadata": {"name": "platform"},
         "spec": {"order": 200}},
        {"apiVersion": calico, "kind": "GlobalNetworkSet",
         "metadata": {"name": "known-bad", "labels": {"threat": "known-bad"}},
         "spec": {"nets": ["198.51.100.0/24"]}},
        gnp("security.block-known-bad", 10, {
            "selector": "all()", "types": ["Egress"],
            "egress": [{"action": "Deny",
                        "destination": {"selector": "threat == 'known-bad'"}}]}),
        gnp("security.pass", 1000, {"selector": "all()", "types": ["Ingress", "Egress"],
                                    "ingress": [{"action": "Pass"}],
                                    "egress": [{"action": "Pass"}]}),
        gnp("platform.allow-kube-dns", 10, {
            "selector": "all()", "types": ["Egress"],
            "egress": [{"action": "Allow", "protocol": "UDP", "destination": {
                "selector": "k8s-app == 'kube-dns'",
                "namespaceSelector": "projectcalico.org/name == 'kube-system'",
                "ports": [53]}}]}),
        gnp("platform.pass", 1000, {"selector": "all()", "types": ["Ingress", "Egress"],
                                    "ingress": [{"action": "Pass"}],
                                    "egress": [{"action": "Pass"}]}),
    ]
    for ns in range(NAMESPACES - UNPROTECTED):
        docs += namespace_policies(ns)
    return docs


def namespace_policies(ns: int, web_port: int = 8080,
                       api_from: str = "app == 'web'") -> list[dict[str, Any]]:
    def np_(name: str, order: int, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                "metadata": {"name": f"default.{name}", "namespace": team(ns)},
                "spec": {"tier": "default", "order": order, **spec}}

    return [
        np_("allow-web", 10, {"selector": "app == 'web'", "types": ["Ingress"],
                              "ingress": [{"action": "Allow", "protocol": "TCP",
                                           "destination": {"ports": [web_port]}}]}),
        np_("allow-api", 20, {"selector": "app == 'api'", "types": ["Ingress"],
                              "ingress": [{"action": "Allow", "protocol": "TCP",
                                           "source": {"selector": api_from},
                                           "destination": {"ports": [8443]}}]}),
        np_("same-namespace", 100, {
            "selector": "all()", "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Allow", "source": {"selector": "all()"}}],
            "egress": [{"action": "Allow", "destination": {"selector": "all()"}},
                       {"action": "Allow", "protocol": "TCP", "destination": {
                           "namespaceSelector": "has(team)", "selector": "app == 'api'"}}]}),
    ]


def changes(which: str) -> list[Change]:
    if which == "one":
        [doc] = [d for d in namespace_policies(ONE_NS) if d["metadata"]["name"].endswith(
            "same-namespace")]
        doc["spec"]["egress"] = []
        docs = [doc]
    else:
        docs = [namespace_policies(ns, web_port=8081)[0]
                for ns in range(NAMESPACES - UNPROTECTED)]
        docs += [namespace_policies(ns, api_from="app in {'web', 'ui'}")[1]
                 for ns in range(10)]
    return [Change.put(d) for d in load_text(yaml.safe_dump_all(docs))]


def current_policies() -> PolicySet:
    return PolicySet.from_documents(load_text(yaml.safe_dump_all(policy_docs())))


def inventory() -> Inventory:
    spaces = [team(ns) for ns in range(NAMESPACES)] + ["kube-system"]
    return Inventory.from_objects([{"kind": "Namespace", "metadata": {
        "name": n, "labels": {"team": n} if n != "kube-system" else {}}} for n in spaces])


def workloads() -> tuple[list[str], np.ndarray, np.ndarray, pa.MapArray]:
    """name_aggr, namespace index, port and labels of every workload (CoreDNS last)."""
    rng = np.random.default_rng(SEED)
    digits = np.array(list("0123456789abcdef"))
    hashes = ["".join(rng.choice(digits, 10)) for _ in range(WORKLOADS)]
    names = [f"{APPS[i % len(APPS)]}-{i:04d}-{h}-*" for i, h in enumerate(hashes)]
    names.append("coredns-7db6d8ff4d-*")
    ns = np.append(np.arange(WORKLOADS) // PER_NAMESPACE, NAMESPACES)
    ports = np.append(np.array(PORTS)[np.arange(WORKLOADS) % len(PORTS)], 53)
    labels = [[("app", APPS[i % len(APPS)]), ("pod-template-hash", h)]
              for i, h in enumerate(hashes)]
    labels.append([("k8s-app", "kube-dns"), ("pod-template-hash", "7db6d8ff4d")])
    return names, ns, ports, pa.array(labels, pa.map_(pa.string(), pa.string()))


# -- the store ---------------------------------------------------------------------------------

def _side(prefix: str, w: np.ndarray, cluster: tuple[Any, ...]) -> dict[str, Any]:
    names, ns_of, _, labels = cluster
    n = len(w)
    spaces = [team(k) for k in range(NAMESPACES)] + ["kube-system"]
    return {f"{prefix}_ip": pa.nulls(n, pa.string()),
            f"{prefix}_name": _dict(np.zeros(n), ["-"]),
            f"{prefix}_name_aggr": _dict(w, names),
            f"{prefix}_namespace": _dict(ns_of[w], spaces),
            f"{prefix}_type": _dict(np.zeros(n), ["wep"]),
            f"{prefix}_labels": labels.take(pa.array(w))}


def _keys(cluster: tuple[Any, ...], edges: tuple[np.ndarray, np.ndarray],
          dns: np.ndarray) -> pa.Table:
    """One record per (pair, dns?, reporter): what the traces are computed from."""
    src = np.concatenate([edges[0], edges[0]])
    dst = np.concatenate([edges[1], edges[1]])
    dst = np.where(np.concatenate([dns, dns]), WORKLOADS, dst)
    is_dst = np.repeat([False, True], len(edges[0]))
    return _records(cluster, src, dst, is_dst)


def _records(cluster: tuple[Any, ...], src: np.ndarray, dst: np.ndarray,
             is_dst: np.ndarray) -> pa.Table:
    port_of = cluster[2]
    n = len(src)
    return pa.table({**_side("source", src, cluster), **_side("dest", dst, cluster),
                     "dest_port": pa.array(port_of[dst], pa.int32()),
                     "source_port": pa.nulls(n, pa.int32()),
                     "proto": _dict((dst == WORKLOADS).astype(np.int32), ["tcp", "udp"]),
                     "reporter": _dict(is_dst.astype(np.int32), ["src", "dst"]),
                     "dest_domains": pa.nulls(n, pa.list_(pa.string())),
                     "dest_service_namespace": _dict(np.zeros(n), ["-"]),
                     "dest_service_name": _dict(np.zeros(n), ["-"])})


def generate(root: Path, total: int) -> None:
    cluster = workloads()
    rng = np.random.default_rng(SEED + 1)
    edges = (rng.integers(0, WORKLOADS, PAIRS), rng.integers(0, WORKLOADS, PAIRS))
    dns = rng.random(PAIRS) < DNS_SHARE
    weight = 1.0 / np.arange(1, PAIRS + 1) ** 0.8
    weight /= weight.sum()
    keyed = _keys(cluster, edges, dns)
    batch = BatchEvaluator(Evaluator(current_policies(), inventory().namespaces), None,
                           inventory().namespaces)
    result = batch.evaluate(keyed)
    strings = pa.list_(pa.string())
    enforced = result.enforced_policies()
    pending = result.pending_policies()
    action = result.action.cast(pa.string())
    with Store(root).writer() as w:
        for hour in range(24):
            rows = (hour + 1) * total // 24 - hour * total // 24
            hr = np.random.default_rng([SEED, hour])
            e = hr.choice(PAIRS, rows, p=weight)
            is_dst = hr.integers(0, 2, rows).astype(bool)
            k = e + is_dst * PAIRS
            table = keyed.take(pa.array(k))
            interval = hour * (INTERVALS // 24) + np.arange(rows) * (INTERVALS // 24) // rows
            start = DAY0.timestamp() + interval * INTERVAL
            ts = pa.timestamp("s", tz="UTC")
            acts = action.take(pa.array(k))
            denied = pc.equal(acts, "deny").to_numpy(zero_copy_only=False)
            cols = {c: table[c] for c in table.column_names if c != "source_port"}
            cols.update({"start_time": pa.array(start.astype(np.int64), ts),
                         "end_time": pa.array((start + INTERVAL).astype(np.int64), ts),
                         "action": pc.dictionary_encode(acts),
                         "enforced_policies": enforced.take(pa.array(k)).cast(strings),
                         "pending_policies": pending.take(pa.array(k)).cast(strings),
                         **_counters(hr, rows, is_dst, denied),
                         "host": _dict(np.zeros(rows), ["node-01"]),
                         "collector": _dict(np.zeros(rows), ["calico"])})
            w.add_flows(pa.table(cols), host="bench")
            w.commit()


def store_rows(root: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in Store(root).files())


def ensure_store(root: Path | None, rows: int) -> tuple[Path, str]:
    default = root is None
    root = root or Path(tempfile.gettempdir()) / f"tierflow-bench-preview-{rows}"
    if root.is_dir() and any(root.iterdir()):
        have = store_rows(root)
        if have == rows:
            return root, "reused"
        if not default:
            raise SystemExit(f"--store {root}: holds {have:,} flow records (wanted {rows:,})")
        shutil.rmtree(root)
    start = time.perf_counter()
    generate(root, rows)
    return root, f"generated in {time.perf_counter() - start:.0f} s"


# -- the approaches ----------------------------------------------------------------------------

Summary = dict[str, int]  # change class -> connections


def tierflow(root: Path, which: str, only_changed: bool = True,
             window: Window | None = None) -> Summary:
    con = connect(root, threads=THREADS)
    current = current_policies()
    result = preview(con, window or Window(), current, apply_changes(current, changes(which)),
                     inventory(), only_changed=only_changed)
    # Compared on each record's own verdict: rows preview synthesised, or rewrote as denied
    # at the source (a destination record that would no longer exist), are left out.
    own = result.flows.filter(pc.and_(pc.invert(result.flows["synthesised"]),
                                      pc.equal(result.flows["note"], "")))
    out: Summary = {}
    for row in own.select(["change", "connections"]).to_pylist():
        if row["change"] != "unchanged" and row["connections"]:
            out[row["change"]] = out.get(row["change"], 0) + row["connections"]
    return out


def _sets(which: str) -> tuple[BatchEvaluator, BatchEvaluator]:
    current = current_policies()
    after = apply_changes(current, changes(which)).policies
    inv = inventory()

    def batch(ps: PolicySet) -> BatchEvaluator:
        return BatchEvaluator(Evaluator(ps.with_policies(ps.enforced()), inv.namespaces),
                              None, inv.namespaces)

    return batch(current), batch(after)


def every_record(root: Path, which: str) -> Summary:
    """The first SAMPLE_HOURS hourly files of the store (the window's first hours), record
    batch by record batch."""
    before, after = _sets(which)
    files = Store(root).files()[:SAMPLE_HOURS]
    dataset = ds.dataset([str(p) for p in files], format="parquet")
    out: Summary = {}
    columns = [c for c in KEY_COLUMNS if c != "source_port"] + ["num_flows"]
    for batch in dataset.to_batches(columns=columns, batch_size=BATCH):
        table = pa.Table.from_batches([batch])
        table = table.append_column("source_port", pa.nulls(table.num_rows, pa.int32()))
        b = before.evaluate(table).action.cast(pa.string()).to_numpy(zero_copy_only=False)
        a = after.evaluate(table).action.cast(pa.string()).to_numpy(zero_copy_only=False)
        flows = table["num_flows"].to_numpy()
        _tally(out, b, a, flows)
    return out


def reference_sample(root: Path, which: str) -> Summary:
    """The per-record evaluator on the first SAMPLE records, scaled to the window."""
    before, after = _sets(which)
    path = Store(root).files()[0]
    table = pq.read_table(path).slice(0, SAMPLE)
    out: Summary = {}
    rows = table.select([c for c in KEY_COLUMNS if c != "source_port"]
                        + ["num_flows"]).to_pylist()
    b = np.array([before.evaluate_row(r)[0].action or "uncertain" for r in rows])
    a = np.array([after.evaluate_row(r)[0].action or "uncertain" for r in rows])
    _tally(out, b, a, np.array([r["num_flows"] for r in rows]))
    return out


def _tally(out: Summary, before: np.ndarray, after: np.ndarray, flows: np.ndarray) -> None:
    for b, a in (("allow", "deny"), ("deny", "allow")):
        n = int(flows[(before == b) & (after == a)].sum())
        if n:
            key = f"{b}-to-{a}"
            out[key] = out.get(key, 0) + n
    unsure = (before != after) & ((before == "uncertain") | (after == "uncertain"))
    if unsure.any():
        out["uncertain"] = out.get("uncertain", 0) + int(flows[unsure].sum())


APPROACHES: dict[str, tuple[str, Callable[[Path, str], Summary]]] = {
    "tierflow": ("tierflow preview --only-changed", tierflow),
    "tierflow-full": ("tierflow preview (every flow listed)",
                      lambda root, which: tierflow(root, which, only_changed=False)),
    "every-record": ("batch evaluator over every record *", every_record),
    "tierflow-hours": ("tierflow preview --only-changed, same hours",
                       lambda root, which: tierflow(root, which, window=Window(
                           DAY0, DAY0 + timedelta(hours=SAMPLE_HOURS)))),
    "reference": ("reference evaluator, per record", reference_sample),
}


def measure(name: str, root: Path, which: str, repeat: int) -> None:
    pa.set_cpu_count(THREADS)
    pa.set_io_thread_count(THREADS)
    baseline, runs = _status("VmRSS"), []
    summary: Summary = {}
    for _ in range(repeat):
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        summary = APPROACHES[name][1](root, which)
        runs.append({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                     "load": load})
    print(json.dumps({"name": name, "which": which, "runs": runs, "hwm": _status("VmHWM"),
                      "baseline": baseline, "summary": summary}), flush=True)


def _child(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


# -- the report --------------------------------------------------------------------------------

TARGETS = {"one": 10.0, "hundred": 30.0}
TITLES = {"one": "one-policy change (default.same-namespace of one namespace loses its egress)",
          "hundred": "100-policy change (allow-web of 90 namespaces to port 8081, allow-api "
                     "of 10 also from app=ui)"}


def report(root: Path, how: str, rows: int, keys: int,
           results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        f"policy impact preview: {rows:,} flow records over 24 h, "
        f"{len(Store(root).files())} files, "
        f"{sum(p.stat().st_size for p in Store(root).files()) / 1e6:.0f} MB zstd Parquet "
        f"({how}: {root}); {keys:,} distinct evaluation keys",
        f"3,000 workloads in 100 namespaces + CoreDNS, 60,000 talking pairs; "
        f"{len(current_policies().policies)} policies in 3 tiers",
        f"pinned to {THREADS} of {os.cpu_count()} CPUs ({cpu_model()}); DuckDB threads="
        f"{THREADS}, Arrow CPU pool {THREADS}; Python {platform.python_version()}, duckdb "
        f"{duckdb.__version__}, pyarrow {pa.__version__}",
        "each approach in its own process; best s = fastest wall time, CPU s = its CPU time, "
        "load = 1-min load average as it started, peak RSS = VmHWM",
        ""]
    for which, res in results.items():
        ours = min(r["wall"] for r in res[0]["runs"])
        lines += [TITLES[which], "  approach                                        runs  "
                  "best s   CPU s  load peak RSS MB  x tierflow  changed connections"]
        for r in res:
            best = min(x["wall"] for x in r["runs"])
            cpu = min(x["cpu"] for x in r["runs"])
            label = APPROACHES[r["name"]][0]
            scale = {"reference": rows / SAMPLE, "every-record": 24 / SAMPLE_HOURS}.get(
                r["name"], 1.0)
            if r["name"] == "reference":
                label += " *"
            summary = ", ".join(f"{k} {v:,}" for k, v in sorted(r["summary"].items()))
            lines.append(f"  {label:<47} {len(r['runs']):>4} {best * scale:>7.2f} "
                         f"{cpu * scale:>7.2f} {r['runs'][0]['load']:>5.1f} "
                         f"{r['hwm']:>12,.0f} {best * scale / ours:>11.1f}  {summary}")
        verdict = "MET" if ours < TARGETS[which] else "MISSED"
        lines += [f"  target < {TARGETS[which]:.0f} s on 2 cores: {verdict} ({ours:.2f} s)", ""]
    lines.append(f"* measured on part of the window and scaled to all of it: the batch "
                 f"evaluator on the first {SAMPLE_HOURS} hours (x{24 // SAMPLE_HOURS}), the "
                 f"reference evaluator on the first {SAMPLE:,} records (x{rows // SAMPLE}); "
                 "their counts are of that part, and the batch evaluator's equal tierflow's "
                 "over the same hours (asserted)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "preview.txt")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--which", default="one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:THREADS]))
    if args.measure:
        measure(args.measure, args.store, args.which, args.repeat)
        return
    root, how = ensure_store(args.store, args.rows)
    keys = duckdb.sql(
        f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(c for c in KEY_COLUMNS if c != 'source_port')} "  # noqa: E501
        f"FROM read_parquet('{root}/flows/**/*.parquet'))").fetchall()[0][0]
    results: dict[str, list[dict[str, Any]]] = {}
    for which in ("one", "hundred"):
        results[which] = []
        for name in APPROACHES:
            print(f"measuring {APPROACHES[name][0]} ({which}) ...", file=sys.stderr,
                  flush=True)
            repeat = 1 if name in ("every-record", "reference", "tierflow-hours") \
                else args.repeat
            results[which].append(_child(["--measure", name, "--store", str(root),
                                          "--which", which, "--repeat", str(repeat)]))
        got = {r["name"]: r["summary"] for r in results[which]}
        assert got["tierflow"] == got["tierflow-full"], (which, got)
        assert got["tierflow-hours"] == got["every-record"], (which, got)
    text = report(root, how, args.rows, keys, results)
    print(text, end="")
    args.out.write_text(text)



if __name__ == "__main__":
    main()
