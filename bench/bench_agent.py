"""The node agent under load (issue 7): new connections a second without loss, CPU, DNS.

Runs in the real-traffic lab of ``tests/netns_lab.py`` (root, network namespaces): the agent
runs in the node namespace as the DaemonSet does (``tierflow agent --iface br0 --interval 5``
with ``sample_flows/capture/inventory.json`` and the storefront policies), a fresh agent and
store for every step, the node's conntrack table emptied before each. The load comes from
``bench/agent_load.c``, compiled here with ``cc``: in C, so that it reaches thousands of
connections a second on 2 cores and leaves the agent a core (its CPU and the server's are
reported as "load").

* **Connections.** ``agent_load tcp`` in pod1 opens RATE short TCP connections a second to
  pod2:8080 (where ``agent_load server`` replaces the lab's HTTP server) for ``--seconds``:
  connect, a request, the answer, the server closes, the client closes. Each one is a
  conntrack entry left in TIME_WAIT for 120 s. One client-server pair has only ~32k source
  ports to connect from (Linux picks even ones), so past ~30k entries the client reuses the
  tuple of a TIME_WAIT entry, which conntrack replaces (a DESTROY event, then a NEW one), as
  on a busy real pair. Then SIGTERM flushes the open interval, and the step compares the
  connections the generator completed with ``sum(num_flows_started)`` of the src records
  from pod1 to pod2:8080 in the store, and reads the agent's losses in
  ``_state/agent-lab-node.json`` (``events_lost``: ENOBUFS on the event socket; ``evicted``;
  ``vanished``). A step passes when nothing is missing and no loss is counted; rates step up
  until one fails, or until the generator cannot open connections at the rate asked (1 %
  slack), which is the lab's limit rather than the agent's.
* **Steady state.** A node with RATE new connections a second keeps RATE × 120 s TIME_WAIT
  entries, which the agent dumps every interval; the lab's single pair never gets there. So
  the CPU step is run again with ``--prefill`` (120,000) TIME_WAIT entries between addresses
  the inventory does not know, loaded with ``conntrack -R`` before the agent starts; the
  load begins after the agent's first flush (which reports them once).
* **CPU** is user+sys of the agent's process (every thread) from ``/proc/PID/stat`` over the
  load window, as a fraction of one core; "flush lag" is how long after an interval's end
  its records were committed (from the agent's log), the worst of the load window.
* **Peer, connections:** what a user would otherwise run, ``conntrack -E -o extended`` (the
  CLI's event stream; every event type, as typed) piped into a Python consumer that splits
  each line into a ``key=value`` dict and counts; and the same with ``-e NEW,DESTROY`` (the
  events the agent subscribes to). CPU of both processes at ``--cpu-rate``, alone on the
  machine. It neither dumps the table (no counters for long-lived connections) nor builds
  or writes records, so it does less than the agent.
* **DNS.** ``agent_load dns`` in pod1 sends RATE A queries a second for ``api.twilio.com``
  (from one socket) to the lab's dnsmasq for ``--dns-seconds``; the agent's ``dns_answers``
  and ``frames_dropped`` are compared with the answers the client received. The peer is
  scapy's ``sniff(prn=...)`` on the same interface with BPF ``udp src port 53``, dissecting
  each packet and counting the A records of the answers (scapy's default socket buffer),
  given about 4 s after the load to catch up. A rate is kept up with when every answer was
  seen and none dropped. (On ``--iface any`` each answer is captured twice, on the DNS pod's
  bridge port and on the client's, and ``dns_answers`` counts both: hence br0 here.)

Measure on a quiet machine: the report gives the load average at the start and the versions.
The whole run takes about 10 minutes.

Usage: ``sudo .venv/bin/python bench/bench_agent.py [--seconds 60] [--out FILE]``
(its output is ``bench/results/agent.txt``)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from netns_lab import POD_IPS, Lab, running_lab  # noqa: E402

from analytics.db import connect, query  # noqa: E402

INVENTORY = REPO / "sample_flows" / "capture" / "inventory.json"
POLICIES = REPO / "sample_flows" / "storefront" / "policies"
TIERFLOW = (sys.executable, "-c", "from tierflow.cli import main; main()")
TICK = os.sysconf("SC_CLK_TCK")
HOST = "lab-node"
PORT = "8080"

# What a user would pipe `conntrack -E` into: one dict per event line.
CONSUMER = """
import sys
events = new = 0
for line in sys.stdin:
    words = line.split()
    row = {"type": words[0]}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if eq:
            row["reply_" + key if key in row else key] = value
    events += 1
    new += row["type"] == "[NEW]"
