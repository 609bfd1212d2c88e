"""Crash of a keyed worker: `kill -9` it several times mid-run; after recovery its alerts equal a clean
keyed run's, with no duplicates.

The one-process crash test (test_crash.py, 100,000 events) covers one consumer group and the store. A keyed
worker (`gatewatch run --keyed`) has more to get right when it dies: two groups (ingest on the input
topics, detect on the re-keyed ones), re-keyed records published but not yet committed on the input side
(the restarted ingest stage publishes them again, with their original source, so the detectors must see a
redelivery, not a replay), source watermarks on the re-keyed partitions, and the detect stage's warm-up
from Kafka's time index. This test kills the worker three times over a 30,000-event stream with every rule
attack — once its ingest group has committed 30 % of the input, then once its detect group has committed
30 % and 70 % of the events (the detect stage trails the ingest stage) — restarts it each time, and lets
the last incarnation finish, which must rebuild the detectors' state in warm-up. Smaller than the
one-process test's stream: a keyed worker processes under 1,000 events/s on this 2-core machine
(BENCHMARKS.md), and each restart re-reads the re-keyed topics.

Asserted: neither group's committed offsets ever move backward; the ingest group's reach the end of every
input partition (nothing lost); the last incarnation warmed up (re-read what was processed before); the
alert identities (id, type, tenant, entity) equal the clean keyed run's; no alert id is stored twice and
every record on the alerts topic is its stored alert; every labelled rule attack is caught by both runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from detectors import DETECTORS
from gatewatch.backtest import labelled_event_times
from gatewatch.settings import load_settings
from gatewatch.simulate import ACCESS_TOPIC, ALL_ATTACKS, SimulationSpec, generate
from gatewatch.topics import ensure_topics
from tests.conftest import write_config
from tests.integration.kafka_helpers import FramedEvents, GroupProbe, group_members, produce_tracked, read_all, remove_members
from tests.integration.test_crash import (CommitWatch, admin_allow_lists, assert_rule_attacks_caught, identity,
                                          stored, summary_of)

SEED = 0x5EED
N_EVENTS = 30_000
RULE_ATTACKS = tuple(a for a in ALL_ATTACKS if not a.startswith("anomaly."))
RULE_TYPES = sorted(d.name for d in DETECTORS)
# When to kill: once the ingest group has committed this share of the input records, or the detect group
# this share of the events (the entries of the frames on `gatewatch.events` before its committed offsets).
KILLS = (("ingest", 0.3), ("detect", 0.3), ("detect", 0.7))
IDLE_EXIT = 6
INCARNATION_TIMEOUT = 120.0


def keyed_env(kafka_env: dict[str, str], name: str) -> dict[str, str]:
    """The test's input topics; this run's own groups, re-keyed topics and outputs."""
    env = dict(kafka_env)
    env["GATEWATCH_KAFKA__GROUP_ID"] = f"{kafka_env['GATEWATCH_KAFKA__GROUP_ID']}-{name}"
    for topic in ("ALERTS", "RISK", "DLQ", "EVENTS", "KEYED"):
        env[f"GATEWATCH_KAFKA__{topic}_TOPIC"] = f"{kafka_env[f'GATEWATCH_KAFKA__{topic}_TOPIC']}.{name}"
    return env


def start(cfg: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gatewatch.cli", "--config", str(cfg), "run", "--keyed",
                                 "--idle-exit", str(IDLE_EXIT)], env={**os.environ, **env},
                                stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.timeout(600)
def test_kill_9_a_keyed_worker_several_times_gives_the_clean_runs_alerts(tmp_path: Path, keys_dir, minter,
                                                                         kafka_env) -> None:
    dirs = {name: tmp_path / name for name in ("clean", "crash")}
    cfgs, envs = {}, {}
    for name, d in dirs.items():
        d.mkdir()
        cfgs[name] = write_config(d, keys_dir, admin_allow_lists())
        envs[name] = keyed_env(kafka_env, name)
        ensure_topics(load_settings(cfgs[name], environ=envs[name]).kafka)
    k = load_settings(cfgs["crash"], environ=envs["crash"]).kafka
    input_topics = {k.access_topic, k.tokens_topic}

    records, labels, lines = [], [], []
    for ev in generate(SimulationSpec(seed=SEED, events=N_EVENTS, rate=20, attacks=RULE_ATTACKS,
                                      attack_every=1_500), minter):
        value = json.dumps(ev.event, separators=(",", ":")).encode()
        records.append((k.access_topic if ev.topic == ACCESS_TOPIC else k.tokens_topic, ev.key.encode(), value))
        lines.append((value, None))
        labels += [{"event_id": ev.event["event_id"], "attack_id": lab["attack_id"], "type": lab["type"],
                    "entity": (lab["entity"]["kind"], lab["entity"]["value"])} for lab in ev.labels]
    assert {lab["type"] for lab in labels} == set(RULE_TYPES)
    times = labelled_event_times(lines, labels)
    produced = produce_tracked(k.bootstrap_servers, records)
    assert len(produced) == N_EVENTS

    clean_log = tmp_path / "clean.log"
    clean = start(cfgs["clean"], envs["clean"], clean_log)
    assert clean.wait(timeout=300) == 0, clean_log.read_text()[-3000:]
    clean_summary = summary_of(clean_log)
    assert clean_summary["records"] == N_EVENTS and clean_summary["dead_letters"] == 0, clean_summary
    clean_alerts = stored(dirs["clean"] / "gatewatch.db")

    group = envs["crash"]["GATEWATCH_KAFKA__GROUP_ID"]
    ingest_group = f"{group}.ingest"
    probe = GroupProbe(k.bootstrap_servers, ingest_group, input_topics)
    detect_probe = GroupProbe(k.bootstrap_servers, group, {k.events_topic})
    framed = FramedEvents(k.bootstrap_servers, k.events_topic)
    watches = {"ingest": CommitWatch(probe, ingest_group),
               "detect": CommitWatch(detect_probe, group, framed.events_before)}
    crash_log = tmp_path / "crash.log"
    kills: list[dict[str, Any]] = []
    try:
        for stage, share in KILLS:
            before = {name: w.sample("restart") for name, w in watches.items()}
            proc = start(cfgs["crash"], envs["crash"], crash_log)
            deadline = time.monotonic() + INCARNATION_TIMEOUT
            while True:
                now = {name: w.sample(f"incarnation {len(kills) + 1}") for name, w in watches.items()}
                if now[stage] >= max(int(share * N_EVENTS), before[stage] + 1):
                    break
                assert proc.poll() is None, crash_log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"incarnation {len(kills) + 1} never reached {stage} {share}"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            at = {name: w.sample("killed") for name, w in watches.items()}
            assert at["detect"] < N_EVENTS, f"kill {len(kills) + 1} landed after the end of the stream: {at}"
            # Gone without a LeaveGroup from both of its groups: removed at once, as an orchestrator would.
            for g in (ingest_group, group):
                _, dead = group_members(probe, g)
                removed = remove_members(probe, g, dead)
                assert set(removed.values()) <= {"NoError", "UnknownMemberIdError"}, removed
            kills.append({"stage": stage, "share": share, "committed_before": before, "committed_at_kill": at})
        last = start(cfgs["crash"], envs["crash"], crash_log)
        assert last.wait(timeout=300) == 0, crash_log.read_text()[-3000:]
        crash_summary = summary_of(crash_log)
        behind = probe.behind()
        final = watches["ingest"].sample("end")
        watches["detect"].sample("end")
    finally:
        probe.close()
        detect_probe.close()
        framed.close()
    print(f"\nkeyed crash test: kills {kills}\nlast incarnation {crash_summary}\nclean {clean_summary}")
    assert len(kills) == len(KILLS)
    for name, w in watches.items():
        assert not w.regressions, (name, w.regressions[:10])
    assert behind == {} and final == N_EVENTS, (behind, final)  # every input record was published and committed
    # The last incarnation gained every partition after the detect group had committed 70 %: it rebuilt
    # the detectors' state from what it re-read in warm-up, and processed only the rest for real.
    assert crash_summary["warmup_events"] > 0 and crash_summary["events"] < N_EVENTS, crash_summary

    crash_alerts = stored(dirs["crash"] / "gatewatch.db")
    clean_ids, crash_ids = identity(clean_alerts), identity(crash_alerts)
    assert crash_ids == clean_ids, {"only in the clean run": {i: v for i, v in clean_ids.items() if i not in crash_ids},
                                    "only in the crash run": {i: v for i, v in crash_ids.items() if i not in clean_ids}}
    on_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in read_all(k.bootstrap_servers, k.alerts_topic, expect_at_least=len(crash_alerts), timeout=60):
        body = json.loads(m.value)
        assert m.key == body["id"].encode()
        on_topic[body["id"]].append(body)
    assert set(on_topic) == set(crash_alerts)
    assert_rule_attacks_caught(clean_alerts, labels, times, "clean", events=N_EVENTS)
    assert_rule_attacks_caught(crash_alerts, labels, times, "crash", events=N_EVENTS)
