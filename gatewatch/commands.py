"""The bodies of the CLI commands: build things from settings, run them, report."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gatewatch.heap import freeze_start_up
from gatewatch.settings import Settings, load_settings
from ingest.decode import parse_ts
from ingest.errors import ConfigError, DecodeError, GatewatchError
from ingest.tokens import TokenValidator


def dispatch(args: argparse.Namespace) -> int:
    handler = {
        "run": cmd_run, "serve": cmd_serve, "decide": cmd_decide, "collect": cmd_collect,
        "nginx-config": cmd_nginx_config, "replay": cmd_replay, "train": cmd_train,
        "backtest": cmd_backtest, "simulate": cmd_simulate, "token": cmd_token, "keys": cmd_keys,
    }[args.command]
    return handler(args)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _time_arg(value: str, name: str) -> float:
    try:
        return parse_ts(value)
    except DecodeError:
        raise ConfigError(f"{name} must be an RFC 3339 time with a zone, e.g. 2026-11-28T10:00:00Z") from None


def _pipeline(settings: Settings) -> Any:
    from gatewatch.pipeline import Pipeline

    return Pipeline.from_settings(settings, TokenValidator.from_config(settings.tokens, settings.keys,
                                                                      settings.limits))


def _store(settings: Settings) -> Any:
    from api.store import AlertStore

    path = settings.store_path
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    return AlertStore(str(path))


def _progress() -> Any:
    return sys.stderr if sys.stderr.isatty() else None


# -- run / serve -------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from gatewatch.run import run_keyed, run_single, run_workers

    if args.workers < 1:
        raise ConfigError("--workers must be >= 1")
    settings = _settings(args)  # a bad config fails here, once, not in N children
    if args.workers > 1:
        argv = [a for a in (args.argv or []) if a]
        summary = run_workers(args.workers, [*_without_workers(argv), "--keyed"])
    elif args.keyed or settings.kafka.repartition:
        idle = args.idle_exit if args.idle_exit is not None or args.max_events is None else 5.0
        summary = run_keyed(settings, _store(settings), idle_exit=idle, max_events=args.max_events,
                            progress=sys.stderr.isatty())
    else:
        summary = run_single(settings, _store(settings), idle_exit=args.idle_exit, max_events=args.max_events,
                             progress=sys.stderr.isatty())
    print(json.dumps(summary))
    return 0


def _without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--workers":
            skip = True
            continue
        if a.startswith("--workers="):
            continue
        out.append(a)
    return out


def cmd_decide(args: argparse.Namespace) -> int:
    from api.decision import DecisionEngine
    from api.decision_server import DecisionServer

    settings = _settings(args)
    d = settings.decision
    bind = args.bind or d.bind
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--bind must be HOST:PORT, got {bind!r}")
    store = _store(settings)
    store.risk_staleness_seconds = d.refresh_seconds
    engine = DecisionEngine(store, fail_mode=d.fail_mode, max_token_bytes=settings.limits.max_token_bytes)
    server = DecisionServer(engine, trusted_proxies=d.trusted_proxies, reason_header=d.reason_header,
                            header_timeout_seconds=d.header_timeout_seconds, max_connections=d.max_connections)
    print(f"gatewatch decide: listening on {host}:{port} (fail {d.fail_mode})", file=sys.stderr, flush=True)
    try:
        server.run(host, int(port))
    except OSError as exc:  # the port is taken, the address is not ours
        raise GatewatchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print(f"gatewatch decide: stopped after {sum(server.counts.values())} decisions "
          f"({dict(server.counts)})", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from api.app import create_app
    from api.follow import TriageLog
    from gatewatch.server import serve

    settings = _settings(args)
    bind = args.bind or settings.api.bind
    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--bind must be HOST:PORT, got {bind!r}")
    store = _store(settings)
    limits = {"header_timeout": settings.api.header_timeout_seconds,
              "max_connections": settings.api.max_connections}
    if not settings.api.follow_kafka:
        app = create_app(api_settings=settings.api, store=store)
        serve(app, host=host, port=int(port), **limits)
        return 0
    follower, producer = _follow_kafka(settings, store)
    triage = TriageLog(store=store, follower=follower, timeout_seconds=settings.api.triage_timeout_seconds,
                       publish=lambda key, value: producer.send(
                           settings.kafka.triage_topic, key=key.encode(), value=value).get(timeout=10))
    app = create_app(api_settings=settings.api, store=store, triage=triage, ready_checks={"kafka": follower.ready})
    follower.start()
    try:
        serve(app, host=host, port=int(port), **limits)
    finally:
        follower.stop()
        producer.close()
    return 0


def _follow_kafka(settings: Settings, store: Any) -> tuple[Any, Any]:
    """`[api] follow_kafka`: this replica's follower of the alerts, risk and triage topics, and the
    producer its PATCHes publish with."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from api.follow import ClusterFollower
    from gatewatch.topics import ensure_topics
    from ingest.kafka_io import make_consumer

    k = settings.kafka
    try:
        ensure_topics(k)
        consumer = make_consumer(k, group_id=None, client_id="gatewatch-api-follower")  # no group: assign_at
        producer = KafkaProducer(bootstrap_servers=k.bootstrap_servers, acks="all", retries=5,
                                 client_id="gatewatch-api-triage")
        follower = ClusterFollower(store=store, alerts_topic=k.alerts_topic, risk_topic=k.risk_topic,
                                   triage_topic=k.triage_topic)
        follower.attach(consumer)  # a topic that never shows up: GatewatchError, its own one-line reason
    except KafkaError as exc:
        raise GatewatchError(f"Kafka at {k.bootstrap_servers}: {type(exc).__name__}: {exc}") from None
    return follower, producer