print(events, new)
"""

# The scapy peer for DNS: sniff(prn=...) dissects every packet.
SCAPY_DNS = """
import struct, sys, time
from scapy.all import sniff
from scapy.arch.linux import L2ListenSocket
from scapy.layers.dns import DNS
iface, seconds = sys.argv[1], float(sys.argv[2])
seen = [0]
def count(p):
    if DNS in p and p[DNS].qr == 1 and p[DNS].rcode == 0:
        seen[0] += sum(1 for rr in (p[DNS].an or []) if rr.type == 1)
sock = L2ListenSocket(iface=iface, filter="udp src port 53")
print("ready", flush=True)
sniff(opened_socket=sock, prn=count, store=False, timeout=seconds)
_, drops = struct.unpack("=II", sock.ins.getsockopt(263, 6, 8))
print(seen[0], drops, flush=True)
"""


@dataclass
class Step:
    """One load step: what the generator did and what the agent (or peer) made of it."""

    rate: int
    generator: dict[str, float]
    cpu: float  # fraction of one core over the load window
    seen: int  # connections started in the store / DNS answers seen
    stats: dict[str, Any]
    note: str = ""

    @property
    def done(self) -> int:
        return int(self.generator.get("completed", self.generator.get("answered", 0)))

    @property
    def kept_up(self) -> bool:
        """Nothing missing from the store, no loss counted."""
        s = self.stats
        return self.seen >= self.done and not any(
            s.get(k, 0) for k in ("events_lost", "evicted", "vanished", "frames_dropped",
                                  "frames_overflow"))

    @property
    def offered(self) -> bool:
        """The load came at the rate asked (1 % slack), none of it failing."""
        g = self.generator
        on_time = g.get("on_time", g.get("answered", 0))  # DNS: answers, not queries
        return (on_time >= 0.99 * self.rate * g.get("seconds_asked", 0)
                and not g.get("failed", 0) and not g.get("late", 0))

    @property
    def ok(self) -> bool:
        return self.kept_up and self.offered

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else "LOSS" if not self.kept_up else "load short of the rate"


def counts(line: str) -> dict[str, float]:
    """``a=1 b=2.5`` → ``{"a": 1.0, "b": 2.5}``."""
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory(pid: int) -> str:
    """The process's resident memory now and at its peak (``VmRSS``, ``VmHWM``)."""
    status = Path(f"/proc/{pid}/status").read_text()
    now, peak = (int(m.group(1)) // 1024 if (m := re.search(rf"{k}:\s+(\d+) kB", status))
                 else 0 for k in ("VmRSS", "VmHWM"))
    return f"RSS {now} MB (peak {peak})"


