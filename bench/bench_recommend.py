"""``recommend`` for every workload of a generated store, replay proof included, on 2 cores.

Issue 5: recommendations for every workload of a store of 10 million records and 1,000
workloads, with the replay proof, in under 30 s on 2 cores.

The store is generated (vectorised, numpy + pyarrow) and written through
``ingest.store.Store(...).writer()``, one ``add_flows`` + ``commit`` per hour of a day, so its
files are what ingest writes. Every record is *unprotected*: allowed, its enforced (and
pending) trace ending in the profile of the reporting endpoint's namespace
(``0|__PROFILE__|__PROFILE__.kns.<ns>|allow|0``), so every record is one recommendation
learns from and the replay proof counts. Records are level-2 aggregated (IPs null,
names ``-``, ``name_aggr`` ``app-042-5f8d7c6b9f-*``, label maps with ``app`` and
``pod-template-hash``), between 1,000 workloads in 50 namespaces (20 each), each talking to
~8 peer workloads (mostly its own namespace) on one or two of a few ports, src- and
dst-reported; plus DNS (UDP 53 to ``kube-system/coredns``) and HTTPS to external domains
(``net``/``pub`` with ``dest_domains``), src-reported. Inventory: the namespaces and one pod
per workload; policies: tiers only (``security``, ``platform`` and the default tier).

The measured run is the library call the CLI makes, ``recommend.engine.recommend(
partial(analytics.db.query, analytics.db.connect(store, threads=2)), policies, inventory,
Request(None))`` (``--all-namespaces``), pinned to 2 CPUs. A second run performs the same steps
as ``recommend`` one by one to show where the time goes (the engine exposes no stages).

Usage: ``python bench/bench_recommend.py [--rows 10000000] [--store DIR]
[--out bench/results/recommend.txt]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analytics.db import connect, query
from ingest.inventory import Inventory
from ingest.store import Store
from policy import PolicySet, load_text
from recommend import engine, observe
from recommend.beyond import beyond
from recommend.cluster import Cluster
from recommend.plan import plan
from recommend.rules import RuleOptions
from recommend.verify import enforced_set, replay

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
TARGET = 30.0

DAY0 = datetime(2026, 11, 26, tzinfo=UTC)
INTERVAL = 300
NAMESPACES = 50
PER_NAMESPACE = 20
WORKLOADS = NAMESPACES * PER_NAMESPACE  # + coredns (kube-system) and the external peer
PEERS = 8
SAME_NAMESPACE = 0.75  # share of peers in the workload's own namespace
PORTS = (8080, 8443, 9090, 5432, 6379, 3000)
DOMAINS = ("api.stripe.com", "hooks.slack.com", "storage.googleapis.com", "api.github.com",
           "sqs.eu-west-1.amazonaws.com")
EXTERNAL = 0.2  # share of workloads that call an external domain
# Share of records: workload to workload, DNS, external.
KIND_WEIGHTS = (0.85, 0.10, 0.05)
SEED = 20261127

TIERS = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200}
"""


# -- the generated store -------------------------------------------------------------------

