"""A real-traffic lab in network namespaces, shared by the capture tests.

Topology (every name carries a per-process prefix such as ``tf1234a``, so parallel pytest
processes never collide; nothing is linked to the root namespace, which must never send lab
traffic)::

    <p>-pod1  eth0 10.244.1.11/24 ─veth─ v-pod1 ┐
    <p>-pod2  eth0 10.244.1.12/24 ─veth─ v-pod2 ├ br0 10.244.1.1/24   <p>-node (ip_forward,
    <p>-dns   eth0 10.244.1.13/24 ─veth─ v-dns  ┘                      conntrack acct+timestamp)
    <p>-ext   eth0 198.51.100.2/30 ─veth─ v-ext 198.51.100.1/30
              lo 203.0.113.10/32, 203.0.113.20/32

Services, each probed from inside its own namespace before the lab is handed out (so setup
traffic never crosses the node): dnsmasq on 10.244.1.13:53 (``api.twilio.com`` →
203.0.113.10, ``hooks.slack.com`` CNAME ``edge.slack-lb.example`` → 203.0.113.20, TTL 60,
authoritative for everything else), HTTP on 10.244.1.12:8080 and on 203.0.113.10/.20:80,
and a UDP echo on 10.244.1.12:9999. Every namespace resolves through 10.244.1.13.

Use the session fixture ``netns_lab`` (import it into the test module)::

    from netns_lab import netns_lab  # noqa: F401  (pytest fixture)

    @pytest.mark.netns
    def test_x(netns_lab: Lab, tmp_path: Path) -> None:
        with netns_lab.tcpdump("node", "br0", tmp_path / "a.pcap") as cap:
            netns_lab.exec("pod1", *netns_lab.curl("http://10.244.1.12:8080/"))
        assert cap.captured > 0

Without root it fails (skips only with TIERFLOW_SKIP_NETNS=1), and fails loudly when the lab
cannot be built.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

__all__ = ["Capture", "Lab", "LabError", "lab_fixture", "netns_lab"]

POD_IPS = {"pod1": "10.244.1.11", "pod2": "10.244.1.12", "dns": "10.244.1.13"}
NODE_IP = "10.244.1.1"
EXT_IPS = ("203.0.113.10", "203.0.113.20")
DNS_RECORDS = {"api.twilio.com": "203.0.113.10", "edge.slack-lb.example": "203.0.113.20"}
DNS_CNAMES = {"hooks.slack.com": "edge.slack-lb.example"}
DNS_TTL = 60
HTTP_POD2 = "http://10.244.1.12:8080/"
UDP_ECHO = ("10.244.1.12", 9999)
NAMESPACES = ("node", "pod1", "pod2", "dns", "ext")

_COUNTER = itertools.count()
# A UDP echo server for the pod2 namespace: replies to each datagram with the same bytes.
_UDP_ECHO_CODE = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    f"s.bind({UDP_ECHO!r})\n"
    "while True:\n"
    "    data, peer = s.recvfrom(65535)\n"
    "    s.sendto(data, peer)\n"
)


class LabError(RuntimeError):
    """The lab could not be built or a lab command failed; the message has the command's output."""


@dataclass
class Capture:
    """A running or finished tcpdump; ``captured``/``dropped`` are set when it has stopped."""

    path: Path
    process: subprocess.Popen[str]
    captured: int | None = None
    dropped: int | None = None
    stderr: str = ""


