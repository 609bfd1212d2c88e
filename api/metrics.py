"""Prometheus metrics of one API app: a registry per app (never the global one: tests build many apps).

Two kinds of figure:

* measured here: `gatewatch_risk_lookup_seconds`, a histogram the `GET /v1/risk` handler observes once
  per look-up (buckets from 50 µs to 100 ms: a warm look-up is a dict read);
* read from the store at scrape time by `StoreCollector`: alert gauges, and what each worker last left
  in the meta table under `worker.stats/<worker_id>`:

      {"worker": str, "records": int, "events": int, "dead_letters": {code: int},
       "signals": {alert_type: int}, "lag": {"<topic>/<partition>": int}, "watermark": RFC 3339 | null}

  The `worker` label is the key's `<worker_id>` (unique, so no two series collide). The worker is
  another process and its report is untrusted input here: a malformed field is skipped
  (and logged), never a failed scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.store import AlertStore

log = logging.getLogger(__name__)

WORKER_STATS_PREFIX = "worker.stats/"
RISK_LOOKUP_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


def _parse_time(value: str) -> float:
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError("time without offset")
    return dt.timestamp()


def _counts(value: Any) -> dict[str, float]:
    """A `{name: number}` object, non-numeric entries dropped (bools are not counts)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class StoreCollector(Collector):
    """Alert gauges and worker figures, read from the store each scrape.

    `store` is a callable so that a scrape reads whatever store the app holds now.
    """

    def __init__(self, store: Callable[[], AlertStore], clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock  # wall clock: a report's age is operational, not event time

    def collect(self) -> Iterator[Metric]:
        store = self.store()
        yield from self._alerts(store)
        yield from self._workers(store)

    def _alerts(self, store: AlertStore) -> Iterator[Metric]:
        alerts = GaugeMetricFamily("gatewatch_alerts", "Stored alerts by type and status, suppressed ones included.",
                                   labels=["type", "status"])
        suppressed = GaugeMetricFamily("gatewatch_alerts_suppressed",
                                       "Stored alerts muted by a suppression rule (also in gatewatch_alerts).")
        muted = 0
        for (type_, status), (n, m) in store.count_by_type_status().items():
            alerts.add_metric([type_, status], n)
            muted += m
        suppressed.add_metric([], muted)
        yield alerts
        yield suppressed

    def _workers(self, store: AlertStore) -> Iterator[Metric]:
        records = CounterMetricFamily("gatewatch_events_in", "Records the worker read from Kafka.",
                                      labels=["worker"])
        events = CounterMetricFamily("gatewatch_events_decoded", "Records the worker decoded into events.",
                                     labels=["worker"])
        dead = CounterMetricFamily("gatewatch_dead_letters", "Records sent to the dead-letter topic, by error code.",
                                   labels=["worker", "code"])
        signals = CounterMetricFamily("gatewatch_signals", "Detector signals, by alert type.",
                                      labels=["worker", "type"])
        lag = GaugeMetricFamily("gatewatch_consumer_lag", "Records behind the partition's end offset.",
                                labels=["worker", "topic", "partition"])
        watermark = GaugeMetricFamily("gatewatch_watermark_seconds", "The worker's event-time watermark (epoch s).",
                                      labels=["worker"])
        age = GaugeMetricFamily("gatewatch_worker_report_age_seconds", "Seconds since the worker last reported.",
                                labels=["worker"])
        now = self.clock()
        for key, stats, updated in store.list_meta(WORKER_STATS_PREFIX):
            worker = key.removeprefix(WORKER_STATS_PREFIX)  # the key, unlike the value, is unique
            try:
                age.add_metric([worker], max(0.0, now - _parse_time(updated)))
            except ValueError:
                log.warning("meta %s: unreadable update time", key)
            for family, field in ((records, "records"), (events, "events")):
                if (n := _number(stats.get(field))) is not None:
                    family.add_metric([worker], n)
            for code, n in _counts(stats.get("dead_letters")).items():
                dead.add_metric([worker, code], n)
            for type_, n in _counts(stats.get("signals")).items():
                signals.add_metric([worker, type_], n)
            for where, n in _counts(stats.get("lag")).items():
                topic, sep, partition = where.rpartition("/")
                if sep and topic:
                    lag.add_metric([worker, topic, partition], n)
            mark = stats.get("watermark")
            if isinstance(mark, str):
                try:
                    watermark.add_metric([worker], _parse_time(mark))
                except ValueError:
                    log.warning("meta %s: unreadable watermark", key)
        yield from (records, events, dead, signals, lag, watermark, age)


class ApiMetrics:
    """The app's registry and the instruments routes observe."""

    def __init__(self, store: Callable[[], AlertStore], clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.risk_lookup_seconds = Histogram(
            "gatewatch_risk_lookup_seconds", "Time to answer GET /v1/risk (store look-up and answer).",
            buckets=RISK_LOOKUP_BUCKETS, registry=self.registry)
        self.registry.register(StoreCollector(store, clock))

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["RISK_LOOKUP_BUCKETS", "WORKER_STATS_PREFIX", "ApiMetrics", "StoreCollector"]
