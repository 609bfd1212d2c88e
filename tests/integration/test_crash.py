"""Crash: `kill -9` a worker several times during a run of 100,000 events; after recovery the alert set
equals a clean run's, with no duplicates.

Both runs read the same input topics (4 partitions each, keyed like `gatewatch simulate --kafka`), each
with its own consumer group, store and output topics:

* the clean run is one `gatewatch run --idle-exit 5` from start to end;
* the crash run is `gatewatch run` killed with SIGKILL three times: once it has committed 35 % of the
  stream, then while the restarted worker replays the stream in warm-up (before any new commit), then
  once it has committed 70 %; it is restarted each time, and the last incarnation runs to the end. A
  restarted worker seeks back `[kafka] warmup_seconds` (default 3600 s of wall time: the whole test
  stream) and replays what it had already processed in warm-up mode, which rebuilds the detector state
  (replay memory, revocations, rate windows) without re-alerting. A killed consumer sends no LeaveGroup:
  the test removes it from the group at once, as an orchestrator that saw the process die would (the
  broker would do it after the session timeout, 45 s with kafka-python 3).

Asserted: the committed offsets never move backward; nothing is lost (the crash group's committed offsets
reach the end of every input partition, and those hold the produced count); the crash run's alerts (id,
type, tenant, entity) are exactly the clean run's; no alert id is duplicated (the store's ids are its
primary key, so on the alerts topic too: every record of an id is the stored alert, keyed by its id, and
the topic's distinct ids are the store's); every labelled attack of the rule types is caught by both runs.
Other differences of the alert bodies (count, risk, first/last seen) are printed, not asserted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from api.routes.health import WORKER_STATS_PREFIX
from api.store import AlertStore
from detectors import DETECTORS
from detectors.traffic_ip_allowlist import route_allow_lists
from gatewatch.backtest import labelled_event_times, score
from gatewatch.settings import load_settings
from gatewatch.simulate import ACCESS_TOPIC, ADMIN_ALLOWED_CIDRS, ALL_ATTACKS, SimulationSpec, generate
from gatewatch.topics import ensure_topics
from tests.conftest import write_config
from tests.integration.kafka_helpers import (GroupProbe, committed_by_partition, group_members, produce_tracked,
                                             read_all, remove_members)

SEED = 0xC4A5
N_EVENTS = 100_000
RULE_ATTACKS = tuple(a for a in ALL_ATTACKS if not a.startswith("anomaly."))
RULE_TYPES = sorted(d.name for d in DETECTORS)
IDLE_EXIT = 5
# When to kill each incarnation: once the group's committed offsets on the input topics pass a share of
# the stream, or while it replays the stream in warm-up: its partitions assigned and its figures (written
# every 2 s) showing warm-up events and no new record yet, or at the latest WARMUP_KILL_AFTER seconds
# after the assignment (a fast machine may be through the warm-up by then: the kill still lands early).
KILLS: tuple[tuple[str, float | None], ...] = (("committed", 0.35), ("warm-up", None), ("committed", 0.7))
WARMUP_KILL_AFTER = 3.0
INCARNATION_TIMEOUT = 60.0  # seconds an incarnation may take to reach its kill point


def admin_allow_lists() -> str:
    """The simulator's tenants reach their admin routes only from their offices (traffic.ip_not_allowed)."""
    lines = []
    for tenant, routes in route_allow_lists(ADMIN_ALLOWED_CIDRS).items():
        lines.append(f"[detectors.traffic_ip_not_allowed.routes.{tenant}]")
        lines += [f"{route} = {json.dumps(cidrs)}" for route, cidrs in routes.items()]
    return "\n".join(lines) + "\n"


def run_env(kafka_env: dict[str, str], name: str) -> dict[str, str]:
    """The test's input topics; this run's own group and output topics."""
    env = dict(kafka_env)
    env["GATEWATCH_KAFKA__GROUP_ID"] = f"{kafka_env['GATEWATCH_KAFKA__GROUP_ID']}-{name}"
    for topic in ("ALERTS", "RISK", "DLQ"):
        env[f"GATEWATCH_KAFKA__{topic}_TOPIC"] = f"{kafka_env[f'GATEWATCH_KAFKA__{topic}_TOPIC']}.{name}"
    return env


