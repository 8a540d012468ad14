"""Record sample_flows/storefront/storefront.pcap: the storefront scenario (reference/calico.md
§10) as real traffic between network namespaces, then regenerate flows.log from it.

Run as root from the repository root: ``.venv/bin/python scripts/record_storefront.py``
(``--no-flows-log`` records the capture only). Nothing is sent from the root namespace and
nothing is linked to it::

    <p>-fe1 .. <p>-nginx  eth0 <pod IP>/16 ─veth─ v-<pod> ┐
    <p>-dns               eth0 10.244.0.2/16 ─veth─ v-dns ┴ br0 10.244.0.1/16  <p>-node
    <p>-ext               eth0 198.51.100.2/30 ─veth─ v-ext 198.51.100.1/30    (ip_forward)
                          lo 203.0.113.10/32 (api.twilio.com), 142.250.72.14/32 (www.google.com)

Every pod of ``sample_flows/storefront/inventory.json`` that takes part gets its own namespace
with the IP the inventory gives it (``status.podIP``), so the capture and the inventory agree
by construction. The DNS namespace plays CoreDNS (dnsmasq, authoritative for everything,
answering only the two external names); the external namespace serves plain TCP on 443.
Storefront services serve HTTP on 8080, nginx on 80 (Python's http.server).

The calls are the scenario's: frontend → microservice1/2, microservice1/2 → backend, the two
microservices → each other, every service → logging, microservice2 → api.twilio.com (DNS,
then TCP 443), dev/centos → nginx; and calls that the sample policies deny. The node drops
those (an nft rule per denied call), as Calico would, so a denied connection shows its SYNs
and no answer: frontend → backend (dmz egress), microservice1/2 → logging (trusted egress:
the scenario's "denied logging traffic"), centos → microservice1 (trusted ingress) and
microservice2 → www.google.com (platform.twilio-integration's Deny to public addresses).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from netns_lab import Lab, LabError  # noqa: E402

SAMPLE = REPO / "sample_flows" / "storefront"
NODE_IP = "10.244.0.1"
EXTERNAL = {"api.twilio.com": "203.0.113.10", "www.google.com": "142.250.72.14"}
DNS_TTL = 60
# The flows.log settings of the lab (reference/calico.md §10 "Felix tuning").
FELIX = ("--interval", "15", "--aggregation-allowed", "1", "--aggregation-denied", "0")
HOST = "lab-node"

# lab namespace → (inventory pod, port it serves on, or None)
PODS = {
    "fe1": ("storefront/frontend-864f4fcdfd-2hhv4", 8080),
    "fe2": ("storefront/frontend-864f4fcdfd-x7k9p", 8080),
    "ms1": ("storefront/microservice1-7b9d6c8f5d-4lq2m", 8080),
    "ms2": ("storefront/microservice2-6c7f9b8d4b-9zx8w", 8080),
    "be": ("storefront/backend-5f8d7c6b9f-k2j4h", 8080),
    "log": ("storefront/logging-7d9f8c5b6c-p5t7r", 8080),
    "centos": ("dev/centos-6f8b9d7c5d-h4m2n", None),
    "nginx": ("dev/nginx-7c5ddbdf54-q9w8z", 80),
    "dns": ("kube-system/coredns-5d78c9869d-6xkqj", 53),
}


@dataclass(frozen=True)
class Call:
    """``src`` calls ``dst`` (a lab pod or an external name) on ``port``; ``denied_by`` names
    the sample policy that denies it, and the lab's node drops it."""

    src: str
    dst: str
    port: int
    denied_by: str | None = None


ROUND = [  # allowed calls, made twice
    Call("fe1", "ms1", 8080), Call("fe2", "ms1", 8080),
    Call("fe1", "ms2", 8080), Call("fe2", "ms2", 8080),
    Call("ms1", "be", 8080), Call("ms2", "be", 8080),
    Call("ms1", "ms2", 8080), Call("ms2", "ms1", 8080),
    Call("fe1", "log", 8080), Call("fe2", "log", 8080), Call("be", "log", 8080),
    Call("ms2", "api.twilio.com", 443),
    Call("centos", "nginx", 80),
]
DENIED = [  # made once, at the same time
    Call("fe1", "be", 8080, "storefront/default.dmz egress"),
    Call("ms1", "log", 8080, "storefront/default.trusted egress"),
    Call("ms2", "log", 8080, "storefront/default.trusted egress"),
    Call("centos", "ms1", 8080, "storefront/default.trusted ingress"),
    Call("ms2", "www.google.com", 443, "platform.twilio-integration egress"),
]

