"""The reader against tshark on REAL traffic captured with tcpdump in the netns lab.

One traffic run (HTTP pod→pod and pod→external by name, DNS with a CNAME, UDP echo) is
captured at once on the node's bridge (Ethernet), on ``any`` (Linux cooked v2, and v1 with
``-y LINUX_SLL``) and on the bridge with ``-s 64``; the Ethernet capture is also converted to
pcapng and nanosecond pcap with editcap. For each file, every TCP and UDP conversation must
have tshark's frames and bytes in each direction (tshark counts frame bytes, so ours plus the
link header per packet), and IP-layer bytes must equal the sums of tshark's ``ip.len``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest
from netns_lab import HTTP_POD2, Lab, netns_lab  # noqa: F401  (netns_lab: pytest fixture)

from ingest.pcap import read_pcap
from ingest.schema import Reject

pytestmark = pytest.mark.netns

# link-layer header bytes per packet, by capture
CAPTURES = {"br0.pcap": ("br0", [], 14), "any.pcap": ("any", [], 20),
            "any-sll1.pcap": ("any", ["-y", "LINUX_SLL"], 16),
            "br0-s64.pcap": ("br0", ["-s", "64"], 14)}
Conversations = dict[tuple[str, frozenset[tuple[str, int]]], dict[tuple[str, int], tuple[int, int]]]


@pytest.fixture(scope="module")
def captures(netns_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    """Each capture file of one traffic run, by name."""
    out = tmp_path_factory.mktemp("captures")
    with contextlib.ExitStack() as stack:
        caps = [stack.enter_context(netns_lab.tcpdump("node", iface, out / name, args))
                for name, (iface, args, _) in CAPTURES.items()]
        _traffic(netns_lab)
    for cap in caps:
        assert cap.dropped == 0, cap.stderr
    files = {name: out / name for name in CAPTURES}
    for fmt, name in (("pcapng", "br0.pcapng"), ("nsecpcap", "br0-ns.pcap")):
        subprocess.run(["editcap", "-F", fmt, str(out / "br0.pcap"), str(out / name)],
                       check=True, capture_output=True)
        files[name] = out / name
    return files


def _traffic(lab: Lab) -> None:
    for _ in range(3):
        assert lab.http_get("pod1", HTTP_POD2) == "200"
    for ns, url in (("pod1", "http://api.twilio.com/"), ("pod1", "http://api.twilio.com/"),
                    ("pod1", "http://hooks.slack.com/"), ("pod2", "http://api.twilio.com/")):
        assert lab.http_get(ns, url) == "200"
    assert lab.udp_echo("pod1", [b"a", b"bb" * 50, b"c" * 700]) == 3


def _ours(path: Path) -> tuple[Conversations, list[dict[str, object]], list[Reject]]:
    """Our conversations (frames and IP bytes per direction), DNS rows and rejects."""
    batches = list(read_pcap(path, interval=60))
    segments = pa.concat_tables([b.segments for b in batches]).to_pylist()
    per_conn: dict[int, dict[str, object]] = {}
    for r in segments:
        if r["proto"] not in (6, 17):
            continue
        c = per_conn.setdefault(r["conn_id"], {**r, "packets_fwd": 0, "bytes_fwd": 0,
                                               "packets_rev": 0, "bytes_rev": 0})
        for k in ("packets_fwd", "bytes_fwd", "packets_rev", "bytes_rev"):
            c[k] += r[k]  # type: ignore[operator]
    conversations: Conversations = {}
    for c in per_conn.values():
        src, dst = (c["src_ip"], c["src_port"]), (c["dst_ip"], c["dst_port"])
        key = ("tcp" if c["proto"] == 6 else "udp", frozenset({src, dst}))
        assert key not in conversations, "one connection per conversation in this capture"
        conversations[key] = {src: (c["packets_fwd"], c["bytes_fwd"]),  # type: ignore[dict-item]
                              dst: (c["packets_rev"], c["bytes_rev"])}
    dns = [r for b in batches for r in b.dns.to_pylist()]
    return conversations, dns, [r for b in batches for r in b.rejects]


def _tshark_conversations(path: Path) -> Conversations:
    """``tshark -z conv,tcp -z conv,udp``: frames and frame bytes per direction."""
    text = subprocess.run(["tshark", "-q", "-z", "conv,tcp", "-z", "conv,udp", "-r", str(path)],
                          check=True, capture_output=True, text=True).stdout
    line = re.compile(r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+) (\d+) bytes\s+(\d+) (\d+) bytes")
    conversations: Conversations = {}
    proto = ""
    for row in text.splitlines():
        if row.endswith("Conversations"):
            proto = row.split()[0].lower()
        if m := line.match(row):
            a, b = (m[1], int(m[2])), (m[3], int(m[4]))
            # "<-" is what B sent to A, "->" what A sent to B
            conversations[(proto, frozenset({a, b}))] = {b: (int(m[5]), int(m[6])),
                                                         a: (int(m[7]), int(m[8]))}
    return conversations


def _tshark_ip_bytes(path: Path) -> Conversations:
    """Frames and ``ip.len`` sums per direction, from ``tshark -T fields``."""
    fields = ["ip.src", "ip.dst", "ip.proto", "tcp.srcport", "tcp.dstport", "udp.srcport",
              "udp.dstport", "ip.len"]
    cmd = ["tshark", "-r", str(path), "-T", "fields", "-Y", "tcp or udp"]
    for f in fields:
        cmd += ["-e", f]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    sums: dict[tuple[str, frozenset[tuple[str, int]]], dict[tuple[str, int], list[int]]] = (
        defaultdict(lambda: defaultdict(lambda: [0, 0])))
    for line in text.splitlines():
        src, dst, proto, tsp, tdp, usp, udp, length = line.split("\t")
        sport, dport = (tsp, tdp) if proto == "6" else (usp, udp)
        a, b = (src, int(sport)), (dst, int(dport))
        total = sums[("tcp" if proto == "6" else "udp", frozenset({a, b}))][a]
        total[0] += 1
        total[1] += int(length)
    return {k: {end: (n, size) for end, (n, size) in v.items()} for k, v in sums.items()}


def _frame_bytes(ours: Conversations, link: int) -> Conversations:
    return {k: {end: (n, size + link * n) for end, (n, size) in v.items()}
            for k, v in ours.items()}


def _complete(c: Conversations) -> Conversations:
    """Both directions present, a silent one as (0, 0), as our rows have them."""
    return {k: {end: v.get(end, (0, 0)) for end in k[1]} for k, v in c.items()}


@pytest.mark.parametrize("name", [*CAPTURES, "br0.pcapng", "br0-ns.pcap"])
def test_conversations_match_tshark(captures: dict[str, Path], name: str) -> None:
    ours, _, rejects = _ours(captures[name])
    link = CAPTURES.get(name, (None, None, 14))[2]
    if name != "br0-s64.pcap":
        theirs = _tshark_conversations(captures[name])
        assert len(theirs) >= 3 + 4 + 1  # HTTP to pod2, to ext, UDP echo (plus DNS)
        assert _frame_bytes(ours, link) == theirs
        assert rejects == []
    else:  # 64 bytes hold our headers, not the DNS answers (nor TCP options, for tshark)
        assert rejects
        assert {(r.field, r.value.split(":")[0]) for r in rejects} == {
            ("dns", "cut short by the capture")}
    assert len(ours) >= 8
    assert _complete(ours) == _complete(_tshark_ip_bytes(captures[name]))


def test_formats_give_identical_rows(captures: dict[str, Path]) -> None:
    def rows(name: str) -> list[dict[str, object]]:
        return pa.concat_tables([b.segments for b in read_pcap(captures[name])]).to_pylist()

    assert rows("br0.pcapng") == rows("br0.pcap") == rows("br0-ns.pcap")


def test_dns_answers_on_the_wire(captures: dict[str, Path]) -> None:
    for name in ("br0.pcap", "any.pcap", "br0.pcapng"):
        _, dns, _ = _ours(captures[name])
        assert {(r["client_ip"], r["name"], r["ip"], r["ttl"]) for r in dns} == {
            ("10.244.1.11", "api.twilio.com", "203.0.113.10", 60),
            ("10.244.1.11", "hooks.slack.com", "203.0.113.20", 60),
            ("10.244.1.12", "api.twilio.com", "203.0.113.10", 60)}


def test_tools_present() -> None:
    assert shutil.which("tshark") and shutil.which("editcap") and shutil.which("tcpdump")
