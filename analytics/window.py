"""Time windows for queries: ``--since``/``--until`` as durations back from now (``30m``,
``24h``, ``7d``, ``2w``), ISO 8601 times (``2026-11-27T10:00:00Z``, a date), or nothing
(unbounded). A record counts when its interval overlaps the window.

>>> parse_time("24h", now=datetime(2026, 11, 27, tzinfo=UTC))
datetime.datetime(2026, 11, 26, 0, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Window", "WindowError", "parse_time"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)([smhdw])$")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


class WindowError(ValueError):
    """A --since/--until value that is neither a duration nor a time."""


def parse_time(text: str | None, now: datetime, option: str = "--since") -> datetime | None:
    if text is None or text == "":
        return None
    m = _DURATION.match(text.strip())
    if m:
        return now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise WindowError(f"{option}: {text!r} is not a duration (30m, 24h, 7d, 2w) or an "
                          "ISO 8601 time (2026-11-27T10:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """``[since, until)``; ``None`` ends are open."""

    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, since: str | None, until: str | None,
              now: datetime | None = None) -> Window:
        now = now or datetime.now(UTC)
        window = cls(parse_time(since, now, "--since"), parse_time(until, now, "--until"))
        if window.since and window.until and window.until <= window.since:
            raise WindowError(f"--until {until!r} is not after --since {since!r}")
        return window

    def parameters(self) -> dict[str, datetime]:
        return {"since": self.since or EARLIEST, "until": self.until or LATEST}

    def describe(self) -> str:
        def fmt(t: datetime | None, open_end: str) -> str:
            return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else open_end
        return f"{fmt(self.since, 'the first record')} to {fmt(self.until, 'the last record')}"
