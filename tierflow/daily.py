"""The day's outputs of ``tierflow run``: reports and recommendations in a dated folder.

::

    OUT/2026-11-27/report.html                    the store's report (tierflow report)
    OUT/2026-11-27/report-<namespace>.html        one per [report] namespaces entry
    OUT/2026-11-27/recommend/<namespace>/*.yaml   per [recommend] namespaces entry
    OUT/2026-11-27/recommend/<namespace>/report.html   (or report.md) its replay proof
    OUT/2026-11-27/recommend/*.yaml, report.html  instead, when no namespace is named:
                                                  every namespace but kube-*, calico-*, tigera-*

Every window ends where the day does (midnight UTC after it) and reaches back the
configured lookback, and nothing shown depends on the clock, so the same store gives the same
bytes all day: a file whose new content equals what is on disk is left untouched (counted as
unchanged), any other is replaced atomically. A run later in the day, after more was
ingested, rewrites the folder with the fuller picture; a YAML file of the folder this run did
not write (a workload no longer seen) is removed, so ``kubectl apply -f`` gets exactly the
recommendation.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from analytics.db import connect, query
from analytics.report import render_report
from analytics.window import Window, parse_time
from recommend.engine import Request, recommend
from recommend.report import html_page, markdown
from tierflow.inputs import load_inventory, load_policies

if TYPE_CHECKING:
    from tierflow.batch import RunSettings, RunSummary

__all__ = ["day_window", "publish", "write_day"]


def day_window(day: date, lookback: str) -> Window:
    """``lookback`` (``24h``, ``7d``) back from the end of ``day`` (UTC), to that end.

    >>> day_window(date(2026, 11, 27), "1d").describe()
    '2026-11-27T00:00:00Z to 2026-11-28T00:00:00Z'
    """
    end = datetime.combine(day + timedelta(days=1), time(), UTC)
    return Window(parse_time(lookback, end, "lookback"), end)


def write_day(settings: RunSettings, day: date, summary: RunSummary) -> None:
    """Write the day's reports and recommendations (the steps ``settings`` asks for)."""
    folder = settings.out / day.isoformat()
    try:
        con = connect(settings.store)
    except Exception as e:  # a batch job reports every failure and carries on
        summary.fail("report", settings.store, e)
        return
    if "report" in settings.run_steps:
        _reports(settings, day, con, folder, summary)
    if "recommend" in settings.run_steps:
        _recommendations(settings, day, con, folder, summary)


def _reports(settings: RunSettings, day: date, con: duckdb.DuckDBPyConnection, folder: Path,
             summary: RunSummary) -> None:
    window = day_window(day, settings.report_lookback)
    # Shown in the header: what the report was made from, and no generation time, so the
    # same store gives the same bytes.
    inputs = {"store": str(Path(settings.store).resolve()), "date": day.isoformat()}
    if settings.config:
        inputs["config"] = settings.config
    for namespace in (None, *settings.report_namespaces):
        path = folder / (f"report-{namespace}.html" if namespace else "report.html")
        try:
            html = render_report(con, window, namespace=namespace, title=settings.report_title,
                                 inputs=inputs)
            _publish(settings, path, html, summary)
        except Exception as e:  # a batch job reports every failure and carries on
            summary.fail("report", _relative(settings, path), e)


def _recommendations(settings: RunSettings, day: date, con: duckdb.DuckDBPyConnection,
                     folder: Path, summary: RunSummary) -> None:
    window = day_window(day, settings.recommend_lookback)
    try:
        existing = load_policies(settings.policies)
        inventory = load_inventory(settings.inventories) if settings.inventories else None
    except Exception as e:  # a batch job reports every failure and carries on
        summary.fail("recommend", "policies and inventory", e)
        return
    for namespace in settings.recommend_namespaces or (None,):
        target = folder / "recommend" / (namespace or "")
        what = namespace or "all namespaces"
        request = Request(namespace, None, window, settings.recommend_scope,
                          settings.recommend_tier, settings.recommend_format,
                          settings.recommend_domain_wildcards)
        try:
            rec = recommend(partial(query, con), existing, inventory, request)
            files = {o.filename: o.text for o in rec.outputs}
            if settings.recommend_report == "html":
                files["report.html"] = html_page(rec, window.describe())
            else:
                files["report.md"] = markdown(rec, window.describe())
            for name, text in sorted(files.items()):
                _publish(settings, target / name, text, summary)
            _remove_stale(settings, target, files, summary)
        except Exception as e:  # a batch job reports every failure and carries on
            summary.fail("recommend", what, e)
            continue
        if not rec.proof.passed:  # as `tierflow recommend`: written for review, exit 1
            summary.fail("recommend", what, f"replay proof failed: {rec.proof.summary()}")


def _publish(settings: RunSettings, path: Path, text: str, summary: RunSummary) -> None:
    written = publish(path, text)
    (summary.written if written else summary.unchanged).append(_relative(settings, path))


def _remove_stale(settings: RunSettings, target: Path, files: dict[str, str],
                  summary: RunSummary) -> None:
    for old in sorted(target.glob("*.yaml")):
        if old.name not in files:
            old.unlink()
            summary.removed.append(_relative(settings, old))


def _relative(settings: RunSettings, path: Path) -> str:
    return str(path.relative_to(settings.out))


def publish(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds exactly that (then ``False``, and
    the file, its modification time included, is left alone). Temp name, fsync, rename: a
    reader sees the old file or the new one, never half of one."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True
