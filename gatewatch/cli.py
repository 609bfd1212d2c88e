"""`gatewatch` command line (CONTRACT.md §4). Exit codes: 0 ok, 1 the work failed, 2 bad usage/config."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

from gatewatch import commands
from gatewatch.terminal import printable
from ingest.adapters import FORMATS
from ingest.errors import ConfigError, GatewatchError, KeyMaterialError, ModelError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage and a block)
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gatewatch", description="Security analytics for API and LLM gateways.")
    p.add_argument("--config", help="TOML config (default: $GATEWATCH_CONFIG, else ./gatewatch.toml)")
    # --config is accepted after the subcommand too (`gatewatch token inspect T --config F`).
    common = _Parser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add = functools.partial(sub.add_parser, parents=[common])

    run = add("run", help="the streaming pipeline on the Kafka topics")
    run.add_argument("--idle-exit", type=float, metavar="S", help="stop after S seconds without records")
    run.add_argument("--max-events", type=int, metavar="N", help="stop after N input records")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="start N keyed worker processes in the consumer group (default 1)")
    run.add_argument("--keyed", action="store_true",
                     help="one keyed worker (re-partitioned streams), to scale out with others of the same group")

    serve = add("serve", help="the alerts and risk API and the analyst console")
    serve.add_argument("--bind", help="HOST:PORT (default [api] bind)")

    decide = add("decide", help="the decision endpoint a gateway asks on every request (nginx auth_request)")
    decide.add_argument("--bind", help="HOST:PORT (default [decision] bind)")

    replay = add("replay", help="offline replay of historical events through the pipeline")
    replay.add_argument("paths", nargs="*", metavar="PATH", help="JSONL files (.gz ok, - for stdin)")
    replay.add_argument("--out", help="write alerts as JSONL to FILE (- for stdout)")
    replay.add_argument("--dlq", help="write dead-letter entries as JSONL to FILE")
    replay.add_argument("--from-topic", metavar="T", help="replay Kafka topic T instead of files")
    replay.add_argument("--since", metavar="TS", help="with --from-topic: RFC 3339 start (inclusive)")
    replay.add_argument("--until", metavar="TS", help="with --from-topic: RFC 3339 end (exclusive)")
    replay.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="detect on N processes (files only); the same alerts as one")
    replay.add_argument("--format", choices=sorted(FORMATS), metavar="NAME",
                        help="the records' log format: " + ", ".join(sorted(FORMATS)) + " (files: default gatewatch; "
                        "--from-topic: default the topic's [ingest] formats entry)")

    train = add("train", help="fit the anomaly model on historical events")
    train.add_argument("paths", nargs="+", metavar="PATH", help="JSONL files (.gz ok, - for stdin)")
    train.add_argument("--out", metavar="DIR", help="write the model here (default [model] path)")
    train.add_argument("--seed", type=int, help="random seed of the forests (default [model] seed)")

    backtest = add("backtest", help="replay plus precision/recall per alert type")
    backtest.add_argument("paths", nargs="+", metavar="PATH")
    backtest.add_argument("--labels", required=True, help="labels JSONL from `gatewatch simulate --labels`")

    sim = add("simulate", help="realistic gateway traffic with labelled attacks")
    sim.add_argument("--seed", type=int, default=7)
    size = sim.add_mutually_exclusive_group()
    size.add_argument("--events", type=int, help="number of events (default 20000)")
    size.add_argument("--duration", type=float, metavar="S", help="seconds of event time")
    sim.add_argument("--rate", type=float, default=50.0, help="mean events per second of event time")
    sim.add_argument("--start", help="RFC 3339 event time of the first event")
    sim.add_argument("--tenants", type=int, default=4)
    sim.add_argument("--subjects", type=int, default=300)
    sim.add_argument("--attacks", default="all", help="comma-separated attack names, 'all' or 'none'")
    sim.add_argument("--attack-every", type=int, default=2000, metavar="N")
    sim.add_argument("--keys", default="keys", help="directory from `gatewatch keys generate`")
    sim.add_argument("--out", help="write events as JSONL to FILE (- for stdout)")
    sim.add_argument("--labels", help="write attack labels as JSONL to FILE")
    sim.add_argument("--kafka", action="store_true", help="produce to the Kafka input topics")

    collect = add("collect", help="receive nginx's syslog access log and publish it to [kafka] access_topic")
    collect.add_argument("--listen", required=True, metavar="ADDR",
                         help="unix:/PATH (a datagram socket it creates) or udp:HOST:PORT")
    collect.add_argument("--tag", default="gatewatch", help="the syslog tag nginx sends (default gatewatch)")
    collect.add_argument("--socket-mode", default="660", metavar="OCTAL", help="unix socket permissions (default 660)")
    collect.add_argument("--rcvbuf", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                         help="socket receive buffer asked for (capped by net.core.rmem_max)")
    collect.add_argument("--queue", type=int, default=10_000, metavar="N", help="lines held between socket and Kafka")
    collect.add_argument("--drain-seconds", type=float, default=30.0, metavar="S",
                         help="on SIGTERM/SIGINT, how long to keep trying to deliver what is held")

    ngx = add("nginx-config", help="print an nginx config that puts gatewatch in front of an upstream")
    ngx.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the service nginx fronts")
    ngx.add_argument("--collector", required=True, metavar="ADDR",
                     help="where `gatewatch collect` listens: unix:/PATH or udp:HOST:PORT")
    ngx.add_argument("--decision", metavar="HOST:PORT", help="the decision endpoint (default [decision] bind)")
    ngx.add_argument("--listen", default="8000", metavar="[HOST:]PORT", help="where nginx listens (default 8000)")
    ngx.add_argument("--route", action="append", default=[], metavar="PATH=TENANT[:ROUTE]",
                     help="a proxied prefix location and whose it is (repeat); other paths get 404")
    ngx.add_argument("--fail-mode", choices=("open", "closed"),
                     help="decision unreachable, timed out or 5xx: open lets the request through, closed answers "
                          "--fail-status (default [decision] fail_mode)")
    ngx.add_argument("--fail-status", type=int, choices=(503, 403), default=503)
    ngx.add_argument("--trusted-proxy", action="append", default=[], metavar="CIDR",
                     help="a proxy in front of nginx whose X-Forwarded-For is believed (repeat)")
    ngx.add_argument("--default-tenant", default="default", help="tenant of requests outside every route")
    ngx.add_argument("--gateway", help="the events' gateway name (default nginx's $hostname)")
    ngx.add_argument("--tag", default="gatewatch", help="syslog tag (default gatewatch)")
    ngx.add_argument("--workers", default="auto", help="worker_processes (default auto)")
    ngx.add_argument("--decision-connect-timeout-ms", type=int, default=100, metavar="MS")
    ngx.add_argument("--decision-timeout-ms", type=int, default=250, metavar="MS", help="send/read timeout")
    ngx.add_argument("--user", help="`user` directive, when the master is started as root")
    ngx.add_argument("--out", metavar="FILE", help="write the config here instead of stdout")

    token = add("token", help="token tools")
    tsub = token.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    inspect = tsub.add_parser("inspect", help="decrypt and validate one token", parents=[common])
    inspect.add_argument("token", help="the compact token, or - to read it from stdin")
    inspect.add_argument("--at", help="RFC 3339 time to validate at (default: now)")

    keys = add("keys", help="key material")
    ksub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    gen = ksub.add_parser("generate", help="write demo keys and API credentials to DIR", parents=[common])
    gen.add_argument("dir")
    gen.add_argument("--force", action="store_true", help="overwrite existing keys")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        args.argv = argv  # `run --workers N` starts N copies of this command line
        return commands.dispatch(args)
    except (ConfigError, KeyMaterialError, ModelError) as exc:
        print(f"gatewatch: {printable(exc)}", file=sys.stderr)  # the reason may quote input: escaped
        return 2
    except GatewatchError as exc:
        print(f"gatewatch: {printable(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