class CommitWatch:
    """Samples a group's committed offsets on the input topics; remembers every one that went backward."""

    def __init__(self, probe: GroupProbe, group: str,
                 count: Callable[[dict[Any, int]], int] = lambda offsets: sum(offsets.values())) -> None:
        self.probe = probe
        self.group = group
        self.count = count  # committed offsets -> records (a re-keyed topic holds frames of many events)
        self.high: dict[Any, int] = {}
        self.regressions: list[tuple[str, str, int, int]] = []  # (phase, partition, highest seen, now)

    def sample(self, phase: str) -> int:
        offsets = committed_by_partition(self.probe).get(self.group, {})
        for tp, off in offsets.items():
            if off < self.high.get(tp, -1):
                self.regressions.append((phase, f"{tp.topic}/{tp.partition}", self.high[tp], off))
            self.high[tp] = max(off, self.high.get(tp, -1))
        return self.count(offsets)


def worker_figures(store_path: Path, pid: int) -> dict[str, Any]:
    """The figures the worker of `pid` last wrote to its store (every 2 s), {} if none yet."""
    if not store_path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?",
                             (f"{WORKER_STATS_PREFIX}{socket.gethostname()}-{pid}",)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return {}
    return json.loads(row[0]) if row else {}


def start(cfg: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gatewatch.cli", "--config", str(cfg), "run",
                                 "--idle-exit", str(IDLE_EXIT)], env={**os.environ, **env},
                                stdout=out, stderr=subprocess.STDOUT)


def summary_of(log: Path) -> dict[str, Any]:
    lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.startswith("{")]
    assert lines, log.read_text(encoding="utf-8", errors="replace")[-3000:]
    return json.loads(lines[-1])


def stored(store_path: Path) -> dict[str, Any]:
    store = AlertStore(str(store_path))
    try:
        out: dict[str, Any] = {}
        cursor = None
        while True:
            page, cursor = store.list_alerts(tenants=None, cursor=cursor, limit=10_000)
            for a in page:
                assert a.id not in out, f"alert id {a.id} listed twice"
                out[a.id] = a
            if cursor is None:
                break
        assert len(out) == store.count()
        return out
    finally:
        store.close()


def identity(alerts: dict[str, Any]) -> dict[str, tuple[str, str, str, str]]:
    return {i: (a.type, a.tenant, a.entity.kind, a.entity.value) for i, a in alerts.items()}


def assert_rule_attacks_caught(alerts: dict[str, Any], labels: list[dict[str, Any]],
                               times: dict[str, str], run: str, events: int = N_EVENTS) -> None:
    report = score(alerts.values(), labels, events=events, event_times=times)["by_type"]
    attacked = {t for t in RULE_TYPES if report.get(t, {}).get("attacks")}
    assert attacked == set(RULE_TYPES), (run, set(RULE_TYPES) - attacked)
    missed = {t: report[t]["missed"] for t in RULE_TYPES if report[t]["recall"] != 1.0}
    assert not missed, (run, missed)


