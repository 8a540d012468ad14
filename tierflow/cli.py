"""The ``tierflow`` command. Each command parses options, calls the library, renders.

Domain errors (bad documents, probes, inventories) become a one-line message on stderr and
exit status 2; ``policy lint`` exits 1 when it finds problems.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from policy import PolicyError
from tierflow import commands, config, options

F = TypeVar("F", bound=Callable[..., Any])


def domain_errors(fn: F) -> F:
    """Map input errors to a one-line message and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (PolicyError, ValueError, OSError) as e:
            click.echo(f"tierflow: error: {e}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tierflow")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              envvar=config.ENV_VAR, help="tierflow.toml: defaults for every command's "
              "options (the command line wins) [default: $TIERFLOW_CONFIG, else "
              "./tierflow.toml if present].")
@click.pass_context
@domain_errors
def cli(ctx: click.Context, config_file: str | None) -> None:
    """Observed Kubernetes traffic -> Calico-style evidence and least-privilege policy."""
    path = config.find_config(config_file)
    if path is not None:
        config.apply_config(ctx, path)


@cli.command()
@options.policies("Policy files or directories (repeatable; several paths after one flag "
                  "too).", required=True, exists=False)
@options.inventories(required=True, exists=False)
@click.option("--probes", type=click.File("r"), help="JSON lines of probes ('-' for stdin).")
@click.option("--matrix", is_flag=True, help="Print the pod-to-pod reachability truth table.")
@click.option("--port", type=click.IntRange(0, 65535), default=80, show_default=True,
              help="Port for --matrix.")
@click.option("--protocol", default="TCP", show_default=True, help="Protocol for --matrix.")
@click.option("--pending", is_flag=True, help="--matrix under the pending policy set "
              "(staged policies as enforced).")
@click.option("--output", type=click.Choice(["jsonl", "table"]), default="jsonl",
              show_default=True)
# `--policies a.yaml b.yaml` as the docs write it: click's repeatable options take one value
# each, so the paths after the first land here and are read as policy paths too.
@click.argument("extra_policies", nargs=-1, type=click.Path())
@domain_errors
def simulate(policies: tuple[str, ...], inventories: tuple[str, ...], probes: Any,
             matrix: bool, port: int, protocol: str, pending: bool, output: str,
             extra_policies: tuple[str, ...]) -> None:
    """What would these policies do? Verdicts with Calico policy traces per probe."""
    if not matrix and probes is None:
        raise click.UsageError("give --probes FILE or --matrix")
    sim = commands.Simulation.load((*policies, *extra_policies), inventories)
    if matrix:
        click.echo(sim.matrix(port, protocol, pending=pending), nl=False)
        return
    bad = 0
    for item in sim.run(probes, getattr(probes, "name", "<stdin>")):
        if isinstance(item, Exception):
            bad += 1
            click.echo(f"tierflow: error: {item}", err=True)
        elif output == "jsonl":
            click.echo(json.dumps(item, separators=(",", ":")))
        else:
            click.echo(commands.probe_row(item))
    if bad:
        click.echo(f"tierflow: {bad} probe(s) rejected", err=True)
        sys.exit(2)


@cli.group()
def policy() -> None:
    """Policy documents: validation."""


@policy.command("lint")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@domain_errors
def lint(paths: tuple[str, ...], output: str) -> None:
    """Validate documents: Calico's semantic rules and the CRD schemas. Exit 1 on problems."""
    problems, count = commands.lint(paths)
    for p in problems:
        click.echo(json.dumps(p.as_dict()) if output == "json" else str(p))
    if output == "text":
        click.echo(f"{count} document(s) checked, {len(problems)} problem(s)", err=True)
    sys.exit(1 if problems else 0)


def main() -> None:
    cli(prog_name="tierflow")



# The store's and the analytics' commands live in their own modules; importing them
# registers them on `cli`.
from tierflow import (  # noqa: E402, F401
    agent_cli,
    analytics_cli,
    demo_cli,
    export_cli,
    preview_cli,
    recommend_cli,
    run_cli,
    stage_cli,
    store_cli,
)
