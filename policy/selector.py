"""Calico's label-selector language: tokenizer, parser, matcher and canonical form.

This follows the upstream implementation token for token
(``libcalico-go/lib/selector/tokenizer/tokenizer.go`` and ``parser/parser.go``), because users
paste selectors that Calico accepted and expect the same verdicts:

* whitespace is only space and tab (a newline is an error);
* strings are ``'...'`` or ``"..."`` with no escapes;
* after a label comes ``==``, ``!=``, ``in``, ``not in``/``notin``, ``contains``,
  ``starts with``/``startswith`` or ``ends with``/``endswith``;
* ``k != v`` and ``k not in {...}`` are true when ``k`` is absent; every other operator needs
  the label present;
* precedence from tightest: operations, parentheses, ``!``, ``&&``, ``||``;
* an empty selector is ``all()``.

>>> parse_selector("app == 'web' && tier in {'a', 'b'}").matches({"app": "web", "tier": "b"})
True
>>> str(parse_selector("a in {'z', 'x', 'x'}"))
'a in {"x", "z"}'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, auto
from functools import lru_cache
from typing import Protocol

from policy.errors import SelectorSyntaxError

__all__ = [
    "MAX_LABEL_LENGTH",
    "Selector",
    "parse_selector",
    "valid_label",
]

MAX_LABEL_LENGTH = 512
_WHITESPACE = " \t"


def _identifier_char(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "_./-"


class _Kind(Enum):
    LABEL = auto()
    STRING = auto()
    LBRACE = auto()
    RBRACE = auto()
    COMMA = auto()
    EQ = auto()
    NE = auto()
    IN = auto()
    NOT = auto()
    NOT_IN = auto()
    CONTAINS = auto()
    STARTS_WITH = auto()
    ENDS_WITH = auto()
    ALL = auto()
    HAS = auto()
    LPAREN = auto()
    RPAREN = auto()
    AND = auto()
    OR = auto()
    GLOBAL = auto()
    EOF = auto()


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    pos: int
    value: str = ""


_PUNCT = {"(": _Kind.LPAREN, ")": _Kind.RPAREN, "{": _Kind.LBRACE, "}": _Kind.RBRACE,
          ",": _Kind.COMMA}
_PAIRS = {"==": _Kind.EQ, "&&": _Kind.AND, "||": _Kind.OR}
# Operators after a label, tried in upstream's order; each is a sequence of words that may be
# separated by whitespace (so "notin" and "not in" are the same), ending on a word boundary.
_LABEL_OPS: tuple[tuple[tuple[str, ...], _Kind], ...] = (
    (("contains",), _Kind.CONTAINS),
    (("starts", "with"), _Kind.STARTS_WITH),
    (("ends", "with"), _Kind.ENDS_WITH),
    (("not", "in"), _Kind.NOT_IN),
    (("in",), _Kind.IN),
)
_FUNCS = (("has(", _Kind.HAS), ("all(", _Kind.ALL), ("global(", _Kind.GLOBAL))


class _Tokenizer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.tokens: list[_Token] = []

    def fail(self, reason: str, pos: int | None = None) -> SelectorSyntaxError:
        return SelectorSyntaxError(self.text, self.i if pos is None else pos, reason)

    def skip_ws(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in _WHITESPACE:
            self.i += 1

    def identifier(self) -> str:
        start = self.i
        while self.i < len(self.text) and _identifier_char(self.text[self.i]):
            self.i += 1
        ident = self.text[start : self.i]
        if not ident:
            raise self.fail("expected a label name ([A-Za-z0-9_./-])", start)
        if len(ident) > MAX_LABEL_LENGTH:
            raise self.fail(f"label longer than {MAX_LABEL_LENGTH} characters", start)
        return ident

    def at_word_boundary(self, j: int) -> bool:
        return j >= len(self.text) or not _identifier_char(self.text[j])

    def try_words(self, words: tuple[str, ...]) -> bool:
        j = self.i
        for word in words:
            if not self.text.startswith(word, j):
                return False
            j += len(word)
            # Upstream: a one-word operator needs a boundary right after it; in a multi-word
            # one ("not in", also "notin") whitespace is trimmed after every word, the last
            # included, before the boundary check.
            while len(words) > 1 and j < len(self.text) and self.text[j] in _WHITESPACE:
                j += 1
        if not self.at_word_boundary(j):
            return False
        self.i = j
        return True

    def run(self) -> list[_Token]:
        text = self.text
        while True:
            self.skip_ws()
            start = self.i
            if start >= len(text):
                self.tokens.append(_Token(_Kind.EOF, start))
                return self.tokens
            self.step(text[start], start)

    def step(self, c: str, start: int) -> None:
        text = self.text
        if c in _PUNCT:
            self.tokens.append(_Token(_PUNCT[c], start))
            self.i += 1
        elif c in "\"'":
            end = text.find(c, start + 1)
            if end == -1:
                raise self.fail("unterminated string", start)
            self.tokens.append(_Token(_Kind.STRING, start, text[start + 1 : end]))
            self.i = end + 1
        elif c in "=&|":
            pair = text[start : start + 2]
            if pair not in _PAIRS:
                raise self.fail(f"expected {c * 2}")
            self.tokens.append(_Token(_PAIRS[pair], start))
            self.i += 2
        elif c == "!":
            if text.startswith("!=", start):
                self.tokens.append(_Token(_Kind.NE, start))
                self.i += 2
            else:
                self.tokens.append(_Token(_Kind.NOT, start))
                self.i += 1
        elif self.tokens and self.tokens[-1].kind is _Kind.LABEL:
            self.operator(start)
        else:
            self.word(start)

    def operator(self, start: int) -> None:
        for words, kind in _LABEL_OPS:
            if self.try_words(words):
                self.tokens.append(_Token(kind, start))
                return
        raise self.fail(
            f"expected an operator after label {self.tokens[-1].value!r} "
            "(==, !=, in, not in, contains, starts with, ends with)"
        )

    def word(self, start: int) -> None:
        for prefix, kind in _FUNCS:
            if self.text.startswith(prefix, start):
                self.i += len(prefix)
                self.skip_ws()
                value = self.identifier() if kind is _Kind.HAS else ""
                self.skip_ws()
                if not self.text.startswith(")", self.i):
                    raise self.fail(f"no closing ')' after {prefix}")
                self.i += 1
                self.tokens.append(_Token(kind, start, value))
                return
        self.tokens.append(_Token(_Kind.LABEL, start, self.identifier()))


# ---------------------------------------------------------------------------------------------
# The syntax tree. Each node is an immutable value with a matcher and upstream's canonical text.


class _Labels(Protocol):
    def get(self, key: str, /) -> str | None: ...


class _Node(Protocol):
    def matches(self, labels: _Labels) -> bool: ...
    def fragments(self, out: list[str]) -> None: ...


def _quote(value: str) -> str:
    q = "'" if '"' in value else '"'
    return f"{q}{value}{q}"


@dataclass(frozen=True, slots=True)
class _Compare:
    """``label <op> "value"`` for ==, !=, contains, starts with, ends with."""

    label: str
    op: str
    value: str

    def matches(self, labels: _Labels) -> bool:
        v = labels.get(self.label)
        if v is None:
            return self.op == "!="
        return _COMPARE[self.op](v, self.value)

    def fragments(self, out: list[str]) -> None:
        out += [self.label, f" {self.op} ", _quote(self.value)]


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "==": str.__eq__,
    "!=": str.__ne__,
    "contains": str.__contains__,
    "starts with": str.startswith,
    "ends with": str.endswith,
}


@dataclass(frozen=True, slots=True)
class _InSet:
    label: str
    values: frozenset[str]
    negated: bool

    def matches(self, labels: _Labels) -> bool:
        v = labels.get(self.label)
        if v is None:
            return self.negated
        return (v in self.values) != self.negated

    def fragments(self, out: list[str]) -> None:
        op = "not in" if self.negated else "in"
        members = ", ".join(_quote(v) for v in sorted(self.values))
        out += [self.label, f" {op} {{", members, "}"]


@dataclass(frozen=True, slots=True)
class _Has:
    label: str

    def matches(self, labels: _Labels) -> bool:
        return labels.get(self.label) is not None

    def fragments(self, out: list[str]) -> None:
        out += ["has(", self.label, ")"]


@dataclass(frozen=True, slots=True)
class _All:
    def matches(self, labels: _Labels) -> bool:
        return True

    def fragments(self, out: list[str]) -> None:
        out.append("all()")


@dataclass(frozen=True, slots=True)
class _Global:
    """``global()``: true as an expression; its meaning comes from where it is used.

    Calico only accepts it in a rule's ``namespaceSelector``, where it becomes
    "not namespaced" (see :meth:`Selector.as_namespace_selector`).
    """

    def matches(self, labels: _Labels) -> bool:
        return True

    def fragments(self, out: list[str]) -> None:
        out.append("global()")


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node

    def matches(self, labels: _Labels) -> bool:
        return not self.operand.matches(labels)

    def fragments(self, out: list[str]) -> None:
        out.append("!")
        self.operand.fragments(out)


@dataclass(frozen=True, slots=True)
class _And:
    operands: tuple[_Node, ...]

    def matches(self, labels: _Labels) -> bool:
        return all(op.matches(labels) for op in self.operands)

    def fragments(self, out: list[str]) -> None:
        _join(out, self.operands, " && ")


@dataclass(frozen=True, slots=True)
class _Or:
    operands: tuple[_Node, ...]

    def matches(self, labels: _Labels) -> bool:
        return any(op.matches(labels) for op in self.operands)

    def fragments(self, out: list[str]) -> None:
        _join(out, self.operands, " || ")


def _join(out: list[str], operands: tuple[_Node, ...], sep: str) -> None:
    out.append("(")
    for k, op in enumerate(operands):
        if k:
            out.append(sep)
        op.fragments(out)
    out.append(")")


# ---------------------------------------------------------------------------------------------
# The parser: recursive descent over the token list, exactly upstream's grammar.


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.k = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.k + ahead, len(self.tokens) - 1)]

    def fail(self, reason: str, token: _Token | None = None) -> SelectorSyntaxError:
        return SelectorSyntaxError(self.text, (token or self.peek()).pos, reason)

    def parse(self) -> _Node:
        if self.peek().kind is _Kind.EOF:
            return _All()
        node = self.or_expr()
        if self.peek().kind is not _Kind.EOF:
            raise self.fail("unexpected content at end of selector (expected && or ||)")
        return node

    def or_expr(self) -> _Node:
        nodes = [self.and_expr()]
        while self.peek().kind is _Kind.OR:
            self.k += 1
            nodes.append(self.and_expr())
        return nodes[0] if len(nodes) == 1 else _Or(tuple(nodes))

    def and_expr(self) -> _Node:
        nodes = [self.operation()]
        while self.peek().kind is _Kind.AND:
            self.k += 1
            nodes.append(self.operation())
        return nodes[0] if len(nodes) == 1 else _And(tuple(nodes))

    def operation(self) -> _Node:
        negated = False
        while self.peek().kind is _Kind.NOT:
            negated = not negated
            self.k += 1
        node = self.atom()
        return _Not(node) if negated else node

    def atom(self) -> _Node:
        tok = self.peek()
        self.k += 1
        if tok.kind is _Kind.HAS:
            return _Has(tok.value)
        if tok.kind is _Kind.ALL:
            return _All()
        if tok.kind is _Kind.GLOBAL:
            return _Global()
        if tok.kind is _Kind.LABEL:
            return self.label_operation(tok)
        if tok.kind is _Kind.LPAREN:
            node = self.or_expr()
            if self.peek().kind is not _Kind.RPAREN:
                raise self.fail("expected )")
            self.k += 1
            return node
        what = "end of selector" if tok.kind is _Kind.EOF else f"token {tok.kind.name.lower()}"
        raise self.fail(f"unexpected {what} (expected a label, has(), all(), ! or ()", tok)

    def label_operation(self, label: _Token) -> _Node:
        op = self.peek()
        self.k += 1
        if op.kind in _OP_NAMES:
            value = self.peek()
            if value.kind is not _Kind.STRING:
                raise self.fail("expected a quoted string (values must be quoted)", value)
            self.k += 1
            return _Compare(label.value, _OP_NAMES[op.kind], value.value)
        if op.kind in (_Kind.IN, _Kind.NOT_IN):
            return _InSet(label.value, self.set_literal(), op.kind is _Kind.NOT_IN)
        raise self.fail(f"expected an operator after label {label.value!r}", op)

    def set_literal(self) -> frozenset[str]:
        if self.peek().kind is not _Kind.LBRACE:
            raise self.fail("expected a set literal {'a', 'b'}")
        self.k += 1
        values: list[str] = []
        while self.peek().kind is _Kind.STRING:
            values.append(self.peek().value)
            self.k += 1
            if self.peek().kind is not _Kind.COMMA:
                break
            self.k += 1
        if self.peek().kind is not _Kind.RBRACE:
            raise self.fail("expected } (set members are quoted strings separated by commas)")
        self.k += 1
        return frozenset(values)


_OP_NAMES = {
    _Kind.EQ: "==",
    _Kind.NE: "!=",
    _Kind.CONTAINS: "contains",
    _Kind.STARTS_WITH: "starts with",
    _Kind.ENDS_WITH: "ends with",
}


# ---------------------------------------------------------------------------------------------
# The public value.


NAMESPACE_LABEL = "projectcalico.org/namespace"


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector: hashable, compared by its canonical text.

    ``str(sel)`` is Calico's canonical form, which parses back to the same selector.
    """

    _root: _Node
    _hash: int | None = field(default=None, init=False, compare=False, repr=False)

    def __hash__(self) -> int:
        # Selectors key the evaluator's caches: hash the tree once, not on every look-up.
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(self._root))
        assert self._hash is not None
        return self._hash

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when the selector selects an object with exactly these labels."""
        return self._root.matches(labels)

    def __str__(self) -> str:
        out: list[str] = []
        self._root.fragments(out)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Selector({str(self)!r})"

    @property
    def is_all(self) -> bool:
        return isinstance(self._root, _All)

    def labels(self) -> frozenset[str]:
        """Every label name the selector reads."""
        names: set[str] = set()
        _walk(self._root, lambda n: names.add(n.label) if hasattr(n, "label") else None)
        return frozenset(names)

    def required_equalities(self) -> frozenset[tuple[str, str]]:
        """``(label, value)`` pairs every match must have (top-level ``==`` terms of an AND):
        a cheap pre-filter to index many selectors by."""
        ops = self._root.operands if isinstance(self._root, _And) else (self._root,)
        return frozenset((op.label, op.value) for op in ops
                         if isinstance(op, _Compare) and op.op == "==")

    def prefixed(self, prefix: str) -> Selector:
        """Every label name prefixed, as Calico's ``PrefixVisitor`` does (``pcns.``, ``pcsa.``)."""
        return Selector(_map_labels(self._root, lambda name: prefix + name))

    def as_namespace_selector(self, prefix: str = "pcns.") -> Selector:
        """The endpoint selector a ``namespaceSelector`` stands for.

        Namespace labels are inherited by endpoints under ``pcns.``; ``all()`` means "any
        namespaced endpoint" and ``global()`` "not namespaced" (host endpoints, global sets).
        """
        return Selector(_namespace_scope(_map_labels(self._root, lambda name: prefix + name)))

    def and_(self, other: Selector) -> Selector:
        if self.is_all:
            return other
        if other.is_all:
            return self
        return Selector(_And((*_operands(self._root), *_operands(other._root))))

    def negated(self) -> Selector:
        return Selector(_Not(self._root))


