"""traffic.llm_budget: LLM token budgets per subject, client and tenant, per clock minute and UTC day,
overall and per model, tenant overrides; boundaries, redelivery, order, the events it ignores, its
settings and keyed parts, and the simulator's budget attack (caught) and normal LLM traffic (not)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from detectors import DETECTORS, build, store_for
from detectors.state import MemoryStore
from detectors.traffic_llm_budget import DEFAULT_BUDGETS, SCOPES, LlmBudgetDetector
from gatewatch.pipeline import Pipeline
from gatewatch.settings import load_settings
from gatewatch.simulate import SimulationSpec, generate
from ingest.decode import EventDecoder
from ingest.events import Source
from scoring.alerts import AlertBuilder
from scoring.risk import RiskEngine
from tests.conftest import write_config
from tests.events import access, raw, token_event

OFF = {"subject": 0, "client": 0, "tenant": 0}
NO_BUDGETS = {"per_minute": OFF, "per_day": OFF}
DAY0 = 1_794_960_000.0  # 2026-11-18T00:00:00Z, the start of a UTC day (20,775 × 86,400)
M0 = DAY0 + 40_020  # 11:07:00Z, the start of a clock minute


def only(scope: str, budget: int, window: str = "minute") -> dict[str, dict[str, int]]:
    """Every budget off but one."""
    return {"per_minute": dict(OFF), "per_day": dict(OFF)} | {f"per_{window}": {**OFF, scope: budget}}


def llm(event_id: str, ts: float, tokens: int, *, model: str = "gpt-4o", completion: int = 0, **fields):
    return access(event_id, ts, route="llm-gateway", method="POST", path="/v1/chat/completions",
                  llm={"provider": "openai", "model": model, "prompt_tokens": tokens - completion,
                       "completion_tokens": completion}, **fields)


@pytest.fixture(scope="module")
def decoder(validator):
    return EventDecoder(validator=validator, max_event_bytes=65536)


@pytest.fixture(scope="module")
def token(minter) -> str:
    # signed, valid for the day (used after `exp` it is `expired`: still signed, its subject still named)
    return minter.mint({"sub": "alice", "client_id": "notebook", "exp": DAY0 + 86_000, "iat": DAY0})


def events(decoder, records):
    return [decoder.decode(raw(r), Source("t", 0, i)) for i, r in enumerate(records)]


def run(detector, decoder, records, store=None):
    store = store if store is not None else MemoryStore()
    out = []
    for ev in events(decoder, records):
        out += detector.observe(ev, store)
    return out


# -- per scope, per window -------------------------------------------------------------------------
@pytest.mark.parametrize(("scope", "value"), [("subject", "alice"), ("client", "notebook"), ("tenant", "acme")])
def test_over_the_minute_budget_is_caught_per_scope(scope, value, decoder, token) -> None:
    recs = [llm(f"e{i}", M0 + 2 * i, 20_000, completion=1_500, token=token) for i in range(25)]  # 500,000
    sigs = run(LlmBudgetDetector(**only(scope, 100_000)), decoder, recs)
    assert len(sigs) == 1  # one signal when the budget is first exceeded, not one per request
    s = sigs[0]
    assert s.type == "traffic.llm_budget" and s.tenant == "acme" and s.ts == M0 + 10
    assert s.entities == ((s.entity),) and (s.entity.kind, s.entity.value) == (scope, value)
    assert s.reasons[0] == f"{scope} {value} used 120,000 LLM tokens (all models) this minute, budget 100,000"
    assert s.reasons[1] == ("6 LLM requests in the minute from 2026-11-18T11:07:00Z: 111,000 prompt + 9,000 "
                            "completion tokens; the budget resets at 2026-11-18T11:08:00Z")
    assert s.reasons[2] == f"default per-minute budget of a {scope}: 100,000 tokens over all models"
    f = s.figures
    assert (f["used"], f["budget"], f["window"], f["window_seconds"], f["model"]) == (120_000, 100_000, "minute",
                                                                                        60, "*")
    assert f["window_start"] == M0 and f["deny_until"] == M0 + 60 and isinstance(f["deny_until"], int)
    assert (f["requests"], f["prompt_tokens"], f["completion_tokens"]) == (6, 111_000, 9_000)
    assert f["scope"] == scope and f["budget_source"] == "default" and f["request_model"] == "gpt-4o"
    assert s.event_ids == ("e2", "e3", "e4", "e5")  # from half the budget on, ending at the crossing
    assert (s.token_fps != ()) == (scope != "tenant") and token not in repr(s)
    assert 0.95 <= s.strength <= 0.98


def test_over_the_day_budget_is_caught_and_held_until_utc_midnight(decoder, token) -> None:
    # a slow drain: 40,000 tokens every 10 minutes from 01:00, never much in any minute
    recs = [llm(f"d{i}", DAY0 + 3600 + 600 * i, 40_000, token=token) for i in range(100)]
    sigs = run(LlmBudgetDetector(per_minute={"subject": 100_000}, per_day={"subject": 2_000_000, "client": 0,
                                                                          "tenant": 0}), decoder, recs)
    assert [(s.entity.kind, s.figures["window"]) for s in sigs] == [("subject", "day")]
    s = sigs[0]
    assert s.figures["used"] == 2_040_000 and s.figures["requests"] == 51 and s.event_ids[-1] == "d50"
    assert s.figures["window_start"] == DAY0 and s.figures["deny_until"] == DAY0 + 86_400
    assert s.reasons[0] == "subject alice used 2,040,000 LLM tokens (all models) today (UTC), budget 2,000,000"
    assert s.reasons[1].endswith("the budget resets at 2026-11-19T00:00:00Z")


def test_one_signal_per_window_and_entity_then_again_in_the_next_window(decoder, token) -> None:
    # 10,000 tokens a second for three and a half minutes against 100,000 a minute
    recs = [llm(f"e{i}", M0 + i, 10_000, token=token) for i in range(210)]
    sigs = run(LlmBudgetDetector(**only("subject", 100_000)), decoder, recs)
    assert [s.figures["window_start"] for s in sigs] == [M0, M0 + 60, M0 + 120, M0 + 180]
    assert [s.event_ids[-1] for s in sigs] == ["e10", "e70", "e130", "e190"]
    # one alert per entity and hour, its count the windows over budget
    builder = AlertBuilder()
    ids = {builder.add(s, 0.0) for s in sigs}
    assert len(ids) == 1 and builder.get(ids.pop()).count == 4


# -- boundaries ------------------------------------------------------------------------------------
def test_exactly_the_budget_is_allowed_one_token_more_is_not(decoder, token) -> None:
    det = LlmBudgetDetector(**only("subject", 100_000))
    recs = [llm(f"e{i}", M0 + i, 25_000, token=token) for i in range(4)]
    assert run(det, decoder, recs) == []
    assert len(run(det, decoder, [*recs, llm("e4", M0 + 59.999, 1, token=token)])) == 1


@pytest.mark.parametrize("window", ["minute", "day"])
def test_the_budget_resets_at_the_window_boundary(window, decoder, token) -> None:
    start = M0 if window == "minute" else DAY0
    seconds = 60 if window == "minute" else 86_400
    det = LlmBudgetDetector(**only("subject", 100_000, window))
    before = [llm(f"b{i}", start + seconds - 10 + i, 9_000, token=token) for i in range(10)]  # 90,000
    after = [llm(f"a{i}", start + seconds + i, 9_000, token=token) for i in range(10)]  # 90,000
    assert run(det, decoder, before + after) == []  # 180,000 in 20 s, but 90,000 in each window
    sigs = run(det, decoder, before + after + [llm("a10", start + seconds + 30, 20_000, token=token)])
    assert [s.figures["window_start"] for s in sigs] == [start + seconds]
    assert sigs[0].figures["used"] == 110_000


def test_the_windows_are_aligned_on_the_clock_not_on_the_first_request(decoder, token) -> None:
    # 60,000 at :50 and 60,000 at :10 of the next minute: 120,000 within 20 s, but in two minutes
    det = LlmBudgetDetector(**only("subject", 100_000))
    assert run(det, decoder, [llm("x", M0 + 50, 60_000, token=token), llm("y", M0 + 70, 60_000, token=token)]) == []


# -- per model, tenant overrides --------------------------------------------------------------------
def test_a_model_budget_counts_that_model_alone_besides_the_overall_one(decoder, token) -> None:
    det = LlmBudgetDetector(per_minute={"subject": 1_000_000, "client": 0, "tenant": 0}, per_day=OFF,
                            models={"gpt-4o": {"minute": {"subject": 100_000}}})
    cheap = [llm(f"m{i}", M0 + i, 50_000, model="gpt-4o-mini", token=token) for i in range(10)]  # 500,000
    pricey = [llm(f"g{i}", M0 + 20 + i, 35_400, completion=4_400, token=token) for i in range(6)]  # 212,400
    sigs = run(det, decoder, sorted(cheap + pricey, key=lambda r: r["ts"]))
    assert len(sigs) == 1
    s = sigs[0]
    assert s.reasons[0] == "subject alice used 106,200 LLM tokens of gpt-4o this minute, budget 100,000"
    assert s.reasons[2] == "model gpt-4o's per-minute budget of a subject: 100,000 tokens"
    assert s.figures["model"] == "gpt-4o" and s.figures["budget_source"] == "model"
    assert s.event_ids == ("g1", "g2")  # the model's own requests only
    # every request of the minute counts against the overall budget: one more large one trips it too
    more = run(det, decoder, [*sorted(cheap + pricey, key=lambda r: r["ts"]),
                              llm("big", M0 + 40, 400_000, model="claude-3-haiku", token=token)])
    assert [(s.figures["model"], s.figures["used"]) for s in more] == [("gpt-4o", 106_200), ("*", 1_112_400)]


def test_full_example_reason(decoder, token) -> None:
    det = LlmBudgetDetector(per_minute=OFF, per_day=OFF, models={"gpt-4o": {"minute": {"subject": 100_000}}})
    sigs = run(det, decoder, [llm("a", M0, 90_000, token=token), llm("b", M0 + 1, 122_400, token=token)])
    assert sigs[0].reasons[0] == "subject alice used 212,400 LLM tokens of gpt-4o this minute, budget 100,000"


def test_tenant_overrides_replace_the_default_budgets_of_that_tenant(decoder, minter) -> None:
    det = LlmBudgetDetector(per_minute={"subject": 100_000, "client": 0, "tenant": 0}, per_day=OFF,
                            tenants={"globex": {"minute": {"subject": 10_000}}, "initech": {"minute": {"subject": 0}}})
    toks = {t: minter.mint({"sub": f"u-{t}", "client_id": "app", "exp": M0 + 3600, "iat": M0, "tid": t})
            for t in ("acme", "globex", "initech")}
    recs = [llm(f"{t}{i}", M0 + i, 20_000, tenant=t, token=toks[t]) for t in toks for i in range(5)]  # 100,000 each
    sigs = run(det, decoder, sorted(recs, key=lambda r: r["ts"]))
    assert [(s.tenant, s.figures["budget"], s.figures["budget_source"]) for s in sigs] == [("globex", 10_000, "tenant")]
    assert sigs[0].reasons[2] == "tenant globex's per-minute budget of a subject: 10,000 tokens over all models"
    assert det.budgets_for("initech", "gpt-4o") == ()  # 0: no budget for initech's subjects


# -- what it does not count ------------------------------------------------------------------------
def test_requests_without_llm_usage_or_tokens_are_not_counted(decoder, token) -> None:
    det, store = LlmBudgetDetector(**only("tenant", 1)), MemoryStore()
    recs = [access("plain", M0, token=token, route="llm-gateway"),  # no llm field (GET /v1/models)
            access("zero", M0 + 1, token=token, llm={"provider": "openai", "model": "gpt-4o"}),  # both default 0
            llm("neg", M0 + 2, -500, token=token),  # a gateway's nonsense count: taken as 0
            token_event("t1", M0 + 3, "revoked", jti="j1")]
    assert run(det, decoder, recs, store) == [] and len(store) == 0


def test_an_unverified_token_counts_for_the_tenant_but_names_no_one(decoder) -> None:
    det = LlmBudgetDetector(per_minute={"subject": 1, "client": 1, "tenant": 50_000}, per_day=OFF)
    sigs = run(det, decoder, [llm(f"f{i}", M0 + i, 20_000, token=f"forged{i}.x.y") for i in range(3)])
    assert [s.entity.kind for s in sigs] == ["tenant"] and sigs[0].token_fps == ()


def test_no_budget_at_all_keeps_nothing(decoder, token) -> None:
    det, store = LlmBudgetDetector(**NO_BUDGETS), MemoryStore()
    assert run(det, decoder, [llm(f"e{i}", M0 + i, 10**9, token=token) for i in range(3)], store) == []
    assert len(store) == 0


# -- redelivery and order --------------------------------------------------------------------------
def test_redelivered_records_are_not_counted_twice(decoder, token) -> None:
    det, store = LlmBudgetDetector(**only("subject", 100_000)), MemoryStore()
    recs = [llm(f"e{i}", M0 + i, 10_000, token=token) for i in range(10)]  # 100,000: exactly the budget
    assert run(det, decoder, recs + recs + recs[:3], store) == []
    # the same id from another gateway is another request
    assert len(run(det, decoder, [{**recs[0], "gateway": "gw-2"}], store)) == 1


def test_a_redelivery_hours_later_does_not_count_against_the_day(decoder, token) -> None:
    det, store = LlmBudgetDetector(**only("subject", 100_000, "day")), MemoryStore()
    recs = [llm(f"e{i}", DAY0 + 3600 + i, 10_000, token=token) for i in range(10)]  # 100,000 at 01:00
    assert run(det, decoder, recs, store) == []
    store.expire(DAY0 + 5 * 3600)  # the pipeline expires state as the watermark moves on
    assert run(det, decoder, recs, store) == []  # re-read at 05:00 (a crash, a re-sent batch): not counted again
    sigs = run(det, decoder, [llm("x", DAY0 + 5 * 3600, 1, token=token)], store)
    assert [s.figures["used"] for s in sigs] == [100_001]  # one token more than the budget


def test_out_of_order_within_lateness_finds_the_same(decoder, token) -> None:
    rng = random.Random(5)
    recs = [llm(f"e{i}", M0 + i * 0.75 + rng.uniform(-5, 5), rng.randint(1_000, 9_000), token=token)
            for i in range(400)]
    det = lambda: LlmBudgetDetector(per_minute={"subject": 150_000, "client": 250_000, "tenant": 0},  # noqa: E731
                                    per_day={"subject": 1_500_000, "client": 0, "tenant": 0})
    in_order = run(det(), decoder, sorted(recs, key=lambda r: r["ts"]))
    shuffled = run(det(), decoder, recs)
    key = lambda sigs: sorted((s.entity.kind, s.figures["window"], s.figures["window_start"]) for s in sigs)  # noqa: E731
    assert in_order and key(in_order) == key(shuffled)
    ids = lambda sigs: {AlertBuilder().add(s, 0.0) for s in sigs}  # noqa: E731
    assert ids(in_order) == ids(shuffled)


_EVENTS = st.lists(st.tuples(st.integers(0, 299), st.integers(0, 40_000), st.sampled_from(["gpt-4o", "o1"])),
                   min_size=1, max_size=60)


@given(_EVENTS, st.lists(st.integers(0, 10_000), max_size=40), st.randoms(use_true_random=False))
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_redelivery_never_counts_twice(decoder, token, spec, redelivered, rnd) -> None:
    """Any stream with any of its records read again (later, anywhere up to the end) counts each
    request once: the same counters, the same signals as the stream read once."""
    recs = [llm(f"e{i}", M0 + t, n, model=m, token=token) for i, (t, n, m) in enumerate(sorted(spec))]
    stream = list(recs)
    for r in redelivered:
        rec = recs[r % len(recs)]
        stream.insert(rnd.randint(stream.index(rec) + 1, len(stream)), rec)  # anywhere after the original
    budgets = dict(per_minute={"subject": 150_000, "client": 0, "tenant": 400_000},
                   per_day={"subject": 1_000_000, "client": 0, "tenant": 0},
                   models={"gpt-4o": {"minute": {"subject": 60_000}}})
    once_store, again_store = MemoryStore(), MemoryStore()
    once = run(LlmBudgetDetector(**budgets), decoder, recs, once_store)
    again = run(LlmBudgetDetector(**budgets), decoder, stream, again_store)
    assert [(s.entity, s.figures["model"], s.figures["window_start"], s.figures["used"]) for s in again] == \
        [(s.entity, s.figures["model"], s.figures["window_start"], s.figures["used"]) for s in once]
    counters = lambda store: {k: v.used for k, (_, v) in store._data.items() if k[0] == "llm"}  # noqa: E731
    assert counters(again_store) == counters(once_store)
    expected: dict[tuple, int] = defaultdict(int)
    for t, n, _ in spec:
        expected[int((M0 + t) // 60)] += n
    assert {k[2]: v for k, v in counters(once_store).items() if k[1] == "minute" and k[3] == "tenant"} == \
        {m: n for m, n in expected.items() if n}


# -- state -----------------------------------------------------------------------------------------
def test_state_expires_on_event_time(decoder, token) -> None:
    det, store = LlmBudgetDetector(**only("subject", 10**9)), MemoryStore()
    run(det, decoder, [llm(f"e{i}", M0 + i, 1_000, token=token) for i in range(90)], store)
    assert len(store) == 2 + 2  # a counter per minute, the ids of each minute
    store.expire(M0 + 120 + 120 + 1)  # both minutes over, and the 2 min kept for late events
    assert len(store) == 0

    det, store = LlmBudgetDetector(**only("subject", 10**9, "day")), MemoryStore()
    run(det, decoder, [llm(f"e{i}", M0 + i, 1_000, token=token) for i in range(90)], store)
    store.expire(M0 + 3600)
    assert len(store) == 3  # the day's counter and, for as long as the day counts, its requests' ids
    store.expire(DAY0 + 86_400 + 121)
    assert len(store) == 0


# -- risk, severity, settings, partitions ----------------------------------------------------------
def test_one_signal_takes_its_entity_to_deny(decoder, token) -> None:
    [s] = run(LlmBudgetDetector(**only("subject", 100_000)), decoder,
              [llm(f"e{i}", M0 + i, 60_000, token=token) for i in range(2)])
    risk = RiskEngine()
    [update] = risk.add(s)
    assert (update.kind, update.value, update.action) == ("subject", "alice", "deny") and update.score >= 75
    builder = AlertBuilder()
    assert builder.get(builder.add(s, update.score)).severity == "high"


def test_the_type_is_known_to_scoring_and_the_console() -> None:
    from pathlib import Path

    from scoring.alerts import BASE_SEVERITY
    from scoring.risk import WEIGHTS

    assert WEIGHTS["traffic.llm_budget"] * 0.95 * 100 >= RiskEngine().deny_at and BASE_SEVERITY["traffic.llm_budget"] == "high"
    dom = Path(__file__).resolve().parents[2] / "api" / "console" / "static" / "js" / "dom.js"
    assert '"traffic.llm_budget"' in dom.read_text(encoding="utf-8")  # the queue's type filter


def test_defaults_match_the_settings_and_keep_to_the_documented_figures() -> None:
    section = load_settings(environ={}).detectors.traffic_llm_budget
    assert section.enabled and section.models == {} and section.tenants == {} and section.max_evidence == 20
    assert section.per_minute.model_dump() == DEFAULT_BUDGETS["minute"] == {
        "subject": 1_000_000, "client": 2_000_000, "tenant": 5_000_000}
    assert section.per_day.model_dump() == DEFAULT_BUDGETS["day"] == {
        "subject": 500_000_000, "client": 1_000_000_000, "tenant": 5_000_000_000}
    det = LlmBudgetDetector.from_config(section, tokens=None)
    assert [(b.scope, b.window, b.budget) for b in det.budgets_for("acme", "gpt-4o")] == [
        (scope, window, DEFAULT_BUDGETS[window][scope]) for scope in SCOPES for window in ("minute", "day")]


def test_a_toml_configuration_with_models_and_tenants(tmp_path, keys_dir) -> None:
    cfg = write_config(tmp_path, keys_dir, '[detectors.traffic_llm_budget]\n'
                       'per_minute = {subject = 200000}\n'
                       'per_day = {tenant = 0}\n'
                       'models = {"gpt-4o" = {per_minute = {subject = 50000}, per_day = {client = 9000000}}}\n'
                       'tenants = {globex = {per_day = {subject = 1000000}}}\n')
    det = LlmBudgetDetector.from_config(load_settings(cfg, environ={}).detectors.traffic_llm_budget, tokens=None)
    plan = lambda tenant, model: {(b.scope, b.window, b.model): b.budget for b in det.budgets_for(tenant, model)}  # noqa: E731
    assert plan("acme", "gpt-4o") == {
        ("subject", "minute", "*"): 200_000, ("subject", "day", "*"): 500_000_000,
        ("subject", "minute", "gpt-4o"): 50_000, ("client", "minute", "*"): 2_000_000,
        ("client", "day", "*"): 1_000_000_000, ("client", "day", "gpt-4o"): 9_000_000,
        ("tenant", "minute", "*"): 5_000_000}
    assert plan("globex", "o1")[("subject", "day", "*")] == 1_000_000
    bad = write_config(tmp_path, keys_dir, '[detectors.traffic_llm_budget]\nper_minute = {subject = -1}\n')
    with pytest.raises(Exception, match="traffic_llm_budget"):
        load_settings(bad, environ={})


@pytest.mark.parametrize(("section", "message"), [
    (SimpleNamespace(per_minute={"user": 5}), "per_minute.user: unknown scope"),
    (SimpleNamespace(per_day={"tenant": -1}), "per_day.tenant: budget must be a whole number of tokens >= 0"),
    (SimpleNamespace(models={"gpt-4o": {"per_hour": {}}}), "models.gpt-4o.per_hour: unknown key"),
    (SimpleNamespace(tenants={"acme": {"per_minute": {"client": 2.5}}}), "tenants.acme.per_minute.client: budget"),
])
def test_from_config_names_the_bad_key(section, message) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        LlmBudgetDetector.from_config(section, tokens=None)


def test_an_instance_per_re_keyed_stream_counts_only_its_scope(decoder, token) -> None:
    section = SimpleNamespace(per_minute={"subject": 10, "client": 10, "tenant": 10}, per_day=OFF)
    recs = [llm("e0", M0, 100, token=token)]
    assert LlmBudgetDetector in DETECTORS
    parts = {kind: build(LlmBudgetDetector, section, None, kind) for kind in ("principal", "client", "tenant", "ip")}
    assert parts["ip"] is None  # it keeps nothing by address
    found = {kind: [s.entity.kind for s in run(det, decoder, recs, store_for(det))]
             for kind, det in parts.items() if det is not None}
    assert found == {"principal": ["subject"], "client": ["client"], "tenant": ["tenant"]}
    everything = LlmBudgetDetector.from_config(section, tokens=None)
    assert [s.entity.kind for s in run(everything, decoder, recs)] == ["subject", "client", "tenant"]
    with pytest.raises(ValueError, match="unknown LLM budget scope 'ip'"):
        LlmBudgetDetector.from_config(section, tokens=None, scopes=("ip",))


# -- against the simulator -------------------------------------------------------------------------
def simulate(minter, attacks, **spec):
    lines, labels = [], []
    for ev in generate(SimulationSpec(attacks=attacks, **spec), minter):
        lines.append(json.dumps(ev.event).encode())
        labels += [(ev.event["event_id"], lab) for lab in ev.labels]
    return lines, labels


def test_the_simulated_budget_attack_is_caught(minter, settings, validator) -> None:
    lines, labels = simulate(minter, ("traffic.llm_budget",), seed=3, events=20_000, rate=10, attack_every=5_000)
    runs: dict[str, set[str]] = defaultdict(set)
    entity = {}
    for eid, lab in labels:
        runs[lab["attack_id"]].add(eid)
        entity[lab["attack_id"]] = (lab["entity"]["kind"], lab["entity"]["value"])
    assert len(runs) >= 3 and {kind for kind, _ in entity.values()} == {"subject"}
    attacked = set().union(*runs.values())
    result = Pipeline.from_settings(settings, validator).process([(line, None) for line in lines])
    found = [a for a in result.alerts if a.type == "traffic.llm_budget"]
    assert found and all(set(a.evidence["event_ids"]) & attacked for a in found)  # nothing but the attacks
    for attack_id, run_ids in runs.items():  # each on the subject it is labelled with, held to the minute's end
        about = [a for a in found if (a.entity.kind, a.entity.value) == entity[attack_id]
                 and set(a.evidence["event_ids"]) & run_ids]
        assert about and all(a.risk >= 75 and a.evidence["figures"]["deny_until"] % 60 == 0 for a in about)
        assert all(a.reasons[0].startswith(f"subject {entity[attack_id][1]} used ") for a in about)


def test_normal_llm_traffic_and_the_behavioural_llm_abuse_do_not_trip_it(minter, settings, validator) -> None:
    # 19:00 UTC, the busiest hour, at twice the default rate; with the LLM cost abuse the behaviour
    # model is for (a client's completions at ~40x its own usual size)
    lines, labels = simulate(minter, ("anomaly.llm_abuse",), seed=9, events=40_000, rate=100, attack_every=8_000,
                             start=SimulationSpec.start + 19 * 3600)
    assert len({lab["attack_id"] for _, lab in labels}) >= 3
    llm_lines = sum(1 for line in lines if b'"llm"' in line)
    assert llm_lines > 2_000
    result = Pipeline.from_settings(settings, validator).process([(line, None) for line in lines])
    assert not [a for a in result.alerts if a.type == "traffic.llm_budget"]
