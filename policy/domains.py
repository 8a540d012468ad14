"""Calico's domain-name rules (``destination.domains``, ``allowedEgressDomains``).

Calico lowercases names; an exact name matches only itself; one ``*`` that is a whole label
(anywhere but the last label) matches one or more labels: ``*.example.com`` matches
``a.example.com`` and ``a.b.example.com`` but not ``example.com``.

>>> DomainPattern("*.twilio.com").matches("api.eu.twilio.com")
True
>>> DomainPattern("*.twilio.com").matches("twilio.com")
False
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["DomainPattern", "validate_domain"]

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")


def validate_domain(name: str) -> str | None:
    """None when Calico accepts ``name``; else what is wrong, as "must ..." text."""
    text = name.lower().rstrip(".")
    accepted = ("must be a domain name, optionally with one '*' standing for a whole label "
                "that is not the last (e.g. *.example.com)")
    if not text or len(text) > 253:
        return accepted
    labels = text.split(".")
    stars = [i for i, label in enumerate(labels) if "*" in label]
    if len(stars) > 1 or text.count("*") > 1:
        return "must contain at most one '*'"
    if stars and (labels[stars[0]] != "*" or stars[0] == len(labels) - 1):
        return "must use '*' only as a whole label that is not the last (e.g. *.example.com)"
    for label in labels:
        if label != "*" and (len(label) > 63 or not _LABEL.match(label)):
            return accepted
    return None


@dataclass(frozen=True, slots=True)
class DomainPattern:
    """A compiled exact or wildcard name. ``*`` becomes ``.*`` anchored, as in Felix."""

    text: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        text = self.text.lower().rstrip(".")
        object.__setattr__(self, "text", text)
        if "*" in text:
            # "*" as a whole label matches one or more labels: ".*" must consume at least
            # one character and, by label boundaries, whole labels.
            pattern = "^" + ".*".join(re.escape(part) for part in text.split("*")) + "$"
            pattern = pattern.replace("^.*", "^[^.].*", 1) if text.startswith("*") else pattern
            object.__setattr__(self, "_regex", re.compile(pattern))

    def matches(self, name: str) -> bool:
        name = name.lower().rstrip(".")
        if self._regex is None:
            return name == self.text
        return self._regex.match(name) is not None
