"""`gatewatch simulate`: traffic from `gatewatch.simulate` to a JSONL file and/or the Kafka input topics."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from gatewatch.keys import TokenMinter
from gatewatch.settings import Settings
from gatewatch.simulate import ALL_ATTACKS, SimulationSpec, generate, write_jsonl
from ingest.decode import parse_ts
from ingest.errors import ConfigError, DecodeError, GatewatchError


def _attacks(value: str) -> tuple[str, ...]:
    if value == "all":
        return ALL_ATTACKS
    if value == "none":
        return ()
    names = tuple(a.strip() for a in value.split(",") if a.strip())
    unknown = [a for a in names if a not in ALL_ATTACKS]
    if unknown:
        raise ConfigError(f"unknown attack {unknown[0]!r} (known: {', '.join(ALL_ATTACKS)})")
    return names


def build_spec(args: argparse.Namespace) -> SimulationSpec:
    kwargs: dict[str, Any] = {"seed": args.seed, "rate": args.rate, "tenants": args.tenants,
                              "subjects": args.subjects, "attacks": _attacks(args.attacks),
                              "attack_every": args.attack_every}
    if args.duration is not None:
        kwargs.update(events=None, duration_seconds=args.duration)
    else:
        kwargs["events"] = args.events if args.events is not None else 20_000
    if args.start:
        try:
            kwargs["start"] = parse_ts(args.start)
        except DecodeError:
            raise ConfigError("--start must be an RFC 3339 time with a zone") from None
    for name in ("rate", "tenants", "subjects", "attack_every"):
        if kwargs[name] <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    return SimulationSpec(**kwargs)


def simulate(args: argparse.Namespace, settings: Settings) -> int:
    if not args.out and not args.kafka:
        raise ConfigError("simulate needs --out FILE and/or --kafka")
    spec = build_spec(args)
    keys_dir = Path(args.keys) if args.keys != "keys" else settings.keys.issuer_jwks.parent
    if not (keys_dir / "issuer-private.jwks.json").is_file():
        raise ConfigError(f"no demo keys in {keys_dir} (run `gatewatch keys generate {keys_dir}`)")
    minter = TokenMinter.from_dir(keys_dir, issuer=settings.tokens.issuers[0],
                                  audience=settings.tokens.audiences[0])
    events = generate(spec, minter)
    with ExitStack() as stack:
        if args.kafka:
            events = _to_kafka(events, settings, stack)
        out = sys.stdout if args.out == "-" else (
            stack.enter_context(open(args.out, "w", encoding="utf-8")) if args.out else None)
        labels = stack.enter_context(open(args.labels, "w", encoding="utf-8")) if args.labels else None
        counts = write_jsonl(events, out if out is not None else _Null(), labels)
    print(json.dumps({"simulated": counts}), file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


class _Null:
    def write(self, _: str) -> int:
        return 0


def _to_kafka(events: Any, settings: Settings, stack: ExitStack) -> Any:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from gatewatch.topics import ensure_topics

    k = settings.kafka
    try:
        ensure_topics(k)
        producer = KafkaProducer(bootstrap_servers=k.bootstrap_servers, acks="all", linger_ms=20,
                                 batch_size=256 * 1024, client_id="gatewatch-simulate")
    except KafkaError as exc:
        raise GatewatchError(f"Kafka at {k.bootstrap_servers} unreachable: {type(exc).__name__}") from None
    stack.callback(producer.close)
    stack.callback(producer.flush)
    topics = {"gateway.access": k.access_topic, "gateway.tokens": k.tokens_topic}
    for ev in events:
        producer.send(topics[ev.topic], key=ev.key.encode(),
                      value=json.dumps(ev.event, separators=(",", ":")).encode())
        yield ev
