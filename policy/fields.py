"""Typed reads from parsed documents, failing with file, document, field path, value, expected.

>>> r = FieldReader("p.yaml", 3)
>>> str(r.fail("spec.ingress[0].protocol", "TCPP", "must be one of TCP, UDP"))
"p.yaml doc 3: spec.ingress[0].protocol must be one of TCP, UDP (got 'TCPP')"
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from policy.errors import DocumentError, SelectorSyntaxError
from policy.model import IpNet
from policy.selector import Selector, parse_selector

__all__ = ["FieldReader"]


class FieldReader:
    """Reads fields of one document; every failure names the document and the field."""

    def __init__(self, source: str, index: int | None, prefix: str = "",
                 error: type[DocumentError] = DocumentError) -> None:
        self.source = source
        self.index = index
        self.prefix = prefix  # e.g. "items[3]." for a document inside a kind: List
        self.error = error  # the DocumentError subclass callers catch (e.g. InventoryError)

    def fail(self, path: str, value: object, expected: str) -> DocumentError:
        return self.error(self.source, self.index, self.prefix + path, value, expected)

    def mapping(
        self, value: object, path: str, allowed: Iterable[str] | None = None
    ) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, value, "must be a mapping")
        if allowed is not None:
            allowed = tuple(allowed)
            for key in value:
                if key not in allowed:
                    where = f"{path}.{key}" if path else str(key)
                    raise self.fail(
                        where, value[key], f"is not a known field (accepted: {', '.join(allowed)})"
                    )
        return value

    def sequence(self, value: object, path: str) -> Sequence[Any]:
        if value is None:
            return ()
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise self.fail(path, value, "must be a list")
        return value

    def string(self, value: object, path: str, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                raise self.fail(path, value, "is required")
            return None
        if not isinstance(value, str):
            raise self.fail(path, value, "must be a string")
        return value

    def strings(self, value: object, path: str) -> tuple[str, ...]:
        return tuple(
            self.string(v, f"{path}[{i}]", required=True) or ""
            for i, v in enumerate(self.sequence(value, path))
        )

    def boolean(self, value: object, path: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(path, value, "must be true or false")
        return value

    def integer(self, value: object, path: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(path, value, f"must be an integer from {lo} to {hi}")
        return value

    def number(self, value: object, path: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, value, "must be a number")
        return float(value)

    def enum(self, value: object, path: str, choices: Sequence[str], *, fold: bool = False) -> str:
        if isinstance(value, str):
            if value in choices:
                return value
            if fold:
                for c in choices:
                    if c.lower() == value.lower():
                        return c
        raise self.fail(path, value, f"must be one of {', '.join(choices)}")

    def selector(self, value: object, path: str) -> Selector | None:
        text = self.string(value, path)
        if text is None:
            return None
        try:
            return parse_selector(text)
        except SelectorSyntaxError as e:
            raise self.fail(path, value, f"must be a valid selector: {e.reason} at position "
                            f"{e.position}") from e

    def cidr(self, value: object, path: str) -> IpNet:
        text = self.string(value, path, required=True) or ""
        try:
            # Like Go's ParseCIDR, host bits are allowed and dropped: 10.0.1.1/4 is 0.0.0.0/4.
            # A bare address is a /32 or /128, as Calico accepts it.
            return ipaddress.ip_network(text, strict=False)
        except ValueError as e:
            raise self.fail(path, value, "must be an IPv4 or IPv6 CIDR such as 10.0.0.0/8") from e

    def cidrs(self, value: object, path: str) -> tuple[IpNet, ...]:
        return tuple(self.cidr(v, f"{path}[{i}]") for i, v in enumerate(self.sequence(value, path)))

    def labels(self, value: object, path: str) -> tuple[tuple[str, str], ...]:
        m = self.mapping(value, path)
        out = []
        for k, v in m.items():
            if not isinstance(v, str):
                raise self.fail(f"{path}.{k}", v, "must be a string (quote numbers and booleans)")
            out.append((str(k), v))
        return tuple(sorted(out))