class Bench:
    def __init__(self, lab: Lab, load: Path, args: argparse.Namespace) -> None:
        self.lab, self.load, self.args = lab, load, args
        for proc in lab.procs:  # pod2's HTTP server is too slow: agent_load serves :8080
            if "http.server" in proc.args and PORT in proc.args:
                proc.terminate()
                proc.wait(5)
        self.server = lab.spawn("pod2", str(load), "server", POD_IPS["pod2"], PORT, "3600",
                                log="server.log")
        # The whole port range for the client, as a busy pod's would be spread over.
        lab.exec("pod1", "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")
        time.sleep(0.3)

    def generate(self, kind: str, rate: int, seconds: float) -> dict[str, float]:
        """Run the load in pod1; its counts, and ``load_cpu``: the generator's and the
        server's CPU over the run, in cores."""
        target = [POD_IPS["pod2"], PORT] if kind == "tcp" else [POD_IPS["dns"],
                                                                  "api.twilio.com"]
        cmd = ["ip", "netns", "exec", self.lab.ns("pod1"), str(self.load), kind, *target,
               str(rate), str(seconds)]
        server0, t0 = cpu_seconds(self.server.pid), time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # `ip netns exec` execs: the generator's
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}")
        dt = time.monotonic() - t0
        used = usage.ru_utime + usage.ru_stime + cpu_seconds(self.server.pid) - server0
        return counts(out) | {"load_cpu": used / dt, "seconds_asked": seconds}

    def prefill(self, n: int) -> None:
        """Fill the node's table with ``n`` TIME_WAIT entries between addresses that the
        inventory does not know (each tuple unique), as a busy node's table is at steady
        state."""
        lines = [f"-I -s 10.244.7.{i % 250 + 1} -d 10.244.8.{i % 7 + 1} -p tcp --sport "
                 f"{1024 + i // 250} --dport 8080 --state TIME_WAIT -t 300 -u "
                 "SEEN_REPLY,ASSURED" for i in range(n)]
        subprocess.run(["ip", "netns", "exec", self.lab.ns("node"), "conntrack", "-R", "-"],
                       input="\n".join(lines) + "\n", text=True, check=True,
                       capture_output=True)

    def start_agent(self, name: str, prefill: int = 0) -> subprocess.Popen[str]:
        self.lab.conntrack_flush()
        if prefill:
            self.prefill(prefill)
        store = self.lab.workdir / name
        proc = self.lab.spawn("node", *TIERFLOW, "agent", "--store", str(store),
                              "--inventory", str(INVENTORY), "--policies", str(POLICIES),
                              "--iface", self.args.iface, "--interval",
                              str(self.args.interval), "--host", HOST, log=f"{name}.log")
        wait_for(self.lab.workdir / f"{name}.log", "watching conntrack", proc)
        return proc

    def stop_agent(self, proc: subprocess.Popen[str], name: str) -> tuple[dict[str, Any], str]:
        proc.send_signal(signal.SIGTERM)
        log = self.lab.workdir / f"{name}.log"
        if proc.wait(300) != 0:
            raise RuntimeError(f"agent failed: {log.read_text()[-2000:]}")
        stats = json.loads((self.lab.workdir / name / "_state" / f"agent-{HOST}.json")
                           .read_text())
        return stats, log.read_text()

    def connections(self, rate: int, prefill: int = 0) -> Step:
        name = f"conn-{rate}-{prefill}"
        proc = self.start_agent(name, prefill)
        if prefill:  # the first flush reports the table's entries: not part of the load
            wait_for(self.lab.workdir / f"{name}.log", "flushed", proc, timeout=120)
        cpu0, t0, since = cpu_seconds(proc.pid), time.monotonic(), time.time()
        gen = self.generate("tcp", rate, self.args.seconds)
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        table = int(self.lab.conntrack("-C").strip() or 0)
        rss = memory(proc.pid)
        stats, log = self.stop_agent(proc, name)
        row = query(connect(self.lab.workdir / name), f"""
            SELECT coalesce(sum(num_flows_started), 0) AS n FROM flows
            WHERE reporter = 'src' AND source_name_aggr LIKE 'frontend-%'
              AND dest_port = {PORT}""").to_pylist()[0]
        return Step(rate, gen, cpu, int(row["n"]), stats,
                    f"table {table:,} at the end, worst flush lag "
                    f"{flush_lag(log, self.args.interval, since):.1f} s, {rss}, load "
                    f"{gen['load_cpu']:.2f} core")

    def conntrack_cli(self, rate: int, events: tuple[str, ...]) -> Step:
        self.lab.conntrack_flush()
        cmd = ["ip", "netns", "exec", self.lab.ns("node"), "conntrack", "-E", *events,
               "-o", "extended"]
        cli = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        consumer = subprocess.Popen([sys.executable, "-c", CONSUMER], stdin=cli.stdout,
                                    stdout=subprocess.PIPE, text=True)
        assert cli.stdout is not None
        cli.stdout.close()  # the consumer's now
        time.sleep(0.5)
        pids = (cli.pid, consumer.pid)
        cpu0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
        gen = self.generate("tcp", rate, self.args.peer_seconds)
        dt = time.monotonic() - t0
        cpu = [(cpu_seconds(p) - c) / dt for p, c in zip(pids, cpu0, strict=True)]
        time.sleep(1)
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=30)
        out, _ = consumer.communicate(timeout=60)
        n_events, n_new = (int(x) for x in out.split())
        lost = err.decode(errors="replace").count("ENOBUFS")
        return Step(rate, gen, sum(cpu), n_new, {"events_lost": lost},
                    f"conntrack {cpu[0]:.3f} + consumer {cpu[1]:.3f} core; "
                    f"{n_events:,} events read")

    def dns_agent(self, rate: int) -> Step:
        name = f"dns-{rate}"
        proc = self.start_agent(name)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        gen = self.generate("dns", rate, self.args.dns_seconds)
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        stats, _ = self.stop_agent(proc, name)
        return Step(rate, gen, cpu, stats["dns_answers"], stats)

    def dns_scapy(self, rate: int) -> Step:
        seconds = self.args.dns_seconds
        proc = self.lab.spawn("node", sys.executable, "-c", SCAPY_DNS, self.args.iface,
                              str(seconds + 6), log=f"scapy-{rate}.log")
        log = self.lab.workdir / f"scapy-{rate}.log"
        wait_for(log, "ready", proc)
        time.sleep(0.5)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        gen = self.generate("dns", rate, seconds)
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        proc.wait(60)
        seen, drops = (int(x) for x in log.read_text().split()[-2:])
        return Step(rate, gen, cpu, seen, {"frames_dropped": drops})


