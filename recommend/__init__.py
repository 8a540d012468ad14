"""Least-privilege policy recommendation from observed flows, proven by replay.

observe (store → observations) → plan (rules per workload or namespace, §7.3 of the Calico
reference) → documents (StagedNetworkPolicy, NetworkPolicy, Kubernetes NetworkPolicy) →
round trip through the policy loader → replay through the evaluator.

>>> # from functools import partial
>>> # from analytics.db import connect, query
>>> # rec = recommend(partial(query, connect("store")), policy_set, inventory,
>>> #                 Request("storefront"))
>>> # rec.proof.passed, [o.filename for o in rec.outputs]
"""

from recommend.engine import FORMATS, Output, Recommendation, Request, recommend
from recommend.model import (
    Category,
    Observation,
    PeerMatch,
    PeerRef,
    RecommendError,
    Rule,
    Target,
    WorkloadPolicy,
)
from recommend.plan import SCOPES
from recommend.report import html_page, markdown
from recommend.verify import Failure, Proof

__all__ = [
    "FORMATS",
    "SCOPES",
    "Category",
    "Failure",
    "Observation",
    "Output",
    "PeerMatch",
    "PeerRef",
    "Proof",
    "RecommendError",
    "Recommendation",
    "Request",
    "Rule",
    "Target",
    "WorkloadPolicy",
    "html_page",
    "markdown",
    "recommend",
]
