"""``tierflow recommend``: least-privilege policies from the store's unprotected flows, proven
by replay. Exit status 0 when every observed flow stays allowed, 1 when the replay proof
fails (the files are still written, for review), 2 on input errors.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import click

from analytics.db import connect, query
from analytics.window import Window
from recommend.engine import FORMATS, Recommendation, Request, recommend
from recommend.plan import SCOPES
from recommend.report import html_page, markdown
from tierflow import options
from tierflow.cli import cli, domain_errors
from tierflow.inputs import load_inventory, load_policies

__all__ = ["recommend_command"]


@cli.command("recommend")
@options.store()
@options.policies("The policies in force (files or directories, repeatable): tiers in front "
                  "of the recommendation in the replay, network sets, existing names.",
                  required=True, exists=False)
@options.inventories(f"{options.INVENTORY}: workloads' pods and labels, other pods, the DNS "
                     "workload.", exists=False)
@click.option("--namespace", default=None, help="Recommend for this namespace.")
@click.option("--workload", default=None, help="Only workloads whose replica-set prefix "
              "starts with this (e.g. frontend).")
@click.option("--all-namespaces", is_flag=True, help="Recommend for every namespace but "
              "kube-*, calico-* and tigera-* (Calico's default; name them with --namespace).")
@options.since("Lookback: a duration (30m, 24h, 7d) or an ISO time.", default="24h")
@options.until("Window end [default: now].")
@click.option("--scope", type=click.Choice(SCOPES), default="workload", show_default=True,
              help="One policy per workload, or per namespace as Calico Enterprise does.")
@click.option("--tier", default=None, help="Tier of the policies [default: default; "
              "namespace-isolation with --scope namespace].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="calico-staged",
              show_default=True, help="StagedNetworkPolicy, NetworkPolicy, or Kubernetes "
              "NetworkPolicy.")
@click.option("--domain-wildcards", is_flag=True, help="Names sharing a parent domain become "
              "one *.parent (broader; off by default).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for the .yaml files (kubectl apply -f DIR).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write a report: rules, the flows behind them, the replay proof "
              "(FILE.html: one self-contained HTML page; else Markdown).")
# `--policies a.yaml b.yaml` as the docs write it (see `tierflow simulate`).
@click.argument("extra_policies", nargs=-1, type=click.Path())
@domain_errors
def recommend_command(store: str, policies: tuple[str, ...], inventories: tuple[str, ...],
                      namespace: str | None, workload: str | None, all_namespaces: bool,
                      since: str, until: str | None, scope: str, tier: str | None, fmt: str,
                      domain_wildcards: bool, out: str, report: str | None,
                      extra_policies: tuple[str, ...]) -> None:
    """Recommend least-privilege policies from allowed flows no policy decided, and prove
    by replay that every one of them stays allowed."""
    if bool(namespace) == all_namespaces:
        raise click.UsageError("give --namespace NS or --all-namespaces (one of them)")
    if workload and all_namespaces:
        raise click.UsageError("--workload needs --namespace")
    window = Window.parse(since, until)
    request = Request(namespace, workload, window, scope, tier, fmt, domain_wildcards)
    rec = recommend(partial(query, connect(store)), load_policies((*policies, *extra_policies)),
                    load_inventory(inventories) if inventories else None, request)
    _write(rec, Path(out))
    if report:
        render = html_page if report.lower().endswith((".html", ".htm")) else markdown
        _atomic_write(Path(report), render(rec, window.describe()))
    _summary(rec, Path(out), report)
    sys.exit(0 if rec.proof.passed else 1)


def _write(rec: Recommendation, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for o in rec.outputs:
        _atomic_write(out / o.filename, o.text)


def _summary(rec: Recommendation, out: Path, report: str | None) -> None:
    if not rec.outputs:
        click.echo("no allowed flows without a deciding policy in the window: nothing to "
                   "recommend")
    for o in rec.outputs:
        what = f"{o.namespace}/{o.name}" if o.namespace else o.name
        click.echo(f"{out / o.filename}: {o.kind} {what}")
    for p in rec.policies:
        click.echo(f"  {p.target.namespace}/{p.target.name}: {len(p.ingress)} ingress, "
                   f"{len(p.egress)} egress rule(s), selector {p.target.selector}")
    written = {o.filename for o in rec.outputs}
    stale = sorted(f.name for f in out.glob("*.yaml") if f.name not in written) \
        if out.is_dir() else []
    if stale:
        click.echo(f"tierflow: note: {out} also holds {len(stale)} file(s) this run did not "
                   f"write ({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''})",
                   err=True)
    for w in rec.warnings:
        click.echo(f"tierflow: warning: {w}", err=True)
    click.echo(rec.proof.summary() + (" — PASSED" if rec.proof.passed else " — FAILED"))
    for f in rec.proof.failures:
        click.echo(f"  not allowed: {f}", err=True)
    if report:
        click.echo(f"{report}: report")


def _atomic_write(path: Path, text: str) -> None:
    """Temp name, fsync, rename: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
