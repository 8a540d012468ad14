"""``tierflow run``: the scheduled batch job (:mod:`tierflow.batch`).

Exit status 0 when every step and source succeeded, 1 when any failed (the others were
still done; each failure is one line on stderr), 2 on a bad configuration or when another
run holds the store's run lock. Like ``tierflow ingest``, it prints one summary line: JSON
when stderr is not a terminal (cron, CronJobs, pipes), readable text on one.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from ingest.store import StoreError
from tierflow import config as cfg
from tierflow import options
from tierflow.batch import RunSettings, RunSummary, run_batch
from tierflow.cli import cli, domain_errors

__all__ = ["run_command", "settings_of"]


def _use_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    # Eager, so it sets this command's defaults before its other options are read.
    if value:
        try:
            cfg.apply_config(ctx, Path(value))
        except (ValueError, OSError) as e:
            click.echo(f"tierflow: error: {e}", err=True)
            ctx.exit(2)


@cli.command("run")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), is_eager=True,
              expose_value=False, callback=_use_config,
              help="tierflow.toml: the sources, steps and settings of the run (as "
              "`tierflow --config`) [default: $TIERFLOW_CONFIG, else ./tierflow.toml].")
@options.store("Store directory (created if missing) [config: store].", exists=False)
@options.policies("Policies in force: traces of captures and snapshots, the tiers in front "
                  "of recommendations (repeatable) [config: policies].")
@options.inventories(f"{options.INVENTORY} [config: inventory].")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Where the dated folders (OUT/YYYY-MM-DD/) go [config: run.out].")
@click.option("--date", "day", default="today", show_default=True,
              help="The day whose folder to write and whose end the windows end at: "
              "YYYY-MM-DD, today or yesterday (UTC).")
@click.option("--wait", type=click.FloatRange(min=0), default=0,
              help="Seconds to wait for a run already in progress on the store [default: 0, "
              "refuse at once; config: run.wait].")
@click.option("--output", type=click.Choice(["auto", "text", "json"]), default="auto",
              help="Summary format [default: text on a terminal, JSON otherwise].")
@click.pass_context
@domain_errors
def run_command(ctx: click.Context, store: str, policies: tuple[str, ...],
                inventories: tuple[str, ...], out: str, day: str, wait: float,
                output: str) -> None:
    """Ingest what is new in the configured sources, compact the store, and write the
    day's reports and recommendations into OUT/YYYY-MM-DD/. Safe to repeat (nothing is
    ingested twice; unchanged files are left alone) and never two at once on a store."""
    config = ctx.meta.get(cfg.META_KEY)
    settings = RunSettings(Path(store), Path(out), policies, inventories,
                           **settings_of(config))
    try:
        summary = run_batch(settings, _day(day), wait)
    except StoreError as e:
        raise StoreError(f"{e}; try again when it is done, or give --wait SECONDS") from None
    _report(summary, output if output != "auto" else
            ("text" if sys.stderr.isatty() else "json"))
    sys.exit(0 if summary.ok else 1)


def settings_of(config: cfg.Config | None) -> dict[str, Any]:
    """The :class:`RunSettings` fields a configuration file sets (besides the options)."""
    if config is None:
        return {}
    fields: dict[str, Any] = {"config": str(config.path.resolve())}
    for section in ("ingest", "compact", "report", "recommend"):
        fields |= {f"{section}_{k}": v for k, v in config.section(section).items()}
    if "run.steps" in config.values:
        fields["run_steps"] = config.values["run.steps"]
    fields["sources"] = tuple((kind, pattern) for kind, patterns in
                              config.section("sources").items() for pattern in patterns)
    return fields


def _day(text: str) -> date:
    today = datetime.now(UTC).date()
    if text in ("today", "yesterday"):
        return today - timedelta(days=text == "yesterday")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not YYYY-MM-DD, today or yesterday",
                                 param_hint="--date") from None


def _report(summary: RunSummary, output: str) -> None:
    for failure in summary.failures:
        click.echo(f"tierflow: error: {failure}", err=True)
    if output == "json":
        click.echo(json.dumps(summary.as_dict(), separators=(",", ":")))
        return
    for part in summary.ingest.values():
        for message in part.messages:
            click.echo(f"tierflow: {part.source}: {message}", err=True)
    click.echo(summary.line())
