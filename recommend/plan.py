"""Observations → one :class:`WorkloadPolicy` per target (workload or namespace).

Workload scope groups observations by namespace and workload (replica-set prefix, CronJob
runs merged); namespace scope by namespace, as Calico's engine does (§7.2). Targets without
any rule are left out (Calico writes no empty recommendation).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

from recommend.cluster import Cluster, stable_name
from recommend.model import Observation, RecommendError, Target, WorkloadPolicy
from recommend.rules import DEFAULT_OPTIONS, RuleOptions, build_rules
from recommend.selectors import selector_text

__all__ = ["SCOPES", "plan"]

SCOPES = ("workload", "namespace")
NAMESPACE_LABEL = "projectcalico.org/namespace"


def plan(observations: Sequence[Observation], cluster: Cluster, scope: str = "workload",
         options: RuleOptions = DEFAULT_OPTIONS) -> tuple[list[WorkloadPolicy], list[str]]:
    """Recommendations in (namespace, name) order, and warnings about workloads left out."""
    if scope not in SCOPES:
        raise RecommendError(f"scope must be one of {', '.join(SCOPES)} (got {scope!r})")
    ordered = sorted(observations, key=Observation.sort_key)
    if scope == "namespace":
        groups = [(ns, list(obs)) for ns, obs in groupby(ordered, key=lambda o: o.namespace)]
        targets: list[tuple[Target, list[Observation], list[str]]] = [
            (_namespace_target(ns, obs), obs, []) for ns, obs in groups]
        skipped: list[str] = []
    else:
        targets, skipped = _workload_targets(ordered, cluster)
    out = []
    for target, obs, warnings in targets:
        ingress, egress, more = build_rules(obs, target, cluster, options)
        if ingress or egress:
            out.append(WorkloadPolicy(target, ingress, egress,
                                      tuple(dict.fromkeys(warnings + more))))
    return sorted(out, key=lambda p: (p.target.namespace, p.target.name)), skipped


def _namespace_target(namespace: str, obs: list[Observation]) -> Target:
    return Target("namespace", namespace, namespace,
                  selector_text([(NAMESPACE_LABEL, namespace)]), (),
                  tuple(sorted({o.workload for o in obs})))


def _workload_targets(ordered: list[Observation], cluster: Cluster
                      ) -> tuple[list[tuple[Target, list[Observation], list[str]]], list[str]]:
    groups = [(key, list(obs)) for key, obs in
              groupby(ordered, key=lambda o: (o.namespace, o.workload))]
    named = []
    for (ns, workload), obs in groups:
        seen = [s for o in obs for s in o.local_labels]
        labels = cluster.labels(ns, workload, seen)
        named.append((ns, workload, obs, stable_name(workload, labels), seen))
    taken: dict[tuple[str, str], int] = {}
    for ns, _, _, name, _ in named:
        taken[(ns, name)] = taken.get((ns, name), 0) + 1
    out, skipped = [], []
    for ns, workload, obs, stable, seen in named:
        # Two workloads with one stable name: each keeps its full prefix.
        name = stable_name(workload, {}) if taken[(ns, stable)] > 1 else stable
        choice = cluster.choice(ns, workload, seen)
        if not choice.labels:  # `all()` would police every pod of the namespace
            skipped.append(f"{ns}/{workload} has no labels to select it by; no policy "
                           "recommended (give --inventory if its records lack labels)")
            continue
        target = Target("workload", ns, name, choice.selector, choice.labels, (workload,))
        warning = [f"{ns}/{workload} {choice.warning}"] if choice.warning else []
        out.append((target, obs, warning))
    return out, skipped
