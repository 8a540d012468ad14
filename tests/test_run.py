"""``tierflow run`` end to end on the bundled samples (the lab capture with its inventory and
the storefront policies, Calico's flows.log): the store, the dated report and recommendation
files; a second run changes nothing; overlapping runs are refused or wait; a failing source
fails the run while the others land. And the configuration file: its defaults reach every
command, the command line wins, bad files are one-line errors; the shipped examples load."""

from __future__ import annotations

import json
import os
import re
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from analytics.db import connect, query
from ingest.store import Store
from tierflow.cli import cli
from tierflow.config import SCHEMA, command_defaults, load_config, parse
from tierflow.daily import day_window

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_flows"
DAY = "2026-11-27"  # the lab capture's day; the Calico sample is from 2024-05-14
LAB_CONFIG = f"""
store = "store"
policies = "{SAMPLES}/storefront/policies"
inventory = ["{SAMPLES}/capture/inventory.json"]

[sources]
pcap = ["{SAMPLES}/capture/"]
calico = "{SAMPLES}/calico/flows.log*"

[run]
out = "out"

[report]
lookback = "1000d"
namespaces = ["storefront"]

[recommend]
namespaces = ["dev"]
lookback = "1000d"
"""


def tierflow(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def summary_of(result: Result) -> dict[str, Any]:
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.output  # one line, JSON when not on a terminal
    return dict(json.loads(lines[0]))


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and modification time."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def count(store: Path, sql: str = "SELECT count(*) AS n FROM flows") -> int:
    return int(query(connect(store), sql).to_pylist()[0]["n"])


@dataclass
class Lab:
    root: Path
    config: Path
    first: Result
    store_after_first: dict[str, tuple[bytes, int]]
    out_after_first: dict[str, tuple[bytes, int]]
    second: Result

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def day(self) -> Path:
        return self.root / "out" / DAY


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root = tmp_path_factory.mktemp("lab")
    config = root / "tierflow.toml"
    config.write_text(LAB_CONFIG)
    first = tierflow("run", "--config", config, "--date", DAY)
    store_after, out_after = tree(root / "store"), tree(root / "out")
    second = tierflow("run", "--config", config, "--date", DAY)
    return Lab(root, config, first, store_after, out_after, second)


def test_a_run_ingests_compacts_and_writes_the_day(lab: Lab) -> None:
    assert lab.first.exit_code == 0, lab.first.output
    done = summary_of(lab.first)
    assert done["ok"] is True and done["failures"] == [] and done["date"] == DAY
    assert {k: (v["files"], v["written"]) for k, v in done["ingest"].items()} == \
        {"pcap": (1, 9), "calico": (1, 62)}
    assert done["compact"]["partitions"] == 0  # one file per hour: nothing to merge
    # The store: both sources with their positions, policy traces from the policies given.
    assert count(lab.store) == 71
    assert count(lab.store, "SELECT count(*) AS n FROM flows WHERE collector = 'pcap' AND "
                            "enforced_policies[-1] LIKE '%storefront/default.%'") > 0
    assert len(Store(lab.store).sources()) == 2
    assert len(Store(lab.store).rollup_files()) == len(Store(lab.store).files())
    # The day's folder: the reports and the recommendations with their report.
    names = sorted(str(p.relative_to(lab.day)) for p in lab.day.rglob("*") if p.is_file())
    assert names == ["recommend/dev/dev.default.centos.yaml",
                     "recommend/dev/dev.default.nginx.yaml", "recommend/dev/report.html",
                     "report-storefront.html", "report.html"]
    assert sorted(done["written"]) == [f"{DAY}/{n}" for n in names]
    html = (lab.day / "report.html").read_text()
    assert "tierflow report" in html and "2024-05-14" in html and "frontend-864f4fcdfd" in html
    assert "centos" not in (lab.day / "report-storefront.html").read_text()
    for f in (lab.day / "recommend" / "dev").glob("*.yaml"):
        [doc] = yaml.safe_load_all(f.read_text())
        assert doc["kind"] == "StagedNetworkPolicy" and doc["metadata"]["namespace"] == "dev"
    assert "PASSED" in (lab.day / "recommend" / "dev" / "report.html").read_text()


def test_a_second_run_changes_nothing(lab: Lab) -> None:
    assert lab.second.exit_code == 0, lab.second.output
    again = summary_of(lab.second)
    assert {k: (v["files"], v["skipped_files"], v["written"])
            for k, v in again["ingest"].items()} == {"pcap": (0, 1, 0), "calico": (0, 1, 0)}
    assert again["compact"]["partitions"] == 0
    # Outputs: the same bytes, so left alone (not rewritten): same files, same mtimes.
    assert again["written"] == [] and again["removed"] == []
    assert sorted(again["unchanged"]) == sorted(summary_of(lab.first)["written"])
    assert tree(lab.root / "out") == lab.out_after_first
    assert tree(lab.store) == lab.store_after_first


def test_the_command_line_overrides_the_config_and_stale_yaml_goes(lab: Lab) -> None:
    out = lab.root / "elsewhere"
    stale = out / DAY / "recommend" / "dev" / "dev.default.gone.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("kind: StagedNetworkPolicy\n")
    r = tierflow("--config", lab.config, "run", "--date", DAY, "--out", out)  # group --config
    assert r.exit_code == 0, r.output
    done = summary_of(r)
    assert done["removed"] == [f"{DAY}/recommend/dev/dev.default.gone.yaml"]
    assert not stale.exists()
    # The same store and day give the same bytes wherever they are written.
    assert {k: v[0] for k, v in tree(out).items()} == \
        {k: v[0] for k, v in tree(lab.root / "out").items()}


def test_config_defaults_reach_every_command(lab: Lab, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sql = ("sql", "SELECT count(*) AS n FROM flows", "--output", "json")
    # --config on the group, $TIERFLOW_CONFIG, ./tierflow.toml: no --store needed.
    assert json.loads(tierflow("--config", lab.config, *sql).stdout) == {"n": 71}
    assert json.loads(tierflow(*sql, env={"TIERFLOW_CONFIG": str(lab.config)}).stdout) == \
        {"n": 71}
    stats = tierflow("--config", lab.config, "stats", "--output", "json")
    assert stats.exit_code == 0, stats.output
    assert any(json.loads(line).get("unused") is not None
               for line in stats.stdout.splitlines())
    # The command line wins over the file.
    empty = tmp_path / "empty-store"
    empty.mkdir()
    assert json.loads(tierflow("--config", lab.config, *sql[:2], "--store", empty,
                               "--output", "json").stdout) == {"n": 0}
    monkeypatch.chdir(lab.root)  # relative paths in the file are relative to the file
    assert json.loads(tierflow(*sql).stdout) == {"n": 71}
    monkeypatch.chdir(tmp_path)
    assert "Missing option '--store'" in tierflow(*sql).output


def test_section_keys_are_defaults_of_their_command(tmp_path: Path) -> None:
    config = parse('store = "s"\npolicies = "pol"\n[ingest]\ninterval = 60\n'
                   '[recommend]\nformat = "k8s"\n', tmp_path / "tierflow.toml")
    ingest = command_defaults(cli.commands["ingest"], "ingest", config)
    assert ingest == {"store": str(tmp_path / "s"), "policies": (str(tmp_path / "pol"),),
                      "interval": 60}
    assert command_defaults(cli.commands["recommend"], "recommend", config)["fmt"] == "k8s"
    assert "interval" not in command_defaults(cli.commands["agent"], "agent", config)
    # `stage --policies` is one directory: it gets the one path.
    assert command_defaults(cli.commands["stage"], "stage", config) == \
        {"directory": str(tmp_path / "pol")}


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[Path]:
    """A configuration whose run only compacts an empty store: for the lock tests."""
    config = tmp_path / "tierflow.toml"
    config.write_text('store = "store"\n[run]\nout = "out"\nsteps = ["compact"]\n')
    yield config


def test_overlapping_runs_are_refused_or_wait(quick: Path) -> None:
    store = Store(quick.parent / "store")
    with store.job_lock("run"):
        refused = tierflow("run", "--config", quick)
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"tierflow: error: {store.state}/run.lock: another `tierflow run` is running on this "
        "store (waited 0 s); try again when it is done, or give --wait SECONDS\n")
    assert refused.stdout == ""

    held = threading.Event()

    def hold() -> None:
        with store.job_lock("run"):
            held.set()
            time.sleep(0.3)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    started = time.monotonic()
    waited = tierflow("run", "--config", quick, "--wait", "10", "--output", "text")
    t.join()
    assert waited.exit_code == 0, waited.output
    assert time.monotonic() - started >= 0.2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d: ingested 0 file\(s\) \(0 already ingested\), 0 flow "
                        r"records written, 0 rejected; compacted 0 partition\(s\); 0 file\(s\) "
                        r"written, 0 unchanged, 0 removed; 0 failure\(s\) in [\d.]+ s\n",
                        waited.stdout), waited.stdout


