"""End-to-end throughput: `replay` on a simulated file, and one worker on the real broker.

Each figure is measured beside its baseline in the same run:
  * replay with the token cache   vs  the naive way, decrypting and verifying every token (cache off)
  * one worker (decode, detect, alerts and risk to Kafka + SQLite, commit)  vs  a bare consumer that
    only polls the same records (the ceiling the client library sets)

Usage: .venv/bin/python bench/end_to_end.py [--events N]   (needs the broker: deploy/kafka/kafka.sh start)
Prints the figures and rewrites the "End to end" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine_header, write_section  # noqa: E402
from gatewatch.keys import TokenMinter, generate_keys  # noqa: E402
from gatewatch.pipeline import Pipeline  # noqa: E402
from gatewatch.replay import read_jsonl, replay  # noqa: E402
from gatewatch.settings import load_settings  # noqa: E402
from gatewatch.simulate import SimulationSpec, generate, write_jsonl  # noqa: E402
from ingest.tokens import TokenValidator  # noqa: E402


def settings_for(tmp: Path, keys: Path, env: dict[str, str]):
    cfg = tmp / "gatewatch.toml"
    cfg.write_text(f'[keys]\ndecryption_jwks = "{keys}/decryption.jwks.json"\n'
                   f'issuer_jwks = "{keys}/issuer.jwks.json"\n[store]\nurl = "sqlite:///{tmp}/bench.db"\n')
    return load_settings(cfg, environ=env)


def pipeline(settings, cache: bool) -> Pipeline:
    tokens = settings.tokens if cache else settings.tokens.model_copy(update={"cache_size": 0})
    return Pipeline.from_settings(settings, TokenValidator.from_config(tokens, settings.keys, settings.limits))


def timed_replay(settings, path: Path, cache: bool, limit: int | None = None) -> tuple[int, float]:
    records = list(read_jsonl([str(path)]))[:limit]
    p = pipeline(settings, cache)
    t = time.perf_counter()
    result = replay(p, records)
    return result.events, time.perf_counter() - t


def broker_runs(settings, path: Path) -> dict[str, float]:
    from kafka import KafkaConsumer, KafkaProducer

    from api.store import AlertStore
    from gatewatch.sinks import KafkaResultSink, StoreSink
    from gatewatch.topics import ensure_topics
    from gatewatch.worker import Worker, WorkerOptions
    from ingest.kafka_io import make_consumer, make_producer

    k = settings.kafka
    ensure_topics(k)
    lines = [line for line, _ in read_jsonl([str(path)])]
    producer = KafkaProducer(bootstrap_servers=k.bootstrap_servers, acks="all", linger_ms=20,
                             batch_size=256 * 1024)
    t = time.perf_counter()
    for line in lines:
        producer.send(k.access_topic, value=line)
    producer.flush()
    produce_s = time.perf_counter() - t
    producer.close()

    bare = KafkaConsumer(k.access_topic, bootstrap_servers=k.bootstrap_servers, group_id=f"bare-{uuid.uuid4().hex}",
                         enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=k.max_poll_records)
    n, t = 0, time.perf_counter()
    while n < len(lines):
        for msgs in bare.poll(timeout_ms=500).values():
            n += len(msgs)
    bare_s = time.perf_counter() - t
    bare.close()

    out = make_producer(k)
    worker = Worker(consumer=make_consumer(k), topics=[k.access_topic], pipeline=pipeline(settings, True),
                    sinks=[KafkaResultSink(out, alerts_topic=k.alerts_topic, risk_topic=k.risk_topic,
                                           dlq_topic=k.dlq_topic), StoreSink(AlertStore(str(settings.store_path)))],
                    poll_timeout_ms=500, options=WorkerOptions(max_events=len(lines)))
    t = time.perf_counter()
    worker.run()
    worker_s = time.perf_counter() - t
    worker.close()
    out.close()
    return {"records": len(lines), "produce_eps": len(lines) / produce_s, "bare_eps": len(lines) / bare_s,
            "worker_eps": worker.records / worker_s}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--naive-events", type=int, default=5_000, help="events for the slow no-cache baseline")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    keys = tmp / "keys"
    generate_keys(keys)
    tag = uuid.uuid4().hex[:8]
    env = {"GATEWATCH_KAFKA__ACCESS_TOPIC": f"bench{tag}.access", "GATEWATCH_KAFKA__TOKENS_TOPIC": f"bench{tag}.tokens",
           "GATEWATCH_KAFKA__ALERTS_TOPIC": f"bench{tag}.alerts", "GATEWATCH_KAFKA__RISK_TOPIC": f"bench{tag}.risk",
           "GATEWATCH_KAFKA__DLQ_TOPIC": f"bench{tag}.dlq", "GATEWATCH_KAFKA__GROUP_ID": f"bench{tag}"}
    settings = settings_for(tmp, keys, env)
    minter = TokenMinter.from_dir(keys, issuer="https://idp.example", audience="api://gateway")
    path = tmp / "events.jsonl"
    t = time.perf_counter()
    with path.open("w") as f:
        counts = write_jsonl(generate(SimulationSpec(seed=11, events=args.events), minter), f, None)
    sim_s = time.perf_counter() - t

    cached_n, cached_s = timed_replay(settings, path, cache=True)
    naive_n, naive_s = timed_replay(settings, path, cache=False, limit=args.naive_events)
    cached_small_n, cached_small_s = timed_replay(settings, path, cache=True, limit=args.naive_events)
    broker = broker_runs(settings, path)

    rows = [
        ("simulate → JSONL (token minting included)", f"{counts['events']:,}", f"{counts['events'] / sim_s:,.0f}"),
        ("replay, token cache on (gatewatch)", f"{cached_n:,}", f"{cached_n / cached_s:,.0f}"),
        ("replay, first events only, cache on", f"{cached_small_n:,}", f"{cached_small_n / cached_small_s:,.0f}"),
        ("replay, first events only, cache off (naive: decrypt+verify every token)", f"{naive_n:,}",
         f"{naive_n / naive_s:,.0f}"),
        ("broker: produce the file (kafka-python, acks=all)", f"{broker['records']:,}", f"{broker['produce_eps']:,.0f}"),
        ("broker: bare consumer, poll only (baseline ceiling)", f"{broker['records']:,}", f"{broker['bare_eps']:,.0f}"),
        ("broker: one `gatewatch run` worker, results durable + commit", f"{broker['records']:,}",
         f"{broker['worker_eps']:,.0f}"),
    ]
    body = ["| measurement | events | events/s |", "|---|---:|---:|"]
    body += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    body += ["", f"Command: `.venv/bin/python bench/end_to_end.py --events {args.events}`. Simulated traffic of "
             f"`SimulationSpec(seed=11)`: {counts['access']:,} access and {counts['token']:,} token events. "
             "One process, one core; the broker runs on the same machine."]
    text = "\n".join(body)
    print(machine_header())
    print(text)
    write_section(ROOT / "BENCHMARKS.md", "End to end", machine_header() + "\n\n" + text)
    print(json.dumps({"written": str(ROOT / "BENCHMARKS.md")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
