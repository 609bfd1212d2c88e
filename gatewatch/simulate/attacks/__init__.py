"""Attack scenarios, one function per scenario name of `ALL_ATTACKS`.

A scenario is an actor: `(sim, t0, run) -> Iterator[Item]`, started at event time `t0`. It labels the
events that carry the attack (never the victim's own normal traffic) with `run.labels(kind, value)`,
the entity an analyst should see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gatewatch.simulate.attacks import behaviour, misuse, replay, volume
from gatewatch.simulate.attacks._common import ASSUMED_LIMITS
from gatewatch.simulate.context import Item, Sim
from gatewatch.simulate.model import ALL_ATTACKS, AttackRun

Scenario = Callable[[Sim, float, AttackRun], Iterator[Item]]

SCENARIOS: dict[str, Scenario] = {
    "replay.nonce": replay.replay_nonce,
    "replay.token_context": replay.replay_token_context,
    "replay.refresh_reuse": replay.replay_refresh_reuse,
    "token.revoked_use": misuse.revoked_use,
    "token.expired_use": misuse.expired_use,
    "token.cross_tenant": misuse.cross_tenant,
    "token.jti_collision": misuse.jti_collision,
    "token.invalid": misuse.invalid,
    "token.unencrypted": misuse.unencrypted,
    "traffic.rate_limit": volume.rate_limit,
    "traffic.ip_not_allowed": volume.ip_not_allowed,
    "traffic.llm_budget": volume.llm_budget,
    "anomaly.scraping": behaviour.scraping,
    "anomaly.llm_abuse": behaviour.llm_abuse,
    "anomaly.flood": behaviour.flood,
    "anomaly.credential_stuffing": behaviour.credential_stuffing,
}
assert tuple(SCENARIOS) == ALL_ATTACKS

__all__ = ["ASSUMED_LIMITS", "SCENARIOS", "Scenario"]
