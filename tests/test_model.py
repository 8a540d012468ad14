"""Small model facts: kind conversions used by staging and promotion."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policy import PolicyKind, parse_selector
from policy.endpoints import Endpoint

PAIRS = [
    (PolicyKind.STAGED_NETWORK_POLICY, PolicyKind.NETWORK_POLICY),
    (PolicyKind.STAGED_GLOBAL_NETWORK_POLICY, PolicyKind.GLOBAL_NETWORK_POLICY),
    (PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY, PolicyKind.KUBERNETES_NETWORK_POLICY),
]


@pytest.mark.parametrize(("staged", "enforced"), PAIRS, ids=[p[1].value for p in PAIRS])
def test_staged_and_enforced_kinds_are_inverse(staged: PolicyKind, enforced: PolicyKind) -> None:
    assert staged.staged and not enforced.staged
    assert staged.enforced is enforced and enforced.enforced is enforced
    assert enforced.staged_kind is staged and staged.staged_kind is staged
    assert staged.namespaced == enforced.namespaced
    assert staged.kubernetes == enforced.kubernetes


def test_cached_labels_and_hashes_are_not_carried_into_a_copy() -> None:
    """Endpoints and selectors cache their label set and hash; dataclasses.replace must
    compute them afresh for the copy, not reuse the original's."""
    e = Endpoint("shop", "web-1", (("app", "web"),))
    assert e.selector_labels["app"] == "web" and hash(e)
    f = replace(e, labels=(("app", "api"),))
    assert f.selector_labels["app"] == "api"
    assert hash(f) == hash(Endpoint("shop", "web-1", (("app", "api"),)))
    s = parse_selector("app == 'web'")
    assert hash(s) == hash(parse_selector("app == 'web'")) and s.matches({"app": "web"})