def _names(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    digits = np.array(list("0123456789abcdef"))
    hashes = ["".join(rng.choice(digits, 10)) for _ in range(WORKLOADS)]
    names = [f"app-{i:03d}-{h}-*" for i, h in enumerate(hashes)]
    return [*names, "coredns-7db6d8ff4d-*", "pub"], [*hashes, "7db6d8ff4d", ""]


def world() -> dict[str, Any]:
    """Workloads (index ``WORKLOADS`` is coredns, ``WORKLOADS + 1`` the external peer), their
    namespaces, labels and ports, and the (source, destination, port, domain) edges."""
    rng = np.random.default_rng(SEED)
    names, hashes = _names(rng)
    spaces = [f"team-{k:02d}" for k in range(NAMESPACES)] + ["kube-system", "-"]
    ns_of = np.append(np.arange(WORKLOADS) // PER_NAMESPACE, [NAMESPACES, NAMESPACES + 1])
    # one or two listening ports per workload
    ports = rng.integers(0, len(PORTS), (WORKLOADS, 2))
    two = rng.random(WORKLOADS) < 0.3
    src, dst, port = [], [], []
    for w in range(WORKLOADS):
        ns = w // PER_NAMESPACE
        same = rng.random(PEERS) < SAME_NAMESPACE
        local = ns * PER_NAMESPACE + rng.integers(0, PER_NAMESPACE, PEERS)
        peers = np.unique(np.where(same, local, rng.integers(0, WORKLOADS, PEERS)))
        for p in peers[peers != w]:
            src.append(w)
            dst.append(p)
            port.append(PORTS[ports[p, rng.integers(0, 2) if two[p] else 0]])
    edges = (np.array(src), np.array(dst), np.array(port, np.int32))
    external = np.flatnonzero(rng.random(WORKLOADS) < EXTERNAL)
    domain = rng.integers(0, len(DOMAINS), len(external))
    # labels: app + pod-template-hash per workload; coredns k8s-app; the external peer none
    keys, items, offsets = [], [], [0]
    for i in range(WORKLOADS):
        keys += ["app", "pod-template-hash"]
        items += [f"app-{i:03d}", hashes[i]]
        offsets.append(len(keys))
    keys += ["k8s-app", "pod-template-hash"]
    items += ["kube-dns", hashes[WORKLOADS]]
    offsets += [len(keys), len(keys)]
    labels = pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keys),
                                     pa.array(items))
    traces = pa.array([[f"0|__PROFILE__|__PROFILE__.kns.{s}|allow|0"] for s in spaces],
                      pa.list_(pa.string()))
    return {"names": names, "hashes": hashes, "spaces": spaces, "ns_of": ns_of,
            "edges": edges, "external": external, "domain": domain, "labels": labels,
            "traces": traces}


def _dict(indices: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(indices, np.int32)),
                                          pa.array(values))


def _side(prefix: str, w: np.ndarray, wd: dict[str, Any]) -> dict[str, Any]:
    n = len(w)
    kind = np.where(w == WORKLOADS + 1, 1, 0)
    return {f"{prefix}_ip": pa.nulls(n, pa.string()),
            f"{prefix}_name": _dict(np.zeros(n), ["-"]),
            f"{prefix}_name_aggr": _dict(w, wd["names"]),
            f"{prefix}_namespace": _dict(wd["ns_of"][w], wd["spaces"]),
            f"{prefix}_type": _dict(kind, ["wep", "net"]),
            f"{prefix}_labels": wd["labels"].take(pa.array(w))}


def hour_table(hour: int, rows: int, wd: dict[str, Any]) -> pa.Table:
    rng = np.random.default_rng([SEED, hour])
    per_hour = 3600 // INTERVAL
    interval = hour * per_hour + np.arange(rows) * per_hour // rows
    kind = rng.choice(3, rows, p=KIND_WEIGHTS)
    esrc, edst, eport = wd["edges"]
    e = rng.integers(0, len(esrc), rows)
    x = rng.integers(0, len(wd["external"]), rows)
    src_w = np.where(kind == 0, esrc[e],
                     np.where(kind == 1, rng.integers(0, WORKLOADS, rows), wd["external"][x]))
    dst_w = np.where(kind == 0, edst[e], np.where(kind == 1, WORKLOADS, WORKLOADS + 1))
    port = np.where(kind == 0, eport[e], np.where(kind == 1, 53, 443)).astype(np.int32)
    dst = (kind == 0) & (rng.random(rows) < 0.5)  # DNS and external: src-reported only
    local_ns = np.where(dst, wd["ns_of"][dst_w], wd["ns_of"][src_w])
    domains = pa.array([None, *([d] for d in DOMAINS)], pa.list_(pa.string()))
    dom = np.where(kind == 2, wd["domain"][x] + 1, 0)
    flows = rng.geometric(0.25, rows)
    fwd, rev = flows * rng.integers(1, 40, rows), flows * rng.integers(1, 60, rows)
    start = DAY0.timestamp() + interval * INTERVAL
    ts = pa.timestamp("s", tz="UTC")
    cols = {"start_time": pa.array(start.astype(np.int64), ts),
            "end_time": pa.array((start + INTERVAL).astype(np.int64), ts),
            **_side("source", src_w, wd), **_side("dest", dst_w, wd),
            "dest_port": pa.array(port, pa.int32()),
            "dest_domains": domains.take(pa.array(dom)),
            "proto": _dict((kind == 1).astype(np.int32), ["tcp", "udp"]),
            "action": _dict(np.zeros(rows), ["allow"]),
            "reporter": _dict(dst.astype(np.int32), ["src", "dst"]),
            "enforced_policies": wd["traces"].take(pa.array(local_ns)),
            "pending_policies": wd["traces"].take(pa.array(local_ns)),
            "packets_in": np.where(dst, fwd, rev), "packets_out": np.where(dst, rev, fwd),
            "bytes_in": np.where(dst, fwd, rev) * 300, "bytes_out": np.where(dst, rev, fwd) * 300,
            "num_flows": flows, "num_flows_started": rng.binomial(flows, 0.3),
            "num_flows_completed": rng.binomial(flows, 0.3),
            "host": _dict(np.where(dst, dst_w, src_w) % 20, [f"node-{k:02d}" for k in range(20)]),
            "collector": _dict(np.zeros(rows), ["calico"])}
    return pa.table(cols)


