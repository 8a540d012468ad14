"""``tierflow export calico``: the store's flow records as a Calico Enterprise ``flows.log``.

``--out FILE`` is written under a temporary name in the same directory, fsynced and renamed,
so a reader (or a log shipper tailing the directory) never sees half a file; ``-`` (the
default) writes to stdout. On a terminal a one-line summary goes to stderr; otherwise
nothing but the records is printed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import click

from analytics.window import Window
from ingest.calico_export import export_calico
from ingest.store import Store
from tierflow import options
from tierflow.cli import cli, domain_errors


@cli.group()
def export() -> None:
    """Write the store's records in other tools' formats."""


@export.command("calico")
@options.store(exists=False)
@options.since()
@options.until()
@click.option("--out", default="-", show_default=True, type=click.Path(allow_dash=True),
              help="File to write ('-' for stdout); replaced atomically.")
@domain_errors
def calico(store: str, since: str | None, until: str | None, out: str) -> None:
    """Records overlapping the window as Calico Enterprise flows.log JSON lines, which
    ``tierflow ingest calico`` reads back as the same records."""
    window = Window.parse(since, until)
    with _output(out) as f:
        summary = export_calico(Store(store), f, window.since, window.until)
    if sys.stderr.isatty():
        where = "stdout" if out == "-" else out
        click.echo(f"{summary.records} record(s) from {summary.hours} hour(s) written to "
                   f"{where}", err=True)


@contextlib.contextmanager
def _output(out: str) -> Iterator[BinaryIO]:
    """stdout for ``-``; else a temporary file beside ``out``, renamed over it on success
    and removed on failure."""
    if out == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    path = Path(out)
    if path.is_dir():
        raise IsADirectoryError(f"--out {out!r} is a directory (give a file name)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--out {out!r}: directory {str(path.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
