"""`gatewatch replay --jobs N`: one offline replay on N cores, with exactly the alerts of `--jobs 1`.

Detection is split the way keyed workers split it (ingest/routing.py): one pipeline per key kind, and each
of the N **detect jobs** (processes) owns the keys whose CRC-32 falls to it, so every detector's state for
a key lives in one job. Scoring — risk and alerts, which combine every detector's signals per entity — is
order-dependent, so it stays in one place: this process, the **scorer**, merges the jobs' signals back
into the order one pipeline raises them and scores them with the same code (`Pipeline.score_batch`).

What makes it exact:
* every job reads and decodes the whole input in the same batches as a one-process replay, so each knows
  every batch's event time: its detectors' state expires as if they had seen every event, and the
  behaviour windows close at the same batches;
* a signal carries where one pipeline would have raised it — (batch, position of its event in the
  batch's event-time order, detector's place in `detectors.DETECTORS`, key kind's place in the detector's
  `partition_by`, order within) — and the behaviour model's come after the batch's detector signals, in
  the model's own fixed order (window, entity kind, tenant, value);
* a token event that names no principal goes to every job (as it goes to every partition live), and
  the signals it gives are kept once.

The cost: each job decodes every record and validates every token (≈ 2 s a day of bench traffic, see
BENCHMARKS.md), so N jobs pay that N times over; detection, the bulk, is divided. Files only: a job
re-reads its input, so stdin and a topic range (whose fetch order is not repeatable) take `--jobs 1`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from detectors import DETECTORS, Signal
from gatewatch.pipeline import Pipeline
from gatewatch.replay import BATCH, DeadLetterLog, ReplayResult, decoded_batches, read_jsonl, use_format
from gatewatch.settings import Settings
from ingest.events import Event
from ingest.routing import PRINCIPAL, partition_of, principal_key, side_keys
from scoring.features import KINDS

_DETECTOR_RANK = {cls.name: i for i, cls in enumerate(DETECTORS)}
_KIND_RANK = {cls.name: {kind: i for i, kind in enumerate(cls.partition_by)}
              for cls in DETECTORS}

# Where one pipeline raises a detector signal: (position in the batch, detector, key kind, order within).
Tag = tuple[int, int, int, int]


@dataclass
class JobBatch:
    records: int
    events: int
    max_ts: float  # the batch's largest event time (-inf: none)
    found: list[tuple[Tag, bool, Signal]]  # (tag, from an event sent to every job, signal)
    model: list[Signal]  # the behaviour model's, for this job's entities


@dataclass
class JobOutput:
    batches: list[JobBatch] = field(default_factory=list)
    final: list[Signal] = field(default_factory=list)  # behaviour windows closed at the end of the input
    # dead letters by code: decode errors (job 0 only) and detector errors; the entries went to the job's spool
    dead_letter_codes: Counter[str] = field(default_factory=Counter)
    anomaly_model: str = "silent"


def _model_order(signal: Signal) -> tuple[str, int, str, str]:
    """The behaviour model's own order of its signals (scoring/anomaly.py `signals_for`)."""
    entity = signal.entities[0]
    return (str(signal.figures.get("window_start", "")), KINDS.index(entity.kind), signal.tenant, entity.value)


def _owners(event: Event, principal: bool, side: frozenset[str], jobs: int) -> dict[str, int | None]:
    """Per key kind: the job that owns this event's key (None: every job; absent: no key of that kind)."""
    out: dict[str, int | None] = {}
    if principal:
        key = principal_key(event)
        out[PRINCIPAL] = None if key is None else partition_of(key, jobs)
    if side:
        for kind, key in side_keys(event, side):
            out[kind] = partition_of(key, jobs)
    return out


def detect_job(settings: Settings, paths: list[str], jobs: int, job: int, batch_size: int = BATCH,
               spool: str | None = None, log_format: str = "gatewatch") -> JobOutput:
    """One detect job: the whole input (in `log_format`) decoded, this job's keys detected; signals tagged for
    the scorer. Its dead letters are counted and, with `spool`, written to that file as they occur (never kept)."""
    with open(spool, "w", encoding="utf-8") if spool else contextlib.nullcontext() as dlq:
        return _detect_job(settings, paths, jobs, job, batch_size, DeadLetterLog(dlq), log_format)


