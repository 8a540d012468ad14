"""Record sample_flows/capture/lab.pcap: real traffic in the network-namespace lab.

Run as root from the repository root: ``.venv/bin/python scripts/record_sample_capture.py``.
The lab (tests/netns_lab.py) has pod1 10.244.1.11, pod2 10.244.1.12, a DNS server
10.244.1.13 and an external host 203.0.113.10/.20; ``sample_flows/capture/inventory.json``
names them as the storefront's frontend, microservice1 and CoreDNS pods, so the capture can
be evaluated against the storefront policies. Nothing is sent from the root namespace.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from netns_lab import HTTP_POD2, running_lab  # noqa: E402


def main() -> None:
    out = REPO / "sample_flows" / "capture" / "lab.pcap"
    with running_lab() as lab:
        tmp = lab.workdir / "lab.pcap"
        with lab.tcpdump("node", "br0", tmp) as cap:
            for _ in range(3):  # frontend → microservice1:8080 (allowed: dmz → trusted)
                lab.http_get("pod1", HTTP_POD2)
            lab.resolve("pod1", "api.twilio.com")  # DNS, then the external API
            lab.http_get("pod1", "http://api.twilio.com/")
            lab.resolve("pod1", "hooks.slack.com")  # a CNAME chain to 203.0.113.20
            lab.http_get("pod1", "http://hooks.slack.com/")
            lab.udp_echo("pod1", [b"ping", b"pong!"])  # UDP 9999: dmz may reach trusted on any port
            lab.http_get("pod2", "http://203.0.113.10/")  # microservice1 → external
            time.sleep(0.5)
        shutil.copyfile(tmp, out)
    print(f"{out}: {cap.captured} packets, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
