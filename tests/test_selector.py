"""Calico's selector language (``reference/calico.md`` §4): parsing, matching, canonical text.

Three sources of truth: the upstream facts in ``conformance/selectors.json`` (each one a test
case with the file's id), a truth table written from the spec with a "label absent" row for
every operator, and the namespace-scoping rules Felix applies to a ``namespaceSelector``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import policy
from policy import SelectorSyntaxError, parse_selector

_FACTS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "conformance" / "selectors.json").read_text(encoding="utf-8")
)
_MATCH_FACTS = [f for f in _FACTS if "match" in f]
_INVALID_FACTS = [f for f in _FACTS if f.get("valid") is False]
_CANONICAL_FACTS = [f for f in _FACTS if "canonical" in f]


def _ids(facts: list[dict[str, Any]]) -> list[str]:
    return [f["id"] for f in facts]


# --- (a) upstream conformance facts ------------------------------------------------------------


def test_conformance_file_is_fully_classified() -> None:
    # Every fact is either a match fact or an invalid-selector fact, and ids are unique;
    # otherwise facts would silently drop out of the parametrized tests below.
    assert len(_MATCH_FACTS) + len(_INVALID_FACTS) == len(_FACTS) > 100
    assert len({f["id"] for f in _FACTS}) == len(_FACTS)
    assert _CANONICAL_FACTS


@pytest.mark.parametrize("fact", _MATCH_FACTS, ids=_ids(_MATCH_FACTS))
def test_conformance_match(fact: dict[str, Any]) -> None:
    assert parse_selector(fact["selector"]).matches(fact["labels"]) is fact["match"]


@pytest.mark.parametrize("fact", _INVALID_FACTS, ids=_ids(_INVALID_FACTS))
def test_conformance_invalid(fact: dict[str, Any]) -> None:
    with pytest.raises(SelectorSyntaxError) as info:
        parse_selector(fact["selector"])
    assert isinstance(info.value, ValueError)
    assert info.value.text == fact["selector"]
    assert 0 <= info.value.position <= len(fact["selector"])


@pytest.mark.parametrize("fact", _CANONICAL_FACTS, ids=_ids(_CANONICAL_FACTS))
def test_conformance_canonical(fact: dict[str, Any]) -> None:
    canonical = str(parse_selector(fact["selector"]))
    assert canonical == fact["canonical"]
    # The canonical text is itself a selector with the same canonical text and verdict.
    reparsed = parse_selector(canonical)
    assert str(reparsed) == canonical
    assert reparsed == parse_selector(fact["selector"])
    assert reparsed.matches(fact["labels"]) is fact["match"]


# --- (b) truth table from the spec -------------------------------------------------------------

ABSENT: dict[str, str] = {}
OTHER_LABEL = {"b": "x"}

# (selector, labels, expected). Every operator has a row where label "a" is absent: only != and
# "not in" (and a negation) are true then; contains/starts with/ends with need the label.
TRUTH_TABLE: list[tuple[str, dict[str, str], bool]] = [
    # ==
    ("a == 'x'", {"a": "x"}, True),
    ("a == 'x'", {"a": "y"}, False),
    ("a == 'x'", ABSENT, False),
    ("a == ''", {"a": ""}, True),
    ("a == ''", ABSENT, False),
    # !=
    ("a != 'x'", {"a": "x"}, False),
    ("a != 'x'", {"a": "y"}, True),
    ("a != 'x'", ABSENT, True),
    ("a != 'x'", OTHER_LABEL, True),
    # in
    ("a in {'x', 'y'}", {"a": "y"}, True),
    ("a in {'x', 'y'}", {"a": "z"}, False),
    ("a in {'x', 'y'}", ABSENT, False),
    ("a in {}", {"a": "x"}, False),
    ("a in {}", ABSENT, False),
    # not in
    ("a not in {'x', 'y'}", {"a": "y"}, False),
    ("a not in {'x', 'y'}", {"a": "z"}, True),
    ("a not in {'x', 'y'}", ABSENT, True),
    ("a not in {}", ABSENT, True),
    ("a notin {'x'}", ABSENT, True),
    # contains
    ("a contains 'ell'", {"a": "hello"}, True),
    ("a contains 'ell'", {"a": "help"}, False),
    ("a contains 'ell'", ABSENT, False),
    ("a contains ''", {"a": "anything"}, True),
    ("a contains ''", ABSENT, False),
    # starts with
    ("a starts with 'he'", {"a": "hello"}, True),
    ("a starts with 'he'", {"a": "the"}, False),
    ("a starts with 'he'", ABSENT, False),
    ("a startswith 'he'", {"a": "hello"}, True),
    # ends with
    ("a ends with 'lo'", {"a": "hello"}, True),
    ("a ends with 'lo'", {"a": "lot"}, False),
    ("a ends with 'lo'", ABSENT, False),
    ("a endswith 'lo'", {"a": "hello"}, True),
    # has / !has
    ("has(a)", {"a": ""}, True),
    ("has(a)", {"a": "x"}, True),
    ("has(a)", ABSENT, False),
    ("!has(a)", {"a": "x"}, False),
    ("!has(a)", ABSENT, True),
    ("!has(a)", OTHER_LABEL, True),
    # all() / global() / empty
    ("all()", ABSENT, True),
    ("", {"a": "x"}, True),
    ("global()", ABSENT, True),
    # precedence: ! binds tighter than &&, && tighter than ||
    ("has(a) || has(b) && has(c)", {"a": "1"}, True),
    ("has(a) || has(b) && has(c)", {"b": "1"}, False),
    ("(has(a) || has(b)) && has(c)", {"a": "1"}, False),
    ("(has(a) || has(b)) && has(c)", {"b": "1", "c": "1"}, True),
    ("!has(a) && has(b)", {"b": "1"}, True),
    ("!has(a) && has(b)", ABSENT, False),
    ("!(has(a) && has(b))", {"b": "1"}, True),
    ("!(has(a) && has(b))", {"a": "1", "b": "1"}, False),
    ("!a == 'x'", {"a": "x"}, False),
    ("!a == 'x'", ABSENT, True),
    ("!!has(a)", {"a": "1"}, True),
    ("has(a) && has(b) || has(c)", {"c": "1"}, True),
    ("has(a) && (has(b) || has(c))", {"c": "1"}, False),
    # quoting: either quote character, the other one allowed inside, no escapes
    ('a == "x"', {"a": "x"}, True),
    ("a == \"it's\"", {"a": "it's"}, True),
    ("a == '\"q\"'", {"a": '"q"'}, True),
    ("a in {'\"', \"'\"}", {"a": "'"}, True),
    ("a == 'X'", {"a": "x"}, False),
    # whitespace: spaces and tabs anywhere between tokens, or none at all
    ("a=='x'&&b!='y'", {"a": "x"}, True),
    ("\ta\t==\t'x'\t", {"a": "x"}, True),
    ("  has( a )  ", {"a": "1"}, True),
    ("a  not   in{'x'}", {"a": "y"}, True),
    ("a starts   with 'h'", {"a": "hi"}, True),
    # label characters
    ("app.kubernetes.io/name-x_y == 'v'", {"app.kubernetes.io/name-x_y": "v"}, True),
]


@pytest.mark.parametrize(("text", "labels", "expected"), TRUTH_TABLE)
def test_truth_table(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


# The "label absent" row of every operator, on its own: the rule most often got wrong.
LABEL_ABSENT: list[tuple[str, str, bool]] = [
    ("==", "a == 'x'", False),
    ("!=", "a != 'x'", True),
    ("in", "a in {'x'}", False),
    ("not in", "a not in {'x'}", True),
    ("contains", "a contains 'x'", False),
    ("starts with", "a starts with 'x'", False),
    ("ends with", "a ends with 'x'", False),
    ("has", "has(a)", False),
    ("!has", "!has(a)", True),
]


@pytest.mark.parametrize(("text", "expected"), [row[1:] for row in LABEL_ABSENT],
                         ids=[row[0] for row in LABEL_ABSENT])
def test_label_absent(text: str, expected: bool) -> None:
    sel = parse_selector(text)
    assert sel.matches(ABSENT) is expected
    assert sel.matches(OTHER_LABEL) is expected
    assert sel.matches({"A": "x"}) is expected  # label names are case-sensitive


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a=='x'", 'a == "x"'),
        ("a == \"it's\"", "a == \"it's\""),
        ("a == '\"'", "a == '\"'"),
        ("a notin {'y', 'x', 'y'}", 'a not in {"x", "y"}'),
        ("a in {'x',}", 'a in {"x"}'),
        ("a startswith 'x'", 'a starts with "x"'),
        ("a endswith 'x'", 'a ends with "x"'),
        ("!!has(a)", "has(a)"),
        ("has(a)&&has(b)||has(c)", "((has(a) && has(b)) || has(c))"),
        ("has(a) || has(b) && has(c)", "(has(a) || (has(b) && has(c)))"),
        ("", "all()"),
        ("   ", "all()"),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    assert str(parse_selector(text)) == canonical
    assert str(parse_selector(canonical)) == canonical


def test_selectors_are_values_compared_by_meaning_of_text() -> None:
    a, b = parse_selector("a=='b'"), parse_selector('a == "b"')
    assert a == b
    assert hash(a) == hash(b)
    assert repr(a) == "Selector('a == \"b\"')"
    assert parse_selector("a == 'b'") != parse_selector("a == 'c'")


# --- (c) syntax errors carry the position of the offending character ---------------------------


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("app == frontend", 7,
         "invalid selector 'app == frontend' at position 7: "
         "expected a quoted string (values must be quoted)"),
        ('app == "web', 7, "invalid selector 'app == \"web' at position 7: unterminated string"),
        ("has(a) has(b)", 7,
         "invalid selector 'has(a) has(b)' at position 7: "
         "unexpected content at end of selector (expected && or ||)"),
        ("a = 'b'", 2, "invalid selector \"a = 'b'\" at position 2: expected =="),
        ("has(a", 5, "invalid selector 'has(a' at position 5: no closing ')' after has("),
        ("a in 'x'", 5,
         "invalid selector \"a in 'x'\" at position 5: expected a set literal {'a', 'b'}"),
    ],
)
def test_syntax_error_message_and_position(text: str, position: int, message: str) -> None:
    with pytest.raises(SelectorSyntaxError) as info:
        parse_selector(text)
    assert info.value.position == position
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "position", "char"),
    [
        ("a == 'b' && %", 12, "%"),
        ("a == 'b'\n", 8, "\n"),  # a newline is not whitespace to Calico's tokenizer
        ("a in {'a' 'b'}", 10, "'"),
        ("(has(a)", 7, ""),  # end of input: nothing closes the parenthesis
        # Calico's tokenizer reads "contains" as the operator; what is wrong is the unquoted
        # value after it, so that is where the error must point.
        ("b contains b", 11, "b"),
    ],
)
def test_syntax_error_points_at_offending_character(text: str, position: int, char: str) -> None:
    with pytest.raises(SelectorSyntaxError) as info:
        parse_selector(text)
    assert info.value.position == position
    assert text[position : position + 1] == char
    assert f"at position {position}: " in str(info.value)


def test_syntax_error_is_a_policy_error_and_value_error() -> None:
    with pytest.raises(ValueError, match="unterminated string") as info:
        parse_selector("'x")
    assert isinstance(info.value, policy.PolicyError)
    assert info.value.reason == "unterminated string"
    assert info.value.text == "'x"


def test_label_length_limit() -> None:
    assert parse_selector("a" * 512 + " == 'v'").matches({"a" * 512: "v"})
    with pytest.raises(SelectorSyntaxError, match="label longer than 512 characters"):
        parse_selector("a" * 513 + " == 'v'")


# --- (d) prefixing and namespace scoping ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prefixed"),
    [
        ("has(a)", "has(pcns.a)"),
        ("!has(a)", "!has(pcns.a)"),
        ("a == 'x' && b in {'y'}", '(pcns.a == "x" && pcns.b in {"y"})'),
        ("!(a == 'x' || has(b))", '!(pcns.a == "x" || has(pcns.b))'),
        ("a starts with 'x'", 'pcns.a starts with "x"'),
        ("a not in {'x'}", 'pcns.a not in {"x"}'),
        ("projectcalico.org/name == 'ns1'", 'pcns.projectcalico.org/name == "ns1"'),
        ("all()", "all()"),
    ],
)
def test_prefixed(text: str, prefixed: str) -> None:
    assert str(parse_selector(text).prefixed("pcns.")) == prefixed


@pytest.mark.parametrize(
    ("text", "scoped"),
    [
        ("all()", "has(projectcalico.org/namespace)"),
        ("", "has(projectcalico.org/namespace)"),
        ("global()", "!has(projectcalico.org/namespace)"),
        ("team == 'a'", 'pcns.team == "a"'),
        ("!has(team)", "!has(pcns.team)"),
        # Felix replaces every all()/global() in the prefixed text, not only a whole selector.
        ("global() || has(a)", "(!has(projectcalico.org/namespace) || has(pcns.a))"),
    ],
)
def test_as_namespace_selector(text: str, scoped: str) -> None:
    assert str(parse_selector(text).as_namespace_selector()) == scoped


def test_namespace_selector_all_and_global_partition_endpoints() -> None:
    namespaced = {"projectcalico.org/namespace": "shop", "pcns.team": "a"}
    host = {"host": "node-1"}
    every = parse_selector("all()").as_namespace_selector()
    not_namespaced = parse_selector("global()").as_namespace_selector()
    assert (every.matches(namespaced), every.matches(host)) == (True, False)
    assert (not_namespaced.matches(namespaced), not_namespaced.matches(host)) == (False, True)
    assert parse_selector("team == 'a'").as_namespace_selector().matches(namespaced)
