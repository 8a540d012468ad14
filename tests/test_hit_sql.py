"""The SQL hit parser (``analytics/sql/macros.sql``, as the ``policy_hits`` view and the board
use it) against ``policy.hits.parse_hit`` and against ``reference/calico.md`` §1.4, on every
format Calico has written: classic Enterprise (GNP, NP, KNP, the three staged kinds in both
spellings, profiles, end of tier), OSS >= 3.32 kind-prefixed (``eot:__NO_MATCH__`` included)
and the legacy 4-field ``all_policies`` hit without a rule index.

The view runs in a plain in-memory DuckDB (``macros.sql`` and ``views.sql`` over an Arrow
``flows`` table); the board, which reads the store's files and hourly rollups, runs on a
one-hour store. tests/test_analytics.py covers the store's queries end to end.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics import queries
from analytics.db import connect, query, sql_text
from analytics.window import Window
from ingest.schema import FLOWS
from ingest.store import Store
from policy.hits import parse_hit

GNP, NP, KNP = "GlobalNetworkPolicy", "NetworkPolicy", "KubernetesNetworkPolicy"
SGNP, SNP, SKNP = ("StagedGlobalNetworkPolicy", "StagedNetworkPolicy",
                   "StagedKubernetesNetworkPolicy")
KCNP, PROFILE, EOT = "ClusterNetworkPolicy", "Profile", "EndOfTier"

# (hit, (index, tier, kind, namespace, policy, action, rule)) — expectations read off §1.4:
# the name part per kind, `eot-deny` is a deny, rule -1 = end of tier, -2 = unknown (and the
# legacy 4-field all_policies format has no rule index, so -2).
FORMATS: list[tuple[str, tuple[object, ...]]] = [
    # classic GlobalNetworkPolicy: <tier>.<name>; a name may itself contain dots
    ("0|security|security.pass|pass|0", (0, "security", GNP, None, "pass", "pass", 0)),
    ("2|security|security.allow.dns|allow|3",
     (2, "security", GNP, None, "allow.dns", "allow", 3)),
    # classic NetworkPolicy: <namespace>/<tier>.<name>
    ("1|default|storefront/default.trusted|allow|1",
     (1, "default", NP, "storefront", "trusted", "allow", 1)),
    # Kubernetes NetworkPolicy: <namespace>/knp.default.<name>
    ("0|default|storefront/knp.default.allow-frontend|allow|0",
     (0, "default", KNP, "storefront", "allow-frontend", "allow", 0)),
    # StagedGlobalNetworkPolicy <tier>.staged:<name>, StagedNetworkPolicy (DOCS verbatim),
    # StagedKubernetesNetworkPolicy <namespace>/staged:knp.default.<name>
    ("0|default|default.staged:default-deny|deny|-1",
     (0, "default", SGNP, None, "default-deny", "deny", -1)),
    ("0|namespace-isolation|curl-ns/namespace-isolation.staged:curl-ns-vfzgh|allow|3",
     (0, "namespace-isolation", SNP, "curl-ns", "curl-ns-vfzgh", "allow", 3)),
    ("0|default|dev/staged:knp.default.deny-all|deny|-1",
     (0, "default", SKNP, "dev", "deny-all", "deny", -1)),
    # the older staged spelling ns/staged:tier.name (DOCS datatypes example), and global
    ("0|tier1|ns2/staged:tier1.policy1|allow|0",
     (0, "tier1", SNP, "ns2", "policy1", "allow", 0)),
    ("3|tier1|staged:tier1.policy1|pass|2", (3, "tier1", SGNP, None, "policy1", "pass", 2)),
    # profile (DOCS verbatim)
    ("1|__PROFILE__|__PROFILE__.kns.curl-ns|allow|0",
     (1, "__PROFILE__", PROFILE, None, "kns.curl-ns", "allow", 0)),
    # end of tier: the triggering policy's name, rule -1; eot-deny is a deny
    ("3|security|security.block|deny|-1", (3, "security", GNP, None, "block", "deny", -1)),
    ("1|platform|shop/platform.guard|pass|-1",
     (1, "platform", NP, "shop", "guard", "pass", -1)),
    ("2|security|security.block|eot-deny|-1",
     (2, "security", GNP, None, "block", "deny", -1)),
    # -2 = unknown rule, also in the 5-field format
    ("0|default|default.x|allow|-2", (0, "default", GNP, None, "x", "allow", -2)),
    # OSS >= 3.32: <kind>:[<ns>/]<name>
    ("0|default|np:storefront/trusted|allow|1",
     (0, "default", NP, "storefront", "trusted", "allow", 1)),
    ("0|security|gnp:pass|pass|0", (0, "security", GNP, None, "pass", "pass", 0)),
    ("1|t|snp:ns/x|allow|0", (1, "t", SNP, "ns", "x", "allow", 0)),
    ("0|t|sgnp:x.y|deny|-1", (0, "t", SGNP, None, "x.y", "deny", -1)),
    ("0|default|sknp:ns/x|deny|-1", (0, "default", SKNP, "ns", "x", "deny", -1)),
    ("0|default|knp:ns/x|allow|2", (0, "default", KNP, "ns", "x", "allow", 2)),
    ("0|kube-admin|kcnp:block-all|deny|4", (0, "kube-admin", KCNP, None, "block-all", "deny", 4)),
    ("2|__PROFILE__|pro:kns.ns|allow|0", (2, "__PROFILE__", PROFILE, None, "kns.ns", "allow", 0)),
    ("1|security|eot:__NO_MATCH__|deny|-1",
     (1, "security", EOT, None, "__NO_MATCH__", "deny", -1)),
    ("4|platform|eot:__NO_MATCH__|eot-deny|-1",
     (4, "platform", EOT, None, "__NO_MATCH__", "deny", -1)),
    ("1|platform|eot:__NO_MATCH__|pass|-1",
     (1, "platform", EOT, None, "__NO_MATCH__", "pass", -1)),
    # legacy all_policies, no rule index → -2
    ("0|__PROFILE__|__PROFILE__.kns.kube-system|allow",
     (0, "__PROFILE__", PROFILE, None, "kns.kube-system", "allow", -2)),
    ("3|default|ns/default.p|deny", (3, "default", NP, "ns", "p", "deny", -2)),
    ("1|default|dev/staged:knp.default.deny-all|deny",
     (1, "default", SKNP, "dev", "deny-all", "deny", -2)),
    ("0|security|security.p|pass", (0, "security", GNP, None, "p", "pass", -2)),
]

T = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _flags(expected: tuple[object, ...]) -> tuple[bool, bool]:
    """(staged, end_of_tier) per §1.4/§6: the Staged* kinds; rule -1 or an eot: hit."""
    kind, rule = expected[2], expected[6]
    return str(kind).startswith("Staged"), rule == -1 or kind == EOT


def _python(hit: str) -> tuple[object, ...]:
    h = parse_hit(hit)
    return (h.index, h.tier, h.kind, h.namespace, h.name, h.action, h.rule)


def _records(hits: list[str]) -> pa.Table:
    """One src-reported record per hit (``num_flows`` is the hit's position in ``hits``), with
    one packet out each, so a board row's packets out count its hits per action."""
    rows = [{"start_time": T, "end_time": T + timedelta(minutes=5), "reporter": "src",
             "action": "allow", "enforced_policies": [h], "packets_in": 0, "packets_out": 1,
             "bytes_in": 0, "bytes_out": 0, "num_flows": i, "host": "node-1"}
            for i, h in enumerate(hits)]
    return pa.Table.from_pylist(rows, schema=FLOWS)


@pytest.fixture(scope="module")
def plain() -> duckdb.DuckDBPyConnection:
    """A plain DuckDB with the macros and views over a ``flows`` view the tests replace."""
    con = duckdb.connect()
    con.from_arrow(FLOWS.empty_table()).create_view("flows")
    con.execute(sql_text("macros"))
    con.execute(sql_text("views"))
    return con


def _view(con: duckdb.DuckDBPyConnection, hits: list[str]) -> list[tuple[object, ...]]:
    con.from_arrow(_records(hits)).create_view("flows", replace=True)
    rows = query(con, "SELECT position, tier, kind, namespace, policy, action, rule, staged, "
                      "end_of_tier FROM policy_hits ORDER BY num_flows").to_pylist()
    return [tuple(r.values()) for r in rows]


def _board(table: pa.Table) -> dict[tuple[object, ...], Counter[str]]:
    """Board rows keyed (tier, kind, namespace, policy, rule, staged, end_of_tier), valued by
    the packets out credited to each action."""
    out: dict[tuple[object, ...], Counter[str]] = {}
    for r in table.to_pylist():
        assert r["direction"] == "egress"  # src-reported records: egress rules (§9)
        key = (r["tier"], r["kind"], r["namespace"], r["policy"], r["rule"], r["staged"],
               r["end_of_tier"])
        out[key] = Counter({"allow": r["allowed_packets_out"], "deny": r["denied_packets_out"],
                            "pass": r["passed_packets_out"]})
    return out


def _expected_board(expected: list[tuple[object, ...]]) -> dict[tuple[object, ...],
                                                                 Counter[str]]:
    out: dict[tuple[object, ...], Counter[str]] = {}
    for e in expected:
        _, tier, kind, ns, policy, action, rule = e
        key = (tier, kind, ns, policy, rule, *_flags(e))
        out.setdefault(key, Counter({"allow": 0, "deny": 0, "pass": 0}))[str(action)] += 1
    return out


@pytest.mark.parametrize(("hit", "expected"), FORMATS, ids=[f[0] for f in FORMATS])
def test_python_reference_parser_follows_the_spec(hit: str,
                                                  expected: tuple[object, ...]) -> None:
    assert _python(hit) == expected


def test_sql_view_parses_every_format_as_the_spec_and_python(
        plain: duckdb.DuckDBPyConnection) -> None:
    hits = [h for h, _ in FORMATS]
    got = _view(plain, hits)
    for hit, g, (_, want) in zip(hits, got, FORMATS, strict=True):
        assert g == (*want, *_flags(want)), hit
        assert g[:7] == _python(hit), hit


@pytest.mark.parametrize("window", [
    Window(),  # whole hours: the hourly hit rollups
    Window(since=T + timedelta(seconds=1)),  # an edge hour: the records themselves
], ids=["rollups", "records"])
def test_board_parses_every_format_as_the_spec(tmp_path: Path, window: Window) -> None:
    with Store(tmp_path).writer() as w:
        w.add_flows(_records([h for h, _ in FORMATS]), host="node-1")
        w.commit()
    got = _board(queries.board(connect(tmp_path), window))
    assert got == _expected_board([e for _, e in FORMATS])


# --- property: generated hits of every format ----------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
# A tier named "knp" would make the GNP "knp.default.x" read as a Kubernetes policy in both
# parsers (the formats are ambiguous there); Calico's own tiers never use that name.
_TIER = _LABEL.filter(lambda t: t != "knp")
_NAME = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_ACTION = st.sampled_from(["allow", "deny", "pass", "eot-deny"])


@st.composite
def _hit(draw: st.DrawFn) -> tuple[str, tuple[object, ...]]:
    """A valid hit string of a random format and what §1.4 says it means."""
    index, tier, ns, name = draw(st.integers(0, 40)), draw(_TIER), draw(_LABEL), draw(_NAME)
    fmt = draw(st.sampled_from(["gnp", "np", "knp", "sgnp", "snp", "sknp", "old-sgnp",
                                "old-snp", "profile", "oss", "oss-eot"]))
    classic: dict[str, tuple[str, str, str, str | None]] = {
        # format: (tier, name part, kind, namespace)
        "gnp": (tier, f"{tier}.{name}", GNP, None),
        "np": (tier, f"{ns}/{tier}.{name}", NP, ns),
        "knp": ("default", f"{ns}/knp.default.{name}", KNP, ns),
        "sgnp": (tier, f"{tier}.staged:{name}", SGNP, None),
        "snp": (tier, f"{ns}/{tier}.staged:{name}", SNP, ns),
        "sknp": ("default", f"{ns}/staged:knp.default.{name}", SKNP, ns),
        "old-sgnp": (tier, f"staged:{tier}.{name}", SGNP, None),
        "old-snp": (tier, f"{ns}/staged:{tier}.{name}", SNP, ns),
        "profile": ("__PROFILE__", f"__PROFILE__.kns.{name}", PROFILE, None),
    }
    action = draw(_ACTION)
    verdict = "deny" if action == "eot-deny" else action
    if fmt in classic:
        hit_tier, part, kind, namespace = classic[fmt]
        own = f"kns.{name}" if fmt == "profile" else name
        if draw(st.booleans()):  # legacy all_policies: no rule index
            return (f"{index}|{hit_tier}|{part}|{action}",
                    (index, hit_tier, kind, namespace, own, verdict, -2))
        rule = draw(st.integers(-2, 30))
        return (f"{index}|{hit_tier}|{part}|{action}|{rule}",
                (index, hit_tier, kind, namespace, own, verdict, rule))
    rule = draw(st.integers(-2, 30))
    if fmt == "oss-eot":
        return (f"{index}|{tier}|eot:__NO_MATCH__|{action}|-1",
                (index, tier, EOT, None, "__NO_MATCH__", verdict, -1))
    short, kind = draw(st.sampled_from([("np", NP), ("snp", SNP), ("sknp", SKNP), ("knp", KNP),
                                        ("gnp", GNP), ("sgnp", SGNP), ("kcnp", KCNP),
                                        ("pro", PROFILE)]))
    namespaced = short in {"np", "snp", "sknp", "knp"}
    part = f"{short}:{ns}/{name}" if namespaced else f"{short}:{name}"
    hit_tier = "__PROFILE__" if short == "pro" else tier
    return (f"{index}|{hit_tier}|{part}|{action}|{rule}",
            (index, hit_tier, kind, ns if namespaced else None, name, verdict, rule))


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(_hit(), min_size=1, max_size=20))
def test_sql_and_python_agree_on_generated_hits(
        plain: duckdb.DuckDBPyConnection, cases: list[tuple[str, tuple[object, ...]]]) -> None:
    # `plain` is module-scoped and each example replaces its flows view: no state leaks.
    hits = [h for h, _ in cases]
    for hit, got, (_, want) in zip(hits, _view(plain, hits), cases, strict=True):
        assert _python(hit) == want, hit
        assert got == (*want, *_flags(want)), hit