def wait_for(path: Path, text: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"no {text!r} in {path}: {path.read_text()[-2000:]}")


def flush_lag(log: str, interval: int, since: float) -> float:
    """The longest time from an interval's end to the log line of its flush, for flushes
    after ``since`` (the agent logs local time, and the interval's start as UTC hh:mm:ss)."""
    worst = 0.0
    for stamp, ms, hms in re.findall(
            r"^(\S+ \S+),(\d+) tierflow agent: flushed (\d\d:\d\d:\d\d):", log, re.M):
        logged = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
        h, m, s = (int(x) for x in hms.split(":"))
        start = logged // 86400 * 86400 + h * 3600 + m * 60 + s
        start += 86400 * round((logged - start) / 86400)  # the flush is within hours
        if logged >= since:
            worst = max(worst, logged - (start + interval))
    return worst


def compile_load(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench_agent needs a C compiler for its load generator "
                         "(apt-get install gcc)")
    out = tmp / "agent_load"
    subprocess.run([cc, "-O2", "-o", str(out), str(Path(__file__).with_name("agent_load.c"))],
                   check=True)
    return out


def version(cmd: list[str]) -> str:
    """The first line a tool prints about its version, up to a double space."""
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10,
                             cwd=REPO)
    except OSError:
        return "missing"
    return (out.stdout or out.stderr or "?").splitlines()[0].split("  ")[0].strip()


def climb(measure: Any, rates: list[int], out: list[str], fmt: Any) -> list[Step]:
    """Measure each rate in turn until one fails; print as it goes."""
    steps = []
    for rate in rates:
        step = measure(rate)
        steps.append(step)
        emit(out, fmt(step))
        if not step.ok:
            break
    return steps


def emit(out: list[str], line: str) -> None:
    print(line, flush=True)
    out.append(line)


def conn_line(s: Step) -> str:
    g, st = s.generator, s.stats
    return (f"{s.rate:>6,} {int(g['completed']):>10,} {s.seen:>10,} "
            f"{max(0, s.done - s.seen):>8,} {int(g['failed'] + g['late']):>7,} "
            f"{st.get('events_lost', 0):>6} {st.get('evicted', 0):>7} "
            f"{st.get('vanished', 0):>8} {s.cpu:>9.3f}  {s.verdict}; {s.note}")


def dns_line(s: Step) -> str:
    g, st = s.generator, s.stats
    return (f"{s.rate:>7,} {int(g['answered']):>10,} {s.seen:>10,} "
            f"{st.get('frames_dropped', 0) + st.get('frames_overflow', 0):>8,} "
            f"{s.cpu:>9.3f}  {'kept up' if s.ok else s.verdict}")


def best(steps: list[Step]) -> int:
    return max((s.rate for s in steps if s.ok), default=0)


def header(args: argparse.Namespace) -> list[str]:
    from scapy import __version__ as scapy_version  # noqa: PLC0415

    dirty = " + uncommitted changes" if version(["git", "status", "--porcelain"]) else ""
    return [
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, kernel "
        f"{platform.release()}, load average {os.getloadavg()[0]:.2f} at the start; "
        f"{time.strftime('%Y-%m-%d')}",
        f"tierflow at {version(['git', 'rev-parse', '--short', 'HEAD'])}{dirty}, "
        f"Python {platform.python_version()}, scapy {scapy_version}, "
        f"{version(['conntrack', '--version'])}, {version(['dnsmasq', '--version'])}, "
        f"{version(['cc', '--version'])}",
        f"agent: tierflow agent --iface {args.iface} --interval {args.interval} in the lab's "
        "node namespace, a fresh agent and empty conntrack table per step; load from "
        "bench/agent_load.c in pod1"]


