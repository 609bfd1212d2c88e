"""`gatewatch run`: the streaming pipeline on Kafka.

Two ways to run it:

* **one process** (the default): one consumer on the gateway topics, one `Pipeline` that routes every
  event to every detector in memory (DESIGN.md: "the default run").
* **keyed workers** (`--keyed`, `[kafka] repartition = true`, or `--workers N`, which starts N of them):
  a worker process holds two consumers, taking turns on one thread. The ingest consumer (group
`<group_id>.ingest`, with its own producer) reads the gateway topics and re-keys normalised events, in
frames, onto `gatewatch.events` / `gatewatch.events.by_key`; the detect consumer (group
`<group_id>`) reads those with one `Pipeline` per key kind, so each
detector's state for a key lives on exactly one worker. N processes of this — started by
`--workers N`, or separately on several machines with the same config — share both groups: Kafka
spreads the partitions, and the results are the alerts one process would raise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from api.routes.health import MODEL_STATUS_KEY, WORKER_STATS_PREFIX
from api.store import AlertStore
from gatewatch.heap import freeze_start_up
from gatewatch.ingest_stage import IngestStage, side_kinds_of
from gatewatch.pipeline import Pipeline
from gatewatch.settings import Settings
from gatewatch.sinks import KafkaResultSink, StoreSink
from gatewatch.terminal import printable
from ingest.errors import GatewatchError
from ingest.delivery import until_done
from ingest.kafka_io import make_consumer, make_producer, wait_for_topics
from ingest.routing import KEY_KINDS, PRINCIPAL, source_name
from ingest.tokens import TokenValidator


def keyed_pipelines(settings: Settings, validator: TokenValidator | None) -> dict[str | None, Pipeline]:
    """One pipeline per key kind that has something to do (a detector or behaviour windows)."""
    out: dict[str | None, Pipeline] = {}
    for kind in KEY_KINDS:
        p = Pipeline.from_settings(settings, validator, partition=kind, holds=True)
        if kind == PRINCIPAL or p.detectors or p.behaviour is not None:
            out[kind] = p
    return out


def _sinks(k: Any, producer: Any, store: AlertStore) -> list[Any]:
    """Where a worker's results go: the alert, risk and dead-letter topics, and the store."""
    return [KafkaResultSink(producer, alerts_topic=k.alerts_topic, risk_topic=k.risk_topic, dlq_topic=k.dlq_topic),
            StoreSink(store)]


def _reporter(store: AlertStore, worker_id: str,
              records: Callable[[], int] | None = None) -> Callable[[dict[str, Any]], None]:
    """The worker's figures into the store (for /metrics); `records` overrides the input record count."""
    def report(figures: dict[str, Any]) -> None:
        if records is not None:
            figures = {**figures, "records": records()}
        store.set_meta(f"{WORKER_STATS_PREFIX}{worker_id}", figures)
    return report


def _model_status(store: AlertStore, pipeline: Pipeline) -> str:
    behaviour = pipeline.behaviour
    assert behaviour is not None
    store.set_meta(MODEL_STATUS_KEY, {"status": behaviour.status, "reason": behaviour.reason})
    if behaviour.status != "active":
        print(f"gatewatch run: anomaly.behaviour is silent: {printable(behaviour.reason)}", file=sys.stderr)
    return behaviour.status


def run_single(settings: Settings, store: AlertStore, *, idle_exit: float | None, max_events: int | None,
               progress: bool) -> dict[str, Any]:
    """One process on the gateway topics; every event to every detector, routed in memory."""
    from kafka.errors import KafkaError

    from gatewatch.topics import ensure_topics
    from gatewatch.worker import Worker, WorkerOptions

    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    pipeline = Pipeline.from_settings(settings, validator, holds=True)
    model = _model_status(store, pipeline)
    k = settings.kafka
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    try:
        ensure_topics(k)
        consumer = make_consumer(k)
        producer = make_producer(k)
        wait_for_topics(consumer, [k.access_topic, k.tokens_topic])
    except KafkaError as exc:
        raise GatewatchError(f"Kafka at {k.bootstrap_servers} unreachable: {type(exc).__name__}") from None
    worker = Worker(consumer=consumer, topics=[k.access_topic, k.tokens_topic], pipeline=pipeline,
                    sinks=_sinks(k, producer, store), poll_timeout_ms=k.poll_timeout_ms,
                    options=WorkerOptions(idle_exit_seconds=idle_exit, max_events=max_events, progress=progress,
                                          max_buffered_per_partition=k.max_buffered_per_partition),
                    report=_reporter(store, worker_id), worker_id=worker_id, warmup_seconds=k.warmup_seconds)
    worker.install_signal_handlers()
    freeze_start_up()
    started = time.monotonic()
    try:
        worker.run()
    finally:
        worker.close()
        producer.close()
    return _summary(worker, "single", worker.records, store, model, started)


