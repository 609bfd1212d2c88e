"""Writing simulated traffic as JSONL: one event per line, and the attack labels beside it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

import msgspec

from gatewatch.simulate.model import ACCESS_TOPIC, SimEvent

_encode = msgspec.json.Encoder().encode


def write_jsonl(events: Iterable[SimEvent], out: TextIO, labels_out: TextIO | None) -> dict[str, int]:
    """Events to `out` (CONTRACT.md §1 objects); labels to `labels_out`, one line per labelled event and
    attack: {"event_id", "attack_id", "type", "entity"}. Returns the counts of what was written."""
    counts = {"events": 0, "access": 0, "token": 0, "attacks": 0, "labelled_events": 0}
    attacks: set[str] = set()
    write = out.write
    for ev in events:
        write(_encode(ev.event).decode() + "\n")
        counts["events"] += 1
        counts["access" if ev.topic == ACCESS_TOPIC else "token"] += 1
        if ev.labels:
            counts["labelled_events"] += 1
            for label in ev.labels:
                attacks.add(label["attack_id"])
                if labels_out is not None:
                    labels_out.write(_encode({"event_id": ev.event["event_id"], **label}).decode() + "\n")
    counts["attacks"] = len(attacks)
    return counts
