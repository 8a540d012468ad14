"""The shipped deployment files (deploy/) stay runnable: the DaemonSet is valid Kubernetes
YAML whose container runs ``tierflow agent`` with options the command accepts, with the
capabilities and host network the agent needs; the systemd unit's ExecStart does too."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from click.testing import CliRunner

from tierflow.cli import cli

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def agent_options() -> set[str]:
    command = cli.commands["agent"]
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


def check_args(args: list[str]) -> None:
    assert args[0] == "agent"
    known = agent_options()
    for arg in args[1:]:
        if arg.startswith("-"):  # an option (its value follows, or comes after "=")
            assert arg.split("=", 1)[0] in known, arg
    # The options parse (values included); --help stops before anything runs.
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output


def test_daemonset_runs_the_agent_with_what_it_needs() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "agent-daemonset.yaml").read_text()))
    [ds] = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert ds["spec"]["selector"]["matchLabels"].items() <= \
        ds["spec"]["template"]["metadata"]["labels"].items()
    [agent] = pod["containers"]
    assert set(agent["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    args = [a.split("#")[0].strip() for a in agent["args"]]
    check_args(args)
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    for arg in args:
        if arg.startswith(("--store=", "--inventory=", "--policies=")):
            path = arg.split("=", 1)[1]
            assert any(path.startswith(m) for m in mounts), (arg, mounts)
    [init] = pod["initContainers"]
    assert "nf_conntrack_acct=1" in " ".join(init["command"])


def test_systemd_unit_runs_the_agent() -> None:
    text = (DEPLOY / "tierflow-agent.service").read_text().replace("\\\n", " ")
    [line] = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/tierflow")
    check_args(argv[1:])
    assert "KillSignal=SIGTERM" in text and "CAP_NET_ADMIN" in text
