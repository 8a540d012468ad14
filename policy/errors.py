"""The exceptions of the policy package.

Every input error is a ``ValueError`` and says what, where, the value and what is accepted::

    PolicyError (ValueError)
     ├── SelectorSyntaxError    a selector that Calico's parser rejects; carries the position
     ├── DocumentError          a policy/network-set/tier document that Calico or Kubernetes
     │                          would reject; carries source, document index and field path
     └── HitSyntaxError         a flow-log policy-hit string in none of the known formats
"""

from __future__ import annotations

__all__ = ["DocumentError", "HitSyntaxError", "PolicyError", "SelectorSyntaxError"]


class PolicyError(ValueError):
    """Base of every error raised for bad policy input."""


class SelectorSyntaxError(PolicyError):
    """A selector Calico's parser would reject.

    ``position`` is the 0-based character offset where parsing failed.
    """

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        self.reason = reason
        super().__init__(f"invalid selector {text!r} at position {position}: {reason}")


class DocumentError(PolicyError):
    """A document that fails validation.

    ``source`` names the file (or ``<string>``), ``index`` is the 0-based document index
    within it, ``field`` the dotted path (``spec.ingress[0].protocol``).
    """

    def __init__(
        self,
        source: str,
        index: int | None,
        field: str,
        value: object,
        expected: str,
    ) -> None:
        self.source = source
        self.index = index
        self.field = field
        self.value = value
        self.expected = expected
        where = source if index is None else f"{source} doc {index}"
        what = f"{field} {expected}" if field else expected
        super().__init__(f"{where}: {what} (got {value!r})")


class HitSyntaxError(PolicyError):
    """A policy-hit string that matches none of the known flow-log formats.

    ``text`` is the hit as given, ``reason`` what is wrong with it (``"has 3 '|'-separated
    fields"``), without the list of accepted formats that the message adds.
    """

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(
            f"invalid policy hit {text!r}: {reason}; expected "
            "'<index>|<tier>|<name>|<action>|<rule>' (classic Enterprise), "
            "'<index>|<tier>|<kind>:[<ns>/]<name>|<action>|<rule>' (OSS >= 3.32) "
            "or '<index>|<tier>|<name>|<action>' (legacy all_policies)"
        )