def run_keyed(settings: Settings, store: AlertStore, *, idle_exit: float | None, max_events: int | None,
              progress: bool) -> dict[str, Any]:
    """One keyed worker: the ingest stage and the detect stage of the re-keyed streams."""
    from kafka.errors import KafkaError

    from gatewatch.topics import ensure_topics
    from gatewatch.worker import StopFlag, Worker, WorkerOptions, keyed_reader

    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    pipelines = keyed_pipelines(settings, validator)
    principal = pipelines[PRINCIPAL]
    model = _model_status(store, principal)
    k = settings.kafka
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    try:
        ensure_topics(k)
        ingest_consumer = make_consumer(k, group_id=f"{k.group_id}.ingest", client_id="gatewatch-ingest")
        consumer = make_consumer(k)
        producer = make_producer(k)
        ingest_producer = make_producer(k)
        wait_for_topics(ingest_consumer, [k.access_topic, k.tokens_topic])
        wait_for_topics(consumer, [k.events_topic, k.keyed_topic])
    except KafkaError as exc:
        raise GatewatchError(f"Kafka at {k.bootstrap_servers} unreachable: {type(exc).__name__}") from None
    stop = StopFlag()
    ingest = IngestStage(consumer=ingest_consumer, producer=ingest_producer,
                         topics=[k.access_topic, k.tokens_topic], decoder=principal, events_topic=k.events_topic,
                         keyed_topic=k.keyed_topic, dlq_topic=k.dlq_topic, side_kinds=side_kinds_of(pipelines),
                         stopping=stop.is_set, max_buffered_per_partition=k.max_buffered_per_partition)

    def feed(detect_busy: bool) -> int:
        """The ingest step, run before each detect poll; stops feeding after `max_events` records."""
        if max_events is not None and ingest.records >= max_events:
            return 0
        # Don't wait on the ingest side while the detect side has work (the two take turns on one thread).
        wait = 0 if detect_busy else max(10, k.poll_timeout_ms // 4)
        ingest.back_pressure.before_poll()
        return ingest.step(until_done(lambda: ingest_consumer.poll(timeout_ms=wait), what="polling the gateway topics",
                                      should_stop=stop.is_set))

    # Every input partition's watermark gates the re-keyed streams (whichever worker ingests it).
    sources = frozenset(source_name(t, p) for t in (k.access_topic, k.tokens_topic)
                        for p in ingest_consumer.partitions_for_topic(t) or ())
    worker = Worker(consumer=consumer, topics=[k.events_topic, k.keyed_topic], pipeline=pipelines,
                    reader=keyed_reader(k.events_topic), watermark_sources=sources,
                    sinks=_sinks(k, producer, store), poll_timeout_ms=k.poll_timeout_ms,
                    options=WorkerOptions(idle_exit_seconds=idle_exit, progress=progress,
                                          max_buffered_per_partition=k.max_buffered_per_partition),
                    report=_reporter(store, worker_id, records=lambda: ingest.records),
                    worker_id=worker_id, warmup_seconds=k.warmup_seconds, before_poll=feed,
                    joining=lambda: ingest.hooks.rebalancing, stop=stop)
    worker.install_signal_handlers()
    freeze_start_up()
    started = time.monotonic()
    try:
        worker.run()
    finally:
        worker.close()
        ingest_consumer.close()
        ingest_producer.close()
        producer.close()
    return {**_summary(worker, "keyed", ingest.records, store, model, started),
            "frames_published": ingest.frames, "ingest_peak_buffered": ingest.peak_buffered,
            "ingest_pauses": ingest.back_pressure.pauses}


def _summary(worker: Any, mode: str, records: int, store: AlertStore, model: str, started: float) -> dict[str, Any]:
    """The JSON line `gatewatch run` prints at exit."""
    stats = worker.stats()
    return {"worker": worker.worker_id, "mode": mode, "records": records, "events": stats["events"],
            "dead_letters": sum(stats["dead_letters"].values()), "dead_letter_codes": stats["dead_letters"],
            "signals": stats["signals"], "warmup_events": stats["warmup_events"],
            "alerts_stored": store.count(), "anomaly_model": model, "lag_at_exit": worker.lag_at_exit,
            "peak_buffered": worker.peak_buffered, "pauses": worker.back_pressure.pauses,
            "seconds": round(time.monotonic() - started, 2)}


def run_workers(n: int, argv: list[str]) -> dict[str, Any]:
    """`--workers N`: N worker processes of the same command line; their summaries added up."""
    cmd = [sys.executable, "-m", "gatewatch.cli", *argv]
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]

    def forward(signum: int, _: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    summaries, failed = [], 0
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            failed += 1
            continue
        lines = out.strip().splitlines()
        if lines:
            summaries.append(json.loads(lines[-1]))
    if failed:
        raise GatewatchError(f"{failed} of {n} workers failed")
    total: dict[str, Any] = {"workers": n}
    for key in ("records", "events", "dead_letters", "warmup_events", "lag_at_exit", "pauses", "ingest_pauses"):
        total[key] = sum(s.get(key) or 0 for s in summaries)
    signals: dict[str, int] = {}
    for s in summaries:
        for t, c in s.get("signals", {}).items():
            signals[t] = signals.get(t, 0) + c
    total["signals"] = signals
    total["alerts_stored"] = max((s.get("alerts_stored", 0) for s in summaries), default=0)
    total["anomaly_model"] = summaries[0]["anomaly_model"] if summaries else "unknown"
    total["seconds"] = max((s.get("seconds", 0) for s in summaries), default=0)
    return total
