"""The live demo behind `make demo`: simulated gateway traffic with attacks → Kafka → `gatewatch run`
→ alert store → `gatewatch serve`, then a summary read back through the HTTP API.

Each part runs as its own `gatewatch` process, exactly as an operator would run them. Before the live
traffic, the demo trains the behaviour model the way an analyst would: a clean simulated day of
history (the day before the live traffic, the same rate) through `gatewatch train`, once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from api.store import AlertStore
from gatewatch.settings import load_settings
from gatewatch.terminal import printable
from ingest.decode import parse_ts


def _gatewatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "gatewatch.cli", *args]


def _get(url: str, key: str | None = None) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: `gatewatch serve` exited with {proc.returncode}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"demo: {url} did not answer in {seconds:.0f}s")


def _all_alerts(base: str, key: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        url = f"{base}/v1/alerts?limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = _get(url, key)
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


LIVE_START = "2026-11-18T00:00:00Z"
HISTORY_START = "2026-11-17T00:00:00Z"  # one clean day before the live traffic


def _train_once(cfg: Path, demo_dir: Path, rate: float, seed: int) -> None:
    """A clean simulated day → `gatewatch train` → demo/model (skipped when a model is there already)."""
    if (demo_dir / "model" / "manifest.json").is_file():
        print(f"demo: anomaly model present in {demo_dir / 'model'}", flush=True)
        return
    history = demo_dir / "history.jsonl"
    print(f"demo: simulating a clean day of history ({HISTORY_START[:10]}) and training the behaviour model ...",
          flush=True)
    subprocess.run(_gatewatch("simulate", "--config", str(cfg), "--out", str(history), "--attacks", "none",
                              "--duration", "86400", "--rate", str(rate), "--start", HISTORY_START,
                              "--seed", str(seed + 1000)), check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(_gatewatch("train", "--config", str(cfg), str(history)), check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    print(f"demo: model trained on {summary['events']:,} events ({summary['windows']:,} windows) "
          f"in {summary['seconds']}s", flush=True)


def summary_lines(run_summary: dict[str, Any], seconds: float, alerts: list[dict[str, Any]],
                  labelled: Counter[str], *, risk: Callable[[str, str], dict[str, Any]],
                  model_detail: Callable[[], str],
                  holds: tuple[dict[str, int], dict[str, int]] | None = None) -> Iterator[str]:
    """The summary's lines about the run, its alerts and the model, each through `printable`: alerts quote
    log fields (entities, tenants, reasons), which may hold control characters. `risk(param, value)` is the
    API's risk of one entity, `model_detail()` what /readyz says of the model, `holds` the holds made by type
    and those still live at the newest alert's time (what `gatewatch decide` would deny then)."""
    lines = _summary(run_summary, seconds, alerts, labelled, risk, model_detail)
    if holds is not None:
        lines = itertools.chain(lines, [
            f"gateway decisions: {sum(holds[0].values())} holds made"
            + (" (" + ", ".join(f"{t} {n}" for t, n in sorted(holds[0].items())) + ")" if holds[0] else "")
            + f", {sum(holds[1].values())} still denying at the newest event time (a token's ends at its expiry);"
            + " `gatewatch decide` answers a gateway from them"])
    return map(printable, lines)


