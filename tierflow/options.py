"""Command-line options several commands share, declared once: the store, the policies and
inventories in force, and the time window. Each command still says, in its help text, what
it uses them for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["INVENTORY", "inventories", "policies", "since", "store", "until"]

F = TypeVar("F", bound=Callable[..., Any])

INVENTORY = "kubectl get namespaces,pods,services,serviceaccounts -A -o json output (repeatable)"


def store(help: str = "Store directory.", *, exists: bool = True) -> Callable[[F], F]:
    """``--store DIR`` (required); ``exists=False`` for commands that create it."""
    return click.option("--store", required=True, help=help,
                        type=click.Path(exists=exists, file_okay=False))


def policies(help: str, *, required: bool = False, exists: bool = True) -> Callable[[F], F]:
    """``--policies PATH`` (repeatable) into ``policies``; ``exists=False`` leaves a missing
    path to the loader's own error."""
    return click.option("--policies", "policies", multiple=True, required=required, help=help,
                        type=click.Path(exists=exists))


def inventories(help: str = f"{INVENTORY}.", *, required: bool = False,
                exists: bool = True) -> Callable[[F], F]:
    """``--inventory FILE`` (repeatable) into ``inventories``."""
    return click.option("--inventory", "inventories", multiple=True, required=required,
                        help=help, type=click.Path(exists=exists))


def since(help: str = "Window start: 24h, 7d, or an ISO time [default: the first record].",
          default: str | None = None) -> Callable[[F], F]:
    return click.option("--since", default=default, show_default=default is not None,
                        help=help)


def until(help: str = "Window end [default: the last record].") -> Callable[[F], F]:
    return click.option("--until", default=None, help=help)
