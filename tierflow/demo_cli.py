"""``tierflow demo``: the storefront lab end to end, on the bundled sample (issue 8).

The workflow a platform team and an application team go through, step by step, on real
traffic recorded in the network-namespace lab (``sample_flows/storefront``): the platform's
guard rails are in force (tiers, the logging and Twilio policies, network sets), the
application has no policy yet. Each step runs the same code as the command it names and says
what it shows; everything is written under ``--out``.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import click
import yaml

from analytics import queries
from analytics.db import connect, query
from analytics.preview import evaluation_input, preview, reevaluate, totals_line
from analytics.window import Window
from policy.changes import Change, apply_changes
from recommend.engine import Request, recommend
from recommend.report import html_page
from tierflow.analytics_cli import report as report_command
from tierflow.cli import cli, domain_errors
from tierflow.inputs import load_inventory, load_policies, read_policy_documents
from tierflow.preview_cli import write_report
from tierflow.stage_cli import stage
from tierflow.store_cli import ingest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_flows" / "storefront"
#: The platform team's policies: everything of the sample but the application's own.
PLATFORM = ("00-tiers.yaml", "10-security.yaml", "20-platform.yaml", "30-networksets.yaml")
WORKLOADS = ("frontend", "microservice1", "microservice2", "backend")
NAMESPACE = "storefront"


@cli.command()
@click.option("--out", default="tierflow-demo", show_default=True,
              type=click.Path(file_okay=False),
              help="Where the store, the policies, the recommendations and the reports go "
              "(emptied first if it holds a previous demo).")
@click.option("--sample", default=str(SAMPLE), show_default=True,
              type=click.Path(exists=True, file_okay=False),
              help="The sample: storefront.pcap, inventory.json and policies/.")
@click.pass_context
@domain_errors
def demo(ctx: click.Context, out: str, sample: str) -> None:
    """The storefront lab end to end: ingest a real capture, the policies board and the flow
    visualizer, recommendations for the storefront workloads, staging them, their stats, and
    a preview of removing the backend's egress rule to logging."""
    started = time.monotonic()
    root, src = _fresh(Path(out)), Path(sample)
    store, policies = root / "store", root / "policies"
    policies.mkdir()
    for name in PLATFORM:
        shutil.copy(src / "policies" / name, policies / name)
    inventory = src / "inventory.json"
    pcap = src / "storefront.pcap"

    _heading(1, "Ingest the capture",
             f"{pcap.name}: real HTTP, DNS and external traffic of the storefront lab, typed "
             "by the inventory and evaluated against the platform team's policies (tiers "
             "security and platform, the logging and Twilio policies, the public network "
             "set). The application has no policy of its own yet.")
    ctx.invoke(ingest, source="pcap", paths=(str(pcap),), store=str(store),
               inventories=(str(inventory),), policies=(str(policies),), host="lab-node",
               interval=15, output="text")
    window = _window(store)

    _heading(2, "The policies board",
             "Connections each policy rule allowed, denied or passed (in: reported by the "
             "destination, out: by the source). The profile row is what no policy decided.")
    _board(store, window)

    _heading(3, "The flow visualizer",
             "Namespace → workload (replica-set prefix) → peer, with the verdict and the "
             "connections each side reported.")
    _visualizer(store, window)

    _heading(4, "Recommend policies for the storefront workloads",
             "From the allowed flows no policy decided: one StagedNetworkPolicy per workload, "
             "selecting it by stable labels, with exact peers and ports, proven by replaying "
             "the flows.")
    rec_dir = root / "recommendations"
    files = _recommend(store, policies, inventory, window, rec_dir)

    _heading(5, "Stage them",
             "Into the policy directory as staged policies: they never change a verdict, "
             "only record what they would do.")
    ctx.invoke(stage, files=tuple(str(f) for f in files), directory=str(policies),
               deletes=(), dry_run=False)

    _heading(6, "What the staged policies would have done",
             "The recorded flows re-evaluated with the staged policies as if enforced "
             "(stats --staged): every storefront flow is allowed by its workload's policy.")
    _staged_stats(store, policies, inventory, window)

    _heading(7, "Preview a change: the backend without its egress rule to logging",
             "The backend's staged policy with that rule removed, previewed on the recorded "
             "traffic: its flows to logging turn to deny (red in the report).")
    change = _without_logging(policies, root / "backend-without-logging.yaml")
    _preview(store, policies, inventory, change, window, root / "preview.html")

    _heading(8, "The report", "Flow visualizer, service graph, policies board, denied, "
             "unprotected and external flows, in one offline HTML file.")
    ctx.invoke(report_command, store=str(store), out=str(root / "report.html"),
               since=window[0], until=window[1], namespace=None, title="storefront lab")

    click.secho(f"\nDone in {time.monotonic() - started:.0f} s. Under {root}:", bold=True)
    for line in (f"store/            the Parquet store (tierflow sql --store {store} ...)",
                 "policies/         the platform policies and the staged recommendations",
                 "recommendations/  the recommended YAML",
                 "recommendations.html  what each rule is for, and the replay proof",
                 "preview.html      the preview, changed flows in red",
                 "report.html       the storefront report"):
        click.echo(f"  {line}")


