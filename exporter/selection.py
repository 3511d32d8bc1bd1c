"""--metric-allowlist and --metric-denylist: which families are served.

As in kube-state-metrics: each flag is a comma-separated list of regular expressions, at most
one of the two may be set, and an empty list means every family. Unlike there, a pattern must
match the whole family name, so `reflexdb_database_status` does not also cut
`reflexdb_database_status_since_timestamp_seconds`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Selection:
    """The compiled patterns of whichever list was given."""

    patterns: tuple[re.Pattern[str], ...] = ()
    allow: bool = False  # an allowlist (keep the matches) or a denylist (drop them)

    def keeps(self, name: str) -> bool:
        """Whether the family ``name`` is served."""
        matched = any(p.fullmatch(name) for p in self.patterns)
        return matched if self.allow else not matched

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """The patterns that match none of ``names``: likely a typo."""
        known = list(names)
        return [p.pattern for p in self.patterns if not any(p.fullmatch(n) for n in known)]


def _patterns(text: str, flag: str) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            compiled.append(re.compile(item))
        except re.error as exc:
            raise ValueError(f"{flag}: {item!r} is not a regular expression: {exc}") from None
    return tuple(compiled)


def parse_selection(allowlist: str | None, denylist: str | None) -> Selection:
    """The selection the two flags make; ValueError names the flag at fault."""
    allow = _patterns(allowlist or "", "--metric-allowlist")
    deny = _patterns(denylist or "", "--metric-denylist")
    if allow and deny:
        raise ValueError("--metric-allowlist and --metric-denylist are mutually exclusive: "
                         "set one of them")
    return Selection(allow, allow=True) if allow else Selection(deny)