def run(lab: Lab, load: Path, args: argparse.Namespace) -> list[str]:
    bench, out = Bench(lab, load, args), []
    for line in header(args):
        emit(out, line)
    emit(out, f"\nnew connections/s, pod1 -> pod2:{PORT}, {args.seconds:.0f} s a step "
              "(missing = completed by the generator - sum(num_flows_started) of src records; "
              "load = generator + server CPU)")
    emit(out, f"{'rate':>6} {'completed':>10} {'in store':>10} {'missing':>8} {'failed':>7} "
              f"{'lost':>6} {'evicted':>7} {'vanished':>8} {'CPU core':>9}")
    conns = climb(bench.connections, args.rates, out, conn_line)
    emit(out, f"the same at {args.cpu_rate:,}/s with {args.prefill:,} more TIME_WAIT entries "
              "in the table (120 s of them at 1,000/s: a node's steady state; the lab's one "
              "client-server pair reuses its ~32k ports sooner):")
    steady = bench.connections(args.cpu_rate, args.prefill)
    emit(out, conn_line(steady))
    at = next((s for s in conns if s.rate == args.cpu_rate), None)
    ours = at.cpu if at else float("nan")
    worst = max(ours, steady.cpu)
    emit(out, f"max sustained without loss: {best(conns):,} new connections/s (target 2,000: "
              f"{'met' if best(conns) >= 2000 else 'NOT met'}); agent CPU at "
              f"{args.cpu_rate:,}/s: {ours:.3f} core, {steady.cpu:.3f} with the full table "
              f"(target < 0.5: {'met' if worst < 0.5 else 'NOT met'})")
    peers(bench, args, ours, out)
    emit(out, f"\nDNS answers/s, pod1 -> dnsmasq, {args.dns_seconds:.0f} s a step "
              "(seen: A records the sniffer counted; dropped: kernel + agent drops)")
    emit(out, f"{'rate':>7} {'answered':>10} {'seen':>10} {'dropped':>8} {'CPU core':>9}")
    emit(out, "tierflow agent:")
    agent_dns = climb(bench.dns_agent, args.dns_rates, out, dns_line)
    emit(out, "scapy sniff(prn=...):")
    scapy_dns = climb(bench.dns_scapy, args.dns_rates, out, dns_line)
    a, b = best(agent_dns), best(scapy_dns)
    emit(out, f"kept up with: agent {a:,} answers/s, scapy {b:,} answers/s "
              f"(x{a / b if b else float('inf'):.1f})")
    return out


def peers(bench: Bench, args: argparse.Namespace, ours: float, out: list[str]) -> None:
    emit(out, f"\npeers at {args.cpu_rate:,} new connections/s, {args.peer_seconds:.0f} s, "
              "alone (CPU of every process of the pipeline)")
    emit(out, f"  {'tierflow agent (flows, counters, policies, store)':54} {ours:.3f} core")
    for events in ((), ("-e", "NEW,DESTROY")):
        peer = bench.conntrack_cli(args.cpu_rate, events)
        label = " ".join(["conntrack -E", *events, "-o extended | python"])
        emit(out, f"  {label:54} {peer.cpu:.3f} core  x{peer.cpu / ours:.2f} the agent's; "
                  f"{peer.seen:,} NEW of {peer.done:,}; ENOBUFS {peer.stats['events_lost']}; "
                  f"{peer.note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="per connection-rate step")
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")],
                    default=[500, 1000, 2000, 4000, 8000, 10000])
    ap.add_argument("--cpu-rate", type=int, default=1000)
    ap.add_argument("--prefill", type=int, default=120_000,
                    help="TIME_WAIT entries added for the steady-state step at --cpu-rate")
    ap.add_argument("--peer-seconds", type=float, default=20)
    ap.add_argument("--dns-seconds", type=float, default=5)
    ap.add_argument("--dns-rates", type=lambda s: [int(x) for x in s.split(",")],
                    default=[1000, 2000, 5000, 10000, 20000, 40000])
    ap.add_argument("--iface", default="br0", help="what the agent and scapy sniff")
    ap.add_argument("--interval", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "agent.txt")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_agent needs root (network namespaces)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, running_lab() as lab:
        lines = run(lab, compile_load(Path(tmp)), args)
    lines.append(f"# python bench/bench_agent.py --seconds {args.seconds:.0f} "
                 f"({time.monotonic() - started:.0f} s in all)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
