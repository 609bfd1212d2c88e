"""The traffic simulator: schema, determinism, valid tokens, realistic hard negatives, attacks that are
what their labels say, event-time order with bounded lateness, JSONL output."""

from __future__ import annotations

import io
import ipaddress
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from gatewatch.keys import TokenMinter, generate_keys
from gatewatch.simulate import (ADMIN_ALLOWED_CIDRS, ALL_ATTACKS, MAX_LATENESS_SECONDS, SimEvent, SimulationSpec,
                                generate, label_type, write_jsonl)
from ingest.decode import decode_record
from ingest.tokens import TokenInfo, TokenValidator
from tests.conftest import validator_for

LIMIT_BYTES = 65_536


@pytest.fixture(scope="module")
def sim_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sim-keys")
    generate_keys(d)
    return d


@pytest.fixture(scope="module")
def sim_minter(sim_keys: Path) -> TokenMinter:
    return TokenMinter.from_dir(sim_keys, issuer="https://idp.example", audience="api://gateway")


@pytest.fixture(scope="module")
def sim_validator(sim_keys: Path) -> TokenValidator:
    return validator_for(sim_keys)


class Run:
    """A generated stream with its decoded event times and token verdicts."""

    def __init__(self, events: list[SimEvent], validator: TokenValidator) -> None:
        self.events = events
        self.ts = [decode_record(json.dumps(ev.event).encode(), LIMIT_BYTES)[1] for ev in events]
        self.validator = validator

    def info(self, i: int) -> TokenInfo:
        return self.validator.check(self.events[i].event["token"], self.ts[i])

    def where(self, pred: Any) -> list[int]:
        return [i for i, ev in enumerate(self.events) if pred(ev.event)]


@pytest.fixture(scope="module")
def clean(sim_minter: TokenMinter, sim_validator: TokenValidator) -> Run:
    spec = SimulationSpec(seed=11, events=None, duration_seconds=2_400, rate=8, subjects=80, attacks=())
    return Run(list(generate(spec, sim_minter)), sim_validator)


@pytest.fixture(scope="module")
def attacked(sim_minter: TokenMinter, sim_validator: TokenValidator) -> Run:
    spec = SimulationSpec(seed=5, events=None, duration_seconds=4_800, rate=4, subjects=80, attack_every=500)
    return Run(list(generate(spec, sim_minter)), sim_validator)


