"""`gatewatch train`: history → the pipeline's decoder → window features → the behaviour model artifact.

The features are computed by the same `WindowFeatures` the live `BehaviourScorer` uses, fed in the same
way (batches in arrival order, windows closed on the watermark), so a model is trained on exactly what
it will later be asked to score. Bad records are counted by dead-letter code, never fatal.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from gatewatch.settings import Settings
from ingest.decode import EventDecoder
from ingest.errors import GatewatchError, RecordError
from ingest.events import Event, Source
from ingest.tokens import TokenValidator
from scoring.anomaly import AnomalyModel
from scoring.features import FEATURES, KINDS, WindowFeatures, WindowTable

BATCH = 5_000


def decoded_batches(records: Iterable[tuple[bytes, Source | None]], decoder: EventDecoder, codes: Counter[str],
                    *, batch_size: int = BATCH) -> Iterator[list[Event]]:
    """Decoded events in arrival order, a batch at a time; undecodable records counted in `codes`."""
    batch: list[Event] = []
    for raw, source in records:
        try:
            batch.append(decoder.decode(raw, source))
        except RecordError as err:
            codes[err.code] += 1
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def training_table(batches: Iterable[list[Event]], *, window_seconds: int, rolling_windows: int,
                   lateness_seconds: float, entity_ttl_seconds: int) -> tuple[WindowTable, int, float, float]:
    """Every closed window of the history; also the event count and the first and last event time."""
    wf = WindowFeatures(window_seconds=window_seconds, rolling_windows=rolling_windows,
                        lateness_seconds=lateness_seconds, entity_ttl_seconds=entity_ttl_seconds)
    parts, events, first, last = [], 0, math.inf, -math.inf
    for batch in batches:
        wf.observe(batch)
        events += len(batch)
        ts = [e.ts for e in batch]
        first, last = min(first, min(ts)), max(last, max(ts))
        parts.append(wf.close(last - lateness_seconds))
    parts.append(wf.close(math.inf))
    return WindowTable.concat(parts), events, first, last


def train(records: Iterable[tuple[bytes, Source | None]], settings: Settings, validator: TokenValidator | None, *,
          out: Path | None = None, seed: int | None = None, progress: IO[str] | None = None) -> dict[str, Any]:
    """Fit the behaviour model on `records` and write it to `out` (default `[model] path`); a summary."""
    started = time.monotonic()
    m = settings.model
    target = Path(out) if out is not None else Path(m.path)
    decoder = EventDecoder(validator=validator, max_event_bytes=settings.limits.max_event_bytes)
    codes: Counter[str] = Counter()

    def counted(batches: Iterable[list[Event]]) -> Iterator[list[Event]]:
        seen = 0
        for batch in batches:
            seen += len(batch)
            if progress is not None:
                print(f"\r{seen:,} events decoded  {sum(codes.values()):,} bad records", end="", file=progress,
                      flush=True)
            yield batch

    table, events, first, last = training_table(
        counted(decoded_batches(records, decoder, codes)), window_seconds=m.window_seconds,
        rolling_windows=m.rolling_windows, lateness_seconds=settings.scoring.lateness_seconds,
        entity_ttl_seconds=settings.scoring.anomaly_entity_ttl_seconds)
    if progress is not None:
        print(file=progress)
    active = np.flatnonzero(table.X[:, FEATURES.index("requests_rolling")] >= m.min_requests)
    # A canonical row order (window, kind, entity): the forests' subsamples do not depend on slot numbering.
    order = sorted(active.tolist(), key=lambda i: (int(table.window[i]), int(table.kind[i]), table.tenant[i],
                                                   table.value[i]))
    X, kinds = table.X[order], table.kind[order]
    model = AnomalyModel(n_estimators=m.n_estimators, max_samples=m.max_samples,
                         random_state=m.seed if seed is None else seed, window_seconds=m.window_seconds,
                         rolling_windows=m.rolling_windows, min_requests=m.min_requests).fit(X, kinds)
    if not model.kinds:
        raise GatewatchError(f"not enough history to train: {len(X):,} windows with ≥ {m.min_requests} requests "
                             f"in the rolling span (from {events:,} events); every entity kind needs 64")
    manifest = model.save(target, training_window=(first, last),
                          extra={"source": {"events": events, "bad_records": sum(codes.values()),
                                            "windows": len(table)}})
    return {
        "model": str(target), "sha256": manifest["sha256"], "events": events,
        "bad_records": sum(codes.values()), "bad_record_codes": dict(codes), "windows": len(table),
        "rows": manifest["rows"], "kinds": manifest["kinds"],
        "skipped_kinds": [k for k in KINDS if k not in manifest["kinds"]], "features": len(FEATURES),
        "training_window": {"start": manifest["training_window"]["start"], "end": manifest["training_window"]["end"]},
        "seconds": round(time.monotonic() - started, 2),
    }
