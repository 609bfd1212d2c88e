"""Keyed re-partitioning, in memory: N partitions per key kind give the alerts of one pipeline.

This is the routing that `gatewatch run` does through Kafka (ingest/routing.py, gatewatch/run.py),
without the broker: every event goes to the principal stream and to each side stream its detectors
need, each (stream, partition) has its own pipeline and state, and every alert id one pipeline raises
over the whole stream is raised by exactly one of them. The broker-backed version is in tests/integration.
"""

from __future__ import annotations

import json
import zlib

import pytest

from gatewatch.pipeline import Pipeline
from gatewatch.run import keyed_pipelines
from gatewatch.simulate import ALL_ATTACKS, SimulationSpec, generate
from ingest.routing import PRINCIPAL, FramePacker, decode_frame, principal_key, side_keys


def _partition(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n


@pytest.mark.parametrize("partitions", [1, 3])
def test_n_partitions_raise_the_alerts_of_one_pipeline(minter, validator, settings, partitions) -> None:
    rule_attacks = tuple(a for a in ALL_ATTACKS if not a.startswith("anomaly."))
    lines = [json.dumps(ev.event).encode() for ev in generate(
        SimulationSpec(seed=11, events=24_000, rate=20, attacks=rule_attacks, attack_every=1_500), minter)]
    whole = Pipeline.from_settings(settings, validator)
    events, dead = whole.decode((line, None) for line in lines)
    assert not dead
    expected = {a.id: a.type for a in whole.process_events(events).alerts}
    assert set(expected.values()) >= set(rule_attacks) - {"traffic.ip_not_allowed"}  # no allow-list configured

    kinds = keyed_pipelines(settings, validator)
    parts = {(kind, p): (Pipeline.from_settings(settings, validator, partition=kind), [])
             for kind in kinds for p in range(partitions)}
    alone = FramePacker(events_partitions=1, keyed_partitions=1, side_kinds=frozenset())
    for ev in sorted(events, key=lambda e: e.ts):
        [(_, _, frame)] = alone.pack([ev], None)  # through the wire form, as on the topics
        [(_, wire)] = decode_frame(frame).entries
        key = principal_key(ev)
        targets = [(PRINCIPAL, _partition(key, partitions))] if key is not None else \
            [(PRINCIPAL, p) for p in range(partitions)]  # broadcast
        targets += [(kind, _partition(f"{kind}\x1f{side}", partitions))
                    for kind, side in side_keys(ev, frozenset(k for k in kinds if k != PRINCIPAL))]
        for t in targets:
            parts[t][1].append(wire)
    got: dict[str, str] = {}
    for pipeline, evs in parts.values():
        for i in range(0, len(evs), 2_000):  # each partition in its own batches, as a worker would
            got.update({a.id: a.type for a in pipeline.process_events(evs[i:i + 2_000]).alerts})
    assert got == expected
