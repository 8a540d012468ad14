"""``tierflow preview``: what a policy change would have done to the recorded traffic."""

from __future__ import annotations

import html
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import duckdb

from analytics.db import connect
from analytics.preview import CHANGES, Preview, preview, totals_line
from analytics.report import column, html_table, render_report
from analytics.window import Window
from ingest.store import Store
from policy.changes import Change, apply_changes
from tierflow import options
from tierflow.cli import cli, domain_errors
from tierflow.inputs import load_inventory, load_policies, read_policy_documents
from tierflow.render import OUTPUTS, emit

_TABLE_COLUMNS = ("change", "reporter", "source_namespace", "source_name_aggr",
                  "dest_namespace", "dest_name_aggr", "proto", "dest_port", "recorded_action",
                  "before", "after", "before_policy", "after_policy", "connections", "packets",
                  "bytes", "first_seen", "last_seen", "note")


@cli.command("preview")
@options.store()
@options.policies("The policies in force (repeatable).", required=True)
@options.inventories(f"{options.INVENTORY}: service accounts, named ports and namespace "
                     "labels.")
@click.option("--change", "change_files", multiple=True, type=click.Path(exists=True),
              help="Documents to create or update (repeatable); a staged policy is previewed "
              "as if enforced.")
@click.option("--delete", "deletes", multiple=True, metavar="KIND/[NS/]NAME",
              help="An object to delete, e.g. NetworkPolicy/storefront/default.dmz "
              "(repeatable).")
@options.since()
@options.until()
@click.option("--only-changed", is_flag=True,
              help="Only flows whose verdict changes or cannot be decided (uncertain).")
@click.option("--output", type=click.Choice(OUTPUTS), default="table", show_default=True)
@click.option("--report", "report_file", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML report: the flow visualizer with the "
              "changed flows in red, and the changed flows with both traces.")
@click.option("--fail-on", type=click.Choice(["allow-to-deny", "any"]), default=None,
              help="Exit 1 when an allowed flow would be (or might be: uncertain) denied, or "
              "on any change of verdict.")
@domain_errors
def preview_command(store: str, policies: tuple[str, ...], inventories: tuple[str, ...],
                    change_files: tuple[str, ...], deletes: tuple[str, ...],
                    since: str | None, until: str | None, only_changed: bool, output: str,
                    report_file: str | None, fail_on: str | None) -> None:
    """Re-evaluate the recorded flows of the window under the policies in force and with the
    changes applied, as Calico's Policy Impact Preview does, and list every flow whose verdict
    changes (allow-to-deny, deny-to-allow), or cannot be decided from the records
    (uncertain), with both traces and the connections, packets and bytes affected."""
    if not change_files and not deletes:
        raise click.UsageError("give --change FILE or --delete KIND/[NS/]NAME")
    if report_file and not Path(report_file).resolve().parent.is_dir():
        raise click.UsageError(f"--report {report_file}: its directory does not exist")
    st = Store(store)
    if not (st.flows.is_dir() or st.state.is_dir()):
        raise click.UsageError(f"--store {store}: not a tierflow store (no flows/ or _state/ "
                               "in it; give the directory that tierflow ingest --store wrote)")
    changes = [Change.put(d) for d in read_policy_documents(change_files)]
    changes += [Change.delete(t) for t in deletes]
    current = load_policies(policies)
    changed = apply_changes(current, changes)
    inventory = load_inventory(inventories) if inventories else None
    con, window = connect(store), Window.parse(since, until)
    result = preview(con, window, current, changed, inventory, only_changed=only_changed)
    for c in result.changes:
        click.echo(f"change: {c.action} {c.target} ({c.source})", err=True)
    shown = result.changed() if only_changed else result.flows
    if output == "table":
        shown = shown.select(list(_TABLE_COLUMNS))
    emit(shown, output)
    click.echo(totals_line(result), err=True)
    if not result.records and fail_on:
        click.echo("tierflow: warning: no record in the window: --fail-on checked nothing",
                   err=True)
    if report_file:
        write_report(con, window, result, report_file, store, change_files, deletes)
    if fail_on == "any" and result.changed().num_rows:
        click.echo(f"tierflow: --fail-on any: {result.changed().num_rows} flow(s) change "
                   "verdict or are uncertain", err=True)
        sys.exit(1)
    if fail_on == "allow-to-deny" and result.allow_to_deny():
        click.echo(f"tierflow: --fail-on allow-to-deny: {result.allow_to_deny()} allowed "
                   "flow(s) would be denied or might be (uncertain)", err=True)
        sys.exit(1)


def write_report(con: duckdb.DuckDBPyConnection, window: Window, result: Preview, out: str,
                  store: str, change_files: tuple[str, ...], deletes: tuple[str, ...]) -> None:
    changed = result.changed().to_pylist()
    keys = {(r["source_namespace"], r["source_name_aggr"], r["dest_namespace"],
             r["dest_name_aggr"], r["dest_port"], r["proto"]) for r in changed}
    now = datetime.now(UTC)
    totals = result.totals()
    summary = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{totals[c]['flows']:,}</td>"
        f"<td>{totals[c]['connections']:,}</td><td>{totals[c]['packets']:,}</td>"
        f"<td>{totals[c]['bytes']:,}</td></tr>" for c in CHANGES)
    applied = "".join(f"<li>{html.escape(f'{c.action} {c.target} ({c.source})')}</li>"
                      for c in result.changes)
    columns = [column(h, k) for h, k in (
        ("change", "change"), ("reporter", "reporter"),
        ("source namespace", "source_namespace"), ("source", "source_name_aggr"),
        ("dest namespace", "dest_namespace"), ("dest", "dest_name_aggr"),
        ("proto", "proto"), ("port", "dest_port"), ("before", "before"), ("after", "after"),
        ("before trace", "before_trace"), ("after trace", "after_trace"),
        ("connections", "connections"), ("packets", "packets"), ("bytes", "bytes"),
        ("first seen", "first_seen"), ("last seen", "last_seen"), ("note", "note"))]
    lead = (
        '<section id="preview">\n<h2>Policy impact preview</h2>\n'
        f"<p class=\"note\">{html.escape(totals_line(result))}</p>\n<ul>{applied}</ul>\n"
        "<table><thead><tr><th>outcome</th><th>flows</th><th>connections</th>"
        f"<th>packets</th><th>bytes</th></tr></thead><tbody>{summary}</tbody></table>\n"
        "<h3>Flows whose verdict changes</h3>\n"
        '<p class="note">Red and marked ⚠ in the flow visualizer and the service graph '
        "below. Each record is decided where it was reported (src: egress, dst: ingress); "
        "uncertain: the records lack what a rule needs (an IP for nets, a pod for a named "
        "port).</p>\n" + html_table(changed, columns) + "\n</section>")
    text = render_report(con, window, title="tierflow policy impact preview",
                         changed=keys, lead=lead,
                         inputs={"store": str(Path(store).resolve()),
                                 "changes": ", ".join((*change_files, *deletes)),
                                 "generated": now.strftime("%Y-%m-%dT%H:%M:%SZ")})
    target = Path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    click.echo(f"{target}: {len(text.encode()) // 1024} KiB", err=True)
