"""``tierflow agent``: the long-running node agent (``ingest.agent``)."""

from __future__ import annotations

import logging
import socket
import sys
from functools import partial
from pathlib import Path

import click

from ingest.agent import Agent
from ingest.flows import Aggregation
from ingest.store import Store
from tierflow import options
from tierflow.cli import cli, domain_errors
from tierflow.store_cli import flow_builder


@cli.command()
@options.store("Store directory (created if missing; a host path or a mounted bucket).",
               exists=False)
@options.inventories(f"{options.INVENTORY}; reloaded when it changes.")
@options.policies("Policy files or directories in force (repeatable); reloaded when they "
                  "change.")
@click.option("--source", type=click.Choice(["conntrack", "packets"]), default="conntrack",
              show_default=True, help="conntrack: the kernel's table over ctnetlink; "
              "packets: sniffed frames, for nodes without conntrack.")
@click.option("--iface", "ifaces", multiple=True,
              help="Interfaces to sniff: DNS answers (for dest_domains), and every packet "
              "with --source packets (repeatable; 'any' for all of them, e.g. Calico's "
              "per-pod cali* interfaces). With --source packets pick one vantage point such "
              "as the pod bridge: a packet seen on two interfaces is counted twice.")
@click.option("--netns", default=None, help="Run in this network namespace (a name under "
              "/var/run/netns) instead of the agent's own.")
@click.option("--interval", type=click.IntRange(1, 3600), default=15, show_default=True,
              help="Flush interval in seconds (Felix's flowLogsFlushInterval).")
@click.option("--aggregation-allowed", type=click.IntRange(0, 3), default=2, show_default=True)
@click.option("--aggregation-denied", type=click.IntRange(0, 3), default=1, show_default=True)
@click.option("--max-connections", type=click.IntRange(1000), default=1_000_000,
              show_default=True, help="Connections followed at most (memory bound); the "
              "least recently active are dropped and counted.")
@click.option("--no-dns", is_flag=True, help="Do not sniff DNS answers.")
@click.option("--host", default=None, help="Node name for the records [default: this host].")
@domain_errors
def agent(store: str, inventories: tuple[str, ...], policies: tuple[str, ...], source: str,
          ifaces: tuple[str, ...], netns: str | None, interval: int,
          aggregation_allowed: int, aggregation_denied: int, max_connections: int,
          no_dns: bool, host: str | None) -> None:
    """Watch live traffic on this node and flush Calico-style flow records to the store
    every interval, until SIGTERM or SIGINT (which flush the open interval)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s tierflow agent: %(message)s")
    make = partial(flow_builder, inventories, policies,
                   Aggregation(aggregation_allowed, aggregation_denied),
                   host or socket.gethostname(), "agent")
    runner = Agent(Store(store), make, interval=interval, source=source, netns=netns,
                   ifaces=ifaces, dns=not no_dns, max_connections=max_connections,
                   watched=[Path(p) for p in (*inventories, *policies)])
    runner.install_signals()
    stats = runner.run()
    click.echo(f"tierflow agent: {stats.intervals} interval(s), {stats.records} record(s), "
               f"{stats.connections_started} connection(s) started; events lost "
               f"{stats.events_lost}, frames dropped {stats.frames_dropped}, evicted "
               f"{stats.evicted}", err=True)
