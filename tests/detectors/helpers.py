"""Shared helpers of the detector tests: run simulated traffic, observe a stream, check lateness."""

from __future__ import annotations

import json

from gatewatch.pipeline import Pipeline
from gatewatch.simulate import build, generate_with


def run_simulated(minter, settings, validator, spec, alert_type: str):
    """(alerts of `alert_type`, [(event id, label)], the simulator's stats) for one simulated stream."""
    sim = build(spec, minter)
    lines, labels = [], []
    for ev in generate_with(sim):
        lines.append(json.dumps(ev.event).encode())
        labels += [(ev.event["event_id"], lab) for lab in ev.labels]
    alerts = Pipeline.from_settings(settings, validator).process([(line, None) for line in lines]).alerts
    return [a for a in alerts if a.type == alert_type], labels, sim.stats


def observe(det, events, store=None):
    """Every signal `det` raises over `events`, in order, with `store` (a fresh MemoryStore if none)."""
    from detectors.state import MemoryStore

    store = store if store is not None else MemoryStore()
    out = []
    for ev in events:
        out += det.observe(ev, store)
    return out


def within_lateness(order, lateness=30.0):
    """No event arrives after an event more than `lateness` seconds newer than itself."""
    newest = float("-inf")
    for ev in order:
        if ev.ts < newest - lateness:
            return False
        newest = max(newest, ev.ts)
    return True
