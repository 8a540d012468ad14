"""The flow store: hive-partitioned Parquet, committed atomically, with exactly-once sources.

Layout (``DESIGN.md``)::

    STORE/flows/date=YYYY-MM-DD/hour=HH/part-<host>-<uuid>.parquet   flow records (FLOWS)
    STORE/rejects/<collector>/date=YYYY-MM-DD/rejects-<uuid>.jsonl   input kept aside, and why
    STORE/_state/sources.json     what each source file has given: fingerprint and offset
    STORE/_state/journal/*.json   committed transactions not yet fully applied
    STORE/_state/lock             writers hold an exclusive flock on it
    STORE/_state/<job>.lock       a batch job holds it for its whole run (`tierflow run`)
    STORE/_staging/<txid>/        files of a transaction being written

A transaction writes its files under ``_staging`` (written, fsynced), then commits by
atomically renaming its journal entry into ``_state/journal`` — the entry lists the renames
to make, the files to delete and the new source positions — and then applies it. A job killed
before the journal rename leaves only staging debris, removed at the next open; one killed
after it is rolled forward at the next open. Either way each record lands exactly once and a
reader (which only lists ``flows/``) never sees a partial file.

Source files are known by a fingerprint of their first bytes (up to 4 KiB), so a rotated,
renamed or copied ``flows.log`` resumes where it was left and a new file at the same path
starts from zero.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.rollups import hit_rollup
from ingest.schema import FLOWS, SCHEMA_VERSION, Reject, conform

__all__ = ["Position", "Store", "StoreError", "Writer", "fingerprint"]

HEAD_BYTES = 4096
_PARQUET = {"compression": "zstd", "compression_level": 3, "use_dictionary": True,
            "write_statistics": True}


class StoreError(ValueError):
    """A store directory that is not a tierflow store, or a lock that cannot be had."""


@dataclass(frozen=True)
class Position:
    """Where a source file was left: ``offset`` bytes consumed (``complete`` for files that
    are ingested whole, like captures)."""

    key: str | None  # the sources.json entry, None for a file never seen
    offset: int = 0
    complete: bool = False


def fingerprint(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


class Store:
    """A store directory; :meth:`writer` opens it for writing under the lock."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.flows = self.root / "flows"
        self.state = self.root / "_state"

    def files(self) -> list[Path]:
        """The committed Parquet files, sorted."""
        return sorted(self.flows.glob("date=*/hour=*/*.parquet"))

    def rollup_files(self) -> list[Path]:
        """The committed hourly hit rollups (``rollups/hits/``), sorted."""
        return sorted((self.root / "rollups" / "hits").glob("date=*/hour=*/*.parquet"))

    def sources(self) -> dict[str, dict[str, Any]]:
        path = self.state / "sources.json"
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        return dict(data.get("sources", {}))

    @contextlib.contextmanager
    def writer(self, wait: float | None = None) -> Iterator[Writer]:
        """Take the writer lock (waiting at most ``wait`` seconds, forever if ``None``),
        finish or discard whatever a killed job left, and yield a :class:`Writer`."""
        for d in (self.flows, self.state / "journal", self.root / "_staging",
                  self.root / "rejects"):
            d.mkdir(parents=True, exist_ok=True)
        with open(self.state / "lock", "a+b") as lock:
            _lock(lock, wait, self.state / "lock")
            try:
                w = Writer(self)
                w.recover()
                yield w
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def job_lock(self, job: str, wait: float | None = 0) -> Iterator[None]:
        """Hold ``_state/<job>.lock`` while a batch job runs, so two runs of ``job`` on
        this store never overlap (waiting at most ``wait`` seconds, forever if ``None``;
        by default not at all). It is not the writer lock: the job's steps take that one
        in turn, so agents and other writers interleave with them as usual.

        >>> with Store("store").job_lock("run"):  # doctest: +SKIP
        ...     ingest_and_report()
        """
        self.state.mkdir(parents=True, exist_ok=True)
        path = self.state / f"{_safe(job)}.lock"
        with open(path, "a+b") as lock:
            _lock(lock, wait, path, f"another `tierflow {job}` is running on this store")
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _lock(lock: BinaryIO, wait: float | None, path: Path,
          holder: str = "another tierflow job holds the store lock") -> None:
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
            return
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                raise StoreError(f"{path}: {holder} (waited {wait:g} s)") from None
            time.sleep(0.05)