def test_a_failing_source_fails_the_run_and_the_others_land(tmp_path: Path) -> None:
    config = tmp_path / "tierflow.toml"
    config.write_text(f'store = "store"\n[sources]\npcap = ["missing/", "{SAMPLES}/capture/"]\n'
                      f'calico = ["{SAMPLES}/calico/"]\n[run]\nout = "out"\n'
                      'steps = ["ingest", "compact"]\n')
    r = tierflow("run", "--config", config)
    assert r.exit_code == 1
    assert r.stderr == (f"tierflow: error: ingest pcap: {tmp_path}/missing: no such file or "
                        "directory\n")
    done = summary_of(r)
    assert done["ok"] is False
    assert done["failures"] == [{"step": "ingest", "what": "pcap",
                                 "error": f"{tmp_path}/missing: no such file or directory"}]
    assert {k: v["files"] for k, v in done["ingest"].items()} == {"pcap": 1, "calico": 1}
    written = [v["written"] for v in done["ingest"].values()]
    assert all(written) and count(tmp_path / "store") == sum(written)


@pytest.mark.parametrize(("text", "message"), [
    ("[ingest]\ninterval = '5m'\n",
     "ingest.interval must be an integer from 1 to 86400 (got '5m')"),
    ("[ingest]\nintervall = 60\n",
     "ingest.intervall is not a known key; [ingest] accepts aggregation_allowed, "
     "aggregation_denied, batch_lines, host, interval (got 60)"),
    ("stor = 'x'\n", "stor is not a known key; accepted at the top level: inventory, policies, "
     "store, [sources], [ingest], [compact], [run], [report], [recommend] (got 'x')"),
    ("report = 'daily'\n", "report must be a table ([report]) (got 'daily')"),
    ("[sources]\npcap = 3\n", "sources.pcap must be a file, directory or glob, or a list of "
     "them (relative to the config file's directory) (got 3)"),
    ("[recommend]\nformat = 'yaml'\n",
     "recommend.format must be one of calico-staged, calico, k8s (got 'yaml')"),
    ("[recommend]\ndomain_wildcards = 1\n", "recommend.domain_wildcards must be true or false "
     "(got 1)"),
    ("[recommend]\nnamespaces = ['../etc']\n", "recommend.namespaces must be a list of "
     "namespace names (DNS labels: a-z, 0-9 and '-') (got ['../etc'])"),
    ("[run]\nsteps = ['ingest', 'publish']\n", "run.steps must be a list of steps among "
     "ingest, compact, report, recommend (got ['ingest', 'publish'])"),
    ("store = \n", "is not valid TOML: Invalid value (at line 1, column 9) (got 'store = ')"),
])
def test_a_bad_config_is_a_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "tierflow.toml"
    config.write_text(text)
    for args in (("--config", config, "stats"), ("run", "--config", config)):
        r = tierflow(*args)
        assert r.exit_code == 2
        assert r.output == f"tierflow: error: {config}: {message}\n"


