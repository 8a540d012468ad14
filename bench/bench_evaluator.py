"""Batch evaluator throughput: flow records per second against 10, 100 and 1,000 policies.

Generates a cluster (namespaces, workloads with app/team/fw-zone labels), a tiered policy set
of the requested size (GlobalNetworkPolicies in a security tier with Pass, namespace
NetworkPolicies allowing named peers on ports, Kubernetes NetworkPolicies), and flow-log
rows aggregated per replica-set prefix (level 2) with realistic key cardinality; then times,
in one process run on the 2-core VM, pinned to one CPU (``--cpus``; both paths are
single-threaded):

* tierflow's batch evaluator over the whole table, and
* the per-row reference path (``Evaluator.evaluate`` for each row, what a user scripting a
  loop over ``flows.log`` would write), on a sample, as the peer the ratio is against.

Usage: ``python bench/bench_evaluator.py [--rows 10000000] [--policies 10 100 500 1000]
[--cpus 1]``
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from policy import Evaluator, PolicySet, load_text
from policy.batch import BatchEvaluator

NAMESPACES = 50
WORKLOADS = 1000
PORTS = np.array([80, 443, 8080, 5432, 6379, 9090, 53], dtype=np.int32)


def cluster(seed: int = 7) -> tuple[list[tuple[str, str, dict[str, str]]], dict[str, dict]]:
    rng = random.Random(seed)
    namespaces = {f"ns{i}": {"team": f"team{i % 10}", "env": rng.choice(["prod", "dev"])}
                  for i in range(NAMESPACES)}
    workloads = []
    for w in range(WORKLOADS):
        ns = f"ns{w % NAMESPACES}"
        labels = {"app": f"app{w}", "tier": rng.choice(["web", "api", "db"]),
                  "fw-zone": rng.choice(["dmz", "trusted", "restricted"])}
        workloads.append((ns, f"app{w}-{w:08x}-*", labels))
    return workloads, namespaces


def policies(n: int, workloads: list[tuple[str, str, dict[str, str]]]) -> str:
    rng = random.Random(n)
    docs = ["apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\n"
            "spec: {order: 100}\n",
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
            "metadata: {name: security.pass}\nspec:\n  tier: security\n  order: 10000\n"
            "  selector: all()\n  types: [Ingress, Egress]\n  ingress: [{action: Pass}]\n"
            "  egress: [{action: Pass}]\n"]
    for i in range(n - 1):
        ns, _, labels = rng.choice(workloads)
        peer = rng.choice(workloads)[2]
        port = int(rng.choice(PORTS))
        if i % 10 == 0:
            docs.append(
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
                f"metadata: {{name: security.quarantine-{i}}}\nspec:\n  tier: security\n"
                f"  order: {i}\n  selector: quarantine == 'q{i}' || app == '{labels['app']}-x'\n"
                "  types: [Ingress]\n  ingress: [{action: Deny}]\n")
        elif i % 3 == 0:
            docs.append(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                f"metadata: {{name: knp-{i}, namespace: {ns}}}\nspec:\n"
                f"  podSelector: {{matchLabels: {{app: {labels['app']}}}}}\n"
                f"  ingress: [{{from: [{{podSelector: {{matchLabels: {{tier: {peer['tier']}}}}},"
                f" namespaceSelector: {{}}}}], ports: [{{port: {port}}}]}}]\n")
        else:
            docs.append(
                "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\n"
                f"metadata: {{name: default.np-{i}, namespace: {ns}}}\nspec:\n  order: {i}\n"
                f"  selector: app == '{labels['app']}' && fw-zone in {{'dmz', 'trusted'}}\n"
                "  types: [Ingress, Egress]\n"
                f"  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {{selector: "
                f"\"fw-zone == '{peer['fw-zone']}'\", namespaceSelector: all()}}\n"
                f"    destination: {{ports: [{port}]}}\n"
                "  egress:\n  - action: Allow\n    protocol: UDP\n    destination: {ports: [53]}\n"
                "  - action: Allow\n    destination: {nets: [10.0.0.0/8]}\n")
    return "---\n".join(docs)


def flows(rows: int, workloads: list[tuple[str, str, dict[str, str]]], pairs_n: int = 40_000,
          seed: int = 3) -> pa.Table:
    """Level-2 aggregated rows over ``pairs_n`` communicating workload pairs (40,000 is a
    dense mesh of 40 peers per workload; 8,000 a typical fan-out of 8), 1-2 ports per pair,
    src and dst reporters, labels as in-memory plain strings."""
    rng = np.random.default_rng(seed)
    pairs = np.stack([rng.integers(0, WORKLOADS, pairs_n), rng.integers(0, WORKLOADS, pairs_n)],
                     1)
    pick = rng.integers(0, len(pairs), rows)
    src, dst = pairs[pick, 0], pairs[pick, 1]
    port = PORTS[(pick * 7 + rng.integers(0, 2, rows)) % len(PORTS)]
    reporter = rng.integers(0, 2, rows).astype(np.int32)
    names = pa.array([w[1] for w in workloads])
    nss = pa.array([w[0] for w in workloads])
    labels = pa.array([w[2] for w in workloads], type=pa.map_(pa.string(), pa.string()))

    def d(values: pa.Array, idx: np.ndarray) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), values)

    const = lambda v: pa.DictionaryArray.from_arrays(  # noqa: E731
        pa.array(np.zeros(rows, dtype=np.int32)), pa.array([v]))
    null_s = pa.nulls(rows, pa.string())
    return pa.table({
        "reporter": pa.DictionaryArray.from_arrays(pa.array(reporter), pa.array(["src", "dst"])),
        "proto": const("tcp"),
        "dest_domains": pa.nulls(rows, pa.list_(pa.string())),
        "dest_service_namespace": const("-"), "dest_service_name": const("-"),
        "source_type": const("wep"), "source_namespace": d(nss, src), "source_name": const("-"),
        "source_name_aggr": d(names, src), "source_labels": labels.take(pa.array(src)),
        "source_ip": null_s, "source_port": pa.nulls(rows, pa.int32()),
        "dest_type": const("wep"), "dest_namespace": d(nss, dst), "dest_name": const("-"),
        "dest_name_aggr": d(names, dst), "dest_labels": labels.take(pa.array(dst)),
        "dest_ip": null_s, "dest_port": pa.array(port),
        "packets_in": pa.array(rng.integers(1, 100, rows)),
    })


def as_read_from_store(table: pa.Table, workdir: str) -> pa.Table:
    """The table as the Parquet store gives it back: string leaves read dictionary-encoded."""
    path = os.path.join(workdir, "flows.parquet")
    pq.write_table(table, path, compression="zstd")
    leaves = [f"{side}_labels.key_value.{leaf}" for side in ("source", "dest")
              for leaf in ("key", "value")]
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)
               or pa.types.is_dictionary(f.type)]
    return pq.read_table(path, read_dictionary=strings + leaves)


def pin(cpus: int, allowed: list[int]) -> None:
    """Run this process (and the threads it starts from now on) on ``cpus`` CPUs."""
    if cpus > len(allowed):
        raise SystemExit(f"--cpus {cpus}: only {len(allowed)} CPU(s) available")
    os.sched_setaffinity(0, allowed[:cpus])
    pa.set_cpu_count(cpus)


def run(rows: int, sizes: list[int], sample: int, pairs_n: int, plain: bool,
        cpu_counts: list[int]) -> list[dict[str, float]]:
    workloads, namespaces = cluster()
    t0 = time.perf_counter()
    table = flows(rows, workloads, pairs_n)
    form = "plain in-memory strings"
    if not plain:
        with tempfile.TemporaryDirectory() as workdir:
            table = as_read_from_store(table, workdir)
        form = "as read from the store (dictionary string leaves)"
    print(f"generated {rows:,} rows over {pairs_n:,} pairs, {form}, in "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    results = []
    allowed = sorted(os.sched_getaffinity(0))
    for cpus, n in ((c, n) for c in cpu_counts for n in sizes):
        pin(cpus, allowed)
        ps = PolicySet.from_documents(load_text(policies(n, workloads), f"bench-{n}"))
        batch = BatchEvaluator(Evaluator(ps, namespaces), namespaces=namespaces)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        res = batch.evaluate(table)
        dt = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        # The peer: one reference evaluation per row, on a sample.
        ref = BatchEvaluator(Evaluator(ps, namespaces), namespaces=namespaces)
        sample_rows = table.slice(0, sample).to_pylist()
        t1 = time.perf_counter()
        for row in sample_rows:
            ref.evaluate_row(row)
        dt_ref = (time.perf_counter() - t1) / sample
        rate = rows / dt
        results.append({"cpus": cpus, "policies": len(ps.policies), "rows": rows,
                        "keys": res.keys,
                        "seconds": dt, "rows_per_s": rate, "per_row_rows_per_s": 1 / dt_ref,
                        "ratio": rate * dt_ref})
        print(f"{cpus} CPU{'s' if cpus > 1 else ' '} {len(ps.policies):>5} policies, "
              f"{pairs_n:>6,} pairs, "
              f"{'plain' if plain else 'store'}: {rows:,} rows, {res.keys:,} distinct keys, "
              f"{dt:.2f}s (user {user:.2f}, system {system:.2f}) = {rate / 1e6:.2f} M rows/s; "
              "per-row reference "
              f"{1 / dt_ref:,.0f} rows/s; ratio x{rate * dt_ref:,.0f}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--policies", type=int, nargs="+", default=[10, 100, 500, 1000])
    ap.add_argument("--sample", type=int, default=20_000)
    ap.add_argument("--pairs", type=int, nargs="+", default=[40_000, 8_000],
                    help="communicating workload pairs (key cardinality)")
    ap.add_argument("--plain", action="store_true",
                    help="keep labels as plain in-memory strings instead of the store's form")
    ap.add_argument("--cpus", type=int, nargs="+", default=[1],
                    help="run pinned to this many CPUs (each in turn)")
    args = ap.parse_args()
    for pairs_n in args.pairs:
        run(args.rows, args.policies, args.sample, pairs_n, args.plain, args.cpus)


if __name__ == "__main__":
    main()
