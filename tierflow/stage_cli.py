"""``tierflow stage`` and ``tierflow promote``: staged policies in a policy directory.

``stage`` writes staged copies of enforced policies (``stagedAction: Set``), or stages the
removal of one (``--delete``, ``stagedAction: Delete``); ``promote`` does what Calico's
"Enforce" does (``reference/calico.md`` §6): the staged object goes, and the enforced kind
with its spec is created or replaced — or, for ``Delete``, the enforced policy is removed.
Every document written validates against the CRD schemas, and the directory is read back as
one policy set before anything is saved.
"""

from __future__ import annotations

from typing import Any

import click

from policy import FieldReader, Policy, PolicyKind, Tier, iter_documents, read_document
from policy.changes import ChangeError, parse_target
from policy.schema import schema_problems
from policy.staging import StagingError, enforced_document, staged_document
from tierflow.cli import cli, domain_errors
from tierflow.inputs import iter_policy_files
from tierflow.policy_dir import Entry, PolicyDirectory

__all__ = ["promote_policies", "stage_files"]

_DIR = click.option("--policies", "directory", required=True,
                    type=click.Path(exists=True, file_okay=False),
                    help="The policy directory to edit (as given to --policies elsewhere).")


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True))
@_DIR
@click.option("--delete", "deletes", multiple=True, metavar="KIND/[NS/]NAME",
              help="Stage the removal of an enforced policy of the directory "
              "(stagedAction: Delete; repeatable).")
@click.option("--dry-run", is_flag=True, help="Say what would change; write nothing.")
@domain_errors
def stage(files: tuple[str, ...], directory: str, deletes: tuple[str, ...],
          dry_run: bool) -> None:
    """Stage NetworkPolicy, GlobalNetworkPolicy and Kubernetes NetworkPolicy documents from
    FILES into the policy directory as their staged kinds (stagedAction: Set); a staged
    object of the same name is replaced. Tiers the files define are added if missing."""
    if not files and not deletes:
        raise click.UsageError("give policy FILES to stage, or --delete KIND/[NS/]NAME")
    folder = PolicyDirectory(directory)
    for line in stage_files(folder, files, deletes):
        click.echo(line)
    _save(folder, dry_run)


@cli.command()
@click.argument("names", nargs=-1, required=True, metavar="[KIND/][NS/]NAME...")
@_DIR
@click.option("--dry-run", is_flag=True, help="Say what would change; write nothing.")
@domain_errors
def promote(names: tuple[str, ...], directory: str, dry_run: bool) -> None:
    """Enforce staged policies: each staged object is removed and its enforced kind created
    or replaced with the same spec; stagedAction Delete removes the enforced policy."""
    folder = PolicyDirectory(directory)
    for line in promote_policies(folder, names):
        click.echo(line)
    _save(folder, dry_run)


def _save(folder: PolicyDirectory, dry_run: bool) -> None:
    if dry_run:
        folder.check()
        click.echo("dry run: nothing written", err=True)
        return
    for path in folder.write():
        click.echo(f"wrote {path}" if path.exists() else f"removed {path} (now empty)",
                   err=True)


def stage_files(folder: PolicyDirectory, files: tuple[str, ...],
                deletes: tuple[str, ...] = ()) -> list[str]:
    """Stage every policy of ``files`` (and every ``--delete`` target) into ``folder``;
    returns one line per document saying what happened."""
    said = []
    for path in iter_policy_files(files):
        for reader, raw in iter_documents(path.read_text(encoding="utf-8"), str(path)):
            doc = read_document(reader, raw)  # a bad document fails here, with its place
            where = f"{reader.source} document {reader.index}"
            if isinstance(doc, Tier):
                said.append(_tier(folder, doc, raw, where))
            elif isinstance(doc, Policy):
                staged = dict(raw) if doc.staged else _staged(raw, "Set", where)
                said.append(_put(folder, staged, where))
            else:
                raise StagingError(f"{where}: {doc.kind} {doc.identity} is not a policy: a "
                                   "network set takes effect at once, so it is not staged "
                                   "(add it to the policy directory yourself)")
    for text in deletes:
        target = parse_target(text)
        kind = PolicyKind(target.kind) if target.kind in PolicyKind.__members__.values() \
            else None
        if kind is None or kind.staged:
            raise ChangeError(f"--delete {text}: stage the removal of an enforced policy "
                              "(NetworkPolicy, GlobalNetworkPolicy, KubernetesNetworkPolicy)")
        found = _one(folder.find(kind.value, target.namespace, target.name), text, folder)
        said.append(_put(folder, _staged(found.raw, "Delete", f"--delete {text}"),
                         f"--delete {text}"))
    return said


