"""The one `Pipeline`: raw records → events → detectors → signals → alerts and risk updates.

The live worker, `gatewatch replay` and the tests all drive this object, so they cannot drift.
It does no I/O: sinks (Kafka, SQLite, files) are the caller's business. Its clock is the watermark
(largest event time seen minus the allowed lateness): state expiry follows it, never the wall clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import msgspec

from detectors import DETECTORS, build, store_for
from detectors.base import EVENT_CLASSES, Detector, Signal, event_class, reads
from detectors.state import StateStore
from gatewatch.settings import Settings
from ingest.deadletter import DeadLetter
from ingest.decode import EventDecoder
from ingest.errors import ConfigError, RecordError
from ingest.events import Event, Source
from ingest.tokens import TokenValidator
from scoring.alerts import Alert, AlertBuilder
from scoring.behaviour import BehaviourScorer
from scoring.features import KINDS
from scoring.holds import Hold, TokenLedger, TokenSeen
from scoring.risk import RiskEngine, RiskUpdate

_EXPIRE_EVERY_SECONDS = 60.0
# Which entity kinds of the behaviour model each re-keyed stream windows (None: one process, all).
_FEATURE_KIND: dict[str | None, tuple[str, ...]] = {
    None: KINDS, "principal": ("subject",), "client": ("client",), "ip": ("ip",), "tenant": ("tenant",)}


@dataclass
class BatchResult:
    events: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)  # new or changed in this batch, one per id
    risk: list[RiskUpdate] = field(default_factory=list)  # latest per entity in this batch
    late_events: int = 0
    holds: list[Hold] = field(default_factory=list)  # for the gateway decision (scoring/holds.py)
    tokens: list[TokenSeen] = field(default_factory=list)  # tokens seen for the first time

    def merge(self, other: BatchResult) -> None:
        self.events += other.events
        self.dead_letters += other.dead_letters
        self.signals += other.signals
        self.alerts += other.alerts
        self.risk += other.risk
        self.late_events += other.late_events
        self.holds += other.holds
        self.tokens += other.tokens


@dataclass
class PipelineStats:
    events: int = 0
    dead_letters: int = 0
    late_events: int = 0
    warmup_events: int = 0  # re-read to rebuild state after gaining a partition (not reported again)
    signals: Counter[str] = field(default_factory=Counter)
    dead_letter_codes: Counter[str] = field(default_factory=Counter)


class Pipeline:
    def __init__(self, *, decoder: EventDecoder, detectors: Sequence[Detector], alerts: AlertBuilder,
                 risk: RiskEngine, lateness_seconds: float = 30.0,
                 stores: dict[str, StateStore] | None = None, behaviour: BehaviourScorer | None = None,
                 risk_refresh_seconds: float = 60.0, ledger: TokenLedger | None = None,
                 track_tokens: bool = True) -> None:
        self.decoder = decoder
        self.detectors = list(detectors)
        self.alerts = alerts
        self.risk = risk
        self.lateness_seconds = lateness_seconds
        self.stores = stores if stores is not None else {d.name: store_for(d) for d in self.detectors}
        # The behaviour model: fed every batch, its windows close on the watermark (None: not wired).
        self.behaviour = behaviour
        self.max_event_time = float("-inf")
        self.stats = PipelineStats()
        self._last_expiry = float("-inf")
        self.risk_refresh_seconds = risk_refresh_seconds
        self._last_refresh = float("-inf")
        # Holds and token rows for the gateway decision (None: not wanted, e.g. a replay to a file). It reads
        # the events only where they all come by principal (`track_tokens`), and every pipeline's signals.
        self.ledger = ledger
        self.track_tokens = track_tokens

    @classmethod
    def from_settings(cls, settings: Settings, validator: TokenValidator | None,
                      partition: str | None = None, *, holds: bool = False) -> Pipeline:
        """The pipeline of the settings: all of it (`partition` None: replay, tests, one process that
        routes in memory), or the part that keeps state by one re-keyed stream's key (ingest/routing.py).
        `holds`: also work out what the gateway decision denies (the live worker, for the store)."""
        detectors: list[Detector] = []
        for det_cls in DETECTORS:
            section = getattr(settings.detectors, det_cls.settings_key)
            if section.enabled:
                try:
                    detector = build(det_cls, section, settings.tokens, partition)
                    if detector is not None:
                        detectors.append(detector)
                except ValueError as exc:  # e.g. a CIDR that does not parse: name the key
                    sub, _, why = str(exc).partition(": ")
                    raise ConfigError(f"bad value for config key 'detectors.{det_cls.settings_key}.{sub}': "
                                      f"{why}") from None
        sc = settings.scoring
        return cls(
            decoder=EventDecoder(validator=validator, max_event_bytes=settings.limits.max_event_bytes,
                                 formats=settings.ingest.topic_adapters()),  # [ingest] formats of the input topics
            detectors=detectors,
            alerts=AlertBuilder(group_seconds=sc.alert_group_seconds, suppressions=sc.suppression_rules()),
            risk=RiskEngine(half_life_seconds=sc.half_life_seconds, step_up_at=sc.step_up_at,
                            deny_at=sc.deny_at, top_reasons=sc.top_reasons, weights=sc.risk_weights()),
            lateness_seconds=sc.lateness_seconds,
            behaviour=None if partition not in _FEATURE_KIND else BehaviourScorer.from_config(
                sc, settings.model, kinds=_FEATURE_KIND[partition]),  # a tampered model: ModelError here
            risk_refresh_seconds=sc.risk_refresh_seconds,
            ledger=TokenLedger(hold_seconds=settings.tokens.max_lifetime_seconds,
                               leeway_seconds=settings.tokens.leeway_seconds) if holds else None,
            track_tokens=partition in (None, "principal"),
        )

    @property
    def watermark(self) -> float:
        return self.max_event_time - self.lateness_seconds

    def decode_one(self, raw: bytes, source: Source | None) -> Event | DeadLetter:
        try:
            return self.decoder.decode(raw, source)
        except RecordError as err:
            return DeadLetter.from_error(err, raw, source)

    def decode(self, raws: Iterable[tuple[bytes, Source | None]]) -> tuple[list[Event], list[DeadLetter]]:
        events, dead = [], []
        for raw, source in raws:
            out = self.decode_one(raw, source)
            (dead if isinstance(out, DeadLetter) else events).append(out)  # type: ignore[arg-type]
        return events, dead

    def process(self, raws: Iterable[tuple[bytes, Source | None]]) -> BatchResult:
        """Decode a batch of raw records and run them through detection and scoring."""
        return self.process_decoded(*self.decode(raws))

    def process_decoded(self, events: Sequence[Event], dead: Sequence[DeadLetter]) -> BatchResult:
        """Detection and scoring for decoded events, with the batch's dead letters counted and passed on."""
        result = self.process_events(events)
        result.dead_letters[:0] = dead
        self.count_dead(dead)
        return result

    def count_dead(self, dead: Sequence[DeadLetter]) -> None:
        """Dead letters into the stats (also for the ingest stage, which writes its own to the DLQ)."""
        self.stats.dead_letters += len(dead)
        self.stats.dead_letter_codes.update(d.code for d in dead)

    def process_events(self, events: Sequence[Event], *, warmup: bool = False) -> BatchResult:
        """Detection and scoring for decoded events; the batch is taken in event-time order.

        `warmup`: rebuilding state after a worker gained a partition — detectors, behaviour windows, risk
        and open alerts see the events (so the state is what it would have been), but nothing is
        reported: it was reported by whoever processed these records the first time."""
        result = BatchResult(events=len(events))
        changed: dict[str, None] = {}
        risk: dict[tuple[str, str, str], RiskUpdate] = {}

        def score(signal: Signal, *_: Any) -> None:
            if warmup:
                self._remember(signal)
            else:
                self._signal(signal, result, changed, risk)

        ordered = sorted(events, key=_by_time)
        if self.ledger is not None and self.track_tokens:  # first: a hold a signal asks for lasts until the
            holds, tokens = (result.holds, result.tokens) if not warmup else ([], [])  # token's exp, known here
            for event in ordered:
                self.ledger.observe(event, holds, tokens)
        result.late_events = self._detect(ordered, score, result, warmup=warmup)
        if self.behaviour is not None:
            self.behaviour.observe(events)  # arrival order: the windows must not depend on the batching
            for signal in self.behaviour.flush(self.watermark):
                score(signal)
        if warmup:
            self.stats.warmup_events += len(events)
            self._expire()
            return BatchResult(late_events=result.late_events)
        return self._close_batch(result, changed, risk, len(events))

    def _detect(self, ordered: Sequence[Event], emit: Callable[[Signal, int, str], None], result: BatchResult,
                *, warmup: bool = False) -> int:
        """Every detector over `ordered` (in event-time order); each signal to `emit(signal, position of
        its event, detector name)`. Returns how many events came later than the watermark."""
        # per event class, the detectors that read it
        steps_for = {c: [(d.observe, self.stores[d.name], d.name) for d in self.detectors if c in reads(d)]
                     for c in EVENT_CLASSES}
        watermark = self.watermark
        late = 0
        for i, event in enumerate(ordered):
            steps = steps_for[event_class(event)]
            ts = event.ts
            if ts < watermark:
                late += 1
            elif ts > self.max_event_time:
                self.max_event_time = ts
                watermark = ts - self.lateness_seconds
            for observe, store, name in steps:
                try:
                    found = observe(event, store)
                except Exception as exc:  # a detector bug must not stop the stream: dead-letter it
                    if not warmup:  # (in warm-up: dead-lettered the first time round)
                        self._dead_letter(event, result, f"{name} raised {type(exc).__name__}: {exc}",
                                          "detector_error")
                    continue
                for signal in found:
                    try:
                        emit(signal, i, name)
                    except Exception as exc:  # nor may a bug in risk or alert building
                        if not warmup:
                            self._dead_letter(event, result, f"scoring a {signal.type} signal raised "
                                              f"{type(exc).__name__}: {exc}", "scoring_error")
        return late

    def _close_batch(self, result: BatchResult, changed: dict[str, None],
                     risk: dict[tuple[str, str, str], RiskUpdate], events: int) -> BatchResult:
        """The end of a scored batch: risk decay, the alerts it changed, state expiry."""
        self._refresh_risk(risk)
        result.alerts = [self.alerts.get(aid) for aid in changed]
        result.risk = list(risk.values())
        self.stats.events += events
        self.stats.late_events += result.late_events
        self._expire()
        return result

    # -- detection and scoring apart: `gatewatch replay --jobs N` (gatewatch/replay_jobs.py) -------------
    def detect_share(self, ordered: Sequence[Event], positions: Sequence[int], arrival: Sequence[Event],
                     batch_max_ts: float) -> tuple[list[tuple[int, str, Signal]], list[Signal], BatchResult]:
        """Detection only, on this pipeline's share of a batch: `ordered` (event-time order) with each
        event's position in the whole batch's order, `arrival` the same share in arrival order. Its state
        expires on the whole batch's event time (`batch_max_ts`), as if it had seen every event.

        Returns the detectors' signals as (position, detector name, signal), the behaviour model's, and the
        batch's dead letters (detector errors)."""
        result = BatchResult(events=len(ordered))
        found: list[tuple[int, str, Signal]] = []
        result.late_events = self._detect(ordered, lambda s, i, name: found.append((positions[i], name, s)),
                                          result)
        self.max_event_time = max(self.max_event_time, batch_max_ts)
        model: list[Signal] = []
        if self.behaviour is not None:
            self.behaviour.observe(arrival)
            model = self.behaviour.flush(self.watermark)
        for _, _, signal in found:
            if signal.alerting:
                self.stats.signals[signal.type] += 1
        for signal in model:
            self.stats.signals[signal.type] += 1
        self.stats.events += len(ordered)
        self._expire()
        return found, model, result

    def score_batch(self, signals: Iterable[Signal], batch_max_ts: float, events: int) -> BatchResult:
        """Scoring only: a batch's signals, already in the order one pipeline would have raised them, into
        risk and alerts; then what `process_events` does at the end of a batch."""
        result = BatchResult(events=events)
        changed: dict[str, None] = {}
        risk: dict[tuple[str, str, str], RiskUpdate] = {}
        for signal in signals:
            self._signal(signal, result, changed, risk)
        self.max_event_time = max(self.max_event_time, batch_max_ts)
        return self._close_batch(result, changed, risk, events)

    def finish(self) -> BatchResult:
        """End of a finite stream (a replay): close every open behaviour window and score it."""
        if self.behaviour is None:
            return BatchResult()
        return self.score_final(self.behaviour.flush(float("inf")))

    def score_final(self, signals: Iterable[Signal]) -> BatchResult:
        """The behaviour model's signals of the windows closed at the end of a finite stream, scored."""
        result = BatchResult()
        changed: dict[str, None] = {}
        risk: dict[tuple[str, str, str], RiskUpdate] = {}
        for signal in signals:
            self._signal(signal, result, changed, risk)
        result.alerts = [self.alerts.get(aid) for aid in changed]
        result.risk = list(risk.values())
        return result

    def _dead_letter(self, event: Event, result: BatchResult, reason: str, code: str) -> None:
        err = RecordError(reason, code)
        result.dead_letters.append(DeadLetter.from_error(err, _raw_of(event), event.source, stage="detect"))
        self.stats.dead_letter_codes[code] += 1
        self.stats.dead_letters += 1

    def _remember(self, signal: Signal) -> None:
        """Warm-up: fold a signal into risk and the open alert (so counts and scores continue where the
        previous owner left them) without reporting anything — it was reported the first time."""
        if not signal.alerting:
            return
        updates = self.risk.add(signal)
        self.alerts.add(signal, updates[0].score if updates else 0.0)

    def _signal(self, signal: Signal, result: BatchResult, changed: dict[str, None],
                risk: dict[tuple[str, str, str], RiskUpdate]) -> None:
        """One signal, detector's or model's, into risk and alerts (the same path for both), and the holds
        it asks for; a non-alerting signal only the latter."""
        if self.ledger is not None:
            result.holds += self.ledger.on_signal(signal)
        if not signal.alerting:
            return
        result.signals.append(signal)
        self.stats.signals[signal.type] += 1
        updates = self.risk.add(signal)
        for u in updates:
            risk[(u.tenant, u.kind, u.value)] = u
        aid = self.alerts.add(signal, updates[0].score if updates else 0.0)
        if aid is not None:
            changed[aid] = None

    def _refresh_risk(self, risk: dict[tuple[str, str, str], RiskUpdate]) -> None:
        """Decay on event time: at each `risk_refresh_seconds` boundary the watermark passes, re-report
        the entities whose risk has fallen (the boundary, not the watermark, so batching matters less)."""
        if self.watermark == float("-inf"):
            return
        at = (self.watermark // self.risk_refresh_seconds) * self.risk_refresh_seconds
        if at <= self._last_refresh:
            return
        self._last_refresh = at
        for u in self.risk.refresh(at):
            key = (u.tenant, u.kind, u.value)
            if key not in risk or risk[key].ts < u.ts:
                risk[key] = u

    def _expire(self) -> None:
        wm = self.watermark
        if wm - self._last_expiry < _EXPIRE_EVERY_SECONDS:
            return
        self._last_expiry = wm
        for store in self.stores.values():
            store.expire(wm)
        self.alerts.expire(wm)
        self.risk.expire(wm)
        if self.ledger is not None:
            self.ledger.expire(wm)


_by_time = attrgetter("ts")


def _raw_of(event: Event) -> bytes:
    """The record as JSON for a dead-letter entry, its token replaced by the fingerprint."""
    record = event.record
    if record.token is not None:
        tfp = event.token.tfp if event.token is not None else "?"
        record = msgspec.structs.replace(record, token=f"<redacted tfp={tfp}>")
    return msgspec.json.encode(record)
