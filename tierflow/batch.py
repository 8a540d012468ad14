"""``tierflow run``: the scheduled batch job a cron entry or a Kubernetes CronJob runs.

One run, under the store's ``run`` job lock (:meth:`ingest.store.Store.job_lock`, so two runs
never overlap), does these steps in order (:data:`tierflow.config.STEPS`):

1. **ingest** what is new in each configured source: the store records what every file
   gave (:mod:`ingest.jobs`), so files already ingested are skipped and a growing
   ``flows.log`` is read from where the last run stopped;
2. **compact** the store (:mod:`ingest.compact`), which also keeps the hourly hit rollups in
   step: ingest writes each file's rollup in the same transaction, and compaction rewrites
   them with the files (and gives one to any file that lacks it);
3. **report** and 4. **recommend**: the day's reports and recommendations, written into
   ``OUT/YYYY-MM-DD/`` (:mod:`tierflow.daily`).

A step or a source that fails is recorded in the :class:`RunSummary` and the run goes on
with the others; the CLI exits 1 when anything failed. Running it again changes nothing:
sources are not read twice, compaction of a compacted store does nothing, and each output
file whose content is unchanged is left as it is (:func:`tierflow.daily.publish`).
"""

from __future__ import annotations

import glob
import socket
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ingest.compact import CompactResult, compact_store
from ingest.flows import Aggregation, FlowBuilder
from ingest.jobs import IngestSummary, ingest_calico, ingest_conntrack, ingest_pcap
from ingest.store import Store
from tierflow import daily
from tierflow.config import STEPS
from tierflow.inputs import flow_builder

__all__ = ["Failure", "RunSettings", "RunSummary", "run_batch", "source_files"]

#: What a source directory means, per kind (a file or a glob is taken as given).
DIRECTORY_PATTERNS = {
    "pcap": ("*.pcap", "*.pcapng", "*.cap", "*.pcap[0-9]*"),  # tcpdump -C adds 1, 2, ...
    "calico": ("flows.log", "flows.log.[0-9]*"),  # Felix rotates flows.log to flows.log.N
    "conntrack": ("*",),
}
# Rotated and compressed: the readers take plain files only.
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")


@dataclass(frozen=True)
class RunSettings:
    """What one run does. The fields after ``wait`` are the configuration file's keys
    ``[section] key`` as ``section_key`` (:meth:`tierflow.config.Config.section`)."""

    store: Path
    out: Path
    policies: tuple[str, ...] = ()
    inventories: tuple[str, ...] = ()
    sources: tuple[tuple[str, str], ...] = ()  # (kind, file, directory or glob)
    config: str | None = None  # shown in the reports
    run_steps: tuple[str, ...] = STEPS
    ingest_interval: int = 300
    ingest_aggregation_allowed: int = 2
    ingest_aggregation_denied: int = 1
    ingest_host: str | None = None
    ingest_batch_lines: int = 200_000
    compact_target_rows: int = 5_000_000
    report_lookback: str = "1d"
    report_title: str = "tierflow report"
    report_namespaces: tuple[str, ...] = ()
    recommend_namespaces: tuple[str, ...] = ()  # none: every namespace but the system ones
    recommend_lookback: str = "1d"
    recommend_scope: str = "workload"
    recommend_tier: str | None = None
    recommend_format: str = "calico-staged"
    recommend_domain_wildcards: bool = False
    recommend_report: str = "html"


@dataclass(frozen=True)
class Failure:
    step: str  # ingest | compact | report | recommend
    what: str  # the source, file, namespace or output
    error: str

    def __str__(self) -> str:
        return f"{self.step} {self.what}: {self.error}"


@dataclass
class RunSummary:
    """What a run did: per source kind what was ingested, the compaction, the output files
    (relative to ``OUT``) written, left unchanged or removed, and every failure."""

    day: date
    ingest: dict[str, IngestSummary] = field(default_factory=dict)
    compact: CompactResult | None = None
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, step: str, what: object, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else _error_text(error)
        self.failures.append(Failure(step, str(what), text))

    def add_ingest(self, part: IngestSummary) -> None:
        total = self.ingest.setdefault(part.source, IngestSummary(part.source))
        for name in ("files", "skipped_files", "records_in", "rejected", "written",
                     "pending_bytes"):
            setattr(total, name, getattr(total, name) + getattr(part, name))
        total.seconds += part.seconds
        total.messages += part.messages[: max(0, 20 - len(total.messages))]

    def as_dict(self) -> dict[str, Any]:
        ingest = {k: {**asdict(v), "seconds": round(v.seconds, 3)}
                  for k, v in sorted(self.ingest.items())}
        return {"date": self.day.isoformat(), "ok": self.ok, "ingest": ingest,
                "compact": asdict(self.compact) if self.compact else None,
                "written": self.written, "unchanged": self.unchanged, "removed": self.removed,
                "failures": [asdict(f) for f in self.failures],
                "seconds": round(self.seconds, 3)}

    def line(self) -> str:
        parts = [_ingest_text(list(self.ingest.values()))]
        if self.compact is not None:
            parts.append(f"compacted {self.compact.partitions} partition(s)")
        parts.append(f"{len(self.written)} file(s) written, {len(self.unchanged)} unchanged, "
                     f"{len(self.removed)} removed")
        return (f"{self.day.isoformat()}: {'; '.join(parts)}; {len(self.failures)} failure(s) "
                f"in {self.seconds:.2f} s")


