"""A policy directory edited in place, document by document, for ``stage`` and ``promote``.

Every YAML and JSON file under the directory is read (as ``--policies DIR`` reads it). An
edit replaces or removes one document, or adds one in a new file; other documents keep their
text, comments included: a multi-document YAML file is cut at its ``---`` lines and only the
edited document is written again. A document inside a ``kind: List`` or a JSON file is edited
by writing that list or file again (JSON stays JSON). Where cutting at ``---`` would not give
the same documents as the YAML parser (a ``---`` inside a block scalar, say), the whole file
is written again instead.

Nothing is written until :meth:`PolicyDirectory.write`, and only after the whole directory,
as it would be, has been read back and checked as one policy set (names unique, tiers
defined). Each file is replaced atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policy import (
    Document,
    FieldReader,
    NetworkSet,
    Policy,
    PolicySet,
    Tier,
    iter_documents,
    read_document,
)
from tierflow.inputs import iter_policy_files

__all__ = ["Entry", "PolicyDirectory"]

_SEPARATOR = re.compile(r"^---(?=\s|$)", re.MULTILINE)


@dataclass
class Entry:
    """One document of the directory: where it is, what it says, what it means."""

    file: _File
    chunk: int  # index into file.chunks
    item: int | None  # index into the chunk's List items
    raw: dict[str, Any]
    document: Document

    @property
    def path(self) -> Path:
        return self.file.path

    def describe(self) -> str:
        meta = self.raw.get("metadata") or {}
        name = "/".join(str(p) for p in (meta.get("namespace"), meta.get("name")) if p)
        return f"{self.raw.get('kind')} {name}"


@dataclass
class _Chunk:
    text: str  # as read, separator line included
    data: Any  # parsed value: a document, a List, or None (comments only)
    dirty: bool = False


@dataclass
class _File:
    path: Path
    json: bool
    whole: bool  # edits rewrite the whole file (JSON, or --- cuts that do not parse alike)
    chunks: list[_Chunk] = field(default_factory=list)
    dirty: bool = False

    def render(self) -> str:
        if self.json:
            docs = [c.data for c in self.chunks if c.data is not None]
            return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n"
        if self.whole:
            docs = [c.data for c in self.chunks if c.data is not None]
            return yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)
        parts = []
        for i, c in enumerate(self.chunks):
            if c.data is None and c.dirty:
                if i == 0:  # removed; the file's header comments stay
                    parts.append(_header(c.text))
                continue
            if c.dirty:
                parts.append(("---\n" if i else "") + _comments(c.text)
                             + yaml.safe_dump(c.data, sort_keys=False))
            else:
                parts.append(c.text if c.text.endswith("\n") else c.text + "\n")
        return "".join(parts)


class PolicyDirectory:
    """The documents of ``root``, editable; :meth:`write` checks and saves."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"--policies {root}: not a directory (stage and promote "
                                     "edit a policy directory)")
        self.files: list[_File] = []
        self.entries: list[Entry] = []
        for path in iter_policy_files([self.root]):
            self._read(path)

    # -- reading --------------------------------------------------------------------------

    def _read(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        for _ in iter_documents(text, str(path)):  # invalid YAML or JSON fails here, placed
            pass
        is_json = text.lstrip().startswith(("{", "["))
        if is_json:
            data = json.loads(text)
            f = _File(path, json=True, whole=True,
                      chunks=[_Chunk(text, d) for d in (data if isinstance(data, list)
                                                        else [data])])
        else:
            pieces = _cut(text)
            parsed = [yaml.safe_load(p) for p in pieces]
            whole = [d for d in parsed if d is not None] != \
                [d for d in yaml.safe_load_all(text) if d is not None]
            if whole:
                parsed = [d for d in yaml.safe_load_all(text) if d is not None]
                pieces = [""] * len(parsed)
            f = _File(path, json=False, whole=whole,
                      chunks=[_Chunk(t, d) for t, d in zip(pieces, parsed, strict=True)])
        self.files.append(f)
        for entry in self._entries_of(f):
            self.entries.append(entry)

    def _entries_of(self, f: _File) -> Iterator[Entry]:
        index = 0  # as policy.iter_documents counts: documents that are not empty
        for ci, chunk in enumerate(f.chunks):
            if chunk.data is None:
                continue
            if isinstance(chunk.data, Mapping) and str(chunk.data.get("kind", "")).endswith(
                    "List"):
                for ii, item in enumerate(chunk.data.get("items") or []):
                    r = FieldReader(str(f.path), index, f"items[{ii}].")
                    yield Entry(f, ci, ii, item, read_document(r, item))
            else:
                yield Entry(f, ci, None, chunk.data,
                            read_document(FieldReader(str(f.path), index), chunk.data))
            index += 1

    # -- finding ---------------------------------------------------------------------------

    def find(self, kind: str, namespace: str | None, name: str) -> list[Entry]:
        """Entries of this model kind (``PolicyKind`` value, ``Tier``, ``NetworkSet``,
        ``GlobalNetworkSet``), namespace and name."""
        return [e for e in self.entries if _identity(e.document) == (kind, namespace or "",
                                                                     name)]

    # -- editing ---------------------------------------------------------------------------

    def replace(self, entry: Entry, raw: dict[str, Any]) -> None:
        self._set(entry, raw)
        entry.raw = raw

    def remove(self, entry: Entry) -> None:
        self._set(entry, None)
        self.entries.remove(entry)

    def add(self, raw: dict[str, Any], stem: str) -> Path:
        """A new file ``stem.yaml`` (``stem-2.yaml``... if taken) holding ``raw``."""
        path = self.root / f"{_safe(stem)}.yaml"
        n = 2
        while path.exists() or any(f.path == path for f in self.files):
            path, n = self.root / f"{_safe(stem)}-{n}.yaml", n + 1
        f = _File(path, json=False, whole=False, chunks=[_Chunk("", raw, dirty=True)],
                  dirty=True)
        self.files.append(f)
        self.entries.append(Entry(f, 0, None, raw, read_document(FieldReader(str(path), 0),
                                                                  raw)))
        return path

    def _set(self, entry: Entry, raw: dict[str, Any] | None) -> None:
        chunk = entry.file.chunks[entry.chunk]
        if entry.item is None:
            chunk.data = raw
        else:
            items = list(chunk.data["items"])
            if raw is None:
                items.pop(entry.item)
                for other in self.entries:
                    if other.file is entry.file and other.chunk == entry.chunk and \
                            other.item is not None and other.item > entry.item:
                        other.item -= 1
            else:
                items[entry.item] = raw
            chunk.data = {**chunk.data, "items": items}
        chunk.dirty = entry.file.dirty = True

    # -- saving ----------------------------------------------------------------------------

    def check(self) -> PolicySet:
        """The directory as it would be, read again as one policy set (raises
        ``DocumentError`` naming the file and document)."""
        docs = []
        for f in self.files:
            live = [c for c in f.chunks if c.data is not None]
            for i, c in enumerate(live):
                items = c.data.get("items") if str(c.data.get("kind", "")).endswith("List") \
                    else None
                if items is None:
                    docs.append(read_document(FieldReader(str(f.path), i), c.data))
                else:
                    docs += [read_document(FieldReader(str(f.path), i, f"items[{j}]."), it)
                             for j, it in enumerate(items)]
        return PolicySet.from_documents(docs)

    def write(self) -> list[Path]:
        """Check, then write the edited files (a file left empty is removed)."""
        self.check()
        written = []
        for f in self.files:
            if not f.dirty:
                continue
            if all(c.data is None for c in f.chunks):
                f.path.unlink(missing_ok=True)
            else:
                _atomic_write(f.path, f.render())
            written.append(f.path)
        return written


def _identity(doc: Document) -> tuple[str, str, str]:
    if isinstance(doc, Policy):
        return doc.key
    if isinstance(doc, Tier):
        return ("Tier", "", doc.name)
    assert isinstance(doc, NetworkSet)
    return (doc.kind, doc.namespace or "", doc.name)


def _comments(text: str) -> str:
    """The comment lines a document's text starts with (after its ``---``), kept when the
    document is written again: they usually describe it."""
    kept = []
    for line in text.splitlines(keepends=True):
        if _SEPARATOR.match(line):
            continue
        if line.lstrip().startswith("#") or not line.strip():
            kept.append(line if line.endswith("\n") else line + "\n")
        else:
            break
    return "".join(kept)


def _header(text: str) -> str:
    """The file's header in the leading comments of its first document: the comment lines
    before the first empty line or bare ``#`` (the rest describe the document itself); none
    when nothing separates them."""
    lines = _comments(text).splitlines(keepends=True)
    for n, line in enumerate(lines):
        if line.strip() in ("", "#"):
            return "".join(lines[:n])
    return ""


def _cut(text: str) -> list[str]:
    """The text of each YAML document, cut before every ``---`` line."""
    starts = [0, *(m.start() for m in _SEPARATOR.finditer(text) if m.start() > 0)]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def _safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