def test_bad_dates_and_windows() -> None:
    assert day_window(date(2026, 11, 27), "7d").describe() == \
        "2026-11-21T00:00:00Z to 2026-11-28T00:00:00Z"
    r = tierflow("run", "--store", "s", "--out", "o", "--date", "27/11/2026")
    assert r.exit_code == 2 and "'27/11/2026' is not YYYY-MM-DD, today or yesterday" in r.output


# -- the shipped files --------------------------------------------------------------------------

def test_the_example_config_loads_and_documents_every_key() -> None:
    example = REPO / "examples" / "tierflow.toml"
    config = load_config(example)
    assert config.values["store"] == "/var/lib/tierflow/store"
    text = example.read_text()
    for section, keys in SCHEMA.items():
        if section:
            assert f"[{section}]" in text, section
        for key in keys:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, (section, key)


def run_options() -> set[str]:
    return {opt for p in cli.commands["run"].params for opt in getattr(p, "opts", [])}


def check_run_args(args: list[str]) -> None:
    assert args[0] == "run"
    for arg in args[1:]:
        if arg.startswith("-"):
            assert arg.split("=", 1)[0] in run_options(), arg


def test_the_crontab_lines_run_the_job() -> None:
    lines = [x for x in (REPO / "examples" / "crontab").read_text().splitlines()
             if x and not x.startswith("#")]
    assert len(lines) == 2
    for line in lines:
        argv = shlex.split(line)[5:]  # after minute, hour, day of month, month, day of week
        assert argv[0].endswith("/tierflow")
        check_run_args([a for a in argv[1:] if not a.startswith(("2>", ">"))])


def test_the_cronjob_runs_the_job_with_its_config(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "tierflow-cronjob.yaml").read_text()))
    [cm] = [d for d in docs if d["kind"] == "ConfigMap"]
    [job] = [d for d in docs if d["kind"] == "CronJob"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "ghcr.io/tierflow/tierflow:latest"
    check_run_args(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    [config_arg] = [a for a in container["args"] if a.startswith("--config=")]
    path = Path(config_arg.split("=", 1)[1])
    assert mounts["config"] == str(path.parent)
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    (tmp_path / path.name).write_text(cm["data"][path.name])
    config = load_config(tmp_path / path.name)  # the embedded file is valid
    for key in ("store", "policies", "inventory", "run.out", "sources.calico"):
        value = config.values[key]
        for p in (value if isinstance(value, tuple) else (value,)):
            assert any(p == m or p.startswith(m + os.sep) for m in mounts.values()), (key, p)
