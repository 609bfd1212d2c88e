"""Replay throughput on a realistic day, beside its ceilings and a naive rule engine, with a per-stage profile.

One run, one process, one core, the same file for every figure:
  * the day: `SimulationSpec(seed=12, 24 h, rate 1.7)` with every attack, an encrypted access token on
    each access line that carries one (ECDH-ES+A256KW / A256GCM around ES256), the simulator's admin
    allow-lists configured; a behaviour model trained first on another simulated clean day (seed 5);
  * decode-only ceiling: `msgspec` decoding each line into the wire records, nothing else;
  * decode + token-cache ceiling: the same plus `TokenValidator.check` with every token already cached;
  * cold token validation: each distinct token decrypted and verified once (no cache), the cost any
    engine pays once per token, whatever it does next;
  * gatewatch: `gatewatch.replay.replay` (what `gatewatch replay` runs) through the full pipeline with
    the model loaded, alerts collected — its events/s is the headline figure;
  * naive: bench/naive_engine.py on the same lines with a fresh validator (same joserfc cache);
  * profile: the same replay again with each stage timed (read, decode, token check — cold and warm —,
    each detector, behaviour windows and model, detection loop with risk and alerts); the timers add
    their own cost, so shares matter here, not the total.

Usage: .venv/bin/python bench/replay.py [--rate 1.7] [--out-dir DIR] [--baseline-tree DIR]. Rewrites "Replay"
in BENCHMARKS.md. `--baseline-tree` (a `git worktree` of an older commit) adds a before/after table: both
trees replay the day in fresh processes, interleaved.
`--only-gatewatch FILE` replays FILE with the code on PYTHONPATH and prints events/s (used to measure
an older commit on the same file).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine_header, write_section  # noqa: E402
from gatewatch.heap import freeze_start_up  # noqa: E402
from gatewatch.pipeline import Pipeline  # noqa: E402
from gatewatch.replay import replay  # noqa: E402
from gatewatch.settings import load_settings  # noqa: E402
from ingest.events import AccessRecord, TokenRecord  # noqa: E402
from ingest.tokens import TokenValidator  # noqa: E402

DAY = 86_400


def prepare(out: Path, rate: float) -> Path:
    """Keys, config (with the simulator's admin allow-lists), the attacked day and a model of a clean day."""
    from detectors.traffic_ip_allowlist import route_allow_lists
    from gatewatch.keys import TokenMinter, generate_keys
    from gatewatch.simulate import ADMIN_ALLOWED_CIDRS, SimulationSpec, generate
    from gatewatch.train import train

    keys = out / "keys"
    generate_keys(keys)
    lines = [f'[keys]\ndecryption_jwks = "{keys}/decryption.jwks.json"\nissuer_jwks = "{keys}/issuer.jwks.json"',
             f'[store]\nurl = "sqlite:///{out}/bench.db"', f'[model]\npath = "{out}/model"']
    for tenant, routes in route_allow_lists(ADMIN_ALLOWED_CIDRS).items():
        lines.append(f"[detectors.traffic_ip_not_allowed.routes.{tenant}]")
        lines += [f"{route} = {json.dumps(cidrs)}" for route, cidrs in routes.items()]
    cfg = out / "gatewatch.toml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    minter = TokenMinter.from_dir(keys, issuer="https://idp.example", audience="api://gateway")
    for name, spec in (("day.jsonl", SimulationSpec(seed=12, events=None, duration_seconds=DAY, rate=rate)),
                       ("clean.jsonl", SimulationSpec(seed=5, events=None, duration_seconds=DAY, rate=rate,
                                                      attacks=()))):
        with open(out / name, "w", encoding="utf-8") as f:
            for ev in generate(spec, minter):
                f.write(json.dumps(ev.event, separators=(",", ":")) + "\n")
    from gatewatch.replay import read_jsonl

    settings = load_settings(cfg, environ={})
    train(read_jsonl([str(out / "clean.jsonl")]), settings,
          TokenValidator.from_config(settings.tokens, settings.keys, settings.limits), out=out / "model", seed=0)
    return cfg


def fresh_pipeline(settings) -> tuple[Pipeline, TokenValidator]:
    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    return Pipeline.from_settings(settings, validator), validator


def gatewatch_rate(settings, lines: list[bytes]) -> tuple[float, Counter[str]]:
    pipeline, _ = fresh_pipeline(settings)
    assert pipeline.behaviour is not None and pipeline.behaviour.status == "active"
    records = [(line, None) for line in lines]
    freeze_start_up()  # as `gatewatch replay` does once its pipeline is built
    result = replay(pipeline, records)
    return result.events_per_second, Counter(a.type for a in result.alerts.values())


def ceilings(settings, lines: list[bytes]) -> dict[str, float]:
    decoder = msgspec.json.Decoder(AccessRecord | TokenRecord)
    t = time.perf_counter()
    records = [decoder.decode(line) for line in lines]
    decode = len(lines) / (time.perf_counter() - t)
    from ingest.decode import parse_ts

    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    distinct = {r.token for r in records if r.token}
    t = time.perf_counter()
    for token in distinct:
        validator.check(token, 0.0)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    for line in lines:
        r = decoder.decode(line)
        if r.token:
            validator.check(r.token, parse_ts(r.ts))
    cached = len(lines) / (time.perf_counter() - t)
    return {"decode": decode, "cached": cached, "cold_seconds": cold, "distinct_tokens": len(distinct)}


def git_head(tree: Path) -> str:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def compare_trees(baseline: Path, cfg: Path, repeats: int) -> str:
    """This tree's replay beside an older commit's on the same file: each in a fresh process, interleaved
    (A B A B ...), so a drift of the machine's speed hits both; medians and ranges."""
    def once(tree: Path) -> float:
        out = subprocess.run([sys.executable, str(tree / "bench" / "replay.py"), "--config", str(cfg),
                              "--only-gatewatch", str(cfg.parent / "day.jsonl")],
                             capture_output=True, text=True, check=True).stdout
        return float(json.loads(out.strip().splitlines()[-1])["events_per_second"])

    runs: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(repeats):
        runs["before"].append(once(baseline))
        runs["after"].append(once(ROOT))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({"before_after": runs}))
    return f"""
Before and after, each replay in a fresh process, interleaved, {repeats} runs each (median, range):

| tree | events/s | range |
|---|---:|---|
| before: commit {git_head(baseline)} | {med["before"]:,.0f} | {min(runs["before"]):,.0f}–{max(runs["before"]):,.0f} |
| after: commit {git_head(ROOT)} (this run) | {med["after"]:,.0f} | {min(runs["after"]):,.0f}–{max(runs["after"]):,.0f} |

After / before: {med["after"] / med["before"]:.2f}×.
"""


