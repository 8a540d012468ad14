"""``tierflow stats``, ``flows``, ``report`` and ``catalog``: the store's analytics."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from analytics import queries
from analytics.catalog import write_catalog
from analytics.coverage import store_endpoints, with_policies
from analytics.db import connect, query
from analytics.preview import evaluation_input, reevaluate
from analytics.report import render_report
from analytics.window import Window
from tierflow import options
from tierflow.cli import cli, domain_errors
from tierflow.inputs import load_inventory, load_policies
from tierflow.render import OUTPUTS, emit

_STORE = options.store()
_SINCE = options.since()
_UNTIL = options.until()
_OUTPUT = click.option("--output", type=click.Choice(OUTPUTS), default="table",
                       show_default=True)


@cli.command()
@_STORE
@_SINCE
@_UNTIL
@click.option("--tier", default=None, help="Only this tier.")
@click.option("--policy", default=None, help="Only policies with this name (short or "
              "namespace/name).")
@options.policies("The policies in force: evaluation order, unused rules, endpoints each "
                  "policy applies to (repeatable).")
@options.inventories("Namespace labels for counting the endpoints policies apply to.")
@click.option("--unused", is_flag=True, help="Only rules with no hit in the window "
              "(needs --policies).")
@click.option("--staged", is_flag=True, help="Re-evaluate the window's records with the "
              "staged policies of --policies as enforced, so staged policies newer than the "
              "records show what they would have allowed, denied and passed.")
@_OUTPUT
@domain_errors
def stats(store: str, since: str | None, until: str | None, tier: str | None,
          policy: str | None, policies: tuple[str, ...], inventories: tuple[str, ...],
          unused: bool, staged: bool, output: str) -> None:
    """The policies board: per tier, policy and rule, packets, bytes and connections
    allowed / denied / passed, in / out, first and last hit; staged beside enforced."""
    if unused and not policies:
        raise click.UsageError("--unused needs --policies (the store only knows what was hit)")
    if staged and not policies:
        raise click.UsageError("--staged needs --policies (the staged policies to evaluate)")
    con, window = connect(store), Window.parse(since, until)
    inventory = load_inventory(inventories) if inventories else None
    if staged:
        policy_set = load_policies(policies)
        records = reevaluate(evaluation_input(con, window), policy_set, inventory)
        board = queries.board_of(con, records, window)
    else:
        board = queries.board(con, window)
    if policies:
        namespaces = inventory.namespaces if inventory else {}
        endpoints = store_endpoints(query(con, "SELECT * FROM endpoints").to_pylist(),
                                    namespaces)
        board = with_policies(board, load_policies(policies), endpoints)
    rows = [r for r in board.to_pylist() if _wanted(r, tier, policy, unused)]
    emit(board.from_pylist(rows, schema=board.schema), output)


def _wanted(row: dict[str, Any], tier: str | None, policy: str | None, unused: bool) -> bool:
    if tier is not None and row["tier"] != tier:
        return False
    if policy is not None and policy not in (row["policy"],
                                             f"{row['namespace']}/{row['policy']}"):
        return False
    return not unused or bool(row.get("unused"))


@cli.command()
@_STORE
@_SINCE
@_UNTIL
@click.option("--namespace", default=None, help="Flows from or to this namespace.")
@click.option("--workload", default=None, help="Flows from or to workloads whose "
              "replica-set prefix starts with this.")
@click.option("--action", type=click.Choice(["allow", "deny"]), default=None)
@click.option("--reporter", type=click.Choice(["src", "dst"]), default=None)
@click.option("--view", type=click.Choice(["edges", "unprotected", "external", "talkers",
                                           "timeseries"]), default="edges", show_default=True,
              help="edges: the flow visualizer's namespace -> prefix -> peer flows; "
              "unprotected: allowed flows only a profile decided; external: egress by domain "
              "and network set; talkers: top workloads by bytes; timeseries: per interval.")
@_OUTPUT
@domain_errors
def flows(store: str, since: str | None, until: str | None, namespace: str | None,
          workload: str | None, action: str | None, reporter: str | None, view: str,
          output: str) -> None:
    """Flows per workload and peer, with ports, protocols, verdicts and volumes."""
    con, window = connect(store), Window.parse(since, until)
    if view == "edges":
        table = queries.flows(con, window, namespace=namespace, workload=workload,
                              action=action, reporter=reporter)
    elif view == "unprotected":
        table = queries.unprotected(con, window, namespace=namespace)
    elif view == "external":
        table = queries.external(con, window, namespace=namespace)
    elif view == "talkers":
        table = queries.talkers(con, window, namespace=namespace)
    else:
        table = queries.timeseries(con, window, namespace=namespace)
    emit(table, output)


@cli.command()
@_STORE
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The .duckdb file to write.")
@domain_errors
def catalog(store: str, out: str) -> None:
    """Write a DuckDB database whose views (flows, policy_hits, endpoints) read the store."""
    path = write_catalog(store, out)
    click.echo(f"{path}: views flows, policy_hits, endpoints over {store}")


@cli.command()
@_STORE
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (self-contained; opens offline).")
@_SINCE
@_UNTIL
@click.option("--namespace", default=None, help="Only flows from or to this namespace.")
@click.option("--title", default="tierflow report", show_default=True)
@domain_errors
def report(store: str, out: str, since: str | None, until: str | None,
           namespace: str | None, title: str) -> None:
    """A self-contained HTML report: flow visualizer, service graph, policies board, denied,
    unprotected and external flows, top talkers, time series."""
    now = datetime.now(UTC)
    html = render_report(connect(store), Window.parse(since, until, now), namespace=namespace,
                         title=title, inputs={"store": str(Path(store).resolve()),
                                              "generated": now.strftime("%Y-%m-%dT%H:%M:%SZ")})
    target = Path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, target)
    click.echo(f"{target}: {len(html.encode()) // 1024} KiB")