def generate(root: Path, total: int, wd: dict[str, Any]) -> None:
    with Store(root).writer() as w:
        for hour in range(24):
            rows = (hour + 1) * total // 24 - hour * total // 24
            w.add_flows(hour_table(hour, rows, wd), host="bench")
            w.commit()


def store_rows(root: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in Store(root).files())


def ensure_store(root: Path | None, rows: int, wd: dict[str, Any]) -> tuple[Path, str]:
    default = root is None
    root = root or Path(tempfile.gettempdir()) / f"tierflow-bench-recommend-{rows}"
    if root.is_dir() and any(root.iterdir()):
        have = store_rows(root)
        if have == rows:
            return root, "reused"
        if not default:
            raise SystemExit(f"--store {root}: holds {have:,} records (wanted {rows:,})")
        shutil.rmtree(root)
    start = time.perf_counter()
    generate(root, rows, wd)
    return root, f"generated in {time.perf_counter() - start:.0f} s"


def inventory(wd: dict[str, Any]) -> Inventory:
    items: list[dict[str, Any]] = [
        {"kind": "Namespace", "metadata": {"name": n, "labels": {"team": n}}}
        for n in wd["spaces"][:-1]]
    for i in range(WORKLOADS + 1):
        app, digest = wd["names"][i][:-2].rsplit("-", 1)
        labels = ({"app": app, "pod-template-hash": digest} if i < WORKLOADS else
                  {"k8s-app": "kube-dns", "pod-template-hash": digest})
        ns = wd["spaces"][wd["ns_of"][i]]
        ip = f"10.{(i >> 16) + 244}.{(i >> 8) & 255}.{i & 255}"
        items.append({"kind": "Pod",
                      "metadata": {"name": f"{app}-{digest}-abcde", "namespace": ns,
                                   "generateName": f"{app}-{digest}-", "labels": labels},
                      "spec": {"containers": [{"name": "c"}]}, "status": {"podIP": ip}})
    return Inventory.from_objects(items)


# -- measuring -----------------------------------------------------------------------------