def promote_policies(folder: PolicyDirectory, names: tuple[str, ...]) -> list[str]:
    said = []
    for text in names:
        entry = _staged_entry(folder, text)
        enforced = enforced_document(entry.raw)
        policy = entry.document
        assert isinstance(policy, Policy)
        ns, name = policy.namespace, policy.name
        existing = folder.find(policy.kind.enforced.value, ns, name)
        label = f"{policy.kind.enforced.value} {'/'.join(p for p in (ns, name) if p)}"
        folder.remove(entry)
        if enforced is None:
            if not existing:
                said.append(f"promoted {entry.describe()} (stagedAction Delete): no enforced "
                            f"{label} to delete; the staged object is removed")
            for e in existing:
                folder.remove(e)
                said.append(f"promoted {entry.describe()}: deleted {label} from {e.path}")
            continue
        _validate(enforced, f"promoting {entry.describe()}")
        if existing:
            folder.replace(existing[0], enforced)
            said.append(f"promoted {entry.describe()}: replaced {label} in {existing[0].path}")
        else:
            path = folder.add(enforced, _stem(enforced))
            said.append(f"promoted {entry.describe()}: created {label} in {path}")
    return said


def _staged(raw: Any, action: str, where: str) -> dict[str, Any]:
    try:
        return staged_document(raw, action)
    except StagingError as e:
        raise StagingError(f"{where}: {e}") from None


def _put(folder: PolicyDirectory, staged: dict[str, Any], where: str) -> str:
    _validate(staged, where)
    doc = read_document(FieldReader(where, 0), staged)
    assert isinstance(doc, Policy)
    existing = folder.find(doc.kind.value, doc.namespace, doc.name)
    label = f"{doc.kind.value} {'/'.join(p for p in (doc.namespace, doc.name) if p)}"
    action = staged["spec"]["stagedAction"]
    if existing:
        folder.replace(existing[0], staged)
        return f"staged {label} (stagedAction {action}): replaced in {existing[0].path}"
    path = folder.add(staged, _stem(staged))
    return f"staged {label} (stagedAction {action}): created {path}"


def _tier(folder: PolicyDirectory, doc: Tier, raw: Any, where: str) -> str:
    existing = folder.find("Tier", None, doc.name)
    if not existing:
        path = folder.add(dict(raw), f"tier.{doc.name}")
        return f"added Tier {doc.name} (the staged policies need it): created {path}"
    if existing[0].document != doc:
        raise StagingError(f"{where}: Tier {doc.name} differs from the one in "
                           f"{existing[0].path}: a tier change takes effect at once, so it is "
                           "not staged (edit the directory yourself)")
    return f"Tier {doc.name} is already in {existing[0].path}"


def _validate(doc: dict[str, Any], where: str) -> None:
    problems = schema_problems(doc)
    if problems:
        path, value, message = problems[0]
        raise StagingError(f"{where}: the {doc['kind']} written would not validate against "
                           f"its CRD: {path}: {message} (got {value!r:.80})")


def _staged_entry(folder: PolicyDirectory, text: str) -> Entry:
    """The staged object ``[KIND/][NS/]NAME`` names: exactly one, or a clear error."""
    parts = text.split("/")
    kind = parts.pop(0) if len(parts) > 1 and parts[0][:1].isupper() else None
    if not parts or len(parts) > 2 or not all(parts):
        raise ChangeError(f"promote {text!r}: expected [KIND/][NS/]NAME")
    ns, name = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    staged = [e for e in folder.entries if isinstance(e.document, Policy)
              and e.document.staged and e.document.name == name
              and (e.document.namespace or None) == ns
              and (kind is None or e.document.kind.value.lower() == kind.lower())]
    return _one(staged, text, folder, staged=True)


def _one(found: list[Entry], text: str, folder: PolicyDirectory,
         staged: bool = False) -> Entry:
    if len(found) == 1:
        return found[0]
    if found:
        kinds = ", ".join(sorted(str(e.raw.get("kind")) for e in found))
        raise ChangeError(f"{text!r} names several objects ({kinds}): prefix the kind, "
                          f"e.g. {found[0].raw['kind']}/{text}")
    known = sorted(_label(e.document) for e in folder.entries
                   if isinstance(e.document, Policy) and e.document.staged == staged)
    what = "staged policy" if staged else "enforced policy"
    raise ChangeError(f"{text!r}: no such {what} in {folder.root} (known: "
                      f"{', '.join(known[:12]) or 'none'}{' ...' if len(known) > 12 else ''})")


def _label(policy: Policy) -> str:
    return "/".join(p for p in (policy.kind.value, policy.namespace, policy.name) if p)


def _stem(doc: dict[str, Any]) -> str:
    meta = doc["metadata"]
    return ".".join(str(p) for p in (doc["kind"].lower(), meta.get("namespace"),
                                     meta["name"]) if p)

