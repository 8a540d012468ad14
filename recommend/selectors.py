"""Stable selectors: the labels that name a workload across rollouts, restarts and upgrades.

Dropped (they change when the workload is rolled out, rescheduled or upgraded, or name one
pod): ``pod-template-hash`` (Deployment), ``controller-revision-hash`` and
``pod-template-generation`` (DaemonSet/StatefulSet), ``statefulset.kubernetes.io/pod-name``
and ``apps.kubernetes.io/pod-index`` (one pod), ``controller-uid``/``job-name`` and their
``batch.kubernetes.io/`` forms (one Job run of a CronJob), and versions and charts:
``version``, ``app.kubernetes.io/version``, ``helm.sh/chart``, ``chart``,
``service.istio.io/canonical-revision``. Also dropped as tooling metadata that says who
manages a pod, not what it is: ``heritage`` and ``app.kubernetes.io/managed-by``.

Kept: ``release`` and ``app.kubernetes.io/instance`` — the Helm release name stays the same
across upgrades and tells two installations of one chart apart.

Choice: ``app.kubernetes.io/name`` (with ``app.kubernetes.io/instance`` and
``app.kubernetes.io/component`` when present, as Helm charts' own selectors do), else
``app``, else ``k8s-app``; when that would also select other workloads' pods in the namespace
(per the inventory), or none of them is present, every remaining stable label.

>>> str(workload_selector([{"app": "web", "pod-template-hash": "5d8f"}]).selector)
'app == "web"'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from policy.selector import parse_selector, valid_label

__all__ = ["PREFERRED", "UNSTABLE", "Choice", "common_labels", "selector_text", "stable",
           "workload_selector"]

UNSTABLE = frozenset({
    "pod-template-hash", "controller-revision-hash", "pod-template-generation",
    "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index",
    "controller-uid", "job-name", "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "version", "app.kubernetes.io/version", "helm.sh/chart", "chart",
    "service.istio.io/canonical-revision",
    "heritage", "app.kubernetes.io/managed-by",
})
PREFERRED = ("app.kubernetes.io/name", "app", "k8s-app")
_COMPANIONS = {"app.kubernetes.io/name": ("app.kubernetes.io/instance",
                                          "app.kubernetes.io/component")}

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Choice:
    """A workload selector: the label equalities, their canonical Calico text, and why."""

    labels: Labels
    selector: str
    warning: str | None = None


def stable(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that survive rollouts and that a selector can name."""
    return {k: v for k, v in labels.items() if k not in UNSTABLE and _nameable(k, v)}


def _nameable(key: str, value: str) -> bool:
    # Kubernetes label values never hold quotes; a flow log from elsewhere might.
    return valid_label(key) and not ("'" in value and '"' in value)


def common_labels(label_sets: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The ``key: value`` pairs every label set has (what Calico's aggregated records carry)."""
    out: dict[str, str] | None = None
    for labels in label_sets:
        out = dict(labels) if out is None else {k: v for k, v in out.items()
                                                if labels.get(k) == v}
    return out or {}


def selector_text(labels: Iterable[tuple[str, str]]) -> str:
    """Canonical Calico selector text for an AND of equalities (``all()`` for none)."""
    pairs = sorted(labels)
    if not pairs:
        return "all()"
    return str(parse_selector(" && ".join(f"{k} == {_quote(v)}" for k, v in pairs)))


def _quote(value: str) -> str:
    return f'"{value}"' if '"' not in value else f"'{value}'"


def workload_selector(label_sets: Iterable[Mapping[str, str]],
                      others: Iterable[Mapping[str, str]] = ()) -> Choice:
    """The narrowest stable selector for pods with these label sets (the workload's pods,
    or the label sets its flow records carry) that selects none of ``others`` (the other
    pods of its namespace), when the labels allow it."""
    labels = common_labels(label_sets)
    keep = stable(labels)
    others = list(others)
    if not keep:
        chosen = {k: v for k, v in sorted(labels.items()) if _nameable(k, v)}
        why = ("has no stable labels; the selector uses "
               f"{', '.join(chosen) or 'none'}, which change on rollout" if chosen else
               "has no labels at all; the selector would select every pod")
        return Choice(tuple(sorted(chosen.items())), selector_text(chosen.items()), why)
    for key in PREFERRED:
        if key in keep:
            chosen = {key: keep[key]}
            chosen.update({k: keep[k] for k in _COMPANIONS.get(key, ()) if k in keep})
            if not any(_has_all(o, chosen) for o in others):
                return Choice(tuple(sorted(chosen.items())), selector_text(chosen.items()))
            break
    warning = None
    if any(_has_all(o, keep) for o in others):
        warning = "its stable labels also select other workloads' pods"
    return Choice(tuple(sorted(keep.items())), selector_text(keep.items()), warning)


def _has_all(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())
