"""Backtest: precision and recall per alert type against labelled attack events.

An attack (one `attack_id`) counts as caught when an alert of its type has one of the attack's
events in its evidence. An alert counts as a true positive when its evidence holds a labelled
event of its own type; any other alert is a false alert.
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
                labels.append({"event_id": str(row["event_id"]), "attack_id": str(row["attack_id"]),
                               "type": str(row["type"])})
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{path}:{n}: not a label line (needs event_id, attack_id, type)") from None
    return labels


def score(alerts: Iterable[Alert], labels: list[dict[str, Any]], *, events: int) -> dict[str, Any]:
    attacks: dict[str, set[str]] = defaultdict(set)  # attack_id -> event ids
    attack_type: dict[str, str] = {}
    labelled: dict[str, set[str]] = defaultdict(set)  # type -> labelled event ids
    for row in labels:
        attacks[row["attack_id"]].add(row["event_id"])
        attack_type[row["attack_id"]] = row["type"]
        labelled[row["type"]].add(row["event_id"])
    by_type: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        by_type[alert.type].append(alert)
    report: dict[str, Any] = {}
    for type_ in sorted(set(by_type) | set(labelled)):
        typed = by_type.get(type_, [])
        evidence = [set(a.evidence.get("event_ids", [])) for a in typed]
        true_pos = sum(1 for ev in evidence if ev & labelled.get(type_, set()))
        own = [a for a, t in attack_type.items() if t == type_]
        caught = [a for a in own if any(ev & attacks[a] for ev in evidence)]
        report[type_] = {
            "attacks": len(own), "caught": len(caught), "alerts": len(typed), "false_alerts": len(typed) - true_pos,
            "recall": round(len(caught) / len(own), 3) if own else None,
            "precision": round(true_pos / len(typed), 3) if typed else None,
            "missed": sorted(set(own) - set(caught))[:20],
        }
    false_total = sum(r["false_alerts"] for r in report.values())
    return {"by_type": report, "false_alerts_per_100k_events": round(false_total * 100_000 / max(events, 1), 2)}
