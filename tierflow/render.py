"""Rendering Arrow results for the terminal and for machines: ``table`` (rich), ``json`` (one
object per line), ``csv``."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from typing import Any

import click
import pyarrow as pa
from rich.console import Console
from rich.table import Table

__all__ = ["OUTPUTS", "emit"]

OUTPUTS = ("table", "json", "csv")


def emit(table: pa.Table, output: str, *, title: str | None = None) -> None:
    rows = table.to_pylist()
    if output == "json":
        for row in rows:
            click.echo(json.dumps(row, default=_json_default, separators=(",", ":")))
    elif output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows([[_cell(v) for v in row.values()] for row in rows])
    else:
        t = Table(*table.column_names, show_edge=False, title=title)
        for row in rows:
            t.add_row(*(_cell(v) for v in row.values()))
        Console(width=max(120, 16 * len(table.column_names)), soft_wrap=True).print(t)
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", err=True)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, default=_json_default)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
