"""The detector interface: a pure step over (event, state) that returns `Signal`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from detectors.state import StateStore
from ingest.events import Event


@dataclass(frozen=True, slots=True)
class Entity:
    kind: str  # subject | client | ip | token | tenant
    value: str


@dataclass(frozen=True, slots=True)
class Signal:
    """One finding. `entities[0]` is who the alert is about; all of them gain risk.

    `strength` in [0, 1] says how sure the detector is; `reasons` are for people, most important
    first; `evidence` holds event ids, token fingerprints and figures — never a raw token.
    """

    type: str
    tenant: str
    ts: float
    entities: tuple[Entity, ...]
    strength: float
    reasons: tuple[str, ...]
    event_ids: tuple[str, ...]
    token_fps: tuple[str, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def entity(self) -> Entity:
        return self.entities[0]


class Detector(Protocol):
    name: ClassVar[str]  # the alert type it raises (CONTRACT.md §5)
    settings_key: ClassVar[str]  # its [detectors.<settings_key>] section
    # The re-keyed streams (ingest/routing.py KEY_KINDS) whose keys its state is kept by: with N workers
    # it runs on each of them, seeing every event of a key. A detector on several streams has a
    # `for_partition(section, tokens, kind)` classmethod building the part that belongs to one.
    partition_by: ClassVar[tuple[str, ...]]

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        """Update `state` with `event` (on event time) and return what it found."""
        ...


def principal_entities(event: Event) -> tuple[Entity, ...]:
    """Who an event is about, most specific first: subject, client, token, IP."""
    out: list[Entity] = []
    info = event.token
    if info is not None and info.sub is not None:
        out.append(Entity("subject", info.sub))
    if info is not None and info.client_id is not None:
        out.append(Entity("client", info.client_id))
    if info is not None:
        out.append(Entity("token", info.tfp))
    ip = getattr(event.record, "client_ip", None)
    if ip is not None:
        out.append(Entity("ip", ip))
    return tuple(out)