def _detect_job(settings: Settings, paths: list[str], jobs: int, job: int, batch_size: int,
                dead: DeadLetterLog, log_format: str) -> JobOutput:
    from gatewatch.heap import freeze_start_up
    from gatewatch.run import keyed_pipelines
    from ingest.tokens import TokenValidator

    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    pipelines = keyed_pipelines(settings, validator)
    decoder = pipelines[PRINCIPAL]
    use_format(decoder, settings.ingest, log_format)
    out = JobOutput(dead_letter_codes=dead.codes)
    if decoder.behaviour is not None:
        out.anomaly_model = decoder.behaviour.status
    freeze_start_up()
    principal, side = PRINCIPAL in pipelines, frozenset(k for k in pipelines if k != PRINCIPAL)
    # every job decodes everything; the decode dead letters are job 0's to report (else they would count N times)
    decode_dead = dead if job == 0 else (lambda _: None)
    for records, events in decoded_batches(decoder, read_jsonl(paths), batch_size, decode_dead):
        ordered = sorted(range(len(events)), key=lambda i: events[i].ts)  # stable: arrival order on ties
        rank = {i: pos for pos, i in enumerate(ordered)}
        owners = [_owners(e, principal, side, jobs) for e in events]
        max_ts = max((e.ts for e in events), default=float("-inf"))
        found: list[tuple[Tag, bool, Signal]] = []
        model: list[Signal] = []
        for kind, pipeline in pipelines.items():
            mine = [i for i in range(len(events)) if kind in owners[i] and owners[i][kind] in (None, job)]
            by_time = sorted(mine, key=rank.__getitem__)
            signals, behaviour, result = pipeline.detect_share(
                [events[i] for i in by_time], [rank[i] for i in by_time], [events[i] for i in mine], max_ts)
            for d in result.dead_letters:
                dead(d)
            model += behaviour
            for seq, (pos, name, signal) in enumerate(signals):
                broadcast = kind == PRINCIPAL and owners[ordered[pos]][kind] is None
                tag = (pos, _DETECTOR_RANK[name], _KIND_RANK[name].get(kind, 0), seq)
                found.append((tag, broadcast, signal))
        out.batches.append(JobBatch(records, len(events), max_ts, found, model))
    for pipeline in pipelines.values():
        if pipeline.behaviour is not None:
            out.final += pipeline.behaviour.flush(float("inf"))
    return out


def _run_job(args: tuple[Any, list[str], int, int, int, str | None, str]) -> JobOutput:
    return detect_job(*args)


def replay_jobs(settings: Settings, paths: list[str], jobs: int, *, batch_size: int = BATCH,
                dlq: IO[str] | None = None, log_format: str = "gatewatch") -> ReplayResult:
    """The replay of `paths` by `jobs` detect jobs and this process scoring; the alerts of `--jobs 1`.

    Each job writes its dead letters to a spool file of its own as they occur and returns only their counts;
    the spools are then copied into `dlq` (when given) in job order, and the counts added up."""
    started = time.perf_counter()  # throughput for people; nothing detected depends on it
    scorer = Pipeline.from_settings(settings, None)  # its scoring half only: signals come from the jobs
    ctx = multiprocessing.get_context("fork")  # the jobs inherit the imported code; nothing to pickle but args
    with contextlib.ExitStack() as stack:
        spools: list[str | None] = [None] * jobs
        if dlq is not None:
            spool_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="gatewatch-dlq-"))
            spools = [str(Path(spool_dir) / f"job-{j}.jsonl") for j in range(jobs)]
        with ctx.Pool(jobs) as pool:
            outputs = pool.map(_run_job, [(settings, paths, jobs, j, batch_size, spools[j], log_format)
                                          for j in range(jobs)])
        if dlq is not None:
            for spool in spools:
                with open(spool, encoding="utf-8") as entries:  # type: ignore[arg-type]
                    shutil.copyfileobj(entries, dlq)
    out = ReplayResult(anomaly_model=outputs[0].anomaly_model)
    for job in outputs:
        out.dead_letter_codes.update(job.dead_letter_codes)
    for b, first in enumerate(outputs[0].batches):
        signals = merge([o.batches[b].found for o in outputs], [o.batches[b].model for o in outputs])
        result = scorer.score_batch(signals, first.max_ts, first.events)
        out.records += first.records
        out.events += first.events
        for alert in result.alerts:
            out.alerts[alert.id] = alert
    final = sorted((s for o in outputs for s in o.final), key=_model_order)
    for alert in scorer.score_final(final).alerts:
        out.alerts[alert.id] = alert
    out.seconds = time.perf_counter() - started
    return out


def merge(found: list[list[tuple[Tag, bool, Signal]]], model: list[list[Signal]]) -> list[Signal]:
    """The jobs' signals of one batch in one pipeline's order: detectors' by tag, a signal of an event sent
    to every job once, then the behaviour model's."""
    tagged: list[tuple[Tag, Signal]] = []
    seen_broadcast: dict[Tag, list[Signal]] = {}
    for job_found in found:
        for tag, broadcast, signal in job_found:
            if broadcast:
                key = tag[:3]  # the same event, detector and kind, from another job: the same signal
                same = seen_broadcast.setdefault(key, [])
                if signal in same:
                    continue
                same.append(signal)
            tagged.append((tag, signal))
    tagged.sort(key=lambda t: t[0])
    return [s for _, s in tagged] + sorted((s for m in model for s in m), key=_model_order)
