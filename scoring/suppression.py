"""Suppression rules: mute known-noisy alerts without losing them.

A rule names an alert type (or a glob such as `traffic.*`), an entity pattern (`kind:glob`, e.g.
`ip:10.20.*`, or a bare glob on the value), optionally a tenant glob, an owner (who answers for the mute)
and an expiry. An alert whose newest signal falls before the expiry of a matching rule is still built,
stored and counted; it carries `suppression` and the alert queue does not show it as open. The expiry is
compared with event time, so a replay of last month mutes exactly what the live run muted, and an alert
that keeps firing after the rule expired surfaces again by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

ENTITY_KINDS = ("subject", "client", "ip", "token", "tenant")


@dataclass(frozen=True, slots=True)
class SuppressionRule:
    id: str
    type: str  # alert type, or a glob over types
    entity: str  # "kind:glob" or "glob" (any kind)
    owner: str
    expires: float  # event time (epoch seconds)
    tenant: str = "*"
    reason: str = ""

    @classmethod
    def checked(cls, **kwargs: object) -> SuppressionRule:
        """Build a rule, refusing one that would be meaningless; ValueError names the field."""
        rule = cls(**kwargs)  # type: ignore[arg-type]
        for name in ("id", "type", "entity", "owner", "tenant"):
            if not str(getattr(rule, name)).strip():
                raise ValueError(f"{name}: must not be empty")
        kind, sep, value = rule.entity.partition(":")
        if sep and kind in ENTITY_KINDS and not value:
            raise ValueError("entity: needs a pattern after 'kind:'")
        return rule

    def _entity_matches(self, kind: str, value: str) -> bool:
        want_kind, sep, pattern = self.entity.partition(":")
        if sep and want_kind in ENTITY_KINDS:
            return kind == want_kind and fnmatchcase(value, pattern)
        return fnmatchcase(value, self.entity)

    def matches(self, type_: str, tenant: str, kind: str, value: str, at: float) -> bool:
        return (at < self.expires and fnmatchcase(type_, self.type) and fnmatchcase(tenant, self.tenant)
                and self._entity_matches(kind, value))


class Suppressions:
    """An ordered set of rules; the first one that matches wins (config order, so it is deterministic)."""

    def __init__(self, rules: Iterable[SuppressionRule] = ()) -> None:
        self.rules = tuple(rules)
        ids = [r.id for r in self.rules]
        if len(set(ids)) != len(ids):
            raise ValueError("id: two suppression rules share an id")

    def match(self, type_: str, tenant: str, kind: str, value: str, at: float) -> SuppressionRule | None:
        for rule in self.rules:
            if rule.matches(type_, tenant, kind, value, at):
                return rule
        return None

    def __len__(self) -> int:
        return len(self.rules)
