"""``tierflow simulate`` end to end: the storefront lab sample (``sample_flows/storefront``)
and small hand-built clusters, through click's CliRunner and once through a real process.

The expected verdicts and policy traces below were worked out by hand from the sample's
policies (``reference/calico.md`` §2, §6, §10), not copied from the tool's output:

* every endpoint is selected by ``security.pass`` (tier security, order 500) and
  ``platform.pass`` (tier platform, order 700), so a flow that no earlier policy decides
  carries the hits ``security.pass|pass|0`` and ``platform.pass|pass|0`` and reaches the
  default tier, then the ``kns.<namespace>`` profile when no default-tier policy selects it;
* the staged ``default.restricted`` replaces the enforced one of that name in the pending
  view only; the staged ``default-deny`` makes the default tier end in Deny for dev pods in
  the pending view only;
* traffic to or from an address that is not a pod is policed at the pod's end only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tierflow.cli import cli

REPO = Path(__file__).resolve().parents[1]
STOREFRONT = REPO / "sample_flows" / "storefront"
POLICIES = STOREFRONT / "policies"
INVENTORY = STOREFRONT / "inventory.json"
PROBES = STOREFRONT / "probes.jsonl"

CENTOS = "dev/centos-6f8b9d7c5d-h4m2n"
NGINX = "dev/nginx-7c5ddbdf54-q9w8z"
DNS1 = "kube-system/coredns-5d78c9869d-6xkqj"
DNS2 = "kube-system/coredns-5d78c9869d-tw8vl"
BACKEND = "storefront/backend-5f8d7c6b9f-k2j4h"
FE1 = "storefront/frontend-864f4fcdfd-2hhv4"
FE2 = "storefront/frontend-864f4fcdfd-x7k9p"
LOGGING = "storefront/logging-7d9f8c5b6c-p5t7r"
MS1 = "storefront/microservice1-7b9d6c8f5d-4lq2m"
MS2 = "storefront/microservice2-6c7f9b8d4b-9zx8w"

SEC = "security|security.pass|pass|0"
PLAT = "platform|platform.pass|pass|0"
DMZ = "default|storefront/default.dmz"
TRUSTED = "default|storefront/default.trusted"
RESTRICTED = "default|storefront/default.restricted"
STAGED_RESTRICTED = "default|storefront/default.staged:restricted"
DEV_EOT = "default|default.staged:default-deny|deny|-1"


def trace(*hits: str) -> list[str]:
    """Hits with their position prefixed, as flow logs number them."""
    return [f"{i}|{h}" for i, h in enumerate(hits)]


def side(verdict: str, hits: list[str], pending_verdict: str | None = None,
         pending_hits: list[str] | None = None) -> dict[str, Any]:
    """One direction at a pod; the pending view equals the enforced one unless given."""
    return {
        "verdict": verdict,
        "pending_verdict": pending_verdict or verdict,
        "policed": True,
        "enforced_policies": hits,
        "pending_policies": hits if pending_hits is None else pending_hits,
    }


# The far end of a flow that is not a pod: nothing polices it there.
UNPOLICED = {"verdict": "allow", "pending_verdict": "allow", "policed": False,
             "enforced_policies": [], "pending_policies": []}

# One entry per line of probes.jsonl: (verdict, pending_verdict, egress, ingress).
EXPECTED: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    # 1 frontend -> microservice1: dmz egress rule 0 (to trusted), trusted ingress rule 0.
    ("allow", "allow",
     side("allow", trace(SEC, PLAT, f"{DMZ}|allow|0")),
     side("allow", trace(SEC, PLAT, f"{TRUSTED}|allow|0"))),
    # 2 microservice1 -> microservice2: trusted egress rule 0, trusted ingress rule 1.
    ("allow", "allow",
     side("allow", trace(SEC, PLAT, f"{TRUSTED}|allow|0")),
     side("allow", trace(SEC, PLAT, f"{TRUSTED}|allow|1"))),
    # 3 microservice2 -> backend: twilio-integration matches nothing (no domain, not public);
    # trusted egress rule 1 (to restricted); restricted ingress rule 0 via the named port
    # http = 8080; the staged restricted has the same ingress rules.
    ("allow", "allow",
     side("allow", trace(SEC, PLAT, f"{TRUSTED}|allow|1")),
     side("allow", trace(SEC, PLAT, f"{RESTRICTED}|allow|0"),
          "allow", trace(SEC, PLAT, f"{STAGED_RESTRICTED}|allow|0"))),
    # 4 frontend -> backend: dmz egress ends in its Deny rule 2; restricted ingress Deny 2.
    ("deny", "deny",
     side("deny", trace(SEC, PLAT, f"{DMZ}|deny|2")),
     side("deny", trace(SEC, PLAT, f"{RESTRICTED}|deny|2"),
          "deny", trace(SEC, PLAT, f"{STAGED_RESTRICTED}|deny|2"))),
    # 5 frontend -> logging: dmz egress rule 0 (app == logging); platform.logging allows
    # TCP 8080 from has(fw-zone) in the platform tier.
    ("allow", "allow",
     side("allow", trace(SEC, PLAT, f"{DMZ}|allow|0")),
     side("allow", trace(SEC, "platform|platform.logging|allow|0"))),
    # 6 microservice2 -> Twilio by name: twilio-integration rule 0, before the public Deny
    # (54.172.60.15 is inside the public set).
    ("allow", "allow",
     side("allow", trace(SEC, "platform|platform.twilio-integration|allow|0")),
     UNPOLICED),
    # 7 microservice2 -> google: not *.twilio.com; 142.250.72.14 is public: rule 1 Deny.
    ("deny", "deny",
     side("deny", trace(SEC, "platform|platform.twilio-integration|deny|1")),
     UNPOLICED),
    # 8 backend -> public IP: enforced restricted egress allows all; the staged one denies.
    ("allow", "deny",
     side("allow", trace(SEC, PLAT, f"{RESTRICTED}|allow|0"),
          "deny", trace(SEC, PLAT, f"{STAGED_RESTRICTED}|deny|2")),
     UNPOLICED),
    # 9 frontend -> coredns UDP 53: platform.allow-kube-dns rule 0; coredns has no
    # default-tier policy: profile kns.kube-system.
    ("allow", "allow",
     side("allow", trace(SEC, "platform|platform.allow-kube-dns|allow|0")),
     side("allow", trace(SEC, PLAT, "__PROFILE__|__PROFILE__.kns.kube-system|allow|0"))),
    # 10 microservice1 -> coredns TCP 53: allow-kube-dns rule 1.
    ("allow", "allow",
     side("allow", trace(SEC, "platform|platform.allow-kube-dns|allow|1")),
     side("allow", trace(SEC, PLAT, "__PROFILE__|__PROFILE__.kns.kube-system|allow|0"))),
    # 11 load balancer range 18.0.0.0/16 -> frontend: dmz ingress rule 0.
    ("allow", "allow",
     UNPOLICED,
     side("allow", trace(SEC, PLAT, f"{DMZ}|allow|0"))),
    # 12 other internet address -> frontend: dmz ingress Deny rule 1.
    ("deny", "deny",
     UNPOLICED,
     side("deny", trace(SEC, PLAT, f"{DMZ}|deny|1"))),
    # 13 centos -> nginx: no enforced default-tier policy in dev, so the kns.dev profile
    # allows; the staged default-deny ends the default tier in Deny in the pending view.
    ("allow", "deny",
     side("allow", trace(SEC, PLAT, "__PROFILE__|__PROFILE__.kns.dev|allow|0"),
          "deny", trace(SEC, PLAT, DEV_EOT)),
     side("allow", trace(SEC, PLAT, "__PROFILE__|__PROFILE__.kns.dev|allow|0"),
          "deny", trace(SEC, PLAT, DEV_EOT))),
    # 14 centos -> microservice1: not dmz/trusted of storefront: trusted ingress Deny 2.
    ("deny", "deny",
     side("allow", trace(SEC, PLAT, "__PROFILE__|__PROFILE__.kns.dev|allow|0"),
          "deny", trace(SEC, PLAT, DEV_EOT)),
     side("deny", trace(SEC, PLAT, f"{TRUSTED}|deny|2"))),
    # 15 centos -> logging: centos has no fw-zone, platform.logging does not match;
    # no default-tier policy selects logging: the kns.storefront profile allows.
    ("allow", "deny",
     side("allow", trace(SEC, PLAT, "__PROFILE__|__PROFILE__.kns.dev|allow|0"),
          "deny", trace(SEC, PLAT, DEV_EOT)),
     side("allow", trace(SEC, PLAT, "__PROFILE__|__PROFILE__.kns.storefront|allow|0"))),
    # 16 microservice1 -> microservice2 ICMP echo: the trusted rules have no protocol.
    ("allow", "allow",
     side("allow", trace(SEC, PLAT, f"{TRUSTED}|allow|0")),
     side("allow", trace(SEC, PLAT, f"{TRUSTED}|allow|1"))),
]

# --matrix --port 8080 --protocol TCP, worked out from the zone policies: rows are sources.
PODS = [CENTOS, NGINX, DNS1, DNS2, BACKEND, FE1, FE2, LOGGING, MS1, MS2]
MATRIX_8080 = [
    ". . . . X X X . X X",  # centos: egress open; dmz/trusted/restricted refuse it
    ". . . . X X X . X X",  # nginx
    ". . . . X X X . X X",  # coredns
    ". . . . X X X . X X",  # coredns
    ". . . . . X X . X X",  # backend: restricted -> restricted on http is allowed
    "X X X X X X X . . .",  # frontend: only trusted and logging
    "X X X X X X X . . .",  # frontend
    ". . . . X X X . X X",  # logging: no zone policy, egress open
    "X X X X . X X X . .",  # microservice1: only trusted and restricted (not logging)
    "X X X X . X X X . .",  # microservice2
]
# The same under the pending view: dev pods are isolated both ways by the staged
# default-deny; backend egress is cut down to logging (and DNS) by the staged restricted.
MATRIX_8080_PENDING = [
    "X X X X X X X X X X",
    "X X X X X X X X X X",
    "X X . . X X X . X X",
    "X X . . X X X . X X",
    "X X X X X X X . X X",
    "X X X X X X X . . .",
    "X X X X X X X . . .",
    "X X . . X X X . X X",
    "X X X X . X X X . .",
    "X X X X . X X X . .",
]
# Port 80 (the default): nothing listens on "http" there, so restricted refuses even
# trusted callers; logging is open on every port but 8080 via the profile.
MATRIX_80 = [
    ". . . . X X X . X X",
    ". . . . X X X . X X",
    ". . . . X X X . X X",
    ". . . . X X X . X X",
    ". . . . X X X . X X",
    "X X X X X X X . . .",
    "X X X X X X X . . .",
    ". . . . X X X . X X",
    "X X X X X X X X . .",
    "X X X X X X X X . .",
]


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)


def simulate(*args: str, stdin: str | None = None) -> Result:
    return run("simulate", "--policies", str(POLICIES), "--inventory", str(INVENTORY), *args,
               stdin=stdin)


def probe_lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in PROBES.read_text().splitlines() if line.strip()]


def expected_output(probe: dict[str, Any], n: int) -> dict[str, Any]:
    verdict, pending, egress, ingress = EXPECTED[n]
    return {**probe, "verdict": verdict, "pending_verdict": pending, "egress": egress,
            "ingress": ingress}


def matrix_text(pods: list[str], rows: list[str]) -> str:
    lines = ["\t".join(["-", *pods])]
    lines += ["\t".join([src, *row.split()]) for src, row in zip(pods, rows, strict=True)]
    return "\n".join(lines) + "\n"


def write_jsonl(path: Path, objs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


# -- jsonl ------------------------------------------------------------------------------


def test_sample_has_one_expectation_per_probe() -> None:
    assert len(probe_lines()) == len(EXPECTED) == 16


def test_storefront_probes_jsonl_exact_verdicts_and_traces() -> None:
    result = simulate("--probes", str(PROBES))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout.splitlines()
    probes = probe_lines()
    assert len(out) == len(probes)
    for n, (line, probe) in enumerate(zip(out, probes, strict=True)):
        got = json.loads(line)
        assert got == expected_output(probe, n), f"probe {n + 1}: {probe}"
        # the probe's own fields come first, unchanged, then the verdict fields
        assert list(got)[:len(probe)] == list(probe)
        assert set(list(got)[len(probe):]) == {"verdict", "pending_verdict", "egress",
                                               "ingress"}


def test_probe_output_follows_input_order(tmp_path: Path) -> None:
    probes = probe_lines()
    order = [15, 0, 7, 3, 12, 9, 1, 14, 5, 10, 2, 13, 6, 11, 4, 8]
    assert sorted(order) == list(range(len(probes)))
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", [probes[i] for i in order])
    result = simulate("--probes", str(shuffled))
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert got == [expected_output(probes[i], i) for i in order]


def test_several_policy_paths_after_one_flag_and_stdin_probes() -> None:
    files = sorted(str(p) for p in POLICIES.glob("*.yaml"))
    assert len(files) == 6
    result = run("simulate", "--policies", *files, "--inventory", str(INVENTORY),
                 "--probes", "-", stdin=PROBES.read_text())
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert got == [expected_output(p, n) for n, p in enumerate(probe_lines())]


def test_without_the_staged_file_pending_equals_enforced() -> None:
    files = [str(p) for p in sorted(POLICIES.glob("*.yaml")) if p.name != "50-staged.yaml"]
    result = run("simulate", "--policies", *files, "--inventory", str(INVENTORY),
                 "--probes", str(PROBES))
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [g["verdict"] for g in got] == [e[0] for e in EXPECTED]
    assert [g["pending_verdict"] for g in got] == [e[0] for e in EXPECTED]
    for g in got:
        for direction in ("egress", "ingress"):
            assert g[direction]["pending_policies"] == g[direction]["enforced_policies"]


# -- table ------------------------------------------------------------------------------


def _trace(d: dict[str, Any]) -> str:
    return ",".join(d["enforced_policies"]) if d.get("policed", True) else "(not policed)"


def test_table_output() -> None:
    result = simulate("--probes", str(PROBES), "--output", "table")
    assert result.exit_code == 0, result.stderr
    expected = []
    for n, probe in enumerate(probe_lines()):
        verdict, _, egress, ingress = EXPECTED[n]
        expected.append(f"{probe['from']}\t{probe['to']}\t{probe['protocol']}/"
                        f"{probe.get('port', '-')}\t{verdict}\tegress: {_trace(egress)}"
                        f"\tingress: {_trace(ingress)}")
    assert result.stdout.splitlines() == expected
    assert result.stdout.splitlines()[5] == (
        f"{MS2}\t54.172.60.15\tTCP/443\tallow\tegress: 0|{SEC},"
        "1|platform|platform.twilio-integration|allow|0\tingress: (not policed)")

    assert result.stdout.splitlines()[15].split("\t")[2] == "ICMP/-"


# -- matrix -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "rows"), [
    (["--port", "8080", "--protocol", "TCP"], MATRIX_8080),
    (["--port", "8080", "--protocol", "TCP", "--pending"], MATRIX_8080_PENDING),
    ([], MATRIX_80),
], ids=["tcp-8080", "tcp-8080-pending", "default-port-80"])
def test_storefront_matrix(args: list[str], rows: list[str]) -> None:
    result = simulate("--matrix", *args)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == matrix_text(PODS, rows)


def test_matrix_leaves_out_host_network_pods() -> None:
    inventory = json.loads(INVENTORY.read_text())
    host = [i["metadata"]["name"] for i in inventory["items"]
            if i["kind"] == "Pod" and i["spec"].get("hostNetwork")]
    assert host == ["kube-proxy-7qvrm"]
    header = simulate("--matrix").stdout.splitlines()[0].split("\t")
    assert header == ["-", *PODS]


def _pod(ns: str, name: str, labels: dict[str, str], ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"serviceAccountName": "default", "containers": [
                {"name": "main", "ports": [{"name": "pg", "containerPort": 5432,
                                            "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


TINY_INVENTORY = {"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    _pod("shop", "web", {"app": "web"}, "10.1.0.2"),
    _pod("shop", "db", {"app": "db"}, "10.1.0.3"),
    _pod("ops", "probe", {"app": "probe"}, "10.1.0.4"),
]}
TINY_POLICIES = """\
# Kubernetes policy: only web may reach db, on TCP 5432 (by the port's name).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: pg, protocol: TCP}]
---
# Calico policy: the probe pod may only talk to shop's web pods.
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: probe-egress, namespace: ops}
spec:
  selector: app == 'probe'
  egress:
    - action: Allow
      destination:
        namespaceSelector: projectcalico.org/name == 'shop'
        selector: app == 'web'
