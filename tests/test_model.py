"""Small model facts: kind conversions used by staging and promotion."""

from __future__ import annotations

import pytest

from policy import PolicyKind

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