def _ingest_text(parts: Collection[IngestSummary]) -> str:
    return (f"ingested {sum(p.files for p in parts)} file(s) "
            f"({sum(p.skipped_files for p in parts)} already "
            f"ingested), {sum(p.written for p in parts)} flow records written, "
            f"{sum(p.rejected for p in parts)} rejected")


def _error_text(e: BaseException) -> str:
    # Input errors carry their own complete message; anything else is named by its type.
    if isinstance(e, ValueError | OSError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def run_batch(settings: RunSettings, day: date, wait: float | None = 0) -> RunSummary:
    """Run the steps of ``settings`` for ``day`` (the dated folder and the windows end
    with it). Raises :class:`ingest.store.StoreError` when another run holds the lock
    after ``wait`` seconds; every other failure is in the summary."""
    started = time.monotonic()
    store = Store(settings.store)
    summary = RunSummary(day)
    with store.job_lock("run", wait):
        if "ingest" in settings.run_steps:
            ingest_sources(settings, store, summary)
        if "compact" in settings.run_steps:
            try:
                summary.compact = compact_store(store, settings.compact_target_rows)
            except Exception as e:  # a batch job reports every failure and carries on
                summary.fail("compact", settings.store, e)
        if {"report", "recommend"} & set(settings.run_steps):
            daily.write_day(settings, day, summary)
    summary.seconds = time.monotonic() - started
    return summary


def ingest_sources(settings: RunSettings, store: Store, summary: RunSummary) -> None:
    """Ingest every source; captures and flow logs one file at a time (a bad file does not
    hold back the others), conntrack snapshots of one source together (counters are deltas
    between consecutive snapshots, taken in time order)."""
    builders: dict[str, FlowBuilder | None] = {}
    seen: set[Path] = set()
    for kind, pattern in settings.sources:
        if kind not in builders:
            builders[kind] = _builder(settings, kind, summary)
        builder = builders[kind]
        if kind != "calico" and builder is None:
            continue  # its failure is recorded once
        try:
            files = [f for f in source_files(kind, pattern) if f.resolve() not in seen]
        except OSError as e:
            summary.fail("ingest", kind, e)  # the message names the path
            continue
        seen.update(f.resolve() for f in files)
        groups = [files] if kind == "conntrack" and files else [[f] for f in files]
        for group in groups:
            try:
                summary.add_ingest(_ingest(settings, kind, group, store, builder))
            except Exception as e:  # a batch job reports every failure and carries on
                summary.fail("ingest", f"{kind} {group[0] if len(group) == 1 else pattern}", e)


def _builder(settings: RunSettings, kind: str, summary: RunSummary) -> FlowBuilder | None:
    if kind == "calico":  # Calico's records come with identities and traces
        return None
    levels = Aggregation(settings.ingest_aggregation_allowed, settings.ingest_aggregation_denied)
    try:
        return flow_builder(settings.inventories, settings.policies, levels,
                            settings.ingest_host or socket.gethostname(), kind)
    except Exception as e:  # a batch job reports every failure and carries on
        summary.fail("ingest", f"{kind} sources", e)
        return None


def _ingest(settings: RunSettings, kind: str, files: list[Path], store: Store,
            builder: FlowBuilder | None) -> IngestSummary:
    # The writer lock is waited for as long as it takes, as `tierflow ingest` does: an agent
    # holds it only while it flushes an interval.
    if kind == "calico":
        return ingest_calico(files, store, host=settings.ingest_host, wait=None,
                             batch_lines=settings.ingest_batch_lines)
    assert builder is not None
    if kind == "pcap":
        return ingest_pcap(files, store, builder, settings.ingest_interval, wait=None)
    return ingest_conntrack(files, store, builder, settings.ingest_interval, wait=None)


def source_files(kind: str, pattern: str) -> list[Path]:
    """The files a source names, sorted: a file as given; a directory's files (not its
    subdirectories') matching :data:`DIRECTORY_PATTERNS`; a glob's matching files (``**``
    included), which may be none. Hidden and compressed files are left out of directories
    and globs. A file or directory that does not exist is a :class:`FileNotFoundError`."""
    path = Path(pattern)
    if glob.has_magic(pattern):
        found = [Path(p) for p in glob.glob(pattern, recursive=True)]
    elif path.is_dir():
        found = [f for pat in DIRECTORY_PATTERNS[kind] for f in path.glob(pat)]
    elif path.exists():
        return [path]
    else:
        raise FileNotFoundError(f"{pattern}: no such file or directory")
    return sorted({f for f in found if f.is_file() and not f.name.startswith(".")
                   and not f.name.endswith(COMPRESSED)})
