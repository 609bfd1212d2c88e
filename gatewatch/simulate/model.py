"""The simulator's public vocabulary: what to simulate (`SimulationSpec`) and what comes out (`SimEvent`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACCESS_TOPIC = "gateway.access"
TOKENS_TOPIC = "gateway.tokens"

# Behavioural scenarios: labelled with the alert type the anomaly model raises.
BEHAVIOURAL_ATTACKS: tuple[str, ...] = (
    "anomaly.scraping", "anomaly.llm_abuse", "anomaly.flood", "anomaly.credential_stuffing",
)
ALL_ATTACKS: tuple[str, ...] = (
    "replay.nonce", "replay.token_context", "replay.refresh_reuse",
    "token.revoked_use", "token.expired_use", "token.cross_tenant", "token.jti_collision",
    "token.invalid", "token.unencrypted",
    "traffic.rate_limit", "traffic.ip_not_allowed", "traffic.llm_budget",
    *BEHAVIOURAL_ATTACKS,
)


def label_type(attack: str) -> str:
    """The alert type (CONTRACT.md §5) an attack scenario is labelled with."""
    return "anomaly.behaviour" if attack in BEHAVIOURAL_ATTACKS else attack


@dataclass(frozen=True)
class SimulationSpec:
    seed: int = 7
    start: float = 1_794_960_000.0  # 2026-11-18T00:00:00Z: event time of the first event
    events: int | None = 10_000  # stop after this many events (access + token), or
    duration_seconds: float | None = None  # stop at start + duration (event time); one must be set
    rate: float = 50.0  # mean events per second of event time, over a day (traffic has a daily rhythm)
    tenants: int = 4
    subjects: int = 300  # human users over all tenants (at least 4 per tenant); service clients come on top
    attacks: tuple[str, ...] = ALL_ATTACKS  # scenarios to inject, cycled in this order; () = clean traffic
    attack_every: int = 2_000  # roughly one attack scenario per this many events

    def __post_init__(self) -> None:
        if self.events is None and self.duration_seconds is None:
            raise ValueError("SimulationSpec needs events or duration_seconds")
        if self.events is not None and self.events < 0:
            raise ValueError("events must be >= 0")
        if self.duration_seconds is not None and self.duration_seconds <= 0:
            raise ValueError("duration_seconds must be positive")
        if not self.rate > 0:
            raise ValueError("rate must be positive")
        if self.tenants < 1 or self.subjects < 1 or self.attack_every < 1:
            raise ValueError("tenants, subjects and attack_every must be positive")
        unknown = [a for a in self.attacks if a not in ALL_ATTACKS]
        if unknown:
            raise ValueError(f"unknown attack {unknown[0]!r} (known: {', '.join(ALL_ATTACKS)})")


@dataclass(frozen=True, slots=True)
class SimEvent:
    topic: str  # "gateway.access" or "gateway.tokens"
    key: str  # Kafka key: the principal (subject id, else client ip)
    event: dict[str, Any]  # the JSON object of CONTRACT.md §1
    labels: tuple[dict[str, Any], ...] = ()  # attack events: {"attack_id", "type", "entity": {"kind", "value"}}


@dataclass(frozen=True, slots=True)
class AttackRun:
    """One injected scenario: its id, scenario name and the alert type it is labelled with."""

    attack_id: str
    name: str

    @property
    def type(self) -> str:
        return label_type(self.name)

    def labels(self, kind: str, value: str) -> tuple[dict[str, Any], ...]:
        return ({"attack_id": self.attack_id, "type": self.type, "entity": {"kind": kind, "value": value}},)