def _summary(run_summary: dict[str, Any], seconds: float, alerts: list[dict[str, Any]], labelled: Counter[str],
             risk: Callable[[str, str], dict[str, Any]], model_detail: Callable[[], str]) -> Iterator[str]:
    by_type = Counter(a["type"] for a in alerts)
    yield (f"events processed : {run_summary['events']:,} ({run_summary['dead_letters']} dead-lettered) "
           f"in {seconds:.1f}s")
    yield f"alerts in store  : {len(alerts)}"
    for type_, n in sorted(by_type.items()):
        yield f"  {type_:<24} {n}"
    for a in alerts[:5]:
        ent = a["entity"]
        where = "" if ent["kind"] == "tenant" else f" tenant={a['tenant']}"  # a tenant entity names it
        yield f"  - [{a['severity']}] {a['type']} {ent['kind']}={ent['value']}{where}: {a['reasons'][0]}"
        if ent["kind"] in ("subject", "ip", "client"):
            param = {"subject": "sub", "ip": "ip", "client": "client_id"}[ent["kind"]]
            found = risk(param, ent["value"])
            yield f"    GET /v1/risk?{param}=... -> score {found['score']}, action {found['action']}"
    missing = sorted(set(labelled) - set(by_type))
    yield (f"attack events simulated (labels): {sum(labelled.values())} across {len(labelled)} types"
           + (f"; no alert yet for: {', '.join(missing)}" if missing else ""))
    yield f"model    : {model_detail()}"


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m gatewatch.demo")
    ap.add_argument("--config", required=True)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", type=float, default=0.6,
                    help="events/s of event time, history and live alike (the model learns per-entity rates)")
    ap.add_argument("--no-hold", action="store_true", help="stop the API after the summary")
    args = ap.parse_args()
    cfg = Path(args.config).resolve()
    demo_dir = cfg.parent
    hold = not args.no_hold and os.environ.get("DEMO_HOLD", "1") != "0"
    creds = json.loads((demo_dir / "keys" / "credentials.json").read_text())
    base = "http://127.0.0.1:8000"

    _train_once(cfg, demo_dir, args.rate, args.seed)
    serve = subprocess.Popen(_gatewatch("serve", "--config", str(cfg)))
    try:
        _wait_http(f"{base}/healthz", serve)
        print(f"demo: API up on {base}", flush=True)
        worker = subprocess.Popen(_gatewatch("run", "--config", str(cfg), "--idle-exit", "8"),
                                  stdout=subprocess.PIPE, text=True)
        print(f"demo: simulating {args.events:,} events with attacks into Kafka ...", flush=True)
        started = time.monotonic()
        subprocess.run(_gatewatch("simulate", "--config", str(cfg), "--kafka", "--events", str(args.events),
                                  "--seed", str(args.seed), "--rate", str(args.rate), "--start", LIVE_START,
                                  "--labels", str(demo_dir / "labels.jsonl")),
                       check=True)
        out, _ = worker.communicate(timeout=1800)
        if worker.returncode != 0:
            raise SystemExit(f"demo: `gatewatch run` exited with {worker.returncode}")
        run_summary = json.loads(out.strip().splitlines()[-1])
        alerts = _all_alerts(base, creds["analyst"])
        newest = max((parse_ts(a["last_seen"]) for a in alerts if "last_seen" in a), default=0.0)
        store = AlertStore(str(load_settings(cfg).store_path))
        held = (store.holds.count_by_type(), store.holds.count_by_type(live_at=newest))
        store.close()
        labelled = Counter(json.loads(line)["type"] for line in (demo_dir / "labels.jsonl").open())
        print("\n=== gatewatch demo summary ===")
        for line in summary_lines(
                run_summary, time.monotonic() - started, alerts, labelled,
                risk=lambda param, value: _get(f"{base}/v1/risk?{param}={urllib.parse.quote(value)}",
                                               creds["gateway"]),
                model_detail=lambda: _get(f"{base}/readyz")["checks"]["model"]["detail"], holds=held):
            print(line)
        print(f"\nAPI      : {base}/v1/alerts   (Authorization: Bearer <key>)")
        print(f"keys     : {demo_dir / 'keys' / 'credentials.json'} (analyst, gateway, viewer-acme)")
        print(f"try      : curl -s -H \"Authorization: Bearer $(jq -r .analyst {demo_dir}/keys/credentials.json)\" "
              f"{base}/v1/alerts | jq")
        print(f"store    : {demo_dir / 'gatewatch.db'};  broker log: .cache/kafka/broker.log")
        if hold:
            print("\nThe API stays up; Ctrl-C to stop.", flush=True)
            serve.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(timeout=10)
            except subprocess.TimeoutExpired:
                serve.kill()


if __name__ == "__main__":
    sys.exit(main())