# -- nginx: collect / nginx-config ---------------------------------------------------------------
def cmd_collect(args: argparse.Namespace) -> int:
    import os
    import signal

    from kafka.errors import KafkaError

    from gatewatch.collector import Collector, open_listener, unix_queue_warning
    from gatewatch.topics import ensure_topics
    from ingest.kafka_io import make_producer

    settings = _settings(args)
    try:
        mode = int(args.socket_mode, 8)
    except ValueError:
        raise ConfigError(f"--socket-mode must be octal, got {args.socket_mode!r}") from None
    if args.queue < 1 or args.drain_seconds < 0:
        raise ConfigError("--queue must be >= 1 and --drain-seconds >= 0")
    k = settings.kafka
    try:
        ensure_topics(k)
        producer = make_producer(k)
        for topic in (k.access_topic, k.dlq_topic):  # metadata known now: a send in a later outage does not block
            producer.partitions_for(topic)
    except KafkaError as exc:
        raise GatewatchError(f"Kafka at {k.bootstrap_servers}: {type(exc).__name__}: {exc}") from None
    sock = open_listener(args.listen, mode=mode, rcvbuf=args.rcvbuf)
    warning = unix_queue_warning(args.listen)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    collector = Collector(sock, producer, listen=args.listen, access_topic=k.access_topic, dlq_topic=k.dlq_topic,
                          tag=args.tag, max_event_bytes=settings.limits.max_event_bytes, queue_lines=args.queue,
                          drain_seconds=args.drain_seconds)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: collector.request_stop())
    sys.setswitchinterval(0.001)  # the reader thread gets the GIL back within 1 ms: the socket's queue is short
    print(f"gatewatch collect: listening on {args.listen}, publishing to {k.access_topic}", file=sys.stderr, flush=True)
    try:
        summary = collector.run()
    finally:
        sock.close()
        if args.listen.startswith("unix:"):
            with contextlib.suppress(OSError):
                os.unlink(args.listen[5:])
        producer.close(timeout=0 if collector.lost else 10)
    print(json.dumps(summary))
    return 1 if summary["lost"] else 0


def cmd_nginx_config(args: argparse.Namespace) -> int:
    from gatewatch.nginx_config import NginxOptions, parse_route, render

    settings = _settings(args)
    text = render(NginxOptions(
        upstream=args.upstream, decision=args.decision or settings.decision.bind, collector=args.collector,
        fail=args.fail_mode or settings.decision.fail_mode, fail_status=args.fail_status, listen=args.listen,
        routes=tuple(parse_route(r) for r in args.route), default_tenant=args.default_tenant,
        gateway=args.gateway, trusted_proxies=tuple(args.trusted_proxy), workers=args.workers, tag=args.tag,
        connect_timeout_ms=args.decision_connect_timeout_ms, read_timeout_ms=args.decision_timeout_ms,
        user=args.user, max_token_bytes=settings.limits.max_token_bytes))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


