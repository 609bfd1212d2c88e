"""Detector throughput and state memory.

  * events/s through the full registered detector set (decode + tokens + detect + alerts + risk) on a
    simulated day with realistic token reuse, beside the same pipeline with no detectors (the cost of
    decoding and token validation alone: the baseline the detectors add to);
  * state bytes per live token at 1,000,000 live tokens, for the detector set as registered (its stores
    swept as the pipeline sweeps them), in all and per store, beside the naive layout — a
    `dict[str, tuple]` keyed by the token's (iss, jti) string.

Usage: .venv/bin/python bench/detectors.py [--rate R] [--live N]. Rewrites "Detectors" in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine_header, write_section  # noqa: E402
from detectors import DETECTORS  # noqa: E402
from gatewatch.keys import TokenMinter, generate_keys  # noqa: E402
from gatewatch.pipeline import _EXPIRE_EVERY_SECONDS as EXPIRE_EVERY_SECONDS  # noqa: E402
from gatewatch.pipeline import Pipeline  # noqa: E402
from gatewatch.settings import load_settings  # noqa: E402
from gatewatch.simulate import SimulationSpec, generate  # noqa: E402
from ingest.events import AccessRecord, Event  # noqa: E402
from ingest.tokens import TokenInfo, TokenValidator  # noqa: E402

T0 = 1_795_000_000.0


def settings_for(tmp: Path, keys: Path):
    cfg = tmp / "gatewatch.toml"
    cfg.write_text(f'[keys]\ndecryption_jwks = "{keys}/decryption.jwks.json"\n'
                   f'issuer_jwks = "{keys}/issuer.jwks.json"\n[store]\nurl = "sqlite:///{tmp}/b.db"\n')
    return load_settings(cfg, environ={})


def throughput(settings, lines: list[bytes], detectors: bool) -> float:
    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    pipeline = Pipeline.from_settings(settings, validator)
    if not detectors:
        pipeline.detectors = []
    t = time.perf_counter()
    for i in range(0, len(lines), 5000):
        pipeline.process([(line, None) for line in lines[i:i + 5000]])
    return len(lines) / (time.perf_counter() - t)


def synthetic_events(n: int) -> list[Event]:
    """n live tokens, each used once, with the claims a real token carries (no cryptography)."""
    out = []
    for i in range(n):
        info = TokenInfo(tfp=f"{i:016x}", verdict="ok", encrypted=True, iss="https://idp.example",
                         sub=f"usr_{i:012x}", client_id=f"app-{i % 500}", jti=f"{i:024x}", tid="acme",
                         exp=T0 + 3600, iat=T0, cnf_jkt=None, claims={})
        rec = AccessRecord(event_id=f"ev-{i}", ts="2026-11-18T00:00:00.000Z", gateway="gw", tenant="acme",
                           client_ip=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", method="GET",
                           path="/v1/orders", status=200, user_agent="Mozilla/5.0 (iPhone)", route="orders-api")
        out.append(Event(record=rec, ts=T0 + i / 1000, token=info))
    return out


def sweep(stores: dict, watermark: float) -> None:
    for store in stores.values():
        store.expire(watermark)


def state_bytes(settings, events: list[Event]) -> tuple[float, dict[str, int], dict[str, float]]:
    """Bytes per live token in all stores; entries per store; each store's bytes per live token.

    Stores are swept as the pipeline sweeps them (`Pipeline._expire`): every 60 s of event time, down to
    the watermark (newest event time − the allowed lateness), so "live" is what the pipeline keeps.
    """
    pipeline = Pipeline.from_settings(settings, None)
    stores = pipeline.stores
    newest, last_sweep = float("-inf"), float("-inf")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for ev in events:
        for det in pipeline.detectors:
            det.observe(ev, stores[det.name])
        newest = max(newest, ev.ts)
        if newest - pipeline.lateness_seconds - last_sweep >= EXPIRE_EVERY_SECONDS:
            last_sweep = newest - pipeline.lateness_seconds
            sweep(stores, last_sweep)
    gc.collect()
    after = tracemalloc.take_snapshot()
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    sizes = {name: len(store) for name, store in stores.items()}
    per_store = {}
    for name in list(stores):  # each store's share: what dropping it gives back
        del stores[name]
        gc.collect()
        now = tracemalloc.take_snapshot()
        per_store[name] = sum(s.size_diff for s in after.compare_to(now, "filename")) / len(events)
        after = now
    tracemalloc.stop()
    return total / len(events), sizes, per_store


def naive_bytes(events: list[Event]) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    table = {f"{ev.token.iss}|{ev.token.jti}": (ev.token.sub, ev.token.iat, ev.ts) for ev in events}
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert len(table) == len(events)
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / len(events)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2.0, help="mean events/s of the simulated day")
    ap.add_argument("--live", type=int, default=1_000_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-det-"))
    keys = tmp / "keys"
    generate_keys(keys)
    settings = settings_for(tmp, keys)
    minter = TokenMinter.from_dir(keys, issuer="https://idp.example", audience="api://gateway")
    spec = SimulationSpec(seed=3, events=None, duration_seconds=86_400, rate=args.rate, attack_every=20_000)
    lines, tokens = [], set()
    for ev in generate(spec, minter):
        lines.append(json.dumps(ev.event).encode())
        if ev.event.get("token"):
            tokens.add(ev.event["token"])
    uses = sum(1 for line in lines if b'"token"' in line)
    with_det = throughput(settings, lines, detectors=True)
    without = throughput(settings, lines, detectors=False)

    events = synthetic_events(args.live)
    per_token, sizes, per_store = state_bytes(settings, events)
    naive = naive_bytes(events)
    del events

    text = "\n".join([
        f"A simulated day (`SimulationSpec(seed=3, duration_seconds=86400, rate={args.rate})`): {len(lines):,} events, "
        f"{len(tokens):,} distinct tokens, {uses / max(len(tokens), 1):.0f} uses per token on average.", "",
        "| pipeline over the simulated day | events/s |", "|---|---:|",
        f"| decode + token validation + all {len(DETECTORS)} registered detectors + alerts + risk (gatewatch) "
        f"| {with_det:,.0f} |",
        f"| decode + token validation only, no detectors (baseline) | {without:,.0f} |", "",
        f"State at {args.live:,} live tokens, each used once, 1,000 new tokens per second of event time, the "
        "stores swept as the pipeline sweeps them (every 60 s of event time, down to the watermark); "
        "tracemalloc, after a full GC:", "",
        "| layout | bytes per live token |", "|---|---:|",
        f"| the registered detectors' state stores (gatewatch) | {per_token:,.0f} |",
        f"| naive: one `dict[str, tuple]` entry per token, (iss, jti) string key | {naive:,.0f} |", "",
        "Entries per store at that point: " + ", ".join(f"`{k}` {v:,}" for k, v in sizes.items()) + ".", "",
        "Bytes per live token, by store: " + ", ".join(f"`{k}` {v:,.0f}" for k, v in per_store.items() if v >= 0.5)
        + " (the others hold nothing here).", "",
        f"Command: `.venv/bin/python bench/detectors.py --rate {args.rate} --live {args.live}`. One process, one core."])
    print(machine_header())
    print(text)
    write_section(ROOT / "BENCHMARKS.md", "Detectors", machine_header() + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
