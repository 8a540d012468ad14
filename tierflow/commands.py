"""What the commands do, between parsing options and rendering: no printing, no exiting."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ingest.inventory import Inventory
from policy import DocumentError, Evaluator, Flow, Peer, PolicySet, iter_documents, read_document
from policy.rules import protocol_number
from policy.schema import schema_problems
from tierflow.inputs import iter_policy_files, load_inventory, load_policies
from tierflow.probes import ProbeError, read_probes, verdict_json

__all__ = ["LintProblem", "Simulation", "lint", "probe_row"]


@dataclass
class Simulation:
    policies: PolicySet
    inventory: Inventory
    evaluator: Evaluator

    @classmethod
    def load(cls, policy_paths: Iterable[str], inventory_paths: Iterable[str]) -> Simulation:
        policies = load_policies(policy_paths)
        inv = load_inventory(inventory_paths)
        return cls(policies, inv, Evaluator(policies, inv.namespaces))

    def run(self, lines: TextIO, source: str) -> Iterator[dict[str, Any] | ProbeError]:
        for item in read_probes(iter(lines), self.inventory, source):
            if isinstance(item, ProbeError):
                yield item
            else:
                yield verdict_json(item, self.evaluator.evaluate(item.flow))

    def matrix(self, port: int, protocol: str, *, pending: bool = False) -> str:
        """The reachability truth table of all pods, as the Kubernetes e2e tests print it:
        ``.`` reachable, ``X`` blocked, ``?`` uncertain; rows are sources."""
        proto = protocol_number(protocol)
        if proto is None:
            raise ValueError(f"--protocol must be TCP, UDP, SCTP or 1-255 (got {protocol!r})")
        pods = sorted(self.inventory.endpoints, key=lambda e: e.identity)
        names = [p.identity for p in pods]
        lines = ["\t".join(["-", *names])]
        for src in pods:
            row = [src.identity]
            for dst in pods:
                flow = Flow(Peer(src, src.ips[0] if src.ips else None),
                            Peer(dst, dst.ips[0] if dst.ips else None, port), proto)
                v = self.evaluator.evaluate(flow)
                action = v.pending_action if pending else v.action
                row.append({"allow": ".", "deny": "X"}.get(action or "", "?"))
            lines.append("\t".join(row))
        return "\n".join(lines) + "\n"


def probe_row(item: dict[str, Any]) -> str:
    """One probe as a table row: from, to, protocol/port, verdict, egress and ingress traces."""
    def trace(direction: str) -> str:
        d = item[direction]
        return ",".join(d["enforced_policies"]) if d["policed"] else "(not policed)"

    return (f"{item.get('from')}\t{item.get('to')}\t{item.get('protocol', 'TCP')}/"
            f"{item.get('port', '-')}\t{item['verdict']}\tegress: {trace('egress')}"
            f"\tingress: {trace('ingress')}")


@dataclass(frozen=True)
class LintProblem:
    source: str
    index: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.index is None else f"{self.source} doc {self.index}"
        return f"{where}: {self.field + ' ' if self.field else ''}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.source, "document": self.index, "field": self.field,
                "message": self.message}


def lint(paths: Iterable[str | Path]) -> tuple[list[LintProblem], int]:
    """Check every document: CRD schema, Calico's semantic rules, then cross-document rules."""
    problems: list[LintProblem] = []
    docs, count = [], 0
    for f in iter_policy_files(paths):
        try:
            items = list(iter_documents(f.read_text(encoding="utf-8"), str(f)))
        except DocumentError as e:
            problems.append(LintProblem(e.source, e.index, e.field, f"{e.expected} (got "
                                                                   f"{e.value!r})"))
            continue
        for r, raw in items:
            count += 1
            semantic = None
            try:
                docs.append(read_document(r, raw))
            except DocumentError as e:
                semantic = LintProblem(e.source, e.index, e.field,
                                       f"{e.expected} (got {e.value!r})")
            # A fault both checks find is reported once, in tierflow's words.
            for path, value, message in schema_problems(raw) if isinstance(raw, dict) else []:
                if semantic is None or r.prefix + path != semantic.field:
                    problems.append(LintProblem(r.source, r.index, r.prefix + path,
                                                f"{message} (got {value!r:.80})"))
            if semantic is not None:
                problems.append(semantic)
    if not problems:
        try:
            PolicySet.from_documents(docs)
        except DocumentError as e:
            problems.append(LintProblem(e.source, e.index, e.field,
                                        f"{e.expected} (got {e.value!r})"))
    return problems, count