# -- replay / backtest -------------------------------------------------------------------------
def _replay(args: argparse.Namespace, settings: Settings, dlq: str | None = None) -> Any:
    """The replay the arguments ask for; dead letters go to the file `dlq` as they occur (counted either way)."""
    from gatewatch.replay import read_jsonl, read_topic_range, replay, use_format

    log_format = getattr(args, "format", None)  # `replay --format`: files default to gatewatch's own format
    if getattr(args, "jobs", 1) < 1:
        raise ConfigError("--jobs must be 1 or more")

    if args.from_topic:
        if getattr(args, "jobs", 1) > 1:
            raise ConfigError("--jobs needs files: a topic range is read in no repeatable order")
        if args.paths:
            raise ConfigError("give PATHs or --from-topic, not both")
        if not args.since:
            raise ConfigError("--from-topic needs --since")
        until = _time_arg(args.until, "--until") if args.until else None
        records = read_topic_range(settings.kafka, args.from_topic, _time_arg(args.since, "--since"), until)
    else:
        if not args.paths:
            raise ConfigError("replay needs at least one PATH (or --from-topic)")
        for p in args.paths:
            if p != "-" and not Path(p).is_file():
                raise ConfigError(f"no such file: {p}")
        jobs = getattr(args, "jobs", 1)
        if jobs > 1:
            from gatewatch.replay_jobs import replay_jobs

            if "-" in args.paths:
                raise ConfigError("--jobs needs files: each job reads the input itself (not stdin)")
            with _text_file(dlq) as out:
                return replay_jobs(settings, list(args.paths), jobs, dlq=out, log_format=log_format or "gatewatch")
        records = read_jsonl(args.paths)
    pipeline = _pipeline(settings)
    if not args.from_topic or log_format is not None:  # a topic range: its [ingest] formats entry, unless --format
        use_format(pipeline, settings.ingest, log_format or "gatewatch")
    freeze_start_up()
    with _text_file(dlq) as out:
        return replay(pipeline, records, progress=_progress(), dlq=out)


def _text_file(path: str | None) -> Any:
    """`path` opened for writing (UTF-8), or a context that gives None."""
    return open(path, "w", encoding="utf-8") if path else contextlib.nullcontext()


def _summary(result: Any) -> dict[str, Any]:
    by_type = Counter(a.type for a in result.alerts.values())
    return {"records": result.records, "events": result.events, "dead_letters": result.dead_letters,
            "dead_letter_codes": dict(result.dead_letter_codes), "alerts": len(result.alerts),
            "alerts_by_type": dict(by_type),
            "anomaly_model": result.anomaly_model, "seconds": round(result.seconds, 6),
            "events_per_second": round(result.events_per_second)}


def cmd_replay(args: argparse.Namespace) -> int:
    from gatewatch.replay import text_out, write_alerts

    settings = _settings(args)
    result = _replay(args, settings, dlq=args.dlq)  # the --dlq file is written as the replay goes
    if args.out:
        with text_out(args.out) as out:
            write_alerts(result.alerts.values(), out)
    print(json.dumps(_summary(result)), file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from gatewatch.backtest import labelled_event_times, load_labels, score
    from gatewatch.replay import read_jsonl

    args.from_topic = None
    settings = _settings(args)
    labels = load_labels(Path(args.labels))
    result = _replay(args, settings)
    times = labelled_event_times(read_jsonl(args.paths), labels) if "-" not in args.paths else None
    report = score(result.alerts.values(), labels, events=result.events, event_times=times)
    print(json.dumps({**_summary(result), "backtest": report}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from gatewatch.replay import read_jsonl
    from gatewatch.train import train

    settings = _settings(args)
    for p in args.paths:
        if p != "-" and not Path(p).is_file():
            raise ConfigError(f"no such file: {p}")
    if args.seed is not None and args.seed < 0:
        raise ConfigError("--seed must be >= 0")
    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    summary = train(read_jsonl(args.paths), settings, validator, out=Path(args.out) if args.out else None,
                    seed=args.seed, progress=_progress())
    print(json.dumps(summary))
    return 0


# -- simulate / token / keys -------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from gatewatch.simulate_cli import simulate

    return simulate(args, _settings(args))


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    raw = sys.stdin.read().strip() if args.token == "-" else args.token
    if not raw:
        raise ConfigError("no token given")
    at = _time_arg(args.at, "--at") if args.at else time.time()
    validator = TokenValidator.from_config(settings.tokens, settings.keys, settings.limits)
    info = validator.check(raw, at)
    print(json.dumps({"verdict": info.verdict, "header": info.header, "claims": info.claims, "tfp": info.tfp},
                     indent=2))
    return 0 if info.ok else 1


def cmd_keys(args: argparse.Namespace) -> int:
    from gatewatch.keys import generate_keys

    target = Path(args.dir)
    if (target / "decryption.jwks.json").exists() and not args.force:
        raise ConfigError(f"{target} already holds keys (use --force to replace them)")
    paths = generate_keys(target)
    print(json.dumps({name: str(p) for name, p in paths.items()}, indent=2))
    return 0
