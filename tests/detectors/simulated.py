"""Run simulated traffic through the registered pipeline and keep the alerts of one type."""

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
