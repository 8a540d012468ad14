"""The configuration file, ``tierflow.toml``: defaults for every command, and what
``tierflow run`` does (``examples/tierflow.toml`` documents every key).

It is found as ``tierflow --config FILE`` (or ``tierflow run --config FILE``), else the
``TIERFLOW_CONFIG`` environment variable, else ``./tierflow.toml`` when there is one. Options
given on a command line win over it: it only supplies click's ``default_map``. Paths in it are
relative to the file's directory.

* ``store``, ``policies``, ``inventory`` (top level) are the defaults of ``--store``,
  ``--policies`` and ``--inventory`` of every command that has them;
* a key of ``[ingest]``, ``[compact]``, ``[report]``, ``[recommend]`` or ``[run]`` that is
  also an option of the command of that name is that option's default there
  (``[ingest] interval`` -> ``tierflow ingest --interval``), see :data:`COMMAND_OPTIONS`;
* ``[sources]`` and the rest are read by ``tierflow run`` only.

A key that is not known, or a value of the wrong type, is a :class:`ConfigError` naming the
file, the key, the value and what is accepted::

    tierflow.toml: ingest.interval must be an integer from 1 to 86400 (got '5m')
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from recommend.engine import FORMATS
from recommend.plan import SCOPES

__all__ = ["COMMAND_OPTIONS", "META_KEY", "SHARED_OPTIONS", "SOURCE_KINDS", "STEPS", "Config",
           "ConfigError", "apply_config", "command_defaults", "find_config", "load_config",
           "parse"]

STEPS = ("ingest", "compact", "report", "recommend")
SOURCE_KINDS = ("pcap", "calico", "conntrack")
FILE_NAME = "tierflow.toml"
ENV_VAR = "TIERFLOW_CONFIG"

#: Top-level key -> the option it is the default of, in every command that has the option.
SHARED_OPTIONS = {"store": "--store", "policies": "--policies", "inventory": "--inventory"}
#: ``section.key`` -> the option of the command named like the section it is the default of.
COMMAND_OPTIONS = {
    "ingest.interval": "--interval", "ingest.aggregation_allowed": "--aggregation-allowed",
    "ingest.aggregation_denied": "--aggregation-denied", "ingest.host": "--host",
    "ingest.batch_lines": "--batch-lines", "compact.target_rows": "--target-rows",
    "report.title": "--title", "recommend.scope": "--scope", "recommend.tier": "--tier",
    "recommend.format": "--format", "recommend.domain_wildcards": "--domain-wildcards",
    "run.out": "--out", "run.wait": "--wait",
}


class ConfigError(ValueError):
    """A configuration file that cannot be used: ``source`` (the file), ``key`` (dotted,
    empty for the file as a whole), ``value`` and ``expected`` (what is accepted)."""

    def __init__(self, source: str, key: str, value: object, expected: str) -> None:
        self.source, self.key, self.value, self.expected = source, key, value, expected
        where = f"{source}: {key} " if key else f"{source}: "
        super().__init__(f"{where}{expected} (got {value!r:.100})")


@dataclass(frozen=True)
class _Spec:
    expected: str  # completes "<key> must be ..."
    ok: Callable[[Any], bool]
    kind: str = "value"  # value | names (list -> tuple) | path | paths (str or list -> tuple)


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def _integer(lo: int, hi: int | None = None) -> _Spec:
    text = f"an integer from {lo} to {hi}" if hi is not None else f"an integer, {lo} or more"
    return _Spec(text, lambda v: type(v) is int and lo <= v and (hi is None or v <= hi))


def _choice(options: tuple[str, ...]) -> _Spec:
    return _Spec(f"one of {', '.join(options)}", lambda v: isinstance(v, str) and v in options)


_DURATION = re.compile(r"^[1-9]\d*[smhdw]$")  # as --since takes them (analytics.window)
_LOOKBACK = _Spec("a duration: a whole number then s, m, h, d or w (24h, 7d)",
                  lambda v: isinstance(v, str) and bool(_DURATION.match(v)))
_TEXT = _Spec("a non-empty string", lambda v: isinstance(v, str) and v != "")
_PATH = _Spec("a path (relative to the config file's directory)",
              lambda v: isinstance(v, str) and v != "", "path")
_PATHS = _Spec("a path or a list of paths (relative to the config file's directory)",
               lambda v: (isinstance(v, str) and v != "") or _strings(v), "paths")
_GLOBS = _Spec("a file, directory or glob, or a list of them (relative to the config "
               "file's directory)", _PATHS.ok, "paths")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS-1123 label
_NAMES = _Spec("a list of namespace names (DNS labels: a-z, 0-9 and '-')",
               lambda v: _strings(v) and all(_NAMESPACE.match(x) for x in v), "names")
_BOOL = _Spec("true or false", lambda v: isinstance(v, bool))

SCHEMA: dict[str, dict[str, _Spec]] = {
    "": {"store": _PATH, "policies": _PATHS, "inventory": _PATHS},
    "sources": dict.fromkeys(SOURCE_KINDS, _GLOBS),
    "ingest": {"interval": _integer(1, 86400), "aggregation_allowed": _integer(0, 3),
               "aggregation_denied": _integer(0, 3), "host": _TEXT,
               "batch_lines": _integer(1)},
    "compact": {"target_rows": _integer(1)},
    "run": {"out": _PATH,
            "wait": _Spec("a number of seconds, 0 or more",
                          lambda v: type(v) in (int, float) and v >= 0),
            "steps": _Spec(f"a list of steps among {', '.join(STEPS)}",
                           lambda v: _strings(v) and set(v) <= set(STEPS), "names")},
    "report": {"lookback": _LOOKBACK, "title": _TEXT, "namespaces": _NAMES},
    "recommend": {"namespaces": _NAMES, "lookback": _LOOKBACK, "scope": _choice(SCOPES),
                  "tier": _TEXT, "format": _choice(FORMATS), "domain_wildcards": _BOOL,
                  "report": _choice(("html", "markdown"))},
}


@dataclass(frozen=True)
class Config:
    """A checked configuration file. ``values`` maps each key the file sets, dotted
    (``store``, ``ingest.interval``), to its value: paths joined to the file's directory,
    lists of names and paths as tuples."""

    path: Path
    values: Mapping[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        """The keys the file sets in ``[name]``, without the prefix."""
        prefix = f"{name}."
        return {k.removeprefix(prefix): v for k, v in self.values.items()
                if k.startswith(prefix)}


def find_config(explicit: str | None) -> Path | None:
    """``explicit`` (``--config`` or ``$TIERFLOW_CONFIG``), else ``./tierflow.toml`` if
    present, else nothing."""
    if explicit:
        return Path(explicit)
    here = Path(FILE_NAME)
    return here if here.is_file() else None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), "", e.object[e.start:e.end], "is not UTF-8 text") from None
    return parse(text, path)


def parse(text: str, path: Path) -> Config:
    """Check ``text``, the content of the configuration file at ``path``."""
    source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # Python 3.11's error has no line attribute, only "(at line N, column M)".
        line = re.search(r"at line (\d+)", str(e))
        lines = text.splitlines()
        bad = lines[int(line.group(1)) - 1] if line and int(line.group(1)) <= len(lines) else ""
        raise ConfigError(source, "", bad, f"is not valid TOML: {e}") from None
    base = path.resolve().parent
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in SCHEMA and key:
            if not isinstance(value, dict):
                raise ConfigError(source, key, value, f"must be a table ([{key}])")
            for sub, v in value.items():
                values[f"{key}.{sub}"] = _check(source, key, sub, v, base)
        else:
            values[key] = _check(source, "", key, value, base)
    return Config(path, values)


def _check(source: str, section: str, key: str, value: Any, base: Path) -> Any:
    dotted = f"{section}.{key}" if section else key
    spec = SCHEMA[section].get(key)
    if spec is None:
        where = f"[{section}] accepts" if section else "accepted at the top level:"
        keys = sorted(SCHEMA[section]) + ([f"[{s}]" for s in SCHEMA if s] if not section else [])
        raise ConfigError(source, dotted, value,
                          f"is not a known key; {where} {', '.join(keys)}")
    if not spec.ok(value):
        raise ConfigError(source, dotted, value, f"must be {spec.expected}")
    if spec.kind == "path":
        return str(base / value)
    if spec.kind == "paths":
        return tuple(str(base / v) for v in ([value] if isinstance(value, str) else value))
    if spec.kind == "names":
        return tuple(value)
    return value


def command_defaults(command: click.Command, name: str, config: Config) -> dict[str, Any]:
    """The ``default_map`` of ``command`` (called ``name``; a group: its commands' too)."""
    if isinstance(command, click.Group):
        nested = {n: command_defaults(c, n, config) for n, c in command.commands.items()}
        return {n: d for n, d in nested.items() if d}
    wanted = {flag: config.values[k] for k, flag in SHARED_OPTIONS.items() if k in config.values}
    wanted |= {flag: v for k, flag in COMMAND_OPTIONS.items()
               if k.startswith(f"{name}.") and (v := config.values.get(k)) is not None}
    out: dict[str, Any] = {}
    for param in command.params:
        flag = next((f for f in getattr(param, "opts", ()) if f in wanted), None)
        if not isinstance(param, click.Option) or flag is None or param.name is None:
            continue
        value = wanted[flag]
        if isinstance(value, tuple) and not param.multiple:
            if len(value) != 1:  # e.g. stage's --policies is one directory
                continue
            value = value[0]
        out[param.name] = value
    return out


META_KEY = "tierflow.config"


def apply_config(ctx: click.Context, path: Path) -> Config:
    """Load ``path`` and make it the defaults of ``ctx``'s command (a group: of its
    commands), and the :class:`Config` of the run (``ctx.meta[META_KEY]``)."""
    config = load_config(path)
    ctx.meta[META_KEY] = config
    ctx.default_map = command_defaults(ctx.command, ctx.info_name or "", config)
    return config