def _preview(store: Path, policies: Path, inventory: Path, change: Path,
             window: tuple[str, str], out: Path) -> None:
    current = load_policies([policies])
    changed = apply_changes(current, [Change.put(d) for d in read_policy_documents([change])])
    con, win = connect(store), Window.parse(*window)
    result = preview(con, win, current, changed, load_inventory([inventory]),
                     only_changed=True)
    for c in result.changes:
        click.echo(f"change: {c.action} {c.target} (the staged policy previewed as enforced)")
    for r in result.changed().to_pylist():
        dest = f"{r['dest_namespace']}/{r['dest_name_aggr']}" \
            if r["dest_namespace"] not in (None, "-") else r["dest_name_aggr"]
        click.echo(f"  ✗ {r['change']}  {r['source_namespace']}/{r['source_name_aggr']} -> "
                   f"{dest}:{r['dest_port']}/{r['proto']} ({r['reporter']}, "
                   f"{r['connections']} conn)")
        click.echo(f"      before: {r['before_policy']}")
        click.echo(f"      after:  {r['after_policy']}"
                   + (f"  ({r['note'].split(':')[0]})" if r["note"] else ""))
    click.echo(totals_line(result))
    write_report(con, win, result, str(out), str(store), (str(change),), ())


def _fresh(root: Path) -> Path:
    """``root``, empty: a previous demo's output is removed, anything else refused."""
    if root.exists() and any(root.iterdir()):
        if not (root / "store").is_dir() or not (root / "policies").is_dir():
            raise click.UsageError(f"--out {root}: not empty and not a previous demo; give "
                                   "a new or empty directory")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _heading(n: int, title: str, what: str) -> None:
    click.secho(f"\n== {n}. {title}", bold=True)
    click.echo(what)
    click.echo()


def _window(store: Path) -> tuple[str, str]:
    [row] = query(connect(store), "SELECT min(start_time) AS a, max(end_time) AS b "
                                  "FROM flows").to_pylist()
    return row["a"].strftime("%Y-%m-%dT%H:%M:%S"), row["b"].strftime("%Y-%m-%dT%H:%M:%S")


def _board(store: Path, window: tuple[str, str]) -> None:
    board = queries.board(connect(store), Window.parse(*window)).to_pylist()
    rows = [r for r in board if any(r[f"{a}_connections_{d}"] for a in
                                    ("allowed", "denied", "passed") for d in ("in", "out"))]
    click.echo(f"  {'tier':<12} {'policy':<34} {'dir':<7} {'rule':>4}  "
               f"{'allowed':>7} {'denied':>6} {'passed':>6}")
    for r in rows:
        name = f"{r['namespace']}/{r['policy']}" if r["namespace"] else r["policy"]
        counts = [r[f"{a}_connections_in"] + r[f"{a}_connections_out"]
                  for a in ("allowed", "denied", "passed")]
        click.echo(f"  {r['tier']:<12} {name[:34]:<34} {r['direction']:<7} {r['rule']:>4}  "
                   f"{counts[0]:>7} {counts[1]:>6} {counts[2]:>6}")


