"""``tierflow ingest``, ``tierflow sql`` and ``tierflow compact``: the store's commands.

On a terminal, ingest shows a progress bar per file and a readable summary; otherwise
(cron, CI, pipes) it prints nothing but one JSON summary line, so jobs stay quiet and
machine-readable.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from analytics.db import connect, query
from ingest.compact import compact_store
from ingest.flows import Aggregation
from ingest.jobs import IngestSummary, ingest_calico, ingest_conntrack, ingest_pcap
from ingest.store import Store
from tierflow import options
from tierflow.cli import cli, domain_errors
from tierflow.inputs import flow_builder
from tierflow.render import emit

# flow_builder lives in tierflow.inputs (tierflow run uses it too); agent_cli imports it here.
__all__ = ["compact", "flow_builder", "ingest", "sql"]


@cli.command()
@click.argument("source", type=click.Choice(["pcap", "calico", "conntrack"]))
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@options.store("Store directory (created if missing).", exists=False)
@options.inventories(f"{options.INVENTORY}; snapshots at different times are all used.")
@options.policies("Policy documents in force, to compute action and policy traces "
                  "(repeatable). Network sets among them type IPs as 'ns'.")
@click.option("--aggregation", type=click.IntRange(0, 3), default=None,
              help="Aggregation level for allowed and denied flows alike.")
@click.option("--aggregation-allowed", type=click.IntRange(0, 3), default=2, show_default=True)
@click.option("--aggregation-denied", type=click.IntRange(0, 3), default=1, show_default=True)
@click.option("--interval", type=click.IntRange(1, 86400), default=300, show_default=True,
              help="Flush interval in seconds (each record covers one).")
@click.option("--host", default=None, help="Node name for the records [default: this host].")
@click.option("--at", "at", multiple=True, type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S"]),
              help="conntrack: when each snapshot was taken, in UTC, one per file "
              "[default: file modification times].")
@click.option("--wait", type=float, default=None,
              help="Seconds to wait for another job's store lock [default: forever].")
@click.option("--batch-lines", type=click.IntRange(1), default=200_000, show_default=True,
              help="calico: lines per commit (bounds memory; a killed job redoes at most one).")
@click.option("--output", type=click.Choice(["auto", "text", "json"]), default="auto",
              help="Summary format [default: text on a terminal, JSON otherwise].")
@domain_errors
def ingest(source: str, paths: tuple[str, ...], store: str, inventories: tuple[str, ...],
           policies: tuple[str, ...], aggregation: int | None, aggregation_allowed: int,
           aggregation_denied: int, interval: int, host: str | None, at: tuple[datetime, ...],
           wait: float | None, batch_lines: int, output: str) -> None:
    """Ingest captures, Calico flow logs or conntrack snapshots into a Parquet store."""
    if at and len(at) != len(paths):
        raise click.UsageError(f"--at given {len(at)} time(s) for {len(paths)} file(s)")
    tty = sys.stderr.isatty()
    node = host or socket.gethostname()
    with _progress(tty) as progress:
        st = Store(store)
        if source == "calico":
            summary = ingest_calico(paths, st, host=host, progress=progress, wait=wait,
                                    batch_lines=batch_lines)
        else:
            levels = Aggregation(aggregation if aggregation is not None else aggregation_allowed,
                                 aggregation if aggregation is not None else aggregation_denied)
            builder = flow_builder(inventories, policies, levels, node, source)
            if source == "pcap":
                summary = ingest_pcap(paths, st, builder, interval, progress, wait)
            else:
                times = [t.replace(tzinfo=UTC) for t in at] or None
                summary = ingest_conntrack(paths, st, builder, interval, times, progress, wait)
    _report(summary, output if output != "auto" else ("text" if tty else "json"))


def _report(summary: IngestSummary, output: str) -> None:
    if output == "json":
        data = asdict(summary)
        data["seconds"] = round(summary.seconds, 3)
        click.echo(json.dumps(data, separators=(",", ":")))
        return
    for message in summary.messages:
        click.echo(f"tierflow: rejected: {message}", err=True)
    if summary.rejected > len(summary.messages):
        click.echo(f"tierflow: ... and {summary.rejected - len(summary.messages)} more "
                   "(kept in the store's rejects/)", err=True)
    click.echo(summary.line())


@contextmanager
def _progress(tty: bool) -> Iterator[Callable[[str, int, int], None]]:
    if not tty:
        yield lambda _f, _d, _t: None
        return
    tasks: dict[str, Any] = {}
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), transient=True) as bar:

        def update(file: str, done: int, total: int) -> None:
            if file not in tasks:
                tasks[file] = bar.add_task(file, total=total)
            bar.update(tasks[file], completed=done)

        yield update


@cli.command()
@click.argument("sql")
@options.store()
@click.option("--output", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="json: one object per row.")
@domain_errors
def sql(sql: str, store: str, output: str) -> None:
    """Run SQL against the store's ``flows`` view (read-only, offline DuckDB)."""
    table = query(connect(store), sql)
    emit(table, output)


@cli.command()
@options.store()
@click.option("--target-rows", type=click.IntRange(1), default=5_000_000, show_default=True,
              help="Merge an hour's files into files of at most this many rows.")
@click.option("--wait", type=float, default=None)
@domain_errors
def compact(store: str, target_rows: int, wait: float | None) -> None:
    """Merge each hour's small files; query results are unchanged."""
    result = compact_store(Store(store), target_rows=target_rows, wait=wait)
    click.echo(f"compacted {result.partitions} partition(s): {result.files_before} files -> "
               f"{result.files_after}, {result.rows} rows")