def naive_rate(settings, lines: list[bytes]) -> tuple[float, dict[str, int]]:
    from bench.naive_engine import run

    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    t = time.perf_counter()
    found = run(lines, validator)
    return len(lines) / (time.perf_counter() - t), found


def profile(settings, lines: list[bytes], batch: int = 5_000) -> tuple[float, Counter[str]]:
    """Seconds per stage of one replay (timers wrapped around each stage; their cost shows up too)."""
    pipeline, validator = fresh_pipeline(settings)
    acc: Counter[str] = Counter()
    clock = time.perf_counter
    for det in pipeline.detectors:
        def timed(event, state, _f=det.observe, _n=f"detector {det.name}"):
            t0 = clock()
            try:
                return _f(event, state)
            finally:
                acc[_n] += clock() - t0
        det.observe = timed  # type: ignore[method-assign]
    beh = pipeline.behaviour
    assert beh is not None
    observe, flush = beh.observe, beh.flush

    def timed_observe(events):
        t0 = clock()
        observe(events)
        acc["behaviour: window features"] += clock() - t0

    def timed_flush(wm):
        t0 = clock()
        try:
            return flush(wm)
        finally:
            acc["behaviour: close windows + model"] += clock() - t0
    beh.observe, beh.flush = timed_observe, timed_flush  # type: ignore[method-assign]
    check, seen = validator.check, set()

    def timed_check(token, at):
        t0 = clock()
        try:
            return check(token, at)
        finally:
            stage = "token check, warm (cached)" if token in seen else "token check, cold (decrypt + verify)"
            seen.add(token)
            acc[stage] += clock() - t0
    validator.check = timed_check  # type: ignore[method-assign]
    t_all = clock()
    t0 = clock()
    records = [(line, None) for line in lines]
    acc["read (lines in memory)"] += clock() - t0
    for i in range(0, len(records), batch):
        t0 = clock()
        events, dead = pipeline.decode(records[i:i + batch])
        acc["decode (all, token check included)"] += clock() - t0
        t0 = clock()
        pipeline.process_decoded(events, dead)
        acc["detect + score (all)"] += clock() - t0
    t0 = clock()
    pipeline.finish()
    acc["behaviour: close windows + model"] += clock() - t0
    return clock() - t_all, acc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1.7)
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--config", type=Path, default=None, help="use this prepared config (its day.jsonl beside it)")
    ap.add_argument("--only-gatewatch", type=Path, default=None)
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="a checkout of an older commit (git worktree): replayed beside this tree, interleaved")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each tree with --baseline-tree")
    args = ap.parse_args(argv)
    if args.only_gatewatch:
        settings = load_settings(args.config, environ={})
        lines = args.only_gatewatch.read_bytes().splitlines()
        pipeline, _ = fresh_pipeline(settings)
        records = [(line, None) for line in lines]
        try:  # as `gatewatch replay` does (an older tree measured with --baseline-tree may not have it)
            from gatewatch.heap import freeze_start_up as settle
        except ImportError:
            def settle() -> None:
                pass
        settle()
        t = time.perf_counter()
        replay(pipeline, records)
        print(json.dumps({"events": len(lines), "events_per_second": round(len(lines) / (time.perf_counter() - t))}))
        return 0
    out = args.out_dir or Path(tempfile.mkdtemp(prefix="gw-bench-replay-"))
    cfg = args.config or prepare(out, args.rate)
    settings = load_settings(cfg, environ={})
    lines = (cfg.parent / "day.jsonl").read_bytes().splitlines()
    kinds = Counter(b'"kind":"access"' in line for line in lines)
    with_token = sum(1 for line in lines if b'"token":"' in line)

    before_after = compare_trees(args.baseline_tree, cfg, args.repeats) if args.baseline_tree else ""
    ceil = ceilings(settings, lines)
    naive, naive_found = naive_rate(settings, lines)
    gw, alerts = gatewatch_rate(settings, lines)
    prof_total, acc = profile(settings, lines)
    print(json.dumps({"events": len(lines), "gatewatch": round(gw), "naive": round(naive),
                      "decode_ceiling": round(ceil["decode"]), "cached_token_ceiling": round(ceil["cached"]),
                      "cold_token_seconds": round(ceil["cold_seconds"], 2), "distinct_tokens": ceil["distinct_tokens"],
                      "alerts": dict(alerts), "naive_findings": naive_found}, indent=1))

    baseline_flag = f" --baseline-tree CHECKOUT_OF_{git_head(args.baseline_tree)}" if args.baseline_tree else ""
    detect = acc["detect + score (all)"]
    decode_rest = (acc["decode (all, token check included)"] - acc["token check, warm (cached)"]
                   - acc["token check, cold (decrypt + verify)"])
    in_detect = sum(v for k, v in acc.items() if k.startswith(("detector ", "behaviour")))
    rows = "\n".join(f"| {k} | {v:.2f} | {v / prof_total * 100:.1f} % |" for k, v in acc.most_common()
                     if not k.endswith("(all)") and not k.endswith("(all, token check included)"))
    body = f"""{machine_header()}

A simulated day: {len(lines):,} events ({kinds[True]:,} access, {kinds[False]:,} token; {with_token:,} lines carry a
token, {ceil["distinct_tokens"]:,} distinct tokens, each an ES256 JWS inside an ECDH-ES+A256KW/A256GCM JWE), every attack
type; behaviour model trained on another simulated clean day. Same file, same process, one core:

| on the day | events/s |
|---|---:|
| **gatewatch replay** (full pipeline, model loaded, alerts collected) | **{gw:,.0f}** |
| naive single-dict rule engine (bench/naive_engine.py; no model, no grouping, fixed windows) | {naive:,.0f} |
| ceiling: msgspec decode of the records only | {ceil["decode"]:,.0f} |
| ceiling: decode + token check with every token cached | {ceil["cached"]:,.0f} |

gatewatch / naive: {gw / naive:.2f}×. Cold token validation (each distinct token decrypted and verified once, what
any engine pays) took {ceil["cold_seconds"]:.2f} s of the day: {ceil["cold_seconds"] / (len(lines) / gw) * 100:.0f} % of
gatewatch's replay time; at that cost alone the day could not replay faster than
{len(lines) / ceil["cold_seconds"]:,.0f} events/s.
Alerts raised: {", ".join(f"{k} {v}" for k, v in sorted(alerts.items()))}. Naive findings (distinct type + entity):
{", ".join(f"{k} {v}" for k, v in sorted(naive_found.items()))}.

Where the time goes (one replay with a timer around each stage; {prof_total:.1f} s in all with the timers' own
cost; detection + scoring {detect:.2f} s = {detect / prof_total * 100:.0f} %, of which detectors and the behaviour
model {in_detect:.2f} s, the rest the loop, risk and alerts):

| stage | seconds | share |
|---|---:|---:|
{rows}
| decode, the rest (msgspec, field checks, event objects) | {decode_rest:.2f} | {decode_rest / prof_total * 100:.1f} % |
| detect loop, risk, alerts, state expiry (detect + score minus the stages above) | {detect - in_detect:.2f} | \
{(detect - in_detect) / prof_total * 100:.1f} % |

{before_after}
Command: `.venv/bin/python bench/replay.py --rate {args.rate}{baseline_flag}`."""
    write_section(ROOT / "BENCHMARKS.md", "Replay", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
