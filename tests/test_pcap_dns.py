"""DNS answers in captures → DNS rows (question name → address, per client)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from pcap_samples import T0, dns_answer, eth, pcap, read_all, record
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from ingest.dns import parse_response
from ingest.schema import Reject

WHEN = datetime(2026, 1, 1, tzinfo=UTC)
EXPECTED = "a whole, well-formed DNS response"


def row(client: str, name: str, ip: str, ttl: int, us: int = 0) -> dict[str, object]:
    return {"time": WHEN + timedelta(microseconds=us), "client_ip": client, "name": name,
            "ip": ip, "ttl": ttl}


def test_cname_chain_in_any_order_maps_the_question_name() -> None:
    answer = dns_answer("10.0.0.1", "Hooks.Slack.com.", [
        ("edge.slack-lb.example", 30, "A", "203.0.113.20"),
        ("other.example", 30, "A", "198.51.100.7"),  # not reached from the question
        ("hooks.slack.com", 60, "CNAME", "edge.slack-lb.example")])
    got = read_all(pcap([(T0, eth(answer))]))
    assert got.dns == [row("10.0.0.1", "hooks.slack.com", "203.0.113.20", 30)]


def test_a_and_aaaa_answers_and_an_ipv6_client() -> None:
    v4 = dns_answer("10.0.0.1", "api.twilio.com", [("api.twilio.com", 60, "A", "203.0.113.10"),
                                                   ("api.twilio.com", 60, "A", "203.0.113.11")])
    v6 = (IPv6(src="2001:db8::53", dst="2001:db8::1") / UDP(sport=53, dport=4000)
          / DNS(id=5, qr=1, qd=DNSQR(qname="api.twilio.com", qtype="AAAA"),
                an=[DNSRR(rrname="api.twilio.com", type="AAAA", ttl=7, rdata="2001:db8::10")]))
    got = read_all(pcap([(T0, eth(v4)), (T0 + 1, eth(v6))]))
    assert got.dns == [row("10.0.0.1", "api.twilio.com", "203.0.113.10", 60),
                       row("10.0.0.1", "api.twilio.com", "203.0.113.11", 60),
                       row("2001:db8::1", "api.twilio.com", "2001:db8::10", 7, 1)]


def test_errors_and_queries_give_no_rows() -> None:
    nx = dns_answer("10.0.0.1", "nope.example", [], rcode=3)
    query = IP(src="10.0.0.53", dst="10.0.0.9") / UDP(sport=53, dport=53) / DNS(
        id=3, qr=0, qd=DNSQR(qname="x.example"))
    got = read_all(pcap([(T0, eth(nx)), (T0 + 1, eth(query))]))
    assert (got.dns, got.rejects) == ([], [])


def test_identical_answers_with_other_ids_are_each_a_row() -> None:
    answers = [(T0 + i, eth(dns_answer(f"10.0.0.{i + 1}", "db.local",
                                       [("db.local", 5, "A", "10.9.0.1")], ident=100 + i)))
               for i in range(3)]
    got = read_all(pcap(answers))
    assert got.dns == [row(f"10.0.0.{i + 1}", "db.local", "10.9.0.1", 5, i) for i in range(3)]


def test_dns_over_tcp_with_length_prefix() -> None:
    msg = bytes(DNS(id=9, qr=1, qd=DNSQR(qname="tcp.example"),
                    an=[DNSRR(rrname="tcp.example", ttl=9, rdata="192.0.2.1")]))
    seg = IP(src="10.0.0.53", dst="10.0.0.1") / TCP(sport=53, dport=5555, flags="PA") / (
        struct.pack(">H", len(msg)) + msg)
    handshake = IP(src="10.0.0.53", dst="10.0.0.1") / TCP(sport=53, dport=5555, flags="SA")
    got = read_all(pcap([(T0, eth(handshake)), (T0 + 1, eth(seg))]))
    assert got.dns == [row("10.0.0.1", "tcp.example", "192.0.2.1", 9, 1)]
    assert got.rejects == []


def test_malformed_and_cut_short_answers_are_rejected() -> None:
    loop = bytes.fromhex("0001818000010001000000000178000001000"
                         "1c00c0001000100000e10") + b"\xc0\x21"  # answer data missing
    bad = IP(src="10.0.0.53", dst="10.0.0.1") / UDP(sport=53, dport=4000) / loop
    good = eth(dns_answer("10.0.0.1", "ok.example", [("ok.example", 1, "A", "192.0.2.9")]))
    cut = eth(dns_answer("10.0.0.1", "cut.example", [("cut.example", 1, "A", "192.0.2.8")]))
    data = pcap([(T0, eth(bad)), (T0 + 1, good)]) + record(T0 + 2, cut, caplen=60)
    got = read_all(data)
    second = 24 + len(record(T0, eth(bad)))
    third = second + len(record(T0 + 1, good))
    assert got.rejects == [
        Reject("t.pcap", "packet 1 at byte 24", "dns",
               "record data at byte 31 runs past its end (31 bytes)", EXPECTED,
               loop),
        Reject("t.pcap", f"packet 3 at byte {third}", "dns",
               "cut short by the capture: 18 bytes captured", EXPECTED, cut[42:60])]
    assert got.dns == [row("10.0.0.1", "ok.example", "192.0.2.9", 1, 1)]


def test_parse_response_rejects_pointer_loops() -> None:
    header = struct.pack(">HHHHHH", 1, 0x8180, 1, 0, 0, 0)
    message = header + b"\xc0\x0c"  # the question name points at itself
    try:
        parse_response(message)
    except ValueError as e:
        assert str(e) == "compression pointers loop at byte 12"
    else:
        raise AssertionError("no error")
