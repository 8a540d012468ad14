"""Reading the user's files: policy documents, inventories, and the flow builder made of them.
The library never opens files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ingest.flows import Aggregation, FlowBuilder
from ingest.identity import Resolver
from ingest.inventory import Inventory
from policy import Document, DocumentError, Evaluator, PolicySet, iter_documents, read_document
from policy.batch import BatchEvaluator

__all__ = ["flow_builder", "iter_policy_files", "load_inventory", "load_policies",
           "read_policy_documents"]

POLICY_SUFFIXES = (".yaml", ".yml", ".json")


def iter_policy_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given; directories walked recursively for YAML/JSON, in sorted order."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.suffix in POLICY_SUFFIXES
                              and f.is_file())
        elif p.exists():
            yield p
        else:
            raise DocumentError(str(p), None, "", str(p),
                                "does not exist (give policy files or directories)")


def read_policy_documents(paths: Iterable[str | Path]) -> list[Document]:
    docs = []
    for f in iter_policy_files(paths):
        text = f.read_text(encoding="utf-8")
        docs += [read_document(r, d) for r, d in iter_documents(text, str(f))]
    return docs


def load_policies(paths: Iterable[str | Path]) -> PolicySet:
    return PolicySet.from_documents(read_policy_documents(paths))


def load_inventory(paths: Iterable[str | Path]) -> Inventory:
    """One or more ``kubectl get ... -o json`` snapshots, later files winning."""
    inv = Inventory()
    for p in map(Path, paths):
        if not p.exists():
            raise DocumentError(str(p), None, "", str(p), "does not exist")
        inv = inv.merged(Inventory.from_text(p.read_text(encoding="utf-8"), str(p)))
    return inv


def flow_builder(inventories: Iterable[str | Path], policies: Iterable[str | Path],
                 levels: Aggregation, host: str, collector: str) -> FlowBuilder:
    """What ingest jobs turn observations into flow records with: identities from the
    inventories, network sets and policy traces from the policies (none if not given)."""
    inventories, policies = tuple(inventories), tuple(policies)
    inv = load_inventory(inventories) if inventories else None
    policy_set = load_policies(policies) if policies else None
    sets = policy_set.network_sets if policy_set else ()
    evaluator = None
    if policy_set is not None:
        namespaces = inv.namespaces if inv else {}
        lookup = (lambda ns, name: inv.endpoint(f"{ns}/{name}")) if inv else None
        evaluator = BatchEvaluator(Evaluator(policy_set, namespaces), lookup, namespaces)
    return FlowBuilder(Resolver(inv, sets), evaluator, levels, host, collector)