# Resolve a name (one A query: AF_INET), connect, say something, print the answer.
_TCP_CLIENT = (
    "import socket, sys\n"
    "name, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    "ip = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]\n"
    "try:\n"
    "    with socket.create_connection((ip, port), timeout=limit) as s:\n"
    "        s.sendall(b'hello ' + name.encode() + b'\\n')\n"
    "        print(s.recv(100).decode().strip())\n"
    "except OSError as e:\n"
    "    print('no answer:', e)\n"
)
# The external hosts: a plain TCP server on 443 answering each connection with one line.
_TCP_SERVER = (
    "import socket\n"
    "s = socket.create_server(('0.0.0.0', 443), reuse_port=True)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    with c:\n"
    "        c.recv(100)\n"
    "        c.sendall(b'ok\\n')\n"
)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def pod_ips(inventory: Path) -> dict[str, str]:
    """Each lab pod's address, from the inventory it plays."""
    items = json.loads(inventory.read_text())["items"]
    by_name = {f"{i['metadata']['namespace']}/{i['metadata']['name']}": i["status"]["podIP"]
               for i in items if i["kind"] == "Pod"}
    return {lab: by_name[pod] for lab, (pod, _) in PODS.items()}


class StorefrontLab(Lab):
    """The storefront pods on one node bridge, CoreDNS, and the outside world."""

    def __init__(self, prefix: str, workdir: Path, ips: dict[str, str]) -> None:
        super().__init__(prefix=prefix, workdir=workdir)
        self.ips = ips

    def build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("node", "ext", *PODS):
            self._add_namespace(name)
            Path(f"/etc/netns/{self.ns(name)}/resolv.conf").write_text(
                f"nameserver {self.ips['dns']}\n")
        node = self.ns("node")
        _run("ip", "-n", node, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", node, "addr", "add", f"{NODE_IP}/16", "dev", "br0")
        _run("ip", "-n", node, "link", "set", "br0", "up")
        for name, addr in self.ips.items():
            pod = self.ns(name)
            _run("ip", "link", "add", f"v-{name}", "netns", node, "type", "veth",
                 "peer", "name", "eth0", "netns", pod)
            _run("ip", "-n", node, "link", "set", f"v-{name}", "master", "br0", "up")
            _run("ip", "-n", pod, "addr", "add", f"{addr}/16", "dev", "eth0")
            _run("ip", "-n", pod, "link", "set", "eth0", "up")
            _run("ip", "-n", pod, "route", "add", "default", "via", NODE_IP)
        self._link_outside()
        for name in ("node", "ext"):  # leak guard: no way out of the lab
            if _run("ip", "-n", self.ns(name), "route", "show", "default").stdout.strip():
                raise LabError(f"{self.ns(name)} has a default route")
        self.exec("node", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self._enforce(DENIED)
        self._start_services()

    def _link_outside(self) -> None:
        node, ext = self.ns("node"), self.ns("ext")
        _run("ip", "link", "add", "v-ext", "netns", node, "type", "veth",
             "peer", "name", "eth0", "netns", ext)
        _run("ip", "-n", node, "addr", "add", "198.51.100.1/30", "dev", "v-ext")
        _run("ip", "-n", node, "link", "set", "v-ext", "up")
        _run("ip", "-n", ext, "addr", "add", "198.51.100.2/30", "dev", "eth0")
        _run("ip", "-n", ext, "link", "set", "eth0", "up")
        _run("ip", "-n", ext, "route", "add", "10.244.0.0/16", "via", "198.51.100.1")
        for addr in EXTERNAL.values():
            _run("ip", "-n", ext, "addr", "add", f"{addr}/32", "dev", "lo")
            _run("ip", "-n", node, "route", "add", f"{addr}/32", "via", "198.51.100.2")

    def _enforce(self, denied: list[Call]) -> None:
        """Drop the denied calls in the node's forward hook (bridged packets pass it through
        br_netfilter, routed ones anyway), after the capture point on br0."""
        rules = [f"add rule inet storefront_lab forward ip saddr {self.ips[c.src]} "
                 f"ip daddr {self.address(c.dst)} tcp dport {c.port} drop" for c in denied]
        self.exec("node", "nft", "; ".join([
            "add table inet storefront_lab",
            "add chain inet storefront_lab forward { type filter hook forward priority 0; "
            "policy accept; }", *rules]))

    def address(self, dst: str) -> str:
        return EXTERNAL.get(dst) or self.ips[dst]

    def _start_services(self) -> None:
        self.spawn("dns", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                   "--no-poll", "--conf-file=/dev/null", f"--listen-address={self.ips['dns']}",
                   "--bind-interfaces", "--user=root", "--group=root",
                   f"--pid-file={self.workdir / 'dnsmasq.pid'}",
                   *(f"--host-record={n},{a}" for n, a in EXTERNAL.items()),
                   f"--local-ttl={DNS_TTL}", "--local=/#/", "--log-facility=-", log="dnsmasq.log")
        self._wait("CoreDNS", "dns", "getent", "ahostsv4", "api.twilio.com")
        for name, (pod, port) in PODS.items():
            if name == "dns" or port is None:
                continue
            root = self.workdir / "www" / name
            root.mkdir(parents=True)
            (root / "index.html").write_text(f"{pod.split('/')[1].rsplit('-', 2)[0]}\n")
            self.spawn(name, sys.executable, "-m", "http.server", str(port), "--bind",
                       self.ips[name], "--directory", str(root), log=f"http-{name}.log")
        self.spawn("ext", sys.executable, "-c", _TCP_SERVER, log="tcp-ext.log")
        for name, (_, port) in PODS.items():
            if name != "dns" and port is not None:
                self._wait(name, name, *self.curl(f"http://{self.ips[name]}:{port}/"))
        probe = ("import socket, sys; socket.create_connection((sys.argv[1], 443), "
                 "timeout=1).close()")
        for addr in EXTERNAL.values():
            self._wait("external TCP 443", "ext", sys.executable, "-c", probe, addr)

    def call(self, c: Call, limit: float = 5) -> subprocess.Popen[str]:
        """Start call ``c``; its process prints the HTTP status or the answer."""
        if c.dst in EXTERNAL:
            cmd: tuple[str, ...] = (sys.executable, "-c", _TCP_CLIENT, c.dst, str(c.port),
                                    str(limit))
        else:
            cmd = ("curl", "-s", "--noproxy", "*", "-m", str(limit), "-o", "/dev/null",
                   "-w", "%{http_code}", f"http://{self.ips[c.dst]}:{c.port}/")
        return subprocess.Popen(["ip", "netns", "exec", self.ns(c.src), *cmd], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def record(out: Path) -> tuple[int | None, int]:
    ips = pod_ips(SAMPLE / "inventory.json")
    lab = StorefrontLab(f"sf{os.getpid()}", Path(tempfile.mkdtemp(prefix="storefront-")), ips)
    try:
        lab.build()
        tmp = lab.workdir / "storefront.pcap"
        with lab.tcpdump("node", "br0", tmp, ("not", "igmp")) as cap:
            # The calls take about 2 s: start them early in a 15-s flush interval so the
            # sample's records are not cut in two by an interval boundary.
            if (left := 15 - time.time() % 15) < 5:
                time.sleep(left + 0.2)
            for _ in range(2):
                for c in ROUND:
                    answer = lab.call(c).communicate(timeout=10)[0].strip()
                    if answer not in ("200", "ok"):
                        raise LabError(f"{c}: expected an answer, got {answer!r}")
            # Denied calls time out after the SYN and one retransmission; run them together.
            running = [(c, lab.call(c, limit=1.5)) for c in DENIED]
            for c, proc in running:
                answer = proc.communicate(timeout=10)[0].strip()
                if answer not in ("000", "") and not answer.startswith("no answer"):
                    raise LabError(f"{c}: the node should have dropped it, got {answer!r}")
            time.sleep(0.3)
        shutil.copyfile(tmp, out)
    finally:
        lab.close()
    return cap.captured, out.stat().st_size


def flows_log(pcap: Path, out: Path) -> None:
    """Ingest the capture with the inventory and policies, export the store as flows.log."""
    tierflow = str(Path(sys.executable).parent / "tierflow")
    with tempfile.TemporaryDirectory(prefix="storefront-store-") as store:
        subprocess.run([tierflow, "ingest", "pcap", str(pcap), "--store", store,
                        "--inventory", str(SAMPLE / "inventory.json"),
                        "--policies", str(SAMPLE / "policies"), "--host", HOST, *FELIX],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([tierflow, "export", "calico", "--store", store, "--out", str(out)],
                       check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-flows-log", action="store_true",
                        help="record the capture only; leave flows.log as it is")
    args = parser.parse_args()
    pcap = SAMPLE / "storefront.pcap"
    packets, size = record(pcap)
    print(f"{pcap}: {packets} packets, {size} bytes")
    if not args.no_flows_log:
        log = SAMPLE / "flows.log"
        flows_log(pcap, log)
        lines = log.read_bytes().count(b"\n")
        print(f"{log}: {lines} records")


if __name__ == "__main__":
    main()