def timed(stages: list[tuple[str, float]], name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    out = fn()
    stages.append((name, time.perf_counter() - start))
    return out


def sql_timed(q: observe.Query, stages: list[tuple[str, float]]) -> observe.Query:
    """``q``, timing each statement under the name of its file in ``recommend/sql/``."""
    folder = resources.files("recommend").joinpath("sql")
    names = {f.read_text(): f.name for f in folder.iterdir() if f.name.endswith(".sql")}

    def run(sql: str, parameters: dict[str, object] | None) -> pa.Table:
        return timed(stages, names.get(sql, "(other SQL)"), lambda: q(sql, parameters))
    return run


def staged(root: Path, existing: PolicySet, inv: Inventory) -> list[tuple[str, float]]:
    """The steps of ``engine.recommend`` (all namespaces, defaults), each timed; the SQL of
    ``observe.traffic`` statement by statement, the rest of it as "observations"."""
    request = engine.Request(None)
    tier, window, s = request.check(), request.window, []
    q = timed(s, "connect", lambda: partial(query, connect(root, threads=THREADS)))
    sql: list[tuple[str, float]] = []
    start = time.perf_counter()
    observed, records = observe.traffic(sql_timed(q, sql), window)
    s += [*sql, ("observations (Arrow → values)",
                 time.perf_counter() - start - sum(t for _, t in sql))]
    obs = [o for o in observed if not engine._system(o.namespace)]
    cluster = timed(s, "cluster", lambda: Cluster.of(inv, obs))
    policies, warnings = timed(s, "plan", lambda: plan(obs, cluster, request.scope,
                                                      RuleOptions(False)))
    outputs = timed(s, "render + CRD schema", lambda: engine.render(
        policies, tier, request.format, existing, inv, list(warnings)))
    docs = timed(s, "round trip (YAML + loader)", lambda: engine.round_trip(outputs))
    pset = timed(s, "policy set", lambda: enforced_set(existing, docs))
    records = engine._without_system(records)
    proof = timed(s, f"replay ({records.num_rows:,} distinct records)",
                  lambda: replay(records, pset, inv))
    timed(s, "beyond (notes)", lambda: [tuple(beyond(p, cluster, existing.network_sets))
                                        for p in policies])
    if not proof.passed:
        raise AssertionError(f"staged run: replay failed: {proof.summary()}")
    return s


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--store", type=Path, help="generated store, kept for the next run "
                        "(default: TMPDIR/tierflow-bench-recommend-ROWS)")
    parser.add_argument("--no-stages", action="store_true", help="skip the staged run")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "recommend.txt")
    args = parser.parse_args()
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:THREADS]))
    pa.set_cpu_count(THREADS)
    pa.set_io_thread_count(THREADS)
    wd = world()
    root, how = ensure_store(args.store, args.rows, wd)
    inv = inventory(wd)
    existing = PolicySet.from_documents(load_text(TIERS))
    print("recommending ...", file=sys.stderr, flush=True)
    wall, cpu = time.perf_counter(), time.process_time()
    rec = engine.recommend(partial(query, connect(root, threads=THREADS)), existing, inv,
                           engine.Request(None))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stages = [] if args.no_stages else staged(root, existing, inv)
    files = Store(root).files()
    workloads = len({(p.target.namespace, w) for p in rec.policies for w in p.target.workloads})
    rules = sum(len(p.ingress) + len(p.egress) for p in rec.policies)
    proof = rec.proof
    lines = [
        f"recommend --all-namespaces: {store_rows(root):,} flow records over 24 h, "
        f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:,.0f} MB zstd "
        f"Parquet ({how}: {root})",
        f"every record unprotected (profile hit, allowed): {WORKLOADS:,} workloads in "
        f"{NAMESPACES} namespaces, ~{PEERS} peers each, DNS to kube-system/coredns, "
        f"{len(DOMAINS)} external domains; inventory {WORKLOADS + 1:,} pods; tiers only",
        f"pinned to {len(os.sched_getaffinity(0))} of {os.cpu_count()} CPUs ({cpu_model()}); "
        f"DuckDB threads={THREADS}, Arrow CPU pool {THREADS}; Python "
        f"{sys.version.split()[0]}, duckdb {duckdb.__version__}, pyarrow {pa.__version__}",
        "",
        f"  {'rows':>12} {'workloads':>9} {'policies':>8} {'rules':>7} {'files':>5} "
        f"{'seconds':>8} {'CPU s':>7}  replay",
        f"  {store_rows(root):>12,} {workloads:>9,} {len(rec.policies):>8,} {rules:>7,} "
        f"{len(rec.outputs):>5,} {wall:>8.2f} {cpu:>7.2f}  "
        f"{'PASSED' if proof.passed else 'FAILED'}: {proof.summary()}",
        "",
        f"target: all namespaces incl. replay proof < {TARGET:.0f} s on 2 cores: "
        f"{'MET' if wall < TARGET and proof.passed else 'MISSED'} ({wall:.2f} s)",
    ]
    if rec.warnings:
        lines.append(f"warnings: {len(rec.warnings)} (first: {rec.warnings[0][:100]})")
    if stages:
        total = sum(t for _, t in stages)
        lines += ["", f"the same steps one by one (second run, {total:.2f} s):"]
        lines += [f"  {name:<34} {t:>7.2f} {t / total:>6.0%}" for name, t in stages]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.write_text(text)


if __name__ == "__main__":
    main()