def _visualizer(store: Path, window: tuple[str, str]) -> None:
    edges = queries.flows(connect(store), Window.parse(*window)).to_pylist()
    tree: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for e in edges:
        tree[e["source_namespace"]][e["source_name_aggr"]].append(e)
    for ns in sorted(tree):
        click.echo(f"  {ns}")
        for workload in sorted(tree[ns]):
            click.echo(f"    {workload}")
            for e in sorted(tree[ns][workload], key=lambda e: (
                    str(e["dest_namespace"]), str(e["dest_name_aggr"]),
                    e["dest_port"] or 0, e["reporter"])):
                peer = (f"{e['dest_namespace']}/{e['dest_name_aggr']}"
                        if e["dest_namespace"] not in (None, "-") else e["dest_name_aggr"])
                port = "" if e["dest_port"] is None else f":{e['dest_port']}"
                mark = "✗" if e["action"] == "deny" else "✓"
                click.echo(f"      {mark} {peer}{port}/{e['proto']}  {e['action']} "
                           f"({e['reporter']}, {e['connections']} conn)")


def _recommend(store: Path, policies: Path, inventory: Path, window: tuple[str, str],
               out: Path) -> list[Path]:
    rec = recommend(partial(query, connect(store)), load_policies([policies]),
                    load_inventory([inventory]),
                    Request(NAMESPACE, window=Window.parse(*window)))
    out.mkdir()
    (out.parent / "recommendations.html").write_text(html_page(rec, Window.parse(*window)
                                                               .describe()), encoding="utf-8")
    wanted = {f"default.{w}" for w in WORKLOADS}
    files = []
    for o in rec.outputs:
        if o.name in wanted:
            path = out / o.filename
            path.write_text(o.text, encoding="utf-8")
            files.append(path)
            click.echo(f"{path}: {o.kind} {o.namespace}/{o.name}")
    for p in rec.policies:
        if p.target.name in WORKLOADS:
            click.echo(f"  {p.target.namespace}/{p.target.name}: {len(p.ingress)} ingress, "
                       f"{len(p.egress)} egress rule(s), selector {p.target.selector}")
    click.echo(rec.proof.summary() + (" — PASSED" if rec.proof.passed else " — FAILED"))
    if not files:
        raise click.ClickException("the sample gave no recommendation for the storefront "
                                   "workloads (is the sample complete?)")
    return files


def _staged_stats(store: Path, policies: Path, inventory: Path,
                  window: tuple[str, str]) -> None:
    con = connect(store)
    records = reevaluate(evaluation_input(con, Window.parse(*window)),
                         load_policies([policies]), load_inventory([inventory]))
    board = queries.board_of(con, records, Window.parse(*window)).to_pylist()
    rows = [r for r in board if r["staged"]]
    click.echo(f"  {'staged policy':<40} {'dir':<7} {'rule':>4}  {'allowed':>7} "
               f"{'denied':>6}")
    for r in rows:
        allowed = r["allowed_connections_in"] + r["allowed_connections_out"]
        denied = r["denied_connections_in"] + r["denied_connections_out"]
        if allowed or denied:
            name = f"{r['namespace']}/{r['policy']}"
            click.echo(f"  {name[:40]:<40} {r['direction']:<7} {r['rule']:>4}  "
                       f"{allowed:>7} {denied:>6}")


def _without_logging(policies: Path, out: Path) -> Path:
    """The backend's staged policy with its egress rule(s) to logging removed."""
    [path] = [p for p in policies.glob("*.yaml") if p.name.endswith(".default.backend.yaml")]
    doc = yaml.safe_load(path.read_text())
    rules = doc["spec"].get("egress", [])
    kept = [r for r in rules if not _to_logging(r)]
    if len(kept) == len(rules):
        raise click.ClickException(f"{path}: no egress rule to logging to remove")
    doc["spec"]["egress"] = kept
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    click.echo(f"{out}: {path.name} without {len(rules) - len(kept)} egress rule(s) to logging")
    return out


def _to_logging(rule: dict[str, Any]) -> bool:
    selector = str((rule.get("destination") or {}).get("selector", ""))
    return "logging" in selector

