"""End-to-end ingest: a 1-million-packet capture → Calico flow records with policy traces →
the Parquet store, per stage, on one core; with tshark's conversation table on the same file
for scale (it does a fraction of the work: no identities, no policy, no store).

The capture is ``bench_pcap.synthetic_pcap`` (HTTP, downloads, DNS, long-lived TCP, UDP
streams from 4,000 client IPs to 200 servers). The inventory gives every address a pod:
clients in 40 team namespaces (100 Deployments of 40 pods), servers, databases, metrics and
DNS in their own namespaces. The policy set has a security tier passing everything, a
platform tier allowing DNS, and per-namespace default-tier policies (allow egress to the
services, allow ingress from the teams, deny the rest) — about 100 policies.

Run: ``.venv/bin/python bench/bench_ingest.py [--packets N]`` (writes bench/results/ingest.txt).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa
from bench_pcap import synthetic_pcap

from ingest.flows import Aggregation, FlowBuilder
from ingest.identity import Resolver
from ingest.inventory import Inventory
from ingest.jobs import ingest_pcap
from ingest.pcap import read_pcap
from ingest.store import Store
from policy import Evaluator, PolicySet, load_text
from policy.batch import BatchEvaluator

TEAMS = 40


def _pod(ns: str, app: str, i: int, ip: str, labels: dict[str, str]) -> dict[str, object]:
    return {"kind": "Pod", "metadata": {
        "name": f"{app}-5f8d7c6b9f-{i:05d}", "namespace": ns,
        "generateName": f"{app}-5f8d7c6b9f-", "labels": {"app": app, **labels},
        "ownerReferences": [{"kind": "ReplicaSet", "name": f"{app}-5f8d7c6b9f",
                             "controller": True}]},
        "spec": {"containers": [{"name": "c", "ports": [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"podIP": ip}}


def inventory() -> Inventory:
    items: list[dict[str, object]] = [
        {"kind": "Namespace", "metadata": {"name": n, "labels": {"tier": t}}}
        for n, t in [*((f"team-{k:02d}", "app") for k in range(TEAMS)),
                     ("services", "backend"), ("data", "backend"), ("observability", "infra"),
                     ("kube-system", "infra")]]
    base = int(ipaddress.ip_address("10.244.0.0"))
    for i in range(4000):  # clients: team namespaces, 100 apps of 40 pods
        app = i // 40
        items.append(_pod(f"team-{app % TEAMS:02d}", f"app-{app:03d}", i,
                          str(ipaddress.ip_address(base + i)), {"role": "client"}))
    for i in range(200):
        ip = str(ipaddress.ip_address(base + 0x1000 + i))
        if i < 50:  # the long-lived TCP servers (port 5432) are the first 50 of this range
            items.append(_pod("data", "postgres", i, ip, {"role": "db"}))
        else:
            items.append(_pod("services", f"api-{i % 20:02d}", i, ip, {"role": "api"}))
    for i in range(5):
        items.append(_pod("observability", "statsd", i,
                          str(ipaddress.ip_address(base + 0x2000 + i)), {"role": "metrics"}))
    items.append(_pod("kube-system", "coredns", 0, "10.244.1.13", {"k8s-app": "kube-dns"}))
    return Inventory.from_objects(items, "bench inventory")


def policies() -> PolicySet:
    docs = ["""
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass}
spec:
  tier: security
  selector: all()
  ingress: [{action: Pass}]
  egress: [{action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: platform.dns}
spec:
  tier: platform
  order: 10
  selector: all()
  egress:
    - action: Allow
      protocol: UDP
      destination: {selector: k8s-app == 'kube-dns', ports: [53]}
    - action: Pass
  ingress: [{action: Pass}]
"""]
    for k in range(TEAMS):
        docs.append(f"""
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: default.egress, namespace: team-{k:02d}}}
spec:
  tier: default
  order: 100
  selector: role == 'client'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination:
        namespaceSelector: tier == 'backend'
        ports: [80, 8080, 5432]
    - action: Allow
      protocol: UDP
      destination: {{selector: role == 'metrics', namespaceSelector: all()}}
    - action: Deny
""")
    for ns, role, proto, ports in (("services", "api", "TCP", "[80, 8080]"),
                                   ("data", "db", "TCP", "[5432]"),
                                   ("observability", "metrics", "UDP", "[8125]")):
        for app in range(20):
            docs.append(f"""
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: default.allow-{app:02d}, namespace: {ns}}}
spec:
  tier: default
  order: {200 + app}
  selector: role == '{role}' && app != 'x{app}'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: {proto}
      source: {{namespaceSelector: tier == 'app'}}
      destination: {{ports: {ports}}}
""")
    text = "\n---\n".join(d.strip() for d in docs)
    return PolicySet.from_documents(load_text(text, "bench policies"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "ingest.txt")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    os.environ["POLARS_MAX_THREADS"] = "1"
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "bench.pcap"
        packets = synthetic_pcap(cap, args.packets)
        inv, ps = inventory(), policies()
        evaluator = BatchEvaluator(Evaluator(ps, inv.namespaces),
                                   lambda ns, n: inv.endpoint(f"{ns}/{n}"), inv.namespaces)
        builder = FlowBuilder(Resolver(inv, ps.network_sets), evaluator, Aggregation(),
                              "bench-node", "pcap")
        lines.append(f"capture: {packets:,} packets, {cap.stat().st_size / 1e6:.0f} MB; "
                     f"inventory {len(inv.endpoints):,} pods; {len(ps.policies)} policies; "
                     "one core (cpu 0, POLARS_MAX_THREADS=1)")
        t0 = time.process_time()
        batches = list(read_pcap(cap, interval=300))
        t1 = time.process_time()
        segments = pa.concat_tables([b.segments for b in batches])
        dns = pa.concat_tables([b.dns for b in batches])
        flows = builder.build(segments, dns)
        t2 = time.process_time()
        store = Store(Path(tmp) / "store")
        with store.writer() as w:
            w.add_flows(flows, "bench-node")
            w.commit()
        t3 = time.process_time()
        lines.append(f"  read capture -> {segments.num_rows:,} segments  {t1 - t0:6.2f} s "
                     f"{packets / (t1 - t0):12,.0f} packets/s")
        lines.append(f"  identities, policy, aggregation -> {flows.num_rows:,} records "
                     f"{t2 - t1:6.2f} s {segments.num_rows / (t2 - t1):12,.0f} segments/s")
        lines.append(f"  write Parquet (zstd), commit      {t3 - t2:6.2f} s "
                     f"{flows.num_rows / (t3 - t2):12,.0f} records/s")
        t4 = time.perf_counter()
        job = ingest_pcap([cap], Store(Path(tmp) / "store2"), builder)
        t5 = time.perf_counter()
        lines.append(f"tierflow ingest pcap (the job, end to end)  {t5 - t4:6.2f} s "
                     f"{packets / (t5 - t4):12,.0f} packets/s  ({job.written:,} records)")
        t6 = time.perf_counter()
        subprocess.run(["taskset", "-c", "0", "tshark", "-q", "-z", "conv,tcp", "-z",
                        "conv,udp", "-r", str(cap)], check=True, capture_output=True)
        t7 = time.perf_counter()
        lines.append(f"tshark -z conv,tcp -z conv,udp (no identities, policy or store) "
                     f"{t7 - t6:6.2f} s {packets / (t7 - t6):12,.0f} packets/s; "
                     f"tierflow end to end is x{(t7 - t6) / (t5 - t4):.1f} faster")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.write_text(text)


if __name__ == "__main__":
    main()
