"""Suppression rules: matching, event-time expiry, and alerts that are muted but still built."""

from __future__ import annotations

import pytest

from detectors.base import Entity, Signal
from scoring.alerts import AlertBuilder, rfc3339
from scoring.suppression import SuppressionRule, Suppressions
from tests.conftest import T0


def rule(**over) -> SuppressionRule:
    data = {"id": "scanner", "type": "traffic.*", "entity": "ip:198.51.100.*", "owner": "secops@example",
            "expires": T0 + 3600, "reason": "our own scanner"}
    data.update(over)
    return SuppressionRule.checked(**data)


def sig(ts: float, ip: str = "198.51.100.7", type_: str = "traffic.rate_limit", tenant: str = "acme") -> Signal:
    return Signal(type=type_, tenant=tenant, ts=ts, entities=(Entity("ip", ip),), strength=0.8,
                  reasons=("over the limit",), event_ids=(f"e{ts}",))


@pytest.mark.parametrize(("args", "expected"), [
    (("traffic.rate_limit", "acme", "ip", "198.51.100.9", T0), True),
    (("traffic.ip_not_allowed", "acme", "ip", "198.51.100.9", T0), True),  # type glob
    (("replay.nonce", "acme", "ip", "198.51.100.9", T0), False),  # other type
    (("traffic.rate_limit", "acme", "subject", "198.51.100.9", T0), False),  # other entity kind
    (("traffic.rate_limit", "acme", "ip", "198.51.101.9", T0), False),  # outside the pattern
    (("traffic.rate_limit", "acme", "ip", "198.51.100.9", T0 + 3600), False),  # expired (event time)
])
def test_a_rule_matches_type_entity_and_time(args, expected) -> None:
    assert rule().matches(*args) is expected


def test_bare_entity_pattern_and_tenant_glob() -> None:
    r = rule(entity="svc-*", tenant="globex")
    assert r.matches("traffic.rate_limit", "globex", "client", "svc-batch", T0)
    assert r.matches("traffic.rate_limit", "globex", "subject", "svc-batch", T0)
    assert not r.matches("traffic.rate_limit", "acme", "client", "svc-batch", T0)


@pytest.mark.parametrize(("over", "field"), [({"owner": " "}, "owner"), ({"entity": "ip:"}, "entity"),
                                             ({"type": ""}, "type")])
def test_meaningless_rules_are_refused_naming_the_field(over, field) -> None:
    with pytest.raises(ValueError, match=field):
        rule(**over)


def test_the_first_matching_rule_wins_and_ids_are_unique() -> None:
    s = Suppressions([rule(id="a", entity="ip:198.51.100.7"), rule(id="b")])
    assert s.match("traffic.rate_limit", "acme", "ip", "198.51.100.7", T0).id == "a"
    assert s.match("traffic.rate_limit", "acme", "ip", "198.51.100.8", T0).id == "b"
    with pytest.raises(ValueError, match="id"):
        Suppressions([rule(), rule()])


def test_a_suppressed_alert_is_built_with_its_rule_and_surfaces_after_expiry() -> None:
    start = (T0 // 3600) * 3600
    b = AlertBuilder(group_seconds=7200, suppressions=Suppressions([rule(expires=start + 600)]))
    aid = b.add(sig(start + 10), risk=30)
    alert = b.get(aid)
    assert alert.suppression is not None and alert.suppression.rule == "scanner"
    assert alert.suppression.owner == "secops@example" and alert.suppression.expires == rfc3339(start + 600)
    assert alert.count == 1 and alert.status == "open"  # built and counted like any other
    assert b.add(sig(start + 900), risk=30) == aid  # the same alert, fired again after the rule expired
    assert b.get(aid).suppression is None and b.get(aid).count == 2
    other = b.add(sig(start + 10, ip="203.0.113.5"), risk=30)
    assert b.get(other).suppression is None
