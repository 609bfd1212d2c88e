"""The detector interface: a pure step over (event, state) that returns `Signal`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from detectors.state import StateStore
from ingest.events import AccessRecord, Event


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
    # False: a finding for the gateway's decision only (scoring/holds.py) — it makes no alert and adds no
    # risk, e.g. a token issued from a refresh family already found compromised.
    alerting: bool = True

    @property
    def entity(self) -> Entity:
        return self.entities[0]


# What kind of event it is, as far as a detector's first checks go: a token lifecycle event; an access
# without a token; with a token whose verdict is `ok`; with any other verdict (refused, or signed but
# expired or not yet valid). A detector declares the classes it reads (`reads`); the pipeline calls it
# for those only, so the many that would return at their first line are not called at all.
EVENT_CLASSES: tuple[str, ...] = ("token", "access", "access.valid", "access.invalid")


def event_class(event: Event) -> str:
    if type(event.record) is not AccessRecord:
        return "token"
    info = event.token
    if info is None:
        return "access"
    return "access.valid" if info.verdict == "ok" else "access.invalid"


def reads(detector: object) -> tuple[str, ...]:
    """The event classes a detector reads: what it declares, else all of them."""
    return tuple(getattr(detector, "reads", EVENT_CLASSES))


class Detector(Protocol):
    name: ClassVar[str]  # the alert type it raises (CONTRACT.md §5)
    settings_key: ClassVar[str]  # its [detectors.<settings_key>] section
    # The re-keyed streams (ingest/routing.py KEY_KINDS) whose keys its state is kept by: with N workers
    # it runs on each of them, seeing every event of a key. A detector on several streams has a
    # `for_partition(section, tokens, kind)` classmethod building the part that belongs to one.
    partition_by: ClassVar[tuple[str, ...]]
    # The EVENT_CLASSES it can find something in or must remember (optional: undeclared = all). An
    # event of another class must leave its state as it is and give no signal (tests/detectors checks).
    reads: ClassVar[tuple[str, ...]]

    def observe(self, event: Event, state: StateStore) -> list[Signal]:
        """Update `state` with `event` (on event time) and return what it found."""
        ...

    @classmethod
    def from_config(cls, section: Any, tokens: Any) -> Detector:
        """Built from its `[detectors.<settings_key>]` section and the `[tokens]` settings. (Optional beside
        it: `state_kind = "packed"` for a `PackedStore`, and a `for_partition(section, tokens, kind)`
        classmethod for a detector on several re-keyed streams.)"""
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
