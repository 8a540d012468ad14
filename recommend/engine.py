"""One recommendation run: observe → plan → documents → round trip → replay proof.

:func:`recommend` is the library call the CLI makes. It reads the store through an injected
``query`` (:data:`recommend.observe.Query`), never prints, and returns everything to write
and say.
Every document it returns has passed the CRD schema and the policy loader (a failure there
is a bug and raises :class:`RecommendError`).

>>> # recommend(partial(analytics.db.query, connect(store)), load_policies(paths),
>>> #           inventory, Request("storefront"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from analytics.window import Window
from ingest.inventory import Inventory
from policy import Document, FieldReader, PolicySet, read_document
from policy.schema import schema_problems
from recommend import observe
from recommend.beyond import beyond
from recommend.cluster import Cluster
from recommend.k8s import k8s_document
from recommend.model import RecommendError, WorkloadPolicy
from recommend.plan import SCOPES, plan
from recommend.policies import calico_document, policy_name, tier_document, to_yaml
from recommend.rules import RuleOptions
from recommend.verify import Proof, enforced_set, replay

__all__ = ["FORMATS", "Output", "Recommendation", "Request", "recommend"]

FORMATS = ("calico-staged", "calico", "k8s")
DEFAULT_TIERS = {"workload": "default", "namespace": "namespace-isolation"}
SYSTEM_PREFIXES = ("kube-", "calico-", "tigera-")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Request:
    """What to recommend. ``namespace`` ``None``: every namespace; ``tier`` ``None``:
    ``default`` (workload scope) or ``namespace-isolation`` (namespace scope, as Calico)."""

    namespace: str | None = None
    workload: str | None = None
    window: Window = field(default_factory=Window)
    scope: str = "workload"
    tier: str | None = None
    format: str = "calico-staged"
    domain_wildcards: bool = False

    def check(self) -> str:
        """The tier to use; raises :class:`RecommendError` for values no run accepts."""
        if self.scope not in SCOPES:
            raise RecommendError(f"--scope must be one of {', '.join(SCOPES)} "
                                 f"(got {self.scope!r})")
        if self.format not in FORMATS:
            raise RecommendError(f"--format must be one of {', '.join(FORMATS)} "
                                 f"(got {self.format!r})")
        if self.workload is not None and self.scope != "workload":
            raise RecommendError("--workload selects workloads; it needs --scope workload "
                                 f"(got --scope {self.scope!r})")
        tier = self.tier or DEFAULT_TIERS[self.scope]
        if not _TIER_NAME.match(tier) or len(tier) > 63:
            raise RecommendError(f"--tier must be a lower-case DNS label (a-z, 0-9, '-', at "
                                 f"most 63 characters) (got {tier!r})")
        return tier


@dataclass(frozen=True, slots=True)
class Output:
    """One file to write: its name, its YAML, and what it holds."""

    filename: str
    text: str
    kind: str
    namespace: str | None
    name: str


@dataclass(frozen=True, slots=True)
class Recommendation:
    request: Request
    tier: str
    policies: tuple[WorkloadPolicy, ...]
    outputs: tuple[Output, ...]
    proof: Proof
    beyond: tuple[tuple[str, tuple[str, ...]], ...]  # (policy file, notes)
    warnings: tuple[str, ...]
    observations: int


def recommend(query: observe.Query, existing: PolicySet, inventory: Inventory | None,
              request: Request) -> Recommendation:
    tier = request.check()
    inventory = inventory or Inventory()
    window, ns, wl = request.window, request.namespace, request.workload
    observed, records = observe.traffic(query, window, ns, wl)
    obs = [o for o in observed if ns or not _system(o.namespace)]
    cluster = Cluster.of(inventory, obs)
    policies, warnings = plan(obs, cluster, request.scope, RuleOptions(request.domain_wildcards))
    warnings += [w for p in policies for w in p.warnings]
    outputs = render(policies, tier, request.format, existing, inventory, warnings)
    documents = round_trip(outputs)
    proof = replay(records if ns else _without_system(records),
                   enforced_set(existing, documents), inventory)
    notes = tuple((f"{p.target.namespace}/{policy_name(p, tier)}",
                   tuple(beyond(p, cluster, existing.network_sets))) for p in policies)
    return Recommendation(request, tier, tuple(policies), tuple(outputs), proof, notes,
                          tuple(dict.fromkeys(warnings)), len(obs))


def _system(namespace: str) -> bool:
    """Namespaces Calico's recommender leaves out unless asked (its default
    ``namespaceSpec.selector``, reference/calico.md §7.1)."""
    return namespace.startswith(SYSTEM_PREFIXES)


def _without_system(records: pa.Table) -> pa.Table:
    names = pc.unique(records["local_namespace"]).to_pylist()
    system = pa.array([n for n in names if n and _system(n)], pa.string())
    return records.filter(pc.invert(pc.is_in(records["local_namespace"], value_set=system)))


def render(policies: list[WorkloadPolicy], tier: str, fmt: str, existing: PolicySet,
           inventory: Inventory, warnings: list[str]) -> list[Output]:
    """The files for ``policies`` in format ``fmt``, with the tier first when it is new."""
    outputs = []
    if fmt != "k8s" and policies and tier not in {t.name for t in existing.tiers}:
        warnings.append(f"tier {tier!r} is not among the policies given; writing it with "
                        "order 10000 (as Calico's recommender creates namespace-isolation)")
        outputs.append(_output(f"00-tier.{tier}.yaml", tier_document(tier), None))
    if fmt == "k8s" and tier != "default":
        warnings.append(f"Kubernetes NetworkPolicies are evaluated in Calico's default tier, "
                        f"not {tier!r}")
    for p in policies:
        if fmt == "k8s":
            doc = k8s_document(p, tier, existing.network_sets, inventory.services, warnings)
        else:
            doc = calico_document(p, tier, staged=fmt == "calico-staged")
        if doc is not None:
            header = (f"tierflow recommendation for {p.target.scope} "
                      f"{p.target.namespace}/{', '.join(p.target.workloads)}"
                      if p.target.scope == "workload" else
                      f"tierflow recommendation for namespace {p.target.namespace}")
            outputs.append(_output(f"{p.target.namespace}.{doc['metadata']['name']}.yaml",
                                   doc, header))
    return outputs


def _output(filename: str, doc: dict[str, Any], header: str | None) -> Output:
    problems = schema_problems(doc)
    if problems:
        path, value, message = problems[0]
        raise RecommendError(f"{filename}: {path}: {message} (got {value!r:.80}): "
                             "a recommendation must validate against the CRDs")
    meta = doc["metadata"]
    return Output(filename, to_yaml(doc, header), doc["kind"], meta.get("namespace"),
                  meta["name"])


def round_trip(outputs: list[Output]) -> list[Document]:
    """Every output's text parsed again and read by the policy loader's document reader
    (``load_text`` with libyaml's parser, which is many times faster on thousands of rules)."""
    docs = []
    for o in outputs:
        for i, raw in enumerate(yaml.load_all(o.text, Loader=_LOADER)):
            docs.append(read_document(FieldReader(o.filename, i), raw))
    return docs