"""
TINY_PODS = ["ops/probe", "shop/db", "shop/web"]


@pytest.mark.parametrize(("args", "rows"), [
    (["--port", "5432"], ["X X .",   # probe: only to web (not even itself)
                          ". X .",   # db -> db: not from web
                          ". . ."]),  # web -> db on pg
    (["--port", "5432", "--protocol", "UDP"], ["X X .", ". X .", ". X ."]),
    (["--port", "80"], ["X X .", ". X .", ". X ."]),
], ids=["tcp-5432", "udp-5432", "tcp-80"])
def test_hand_built_cluster_matrix(tmp_path: Path, args: list[str], rows: list[str]) -> None:
    (tmp_path / "inventory.json").write_text(json.dumps(TINY_INVENTORY))
    (tmp_path / "policies.yaml").write_text(TINY_POLICIES)
    result = run("simulate", "--policies", str(tmp_path / "policies.yaml"),
                 "--inventory", str(tmp_path / "inventory.json"), "--matrix", *args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == matrix_text(TINY_PODS, rows)


def test_matrix_bad_protocol_is_a_one_line_error() -> None:
    result = simulate("--matrix", "--protocol", "HTTP")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == ("tierflow: error: --protocol must be TCP, UDP, SCTP or 1-255 "
                             "(got 'HTTP')\n")


# -- errors -----------------------------------------------------------------------------


def test_bad_probe_lines_are_reported_and_good_ones_still_print(tmp_path: Path) -> None:
    probes = probe_lines()
    path = tmp_path / "probes.jsonl"
    path.write_text("\n".join([
        json.dumps(probes[0]),                                            # line 1: good
        '{"from": "dev/centos-6f8b9d7c5d-h4m2n", "to": }',                # line 2: bad JSON
        "",                                                               # line 3: blank
        json.dumps({"from": FE1, "to": "storefront/frontend-0", "port": 80}),  # 4: no pod
        json.dumps({"from": FE1, "to": MS1, "port": 80, "protocol": "HTTP"}),  # 5: protocol
        json.dumps({"from": FE1, "to": MS1, "port": "http"}),             # line 6: port
        json.dumps({"from": "10.244.1.300", "to": MS1, "port": 80}),      # line 7: address
        json.dumps(probes[11]),                                           # line 8: good
    ]) + "\n")
    result = simulate("--probes", str(path))
    assert result.exit_code == 2
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        expected_output(probes[0], 0), expected_output(probes[11], 11)]
    assert result.stderr.splitlines() == [
        f"tierflow: error: {path} line 2: probe must be one JSON object per line "
        "(Expecting value at column 47) "
        """(got '{"from": "dev/centos-6f8b9d7c5d-h4m2n", "to": }')""",
        f"tierflow: error: {path} line 4: to names no pod in the inventory "
        "(got 'storefront/frontend-0')",
        f"tierflow: error: {path} line 5: protocol must be one of TCP, UDP, SCTP, ICMP, "
        "ICMPv6, UDPLite or 1-255 (got 'HTTP')",
        f"tierflow: error: {path} line 6: port must be an integer from 0 to 65535 "
        "(got 'http')",
        f"tierflow: error: {path} line 7: from must be 'namespace/pod' or an IP address "
        "(got '10.244.1.300')",
        "tierflow: 5 probe(s) rejected",
    ]


def test_bad_probe_on_stdin_is_named_stdin() -> None:
    result = simulate("--probes", "-", stdin=json.dumps({"from": "x/y", "to": MS1}) + "\n")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == ("tierflow: error: <stdin> line 1: from names no pod in the "
                             "inventory (got 'x/y')\ntierflow: 1 probe(s) rejected\n")


def test_neither_probes_nor_matrix_is_a_usage_error() -> None:
    result = simulate()
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Usage: ")
    assert result.stderr.splitlines()[-1] == "Error: give --probes FILE or --matrix"


def test_bad_policy_file_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "zones.yaml"
    bad.write_text((POLICIES / "00-tiers.yaml").read_text() + """\
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: platform.web
spec:
  tier: platform
  selector: app == 'web'
  ingress:
    - action: Allow
      protocol: TCPP