class Writer:
    """Stages flow tables, rejects and source positions; :meth:`commit` makes them durable
    and visible at once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._new_transaction()
        self._sources = store.sources()

    def _new_transaction(self) -> None:
        self.txid = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        self.staging = self.store.root / "_staging" / self.txid
        self._moves: list[tuple[str, str]] = []
        self._deletes: list[str] = []
        self._positions: dict[str, dict[str, Any]] = {}
        self.rows = 0

    # -- reading what was consumed ---------------------------------------------------------

    def position(self, path: str | os.PathLike[str]) -> Position:
        """Where ingestion of the file at ``path`` stopped, matching its first bytes against
        every file seen (so rotation and renames keep the position)."""
        p = Path(path)
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(HEAD_BYTES)
        best: tuple[int, str, dict[str, Any]] | None = None
        for key, entry in {**self._sources, **self._positions}.items():
            n = int(entry["head_len"])
            fits = n <= len(head) and size >= n and (best is None or n > best[0])
            if fits and fingerprint(head[:n]) == entry["head"]:
                best = (n, key, entry)
        if best is None:
            return Position(None)
        entry = best[2]
        if int(entry["offset"]) > size:  # truncated in place: a new file
            return Position(None)
        return Position(best[1], int(entry["offset"]), bool(entry.get("complete", False)))

    def set_position(self, path: str | os.PathLike[str], previous: Position, offset: int,
                     complete: bool = False, collector: str = "") -> None:
        """Record that ``path`` was consumed up to ``offset``, committed with the data."""
        p = Path(path)
        with open(p, "rb") as f:
            head = f.read(min(HEAD_BYTES, max(offset, 1)))
        st = p.stat()
        key = previous.key or uuid.uuid4().hex
        self._positions[key] = {
            "path": str(p.resolve()), "head": fingerprint(head), "head_len": len(head),
            "offset": offset, "complete": complete, "collector": collector,
            "inode": st.st_ino, "device": st.st_dev,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    # -- staging ---------------------------------------------------------------------------

    def add_flows(self, table: pa.Table, host: str = "-") -> int:
        """Stage ``table`` (FLOWS), one file per hour partition of ``start_time``."""
        if table.num_rows == 0:
            return 0
        table = conform(table)
        hours = pc.floor_temporal(table["start_time"], unit="hour")
        for hour in pc.unique(hours).to_pylist():
            part = table.filter(pc.equal(hours, pa.scalar(hour, hours.type)))
            part = part.sort_by([("start_time", "ascending")])
            name = f"part-{_safe(host)}-{uuid.uuid4().hex}.parquet"
            self.stage_part(f"date={hour:%Y-%m-%d}/hour={hour:%H}/{name}", part)
        self.rows += table.num_rows
        return int(table.num_rows)

    def stage_part(self, relative: str, part: pa.Table) -> None:
        """Stage one flows file (``date=.../hour=.../part-*.parquet``) and its hourly hit
        rollup under the same name, so a reader can tell which hours are fully rolled up."""
        self.stage_file(f"flows/{relative}", lambda path: _write_parquet(part, path))
        rollup = hit_rollup(part)
        self.stage_file(f"rollups/hits/{relative}",
                        lambda path: pq.write_table(rollup, path, **_PARQUET))

    def add_rejects(self, collector: str, rejects: Sequence[Reject]) -> None:
        if not rejects:
            return
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        final = f"rejects/{_safe(collector)}/date={day}/rejects-{uuid.uuid4().hex}.jsonl"
        lines = [json.dumps(_reject_json(r), sort_keys=True) for r in rejects]
        self.stage_file(final, lambda path: path.write_text("\n".join(lines) + "\n"))

    def replace(self, old: Sequence[Path], table: pa.Table, relative: str) -> None:
        """Stage ``table`` as the flows file ``relative`` (with its rollup) and the deletion
        of the flows files ``old`` and their rollups (compaction)."""
        self.stage_part(relative, table)
        for p in old:
            rel = p.relative_to(self.store.flows)
            self._deletes += [f"flows/{rel}", f"rollups/hits/{rel}"]

    def stage_file(self, final: str, write: Callable[[Path], object]) -> None:
        """Stage a file the commit will move to ``final`` (relative to the store root);
        ``write(path)`` writes it."""
        staged = self.staging / final
        staged.parent.mkdir(parents=True, exist_ok=True)
        write(staged)
        _fsync_file(staged)
        self._moves.append((str(staged.relative_to(self.store.root)), final))

    # -- commit and recovery ---------------------------------------------------------------

    def commit(self) -> None:
        """Make everything staged since the last commit durable and visible."""
        if not (self._moves or self._deletes or self._positions):
            return
        entry = {"txid": self.txid, "moves": self._moves, "deletes": self._deletes,
                 "sources": self._positions, "schema_version": SCHEMA_VERSION}
        journal = self.store.state / "journal" / f"{self.txid}.json"
        _atomic_write(journal, json.dumps(entry, indent=1).encode())  # the commit point
        self._apply(entry, journal)
        self._new_transaction()

    def abort(self) -> None:
        _rmtree(self.staging)
        self._new_transaction()

    def recover(self) -> None:
        """Roll committed transactions forward; throw uncommitted staging away."""
        journals = sorted((self.store.state / "journal").glob("*.json"))
        for journal in journals:
            self._apply(json.loads(journal.read_text()), journal)
        committed = {j.stem for j in journals}
        for d in (self.store.root / "_staging").iterdir():
            if d.name not in committed:
                _rmtree(d)
        for tmp in [*self.store.state.glob("*.tmp"), *self.store.state.glob("journal/*.tmp")]:
            tmp.unlink()  # an atomic write cut short: never committed

    def _apply(self, entry: dict[str, Any], journal: Path) -> None:
        root = self.store.root
        for staged, final in entry["moves"]:
            src, dst = root / staged, root / final
            if src.exists():  # else already moved by an earlier attempt
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                _fsync_dir(dst.parent)
        for old in entry["deletes"]:
            with contextlib.suppress(FileNotFoundError):
                (root / old).unlink()
        if entry["sources"]:
            self._sources.update(entry["sources"])
            _atomic_write(self.store.state / "sources.json", json.dumps(
                {"version": 1, "sources": self._sources}, indent=1, sort_keys=True).encode())
        journal.unlink()
        _fsync_dir(journal.parent)
        _rmtree(root / "_staging" / entry["txid"])


def _write_parquet(table: pa.Table, path: Path) -> None:
    schema = table.schema.with_metadata({**(FLOWS.metadata or {})})
    pq.write_table(table.cast(schema), path, row_group_size=256 * 1024, **_PARQUET)


def _reject_json(r: Reject) -> dict[str, Any]:
    out: dict[str, Any] = {"source": r.source, "position": r.position, "field": r.field,
                           "value": r.value, "expected": r.expected, "message": r.message()}
    if isinstance(r.raw, bytes):
        out["raw_base64"] = base64.b64encode(r.raw).decode()
    else:
        out["raw"] = r.raw
    return out


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "-"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    if not path.exists():
        return
    for p in sorted(path.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()