def _operands(node: _Node) -> tuple[_Node, ...]:
    return node.operands if isinstance(node, _And) else (node,)


def _walk(node: _Node, visit: Callable[[_Node], object]) -> None:
    visit(node)
    if isinstance(node, _Not):
        _walk(node.operand, visit)
    elif isinstance(node, _And | _Or):
        for op in node.operands:
            _walk(op, visit)


def _map_labels(node: _Node, rename: Callable[[str], str]) -> _Node:
    if isinstance(node, _Compare):
        return _Compare(rename(node.label), node.op, node.value)
    if isinstance(node, _InSet):
        return _InSet(rename(node.label), node.values, node.negated)
    if isinstance(node, _Has):
        return _Has(rename(node.label))
    if isinstance(node, _Not):
        return _Not(_map_labels(node.operand, rename))
    if isinstance(node, _And):
        return _And(tuple(_map_labels(op, rename) for op in node.operands))
    if isinstance(node, _Or):
        return _Or(tuple(_map_labels(op, rename) for op in node.operands))
    return node


def _namespace_scope(node: _Node) -> _Node:
    if isinstance(node, _All):
        return _Has(NAMESPACE_LABEL)
    if isinstance(node, _Global):
        return _Not(_Has(NAMESPACE_LABEL))
    if isinstance(node, _Not):
        return _Not(_namespace_scope(node.operand))
    if isinstance(node, _And):
        return _And(tuple(_namespace_scope(op) for op in node.operands))
    if isinstance(node, _Or):
        return _Or(tuple(_namespace_scope(op) for op in node.operands))
    # Label tests keep upstream's meaning: `pcns.team != 'a'` also matches non-namespaced
    # objects (the label is absent there), exactly as Felix's rendered selector does.
    return node


@lru_cache(maxsize=65536)
def parse_selector(text: str) -> Selector:
    """Parse Calico selector text; raise :class:`SelectorSyntaxError` where Calico would.

    >>> parse_selector("has(app) && app != 'db'").matches({"app": "web"})
    True
    """
    if not isinstance(text, str):
        raise SelectorSyntaxError(repr(text), 0, "a selector must be a string")
    tokens = _Tokenizer(text).run()
    return Selector(_Parser(text, tokens).parse())


def valid_label(name: str) -> bool:
    """True for a label name the selector language can refer to."""
    return 0 < len(name) <= MAX_LABEL_LENGTH and all(_identifier_char(c) for c in name)