@dataclass
class Lab:
    """The namespaces, processes and files of one lab; ``close()`` removes all of them."""

    prefix: str
    workdir: Path
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(self, name: str) -> str:
        """The real namespace name of lab namespace ``name`` (``pod1`` → ``tf123a-pod1``)."""
        return f"{self.prefix}-{name}"

    def exec(self, ns: str, *cmd: str, check: bool = True,
             timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside lab namespace ``ns`` and wait; raise ``LabError`` if it fails."""
        return _run("ip", "netns", "exec", self.ns(ns), *cmd, check=check, timeout=timeout)

    def spawn(self, ns: str, *cmd: str, log: str | None = None) -> subprocess.Popen[str]:
        """Start ``cmd`` in lab namespace ``ns``; output goes to ``workdir/<log>``; the lab
        stops it at ``close()``. ``ip netns exec`` execs, so the pid is ``cmd``'s own."""
        out = open(self.workdir / (log or f"{ns}-{len(self.procs)}.log"), "w")  # noqa: SIM115
        with out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns(ns), *cmd], text=True,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def python(self, ns: str, code: str, *args: str, timeout: float = 20) -> str:
        """Run Python ``code`` in lab namespace ``ns``; return its stdout."""
        return self.exec(ns, sys.executable, "-c", code, *args, timeout=timeout).stdout

    @staticmethod
    def curl(url: str) -> tuple[str, ...]:
        """A curl command that fetches ``url`` (no proxy, 5 s limit) and prints the status."""
        return ("curl", "-s", "--noproxy", "*", "-m", "5", "-o", "/dev/null",
                "-w", "%{http_code}", url)

    def http_get(self, ns: str, url: str) -> str:
        """Fetch ``url`` from namespace ``ns``; return the HTTP status, e.g. ``'200'``."""
        return self.exec(ns, *self.curl(url)).stdout

    def udp_echo(self, ns: str, payloads: list[bytes]) -> int:
        """Send each payload from one socket in ``ns`` to the UDP echo and wait for each
        echo; return how many came back."""
        code = ("import socket, sys\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
                f"s.connect({UDP_ECHO!r}); n = 0\n"
                "for p in sys.argv[1:]:\n"
                "    s.send(bytes.fromhex(p)); n += len(s.recv(65535)) == len(p) // 2\n"
                "print(n)\n")
        return int(self.python(ns, code, *(p.hex() for p in payloads)))

    def resolve(self, ns: str, name: str) -> list[str]:
        """Resolve ``name`` with glibc in ``ns`` (A and AAAA queries go to the lab DNS)."""
        out = self.exec(ns, "getent", "ahostsv4", name, check=False).stdout
        return sorted({line.split()[0] for line in out.splitlines() if line.strip()})

    def conntrack(self, *args: str) -> str:
        """Run the ``conntrack`` CLI in the node namespace, e.g. ``conntrack("-L")``."""
        return self.exec("node", "conntrack", *args).stdout

    def conntrack_flush(self) -> None:
        """Empty the node namespace's conntrack table."""
        self.exec("node", "conntrack", "-F", check=False)

    @contextlib.contextmanager
    def tcpdump(self, ns: str, iface: str, path: str | os.PathLike[str],
                extra_args: tuple[str, ...] | list[str] = ()) -> Iterator[Capture]:
        """Capture on ``iface`` of namespace ``ns`` into ``path`` while the block runs.

        Returns only once tcpdump is capturing (it printed ``listening on``). On exit it
        waits until the file stops growing, stops tcpdump with SIGINT and waits for it,
        so the file is complete; ``Capture.captured``/``dropped`` hold tcpdump's counts.
        """
        path = Path(path)
        # -B: with the default 2 MB buffer and 256 KiB ring slots, a burst of 8 packets on
        # "any" already drops; 16 MB has never dropped here.
        cmd = ["ip", "netns", "exec", self.ns(ns), "tcpdump", "-i", iface, "-nn", "-U",
               "--immediate-mode", "-B", "16384", "-Z", "root", "-w", str(path), *extra_args]
        proc = subprocess.Popen(cmd, text=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        capture = Capture(path=path, process=proc)
        try:
            capture.stderr = _wait_for_line(proc, "listening on", timeout=10)
            yield capture
        finally:
            _settle(path)
            _stop(proc, capture)

    def build(self) -> None:
        """Create namespaces, links, routes, sysctls and services; raise ``LabError``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in NAMESPACES:
            self._add_namespace(name)
        self._link_pods()
        self._link_ext()
        for name in ("node", "ext"):  # leak guard: no way out of the lab
            if _run("ip", "-n", self.ns(name), "route", "show", "default").stdout.strip():
                raise LabError(f"{self.ns(name)} has a default route")
        self._enable_conntrack()
        self._start_services()

    def close(self) -> None:
        """Stop every process the lab started, delete its namespaces and files."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stderr:
                proc.stderr.close()
        for ns in self.namespaces:
            _run("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _add_namespace(self, name: str) -> None:
        ns = self.ns(name)
        _run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        # The resolv.conf first: http.server reverse-resolves its address at start-up, and
        # without it the lookup would aim at the host's resolver.
        Path(f"/etc/netns/{ns}").mkdir(parents=True, exist_ok=True)
        Path(f"/etc/netns/{ns}/resolv.conf").write_text(f"nameserver {POD_IPS['dns']}\n")
        # No IPv6: router solicitations and MLD reports would be noise in every capture.
        self.exec(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                  "net.ipv6.conf.default.disable_ipv6=1")
        _run("ip", "-n", ns, "link", "set", "lo", "up")

    def _link_pods(self) -> None:
        node = self.ns("node")
        _run("ip", "-n", node, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", node, "addr", "add", f"{NODE_IP}/24", "dev", "br0")
        _run("ip", "-n", node, "link", "set", "br0", "up")
        for name, addr in POD_IPS.items():
            pod = self.ns(name)
            _run("ip", "link", "add", f"v-{name}", "netns", node, "type", "veth",
                 "peer", "name", "eth0", "netns", pod)
            _run("ip", "-n", node, "link", "set", f"v-{name}", "master", "br0", "up")
            _run("ip", "-n", pod, "addr", "add", f"{addr}/24", "dev", "eth0")
            _run("ip", "-n", pod, "link", "set", "eth0", "up")
            _run("ip", "-n", pod, "route", "add", "default", "via", NODE_IP)

    def _link_ext(self) -> None:
        node, ext = self.ns("node"), self.ns("ext")
        _run("ip", "link", "add", "v-ext", "netns", node, "type", "veth",
             "peer", "name", "eth0", "netns", ext)
        _run("ip", "-n", node, "addr", "add", "198.51.100.1/30", "dev", "v-ext")
        _run("ip", "-n", node, "link", "set", "v-ext", "up")
        _run("ip", "-n", ext, "addr", "add", "198.51.100.2/30", "dev", "eth0")
        _run("ip", "-n", ext, "link", "set", "eth0", "up")
        for addr in EXT_IPS:
            _run("ip", "-n", ext, "addr", "add", f"{addr}/32", "dev", "lo")
        _run("ip", "-n", ext, "route", "add", "10.244.0.0/16", "via", "198.51.100.1")
        _run("ip", "-n", node, "route", "add", "203.0.113.0/24", "via", "198.51.100.2")

    def _enable_conntrack(self) -> None:
        self.exec("node", "sysctl", "-qw", "net.ipv4.ip_forward=1",
                  "net.netfilter.nf_conntrack_acct=1", "net.netfilter.nf_conntrack_timestamp=1")
        # A fresh namespace registers no conntrack hooks until a rule needs them.
        if shutil.which("nft"):
            self.exec("node", "nft", "add table inet tierflow_lab; add chain inet tierflow_lab "
                      "ctforward { type filter hook forward priority 0; policy accept; }; "
                      "add rule inet tierflow_lab ctforward ct state new counter")
        else:
            self.exec("node", "iptables", "-A", "FORWARD", "-m", "conntrack",
                      "--ctstate", "NEW", "-j", "ACCEPT")

    def _start_services(self) -> None:
        records = [f"--host-record={n},{a}" for n, a in DNS_RECORDS.items()]
        cnames = [f"--cname={n},{t}" for n, t in DNS_CNAMES.items()]
        self.spawn("dns", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                   "--no-poll", "--conf-file=/dev/null", f"--listen-address={POD_IPS['dns']}",
                   "--bind-interfaces", "--user=root", "--group=root",
                   f"--pid-file={self.workdir / 'dnsmasq.pid'}", *records, *cnames,
                   f"--local-ttl={DNS_TTL}", "--local=/#/", "--log-facility=-", log="dnsmasq.log")
        # Authoritative for all names (--local=/#/): AAAA is NODATA, unknown names NXDOMAIN.
        self._wait("dns DNS", "dns", "getent", "ahostsv4", "api.twilio.com")
        self.spawn("pod2", sys.executable, "-m", "http.server", "8080", "--bind", POD_IPS["pod2"],
                   "--directory", str(self.workdir), log="http-pod2.log")
        self.spawn("ext", sys.executable, "-m", "http.server", "80", "--bind", "0.0.0.0",
                   "--directory", str(self.workdir), log="http-ext.log")
        self.spawn("pod2", sys.executable, "-c", _UDP_ECHO_CODE, log="udp-echo.log")
        self._wait("pod2 HTTP", "pod2", *self.curl(HTTP_POD2))
        for addr in EXT_IPS:
            self._wait("ext HTTP", "ext", *self.curl(f"http://{addr}/"))
        code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"s.settimeout(0.2); s.sendto(b'x', {UDP_ECHO!r}); s.recv(10)")
        self._wait("pod2 UDP echo", "pod2", sys.executable, "-c", code)

    def _wait(self, what: str, ns: str, *cmd: str, timeout: float = 15) -> None:
        """Retry ``cmd`` in ``ns`` until it succeeds; a service probe from its own namespace."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.exec(ns, *cmd, check=False)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-500:] for p in self.workdir.glob("*.log")}
                raise LabError(f"{what} did not come up within {timeout} s: "
                               f"{done.stdout!r} {done.stderr!r}; logs: {logs}")
            time.sleep(0.1)


def new_lab() -> Lab:
    """A lab with a prefix unique to this process and call (``tf<pid>a``, ``tf<pid>b``...)."""
    n = next(_COUNTER)
    prefix = f"tf{os.getpid()}{chr(ord('a') + n % 26)}{n // 26 or ''}"
    return Lab(prefix=prefix, workdir=Path(tempfile.mkdtemp(prefix=f"{prefix}-")))


@contextlib.contextmanager
def running_lab() -> Iterator[Lab]:
    """Build a lab, hand it out, and always tear it down, also when building failed."""
    lab = new_lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.close()


_LAB_KEY = pytest.StashKey[Lab]()


def lab_fixture(scope: Literal["session", "package", "module"] = "session") -> Any:
    """A pytest fixture that yields a running ``Lab``.

    Fails when not root (unless TIERFLOW_SKIP_NETNS=1); a lab that cannot be built fails
    the tests that use it. When test
    modules each import the fixture, pytest sees one fixture per module; the first builds
    the lab and keeps it in ``config.stash``, the others reuse it, so a session builds one.
    """

    @pytest.fixture(scope=scope)
    def netns_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
        if os.geteuid() != 0:
            # Tests run as root here and in CI; elsewhere opt out explicitly, so a missing
            # privilege never passes silently as a skip.
            if os.environ.get("TIERFLOW_SKIP_NETNS") != "1":
                pytest.fail("needs root (network namespaces, veth, AF_PACKET); set "
                            "TIERFLOW_SKIP_NETNS=1 to skip the real-traffic tests")
            pytest.skip("TIERFLOW_SKIP_NETNS=1: real-traffic tests skipped")
        shared = request.config.stash.get(_LAB_KEY, None)
        if shared is not None:
            yield shared
            return
        with running_lab() as lab:
            request.config.stash[_LAB_KEY] = lab
            try:
                yield lab
            finally:
                del request.config.stash[_LAB_KEY]

    return netns_lab


netns_lab = lab_fixture()


def _run(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(cmd)}: timed out after {timeout} s") from e
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def _wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    """Read ``proc``'s stderr until it contains ``text``; return what was read.

    Reads the raw descriptor (not the text wrapper, whose buffer ``select`` cannot see),
    so nothing is left buffered for the ``communicate()`` that stops the process.
    """
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline and text.encode() not in seen:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:  # the process ended before it started capturing
                break
            seen += chunk
    if text.encode() in seen:
        return seen.decode(errors="replace")
    raise LabError(f"{proc.args!r} did not print {text!r}: {seen.decode(errors='replace')!r}")


def _settle(path: Path, quiet: float = 0.3, limit: float = 5.0) -> None:
    """Wait until ``path`` has not grown for ``quiet`` seconds (packets still in flight)."""
    deadline = time.monotonic() + limit
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = path.stat().st_size if path.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[str], capture: Capture) -> None:
    """SIGINT makes tcpdump flush, close the file and print its counts; then wait."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=5)
    capture.stderr += err or ""
    if m := re.search(r"(\d+) packets? captured", capture.stderr):
        capture.captured = int(m.group(1))
    if m := re.search(r"(\d+) packets? dropped by kernel", capture.stderr):
        capture.dropped = int(m.group(1))
