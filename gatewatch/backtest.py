"""Backtest: precision and recall per alert type against labelled attack events.

An attack (one `attack_id`) counts as caught when an alert of its type has one of the attack's
events in its evidence, or when an alert of its type about the same entity was already raised
before the attack ended (detectors that report a standing condition once, such as
`token.unencrypted` per client and day, cover a repeat without a second alert). An alert counts as
a true positive when its evidence holds a labelled event of its own type, or its entity is a
labelled attack entity of its type; any other alert is a false alert.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ingest.errors import ConfigError
from scoring.alerts import Alert


def load_labels(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"no such labels file: {path}")
    labels = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                entity = row.get("entity") or {}
                labels.append({"event_id": str(row["event_id"]), "attack_id": str(row["attack_id"]),
                               "type": str(row["type"]),
                               "entity": (str(entity.get("kind")), str(entity.get("value"))) if entity else None})
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{path}:{n}: not a label line (needs event_id, attack_id, type)") from None
    return labels


def labelled_event_times(records: Iterable[tuple[bytes, Any]], labels: list[dict[str, Any]]) -> dict[str, str]:
    """Event time (normalised RFC 3339) of every labelled event found in `records`."""
    from ingest.decode import parse_ts
    from scoring.alerts import rfc3339

    wanted = {row["event_id"] for row in labels}
    times: dict[str, str] = {}
    for line, _ in records:
        try:
            row = json.loads(line)
            if row.get("event_id") in wanted:
                times[row["event_id"]] = rfc3339(parse_ts(row["ts"]))
        except Exception:  # noqa: BLE001
            continue  # the replay reports bad records; here they simply carry no time
    return times


def score(alerts: Iterable[Alert], labels: list[dict[str, Any]], *, events: int,
          event_times: dict[str, str] | None = None) -> dict[str, Any]:
    """Per alert type: attacks, caught, alerts, false alerts, recall, precision.

    `event_times` (event id → RFC 3339 time) lets a standing alert about the attack's entity count
    as covering it; without it only evidence overlap counts.
    """
    attacks: dict[str, set[str]] = defaultdict(set)  # attack_id -> event ids
    attack_type: dict[str, str] = {}
    attack_entities: dict[str, set[tuple[str, str]]] = defaultdict(set)
    labelled: dict[str, set[str]] = defaultdict(set)  # type -> labelled event ids
    labelled_entities: dict[str, set[tuple[str, str]]] = defaultdict(set)  # type -> attack entities
    for row in labels:
        attacks[row["attack_id"]].add(row["event_id"])
        attack_type[row["attack_id"]] = row["type"]
        labelled[row["type"]].add(row["event_id"])
        if row.get("entity"):
            attack_entities[row["attack_id"]].add(row["entity"])
            labelled_entities[row["type"]].add(row["entity"])

    def attack_end(attack: str) -> str | None:
        if not event_times:
            return None
        times = [event_times[e] for e in attacks[attack] if e in event_times]
        return max(times) if times else None

    def covers(alert: Alert, attack: str) -> bool:
        if set(alert.evidence.get("event_ids", [])) & attacks[attack]:
            return True
        end = attack_end(attack)
        return end is not None and (alert.entity.kind, alert.entity.value) in attack_entities[attack] \
            and alert.first_seen <= end
    by_type: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        by_type[alert.type].append(alert)
    report: dict[str, Any] = {}
    for type_ in sorted(set(by_type) | set(labelled)):
        typed = by_type.get(type_, [])
        true_pos = sum(1 for a in typed if set(a.evidence.get("event_ids", [])) & labelled.get(type_, set())
                       or (a.entity.kind, a.entity.value) in labelled_entities.get(type_, set()))
        own = [a for a, t in attack_type.items() if t == type_]
        caught = [a for a in own if any(covers(alert, a) for alert in typed)]
        report[type_] = {
            "attacks": len(own), "caught": len(caught), "alerts": len(typed), "false_alerts": len(typed) - true_pos,
            "recall": round(len(caught) / len(own), 3) if own else None,
            "precision": round(true_pos / len(typed), 3) if typed else None,
            "missed": sorted(set(own) - set(caught))[:20],
        }
    false_total = sum(r["false_alerts"] for r in report.values())
    return {"by_type": report, "false_alerts_per_100k_events": round(false_total * 100_000 / max(events, 1), 2)}