# -- schema ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["clean", "attacked"])
def test_every_event_passes_the_strict_decoder(name: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(name)
    assert len(run.events) > 5_000
    for ev in run.events:
        record, _ = decode_record(json.dumps(ev.event).encode(), LIMIT_BYTES)
        assert record.event_id == ev.event["event_id"]
        assert ev.topic == ("gateway.access" if ev.event["kind"] == "access" else "gateway.tokens")
        assert ev.event["ts"].endswith("Z") and len(ev.event["ts"]) == 24
        assert ev.key
    assert len({ev.event["event_id"] for ev in run.events}) == len(run.events)


def test_the_first_event_is_at_start(sim_minter: TokenMinter) -> None:
    spec = SimulationSpec(events=50, attacks=())
    first = next(iter(generate(spec, sim_minter)))
    assert first.event["ts"] == "2026-11-18T00:00:00.000Z"


# -- determinism -------------------------------------------------------------------------------
def _without_tokens(events: list[SimEvent]) -> list[tuple[str, str, dict[str, Any], tuple[dict[str, Any], ...]]]:
    return [(ev.topic, ev.key, {k: v for k, v in ev.event.items() if k != "token"}, ev.labels) for ev in events]


def test_same_seed_same_stream_and_claims(sim_minter: TokenMinter, sim_validator: TokenValidator) -> None:
    spec = SimulationSpec(seed=3, events=4_000, rate=20, subjects=60, attack_every=400)
    a, b = list(generate(spec, sim_minter)), list(generate(spec, sim_minter))
    assert _without_tokens(a) == _without_tokens(b)
    checked = 0
    for ea, eb in zip(a, b, strict=True):
        ta, tb = ea.event.get("token"), eb.event.get("token")
        assert (ta is None) == (tb is None)
        if ta is not None and ta != tb:  # encryption is randomised; what it carries is not
            ia, ib = sim_validator.check(ta, 0.0), sim_validator.check(tb, 0.0)
            assert (ia.verdict, ia.claims) == (ib.verdict, ib.claims)
            checked += 1
    assert checked > 100
    other = list(generate(SimulationSpec(seed=4, events=4_000, rate=20, subjects=60, attack_every=400),
                          sim_minter))
    assert [e.event["event_id"] for e in other] != [e.event["event_id"] for e in a]
    assert [e.event["ts"] for e in other] != [e.event["ts"] for e in a]


# -- tokens ------------------------------------------------------------------------------------
def test_normal_tokens_are_valid_nested_jwts_at_their_event_time(clean: Run) -> None:
    verdicts: Counter[str] = Counter()
    for i in clean.where(lambda e: "token" in e):
        info = clean.info(i)
        e = clean.events[i].event
        assert info.encrypted
        if e["kind"] == "access" and e["status"] == 401:
            assert info.verdict == "expired"  # a phone back from the background; then it refreshes
        else:
            assert info.verdict == "ok", (e, info.verdict)
            assert info.tid == e["tenant"] and info.jti and info.sub and info.client_id and info.scope
            assert 300 <= info.exp - info.iat <= 3_600
            assert info.use is None
        verdicts[info.verdict] += 1
    assert verdicts["ok"] > 5_000
    jkt = [clean.info(i) for i in clean.where(lambda e: "nonce" in e and "token" in e)]
    assert jkt and all(info.cnf_jkt for info in jkt)  # DPoP requests carry PoP-bound tokens


def test_tokens_are_cached_not_minted_per_request(clean: Run) -> None:
    access_tokens = [ev.event["token"] for ev in clean.events if ev.event["kind"] == "access" and "token" in ev.event]
    assert len(access_tokens) > 8 * len(set(access_tokens))


def test_services_use_client_credentials(clean: Run) -> None:
    issued = [clean.info(i) for i in clean.where(lambda e: e["kind"] == "token" and e["type"] == "issued")]
    services = [info for info in issued if "-svc-" in info.sub]
    assert services and all(info.sub == info.client_id for info in services)
    assert all(info.sub != info.client_id for info in issued if "-svc-" not in info.sub)


# -- realism and hard negatives in clean traffic -----------------------------------------------
def test_clean_traffic_has_no_labels(clean: Run) -> None:
    assert not any(ev.labels for ev in clean.events)


def test_clean_traffic_has_mobile_network_hops_within_one_token(clean: Run) -> None:
    ips: dict[tuple[str, str], set[str]] = defaultdict(set)
    def phone(e: dict[str, Any]) -> bool:
        ua = e.get("user_agent", "")
        return e["kind"] == "access" and "token" in e and ("iPhone" in ua or "Android" in ua)

    for i in clean.where(phone):
        e = clean.events[i].event
        ips[(clean.info(i).tfp, e["user_agent"])].add(e["client_ip"])
    hopping = [k for k, v in ips.items() if len(v) >= 2]
    assert len(hopping) >= 3
    kinds = {ipaddress.ip_address(ip) in ipaddress.ip_network("100.64.0.0/10")
             for k in hopping for ip in ips[k]}
    assert kinds == {True, False} or any(":" in ip for k in hopping for ip in ips[k])


def test_clean_traffic_has_refresh_races_within_two_seconds(clean: Run) -> None:
    seen: dict[str, list[float]] = defaultdict(list)
    for i in clean.where(lambda e: e["kind"] == "token" and e["type"] == "refreshed"):
        seen[clean.events[i].event["presented_jti"]].append(clean.ts[i])
    races = [ts for ts in seen.values() if len(ts) > 1]
    assert races
    assert all(len(ts) == 2 and max(ts) - min(ts) <= 2.0 for ts in races)


def test_clean_dpop_nonces_are_unique(clean: Run) -> None:
    nonces = [ev.event["nonce"] for ev in clean.events if "nonce" in ev.event]
    assert len(nonces) > 500
    assert len(set(nonces)) == len(nonces)


def test_clean_traffic_is_clean(clean: Run) -> None:
    """None of the attacks' signatures occurs in normal traffic."""
    revoked: dict[str, float] = {}
    for i in clean.where(lambda e: e["kind"] == "token" and e["type"] == "revoked"):
        revoked[clean.events[i].event["jti"]] = clean.ts[i]
    subs_by_jti: dict[str, set[str]] = defaultdict(set)
    for i in clean.where(lambda e: e["kind"] == "access"):
        e = clean.events[i].event
        if e.get("route") == "admin-api":
            assert _in(e["client_ip"], ADMIN_ALLOWED_CIDRS[e["tenant"]])
        if "token" not in e:
            continue
        info = clean.info(i)
        assert info.tid == e["tenant"] and info.encrypted
        assert info.verdict == "ok" or (info.verdict == "expired" and e["status"] == 401)
        assert not (info.jti in revoked and revoked[info.jti] < clean.ts[i])
        subs_by_jti[info.jti].add(info.sub)
    assert all(len(s) == 1 for s in subs_by_jti.values())
    per_minute = Counter((ev.event.get("client_ip"), int(t // 60)) for ev, t in zip(clean.events, clean.ts, strict=True))
    assert max(per_minute.values()) < 600


def test_status_latency_and_llm_usage_look_like_a_gateway(clean: Run) -> None:
    access = [ev.event for ev in clean.events if ev.event["kind"] == "access"]
    status = Counter(e["status"] // 100 for e in access)
    assert status[2] / len(access) > 0.93 and status[4] > 0 and 0 < status[5] / len(access) < 0.02
    llm = [e["llm"] for e in access if "llm" in e]
    assert llm and all(e["route"] == "llm-gateway" for e in access if "llm" in e)
    assert set(llm[0]) == {"provider", "model", "prompt_tokens", "completion_tokens"}
    assert {e["route"] for e in access} >= {"auth", "health", "public", "admin-api", "llm-gateway"}
    assert any(":" in e["client_ip"] for e in access)
    assert any("token" not in e and e["path"] == "/healthz" for e in access)


# -- attacks -----------------------------------------------------------------------------------
def test_every_attack_is_labelled(attacked: Run) -> None:
    labels = [lab for ev in attacked.events for lab in ev.labels]
    scenarios = {lab["attack_id"].split("-", 2)[2] for lab in labels}
    assert scenarios == set(ALL_ATTACKS)
    assert {lab["type"] for lab in labels} == {label_type(a) for a in ALL_ATTACKS}
    for lab in labels:
        assert set(lab) == {"attack_id", "type", "entity"}
        assert lab["entity"]["kind"] in ("subject", "client", "ip", "token", "tenant") and lab["entity"]["value"]
        assert lab["type"] == label_type(lab["attack_id"].split("-", 2)[2])


def _in(ip: str, cidrs: list[str]) -> bool:
    return any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for c in cidrs)


def _labelled(run: Run, scenario: str) -> list[int]:
    return [i for i, ev in enumerate(run.events) if any(lab["attack_id"].endswith(scenario) for lab in ev.labels)]


def _check(run: Run, scenario: str, i: int, first: dict[str, Any]) -> None:
    """What makes event `i` an instance of `scenario`; `first` maps things to where they were first seen."""
    e, ts = run.events[i].event, run.ts[i]
    info = run.info(i) if "token" in e else None
    if scenario == "replay.nonce":
        key = ("nonce", e["nonce"]) if "nonce" in e else ("tfp", info.tfp)
        assert key in first and first[key] < ts and (key[0] == "nonce" or info.use == "once")
    elif scenario == "replay.token_context":
        assert first[("tfp", info.tfp)] < ts and info.verdict == "ok"
    elif scenario == "replay.refresh_reuse" and e.get("type") == "refreshed":
        assert ts - first[("presented", e["presented_jti"])] > 60
    elif scenario == "token.revoked_use":
        assert first[("revoked", info.jti)] < ts and info.verdict == "ok"
    elif scenario == "token.expired_use":
        assert info.verdict == "expired" and e["status"] < 400
    elif scenario == "token.cross_tenant":
        assert info.verdict == "ok" and info.tid != e["tenant"]
    elif scenario == "token.jti_collision":
        assert info.verdict == "ok" and first[("jti", info.jti)] != info.sub
    elif scenario == "token.invalid":
        assert info.verdict not in ("ok", "expired") and e["status"] == 401
    elif scenario == "token.unencrypted":
        assert info.verdict == "ok" and not info.encrypted
    elif scenario == "traffic.ip_not_allowed":
        assert e["route"] == "admin-api" and not _in(e["client_ip"], ADMIN_ALLOWED_CIDRS[e["tenant"]])
    elif scenario == "traffic.llm_budget":
        assert e["route"] == "llm-gateway" and info.verdict == "ok"
        assert e["status"] >= 300 or e["llm"]["prompt_tokens"] >= 10_000  # a whole document per prompt
    elif scenario == "anomaly.scraping":
        assert e["path"].startswith("/v1/customers/")


@pytest.mark.parametrize("scenario", ALL_ATTACKS)
def test_labelled_events_are_what_the_label_says(attacked: Run, scenario: str) -> None:
    first: dict[tuple[str, str], Any] = {}
    labelled = set(_labelled(attacked, scenario))
    assert labelled
    for i, ev in enumerate(attacked.events):
        e = ev.event
        if i in labelled:
            _check(attacked, scenario, i, first)
        if e["kind"] == "token":
            if e["type"] == "refreshed":
                first.setdefault(("presented", e["presented_jti"]), attacked.ts[i])
            elif e["type"] == "revoked":
                first.setdefault(("revoked", e["jti"]), attacked.ts[i])
            continue
        if "nonce" in e:
            first.setdefault(("nonce", e["nonce"]), attacked.ts[i])
        if "token" in e and i not in labelled:
            info = attacked.info(i)
            first.setdefault(("tfp", info.tfp), attacked.ts[i])
            if info.jti:
                first.setdefault(("jti", info.jti), info.sub)
    if scenario == "traffic.rate_limit":
        per_second = Counter(int(attacked.ts[i]) for i in labelled)
        assert max(per_second.values()) >= 25
    if scenario == "anomaly.scraping":
        assert len({attacked.events[i].event["path"] for i in labelled}) >= 1_000
    if scenario == "traffic.llm_budget":  # over a subject's default budget (1 M tokens a minute) at once
        per_minute: Counter[tuple[str, int]] = Counter()
        for i in labelled:
            e = attacked.events[i].event
            if "llm" in e:
                used = e["llm"]["prompt_tokens"] + e["llm"]["completion_tokens"]
                per_minute[(attacked.info(i).sub, int(attacked.ts[i] // 60))] += used
        assert per_minute and max(per_minute.values()) > 2_000_000


# -- order -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["clean", "attacked"])
def test_event_time_order_with_a_few_late_events(name: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(name)
    high, late = float("-inf"), 0
    for t in run.ts:
        if t < high:
            late += 1
            assert high - t <= MAX_LATENESS_SECONDS
        high = max(high, t)
    assert 0 < late <= 0.015 * len(run.ts)


def test_duration_and_count_limits(sim_minter: TokenMinter) -> None:
    spec = SimulationSpec(events=None, duration_seconds=120, rate=30, attacks=())
    events = list(generate(spec, sim_minter))
    times = [decode_record(json.dumps(ev.event).encode(), LIMIT_BYTES)[1] for ev in events]
    assert min(times) >= spec.start and max(times) <= spec.start + 120
    assert 0.3 * 120 * 30 < len(events) < 3 * 120 * 30
    assert len(list(generate(SimulationSpec(events=777, attacks=()), sim_minter))) == 777


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown attack"):
        SimulationSpec(attacks=("replay.bogus",))
    with pytest.raises(ValueError):
        SimulationSpec(events=None, duration_seconds=None)


# -- output ------------------------------------------------------------------------------------
def test_write_jsonl_round_trip(attacked: Run) -> None:
    out, labels_out = io.StringIO(), io.StringIO()
    counts = write_jsonl(iter(attacked.events), out, labels_out)
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [ev.event for ev in attacked.events]
    label_rows = [json.loads(line) for line in labels_out.getvalue().splitlines()]
    assert all(set(r) == {"event_id", "attack_id", "type", "entity"} for r in label_rows)
    kinds = Counter(ev.event["kind"] for ev in attacked.events)
    assert counts == {
        "events": len(lines), "access": kinds["access"], "token": kinds["token"],
        "attacks": len({r["attack_id"] for r in label_rows}),
        "labelled_events": sum(1 for ev in attacked.events if ev.labels),
    }
    assert counts["labelled_events"] == len(label_rows)
    by_id = {ev.event["event_id"]: ev for ev in attacked.events}
    assert all(by_id[r["event_id"]].labels for r in label_rows)
