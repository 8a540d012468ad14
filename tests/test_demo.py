"""``tierflow demo`` (the README's first command runs it): the storefront lab end to end on
the bundled sample, every step with its heading and its result, in well under a minute."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from click.testing import CliRunner

from tierflow.cli import cli


def test_the_demo_runs_the_whole_story(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    started = time.monotonic()
    r = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert time.monotonic() - started < 60
    text = r.stdout
    for n, title in enumerate(("Ingest the capture", "The policies board",
                               "The flow visualizer", "Recommend policies",
                               "Stage them", "What the staged policies would have done",
                               "Preview a change", "The report"), 1):
        assert f"== {n}. {title}" in text
    # The recommendations: four workloads, proven by replay, staged in the policy directory.
    assert "— PASSED" in text
    recs = sorted(p.name for p in (out / "recommendations").glob("*.yaml"))
    assert recs == [f"storefront.default.{w}.yaml" for w in
                    ("backend", "frontend", "microservice1", "microservice2")]
    staged = [yaml.safe_load(p.read_text()) for p in (out / "policies").glob("staged*.yaml")]
    assert sorted(d["metadata"]["name"] for d in staged) == [
        "default.backend", "default.frontend", "default.microservice1",
        "default.microservice2"]
    assert {d["kind"] for d in staged} == {"StagedNetworkPolicy"}
    # The preview: the backend's flows to logging turn to deny, at both ends.
    preview = text.split("== 7.")[1].split("== 8.")[0]
    changed = [line for line in preview.splitlines() if "✗ allow-to-deny" in line]
    assert len(changed) == 2 and all("backend-" in x and "logging-" in x for x in changed)
    for name in ("preview.html", "report.html", "recommendations.html"):
        assert (out / name).stat().st_size > 1000
    assert "\u26a0" in (out / "preview.html").read_text()


def test_the_demo_refuses_to_overwrite_something_else(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "not empty and not a previous demo" in r.output
    assert (tmp_path / "precious.txt").exists()