@pytest.mark.timeout(300)
def test_kill_9_several_times_gives_the_clean_runs_alerts_without_duplicates(tmp_path: Path, keys_dir, minter,
                                                                            kafka_env) -> None:
    t_start = time.monotonic()
    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crash"
    clean_dir.mkdir()
    crash_dir.mkdir()
    clean_cfg = write_config(clean_dir, keys_dir, admin_allow_lists())
    crash_cfg = write_config(crash_dir, keys_dir, admin_allow_lists())
    clean_env, crash_env = run_env(kafka_env, "clean"), run_env(kafka_env, "crash")
    clean_k = load_settings(clean_cfg, environ=clean_env).kafka
    crash_k = load_settings(crash_cfg, environ=crash_env).kafka
    assert crash_k.warmup_seconds == 3600  # the default: the whole test stream is re-read after a restart
    bootstrap = crash_k.bootstrap_servers
    ensure_topics(clean_k)
    ensure_topics(crash_k)

    # -- the input: 100,000 simulated events, every rule attack labelled, keyed by principal --------
    topics = {ACCESS_TOPIC: clean_k.access_topic}
    records, labels, lines = [], [], []
    for ev in generate(SimulationSpec(seed=SEED, events=N_EVENTS, rate=20, attacks=RULE_ATTACKS,
                                      attack_every=4_000), minter):
        value = json.dumps(ev.event, separators=(",", ":")).encode()
        records.append((topics.get(ev.topic, clean_k.tokens_topic), ev.key.encode(), value))
        lines.append((value, None))
        labels += [{"event_id": ev.event["event_id"], "attack_id": lab["attack_id"], "type": lab["type"],
                    "entity": (lab["entity"]["kind"], lab["entity"]["value"])} for lab in ev.labels]
    assert len(records) == N_EVENTS
    assert {lab["type"] for lab in labels} == set(RULE_TYPES)
    times = labelled_event_times(lines, labels)
    produced = produce_tracked(bootstrap, records)
    input_topics = {clean_k.access_topic, clean_k.tokens_topic}
    assert {t for t, _, _ in produced} == input_topics
    t_produced = time.monotonic()

    # -- clean run ----------------------------------------------------------------------------------
    clean_log = tmp_path / "clean.log"
    clean = start(clean_cfg, clean_env, clean_log)
    assert clean.wait(timeout=120) == 0, clean_log.read_text()[-3000:]
    clean_summary = summary_of(clean_log)
    # Every event processed once; `records` is at least that (a worker that counted records when polled
    # counted again those a rebalance dropped unreleased: kafka-python 3 rejoins once at start-up).
    assert clean_summary["events"] == N_EVENTS and clean_summary["records"] >= N_EVENTS, clean_summary
    assert clean_summary["dead_letters"] == 0 and clean_summary["warmup_events"] == 0, clean_summary
    clean_alerts = stored(clean_dir / "gatewatch.db")
    assert clean_alerts
    t_clean = time.monotonic()

    # -- crash run: kill -9 at several points, restart, let the last incarnation finish ---------------
    group = crash_env["GATEWATCH_KAFKA__GROUP_ID"]
    probe = GroupProbe(bootstrap, group, input_topics)
    watch = CommitWatch(probe, group)
    crash_log = tmp_path / "crash.log"
    kills: list[dict[str, Any]] = []
    try:
        for when, share in KILLS:
            before = watch.sample("restart")
            proc = start(crash_cfg, crash_env, crash_log)
            started = time.monotonic()
            deadline = started + INCARNATION_TIMEOUT
            seen: dict[str, Any] = {}
            while True:
                assert proc.poll() is None, f"incarnation {len(kills) + 1} exited before its kill point " \
                                            f"({when}): {crash_log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"incarnation {len(kills) + 1} never reached {when} {share}"
                committed = watch.sample(f"incarnation {len(kills) + 1}")
                if when == "committed":
                    if committed >= max(int(share * N_EVENTS), before + 1):
                        break
                else:  # warm-up: the partitions are assigned, nothing new committed yet
                    if "assigned" not in seen and group_members(probe, group)[0] == "Stable":
                        seen["assigned"] = time.monotonic()
                    figures = worker_figures(crash_dir / "gatewatch.db", proc.pid)
                    if "assigned" in seen and (figures.get("warmup_events", 0) > 0 and not figures.get("records")
                                               or time.monotonic() - seen["assigned"] >= WARMUP_KILL_AFTER):
                        break
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            at = watch.sample("killed")
            assert at < N_EVENTS, f"kill {len(kills) + 1} landed after the end of the stream: {kills}"
            # A killed consumer never says goodbye: the broker drops it when its session times out (45 s
            # with kafka-python 3); an orchestrator that saw the process die does it at once.
            _, dead = group_members(probe, group)
            removed = remove_members(probe, group, dead)
            assert set(removed.values()) <= {"NoError", "UnknownMemberIdError"}, removed
            kills.append({"when": when, "share": share, "pid": proc.pid, "committed_before": before,
                          "committed_at_kill": at, "alive_s": round(time.monotonic() - started, 1),
                          "last_report": {k: worker_figures(crash_dir / "gatewatch.db", proc.pid).get(k)
                                          for k in ("records", "warmup_events")}})
        last = start(crash_cfg, crash_env, crash_log)
        deadline = time.monotonic() + 180
        while last.poll() is None:
            assert time.monotonic() < deadline, "the last incarnation did not finish"
            watch.sample("last incarnation")
            time.sleep(0.05)
        assert last.returncode == 0, crash_log.read_text()[-3000:]
        crash_summary = summary_of(crash_log)
        behind = probe.behind()
        final_committed = watch.sample("end")
    finally:
        probe.close()
    t_crash = time.monotonic()
    print(f"\ncrash test: kills {kills}\nlast incarnation {crash_summary}\nclean {clean_summary}")
    assert len(kills) >= 3

    # The committed position only moves forward: a restarted worker re-reads for warm-up what it had
    # already processed and committed; committing those offsets again would hand records already
    # processed (and alerted) to the next incarnation as new ones.
    assert not watch.regressions, watch.regressions[:10]

    # Nothing lost: the crash group committed the end of every input partition, which hold every record.
    assert behind == {}, behind
    assert final_committed == N_EVENTS == len(produced), final_committed
    assert crash_summary["dead_letters"] == 0, crash_summary

    # The same alerts as the clean run: ids, types, tenants, entities.
    crash_alerts = stored(crash_dir / "gatewatch.db")
    clean_ids, crash_ids = identity(clean_alerts), identity(crash_alerts)
    only_clean = {i: clean_ids[i] for i in clean_ids.keys() - crash_ids.keys()}
    only_crash = {i: crash_ids[i] for i in crash_ids.keys() - clean_ids.keys()}
    assert not only_clean and not only_crash, {"only in the clean run": only_clean,
                                               "only in the crash run": only_crash}
    assert crash_ids == clean_ids

    # No duplicates on the alerts topics: every record of an id is that stored alert; distinct ids = stored.
    for run, k, alerts in (("clean", clean_k, clean_alerts), ("crash", crash_k, crash_alerts)):
        on_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in read_all(bootstrap, k.alerts_topic, expect_at_least=len(alerts), timeout=60):
            body = json.loads(m.value)
            assert m.key == body["id"].encode(), (run, m.key, body["id"])
            on_topic[body["id"]].append(body)
        assert set(on_topic) == set(alerts), (run, set(on_topic) ^ set(alerts))
        for aid, bodies in on_topic.items():
            want = identity({aid: alerts[aid]})[aid]
            for body in bodies:
                got = (body["type"], body["tenant"], body["entity"]["kind"], body["entity"]["value"])
                assert got == want, (run, aid, got, want)
        if run == "crash":
            rewritten = sum(len(b) - 1 for b in on_topic.values())
            print(f"crash run: {len(on_topic)} alert ids on the topic, {rewritten} re-emitted records "
                  f"(same id, idempotent)")

    # Every labelled rule attack is caught by both runs.
    assert_rule_attacks_caught(clean_alerts, labels, times, "clean")
    assert_rule_attacks_caught(crash_alerts, labels, times, "crash")

    # Reported, not asserted: other differences of the bodies. A rate-limit alert's first_seen depends on
    # the batching (late events around a batch edge), a clean run's too. (Count and risk now match: the
    # warm-up folds signals into the alert builder and the risk engine; measured 0 differences here.)
    fields = ("first_seen", "last_seen", "count", "severity", "risk")
    differ = {i: {f: (getattr(clean_alerts[i], f), getattr(crash_alerts[i], f)) for f in fields
                  if getattr(clean_alerts[i], f) != getattr(crash_alerts[i], f)} for i in clean_alerts}
    differ = {i: d for i, d in differ.items() if d}
    print(f"crash test: {len(clean_alerts)} alerts {dict(sorted(_types(clean_alerts).items()))}; "
          f"{len(differ)} differ outside ids/types/entities: {dict(list(differ.items())[:5])}")
    print(f"crash test timings: produce {t_produced - t_start:.1f}s, clean run {t_clean - t_produced:.1f}s, "
          f"crash run {t_crash - t_clean:.1f}s, total {time.monotonic() - t_start:.1f}s")


def _types(alerts: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for a in alerts.values():
        out[a.type] += 1
    return out