""")
    result = run("simulate", "--policies", str(bad), "--inventory", str(INVENTORY),
                 "--probes", str(PROBES))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"tierflow: error: {bad} doc 2: spec.ingress[0].protocol must be one of TCP, UDP, "
        "ICMP, ICMPv6, SCTP, UDPLite or 1-255 (got 'TCPP')\n")


def test_bad_inventory_is_a_one_line_error(tmp_path: Path) -> None:
    inventory = json.loads(json.dumps(TINY_INVENTORY))
    inventory["items"][3]["status"]["podIPs"] = [{"ip": "10.1.0.256"}]
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory))
    result = run("simulate", "--policies", str(POLICIES), "--inventory", str(path),
                 "--matrix")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (f"tierflow: error: {path}: items[3].status.podIPs[0].ip must be "
                             "an IPv4 or IPv6 address (got '10.1.0.256')\n")


def test_missing_policy_path_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = run("simulate", "--policies", str(missing), "--inventory", str(INVENTORY),
                 "--matrix")
    assert result.exit_code == 2
    assert result.stderr == (f"tierflow: error: {missing}: does not exist (give policy files "
                             f"or directories) (got '{missing}')\n")


# -- the real console script ---------------------------------------------------------------


def tierflow_command() -> list[str]:
    script = REPO / ".venv" / "bin" / "tierflow"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from tierflow.cli import main; main()"]


def test_console_script_in_a_subprocess() -> None:
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [*tierflow_command(), "simulate", "--policies", *sorted(map(str, POLICIES.iterdir())),
         "--inventory", str(INVENTORY), "--probes", str(PROBES)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert got == [expected_output(p, n) for n, p in enumerate(probe_lines())]

    bad = subprocess.run(
        [*tierflow_command(), "simulate", "--policies", str(POLICIES), "--inventory",
         str(INVENTORY), "--probes", "-"],
        input=json.dumps({"from": FE1, "to": MS1, "protocol": "ESP"}) + "\n",
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr == ("tierflow: error: <stdin> line 1: protocol must be one of TCP, UDP, "
                          "SCTP, ICMP, ICMPv6, UDPLite or 1-255 (got 'ESP')\n"
                          "tierflow: 1 probe(s) rejected\n")


@pytest.mark.parametrize(
    ("icmp", "message"),
    [
        ({"type": "echo"}, "icmp.type must be an integer from 0 to 254 (got 'echo')"),
        ({"type": 255}, "icmp.type must be an integer from 0 to 254 (got 255)"),
        ({"type": 8, "code": 256}, "icmp.code must be an integer from 0 to 255 (got 256)"),
        ({"code": 0}, "icmp.code requires icmp.type (got 0)"),
        ({"type": 8, "kode": 0},
         "icmp must be an object {type, code} (got {'type': 8, 'kode': 0})"),
    ],
)
def test_bad_icmp_is_reported(tmp_path: Path, icmp: dict[str, Any], message: str) -> None:
    path = tmp_path / "icmp.jsonl"
    path.write_text(json.dumps({"from": "dev/centos-6f8b9d7c5d-h4m2n",
                                "to": "dev/nginx-7c5ddbdf54-q9w8z", "protocol": "ICMP",
                                "icmp": icmp}) + "\n")
    result = simulate("--probes", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == f"tierflow: error: {path} line 1: {message}"


# -- Service ClusterIPs -----------------------------------------------------------------


def test_probe_to_a_cluster_ip_is_evaluated_at_each_backend(tmp_path: Path) -> None:
    """Calico sees the connection after kube-proxy's DNAT: one result per backend pod, at
    its target port (a named targetPort resolved on the pod), with the service recorded."""
    fe = "storefront/frontend-864f4fcdfd-2hhv4"
    lines = [
        {"from": fe, "to": "10.96.0.10", "port": 53, "protocol": "UDP"},      # kube-dns
        {"from": fe, "to": "10.96.112.23", "port": 80, "protocol": "TCP"},    # backend
        {"from": "dev/centos-6f8b9d7c5d-h4m2n", "to": "10.96.41.7", "port": 80},  # named
        {"from": fe, "to": "10.96.0.10", "port": 5353, "protocol": "UDP"},    # no such port
    ]
    path = tmp_path / "svc.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = simulate("--probes", str(path))
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(g["to"], g.get("port"), g.get("service"), g.get("service_port"), g["verdict"])
            for g in got] == [
        ("kube-system/coredns-5d78c9869d-6xkqj", 53, "kube-system/kube-dns", 53, "allow"),
        ("kube-system/coredns-5d78c9869d-tw8vl", 53, "kube-system/kube-dns", 53, "allow"),
        ("storefront/backend-5f8d7c6b9f-k2j4h", 8080, "storefront/backend", 80, "deny"),
        ("dev/nginx-7c5ddbdf54-q9w8z", 80, "dev/nginx", 80, "allow"),
        ("10.96.0.10", 5353, None, None, "deny"),
    ]
    assert got[0]["egress"]["enforced_policies"][-1] == \
        "1|platform|platform.allow-kube-dns|allow|0"
    assert got[2]["ingress"]["enforced_policies"][-1] == \
        "2|default|storefront/default.restricted|deny|2"
    assert got[4]["ingress"] == {"verdict": "allow", "pending_verdict": "allow",
                                 "policed": False, "enforced_policies": [],
                                 "pending_policies": []}
