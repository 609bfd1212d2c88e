"""The behaviour model: feature extraction, scoring and training.

  * window features: events/s through `WindowFeatures` (observe + close on the watermark) and window rows
    produced per second, at 1, 100 and 10,000 events per call — one event per call is the per-event
    design the batch columns avoid;
  * scoring: windows/s through `AnomalyModel.score` (the four forests) and through the scorer's whole
    step (score, calibrate, excess, gates) at 1, 100 and 10,000 windows per call;
  * training: `gatewatch train` (decode + features + fit + write) on a simulated week, with its phases.

Usage: .venv/bin/python bench/anomaly.py [--rate R] [--days D]. Rewrites "Anomaly model" in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine_header, write_section  # noqa: E402
from gatewatch.keys import TokenMinter, generate_keys  # noqa: E402
from gatewatch.replay import read_jsonl  # noqa: E402
from gatewatch.settings import load_settings  # noqa: E402
from gatewatch.simulate import SimulationSpec, generate  # noqa: E402
from gatewatch.train import decoded_batches, train, training_table  # noqa: E402
from ingest.decode import EventDecoder  # noqa: E402
from ingest.tokens import TokenValidator  # noqa: E402
from scoring.anomaly import AnomalyModel  # noqa: E402
from scoring.behaviour import BehaviourScorer  # noqa: E402
from scoring.features import FEATURES, WindowFeatures, WindowTable  # noqa: E402

SIZES = (1, 100, 10_000)


def settings_for(tmp: Path, keys: Path):
    cfg = tmp / "gatewatch.toml"
    cfg.write_text(f'[keys]\ndecryption_jwks = "{keys}/decryption.jwks.json"\n'
                   f'issuer_jwks = "{keys}/issuer.jwks.json"\n[store]\nurl = "sqlite:///{tmp}/b.db"\n'
                   f'[model]\npath = "{tmp}/model"\n')
    return load_settings(cfg, environ={})


def simulate(path: Path, minter: TokenMinter, *, seed: int, days: float, rate: float) -> int:
    n = 0
    with path.open("wb") as out:
        for ev in generate(SimulationSpec(seed=seed, events=None, duration_seconds=days * 86_400, rate=rate,
                                          attacks=()), minter):
            out.write(json.dumps(ev.event, separators=(",", ":")).encode() + b"\n")
            n += 1
    return n


def feature_rate(events: list, size: int) -> tuple[float, float, int]:
    """(events/s, window rows/s, events used) with `size` events per observe + close."""
    wf = WindowFeatures()
    top, rows = -math.inf, 0
    t = time.perf_counter()
    for i in range(0, len(events), size):
        batch = events[i:i + size]
        wf.observe(batch)
        top = max(top, max(e.ts for e in batch))
        rows += len(wf.close(top - wf.lateness_seconds))
    rows += len(wf.close(math.inf))
    dt = time.perf_counter() - t
    return len(events) / dt, rows / dt, len(events)


def scoring_rate(fn, table: WindowTable, size: int, limit: int) -> tuple[float, int]:
    """(windows/s, windows used) with `size` windows per call of `fn(table rows)`."""
    n = min(len(table), limit)
    t = time.perf_counter()
    for i in range(0, n, size):
        fn(table.rows(i, min(i + size, n)))
    return n / (time.perf_counter() - t), n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1.0, help="mean events/s of the simulated traffic")
    ap.add_argument("--days", type=float, default=7.0, help="days of history to train on")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-anomaly-"))
    try:
        return run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the simulated week is ~0.5 GB of JSONL


def run(args: argparse.Namespace, tmp: Path) -> int:
    keys = tmp / "keys"
    generate_keys(keys)
    settings = settings_for(tmp, keys)
    minter = TokenMinter.from_dir(keys, issuer="https://idp.example", audience="api://gateway")
    validator = lambda: TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)  # noqa: E731

    # Training on a simulated week, through the command's own function (decode + features + fit + write).
    week = tmp / "week.jsonl"
    n_week = simulate(week, minter, seed=3, days=args.days, rate=args.rate)
    summary = train(read_jsonl([str(week)]), settings, validator())
    # The same phases once more, timed apart.
    t = time.perf_counter()
    codes: Counter[str] = Counter()
    batches = list(decoded_batches(read_jsonl([str(week)]), EventDecoder(validator=validator(),
                                                                         max_event_bytes=65_536), codes))
    t_decode = time.perf_counter() - t
    t = time.perf_counter()
    table, _, _, _ = training_table(batches, window_seconds=60, rolling_windows=15, lateness_seconds=30,
                                    entity_ttl_seconds=7 * 86_400)
    t_features = time.perf_counter() - t
    active = table.X[:, FEATURES.index("requests_rolling")] >= 20
    t = time.perf_counter()
    model = AnomalyModel().fit(table.X[active], table.kind[active])
    t_fit = time.perf_counter() - t
    del batches

    # Features and scoring on a separate simulated day.
    day = tmp / "day.jsonl"
    simulate(day, minter, seed=4, days=1, rate=args.rate)
    events = [e for b in decoded_batches(read_jsonl([str(day)]), EventDecoder(validator=validator(),
                                                                               max_event_bytes=65_536), codes)
              for e in b]
    feats = {size: feature_rate(events if size > 1 else events[:20_000], size) for size in SIZES}
    wf = WindowFeatures()
    wf.observe(events)
    day_table = wf.close(math.inf)
    scorer = BehaviourScorer(model=model)
    forest = {size: scoring_rate(lambda t: model.score(t.X, t.kind), day_table, size, 2_000 if size == 1 else 10**6)
              for size in SIZES}
    full = {size: scoring_rate(scorer.signals_for, day_table, size, 2_000 if size == 1 else 10**6) for size in SIZES}

    lines = [
        f"Training history: a simulated week of clean traffic (`SimulationSpec(seed=3, duration_seconds="
        f"{args.days:g} days, rate={args.rate:g}, attacks=())`), {n_week:,} events → {summary['windows']:,} "
        f"entity windows, {summary['rows']['total']:,} of them active enough to train on (≥ 20 requests in "
        f"15 min): {', '.join(f'{k} {v:,}' for k, v in summary['rows'].items() if k != 'total')}.", "",
        "| `gatewatch train` on the week | seconds |", "|---|---:|",
        f"| whole command (decode + features + fit 4 forests of 200 trees + write artifact) | "
        f"{summary['seconds']:,.1f} |",
        f"| its phases, timed apart: decode (JSON, token decryption with the cache) | {t_decode:,.1f} |",
        f"| window features | {t_features:,.1f} |",
        f"| fit + calibrate (4 forests) | {t_fit:,.1f} |", "",
        f"Features and scoring on another simulated day ({len(events):,} events, {len(day_table):,} windows):", "",
        "| per call | features: events/s | features: window rows/s | forests `score`: windows/s | "
        "scorer step (score + calibrate + excess + gates): windows/s |", "|---:|---:|---:|---:|---:|",
        *[f"| {size:,} {'event / window' if size == 1 else 'events / windows'} | {feats[size][0]:,.0f} | "
          f"{feats[size][1]:,.0f} | {forest[size][0]:,.0f} | {full[size][0]:,.0f} |" for size in SIZES], "",
        "One event or one window per call is the per-event design the batch columns avoid (its figures are from "
        f"the first {feats[1][2]:,} events and {forest[1][1]:,} windows); the pipeline feeds whole batches and "
        "scores every window that a watermark closes in one call.", "",
        f"Command: `.venv/bin/python bench/anomaly.py --rate {args.rate:g} --days {args.days:g}`. One process, "
        "one core (sklearn `n_jobs=None`).",
    ]
    text = "\n".join(lines)
    print(machine_header())
    print(text)
    write_section(ROOT / "BENCHMARKS.md", "Anomaly model", machine_header() + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
