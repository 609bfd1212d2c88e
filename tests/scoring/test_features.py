"""Window features on hand-built events: values, windows closing on the watermark, batch independence."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from ingest.events import AccessRecord, Event, LLMUsage, TokenRecord
from ingest.tokens import TokenInfo
from scoring.features import FEATURES, KINDS, SHARE_PSEUDO, WindowFeatures, WindowTable, raw_share, transform

T0 = 1_795_000_020.0 - 1_795_000_020.0 % 3600  # the start of an hour (and of a 60 s window)
F = {name: i for i, name in enumerate(FEATURES)}
_n = 0


def ev(ts: float, *, sub: str | None = "alice", client: str | None = "web", ip: str = "203.0.113.7",
       path: str = "/v1/orders/1", route: str | None = "orders-api", status: int = 200, latency: float | None = 10.0,
       bytes_in: int | None = 100, bytes_out: int | None = 1000, agent: str | None = "Mozilla/5.0",
       llm: tuple[int, int] | None = None, iat: float | None = None, tenant: str = "acme",
       event_id: str | None = None) -> Event:
    global _n
    _n += 1
    rec = AccessRecord(event_id=event_id or f"e{_n}", ts="2026-11-18T00:00:00.000Z", gateway="gw", tenant=tenant,
                       client_ip=ip, method="GET", path=path, status=status, route=route, latency_ms=latency,
                       bytes_in=bytes_in, bytes_out=bytes_out, user_agent=agent,
                       llm=LLMUsage("openai", "gpt", *llm) if llm else None)
    token = None
    if sub is not None or client is not None:
        token = TokenInfo(tfp="f" * 16, verdict="ok", sub=sub, client_id=client,
                          iat=ts - 100 if iat is None else iat, claims={"sub": sub})
    return Event(record=rec, ts=ts, token=token)


def rows(table: WindowTable, kind: str, value: str) -> list[int]:
    return [i for i in range(len(table)) if KINDS[table.kind[i]] == kind and table.value[i] == value]


def row(table: WindowTable, kind: str, value: str) -> np.ndarray:
    (i,) = rows(table, kind, value)
    return table.X[i]


def closed(events: list[Event], **kw) -> WindowTable:
    wf = WindowFeatures(**kw)
    wf.observe(events)
    return wf.close(math.inf)


def test_counts_shares_sums_latency_and_tokens_of_one_window() -> None:
    events = [
        ev(T0 + 1, path="/a", status=200, latency=10, bytes_in=100, bytes_out=1000, llm=(600, 200), iat=T0 - 299),
        ev(T0 + 2, path="/a", status=401, latency=20, bytes_in=None, bytes_out=50, iat=T0 - 98),
        ev(T0 + 3, path="/b", route="llm-gateway", status=404, latency=30, llm=(400, 600), ip="198.51.100.1"),
        ev(T0 + 4, path="/c", status=503, latency=None, agent="curl/8", iat=T0 - 196),
    ]
    x = row(closed(events), "subject", "alice")
    n = 4 + SHARE_PSEUDO
    assert x[F["requests"]] == 4 and x[F["requests_rolling"]] == 4
    assert x[F["distinct_paths"]] == 3 and x[F["distinct_routes"]] == 2
    assert x[F["share_4xx"]] == pytest.approx(2 / n) and x[F["share_401"]] == pytest.approx(1 / n)
    assert x[F["share_404"]] == pytest.approx(1 / n) and x[F["share_403"]] == 0
    assert x[F["share_5xx"]] == pytest.approx(1 / n)
    assert raw_share(x[F["share_4xx"]], 4) == pytest.approx(0.5)
    assert x[F["bytes_in"]] == 300 and x[F["bytes_out"]] == 3050
    assert x[F["latency_mean_ms"]] == pytest.approx(20.0)  # the one without latency is left out
    assert x[F["latency_p95_ms"]] == 20.0  # lower nearest rank of (10, 20, 30)
    assert x[F["distinct_ips"]] == 2 and x[F["distinct_agents"]] == 2 and x[F["distinct_subjects"]] == 1
    assert x[F["prompt_tokens"]] == 1000 and x[F["completion_tokens"]] == 800
    assert x[F["completion_per_call"]] == 400  # 800 over the two calls that carried LLM usage
    # token age = ts - iat: 300, 100, 100 (iat default ts - 100), 200
    assert x[F["token_age_s"]] == pytest.approx(175.0)
    assert x[F["hour_share"]] == pytest.approx(1 / 24)  # a new entity: neutral


def test_each_kind_gets_its_own_window_and_ip_counts_subjects() -> None:
    events = [ev(T0 + i, sub=f"u{i % 3}", client="web", ip="198.51.100.9") for i in range(6)]
    events.append(ev(T0 + 7, sub=None, client=None, ip="198.51.100.9"))  # anonymous: only ip and tenant
    table = closed(events)
    assert {KINDS[k] for k in table.kind} == set(KINDS)
    ip = row(table, "ip", "198.51.100.9")
    assert ip[F["requests"]] == 7 and ip[F["distinct_subjects"]] == 3
    assert row(table, "client", "web")[F["distinct_subjects"]] == 3
    assert row(table, "subject", "u0")[F["requests"]] == 2
    assert row(table, "tenant", "acme")[F["requests"]] == 7
    assert row(table, "ip", "198.51.100.9")[F["token_age_s"]] == pytest.approx(100.0)  # anonymous one has none


def test_a_service_whose_client_is_its_subject_has_one_window_not_two() -> None:
    table = closed([ev(T0 + i, sub="acme-billing", client="acme-billing") for i in range(3)])
    assert rows(table, "subject", "acme-billing") and not rows(table, "client", "acme-billing")


def test_windows_are_per_tenant() -> None:
    table = closed([ev(T0, tenant="acme"), ev(T0 + 1, tenant="globex")])
    assert sorted(t for t, k in zip(table.tenant, table.kind, strict=True) if KINDS[k] == "ip") == ["acme", "globex"]


def test_rolling_count_spans_the_last_windows_and_forgets_older_ones() -> None:
    events = [ev(T0 + 60 * w + s) for w in (0, 1, 2) for s in range(5)]
    events += [ev(T0 + 60 * 20 + s) for s in range(2)]  # 18 empty windows later
    table = closed(events, rolling_windows=15)
    assert [table.X[i, F["requests_rolling"]] for i in rows(table, "subject", "alice")] == [5, 10, 15, 2]
    assert [table.X[i, F["requests"]] for i in rows(table, "subject", "alice")] == [5, 5, 5, 2]


def test_hour_share_is_the_share_of_the_entitys_past_traffic_in_this_hour() -> None:
    day = 86_400
    events = [ev(T0 + 10 * 3600 + d * day + s) for d in range(3) for s in range(10)]  # 10:00 on three days
    events += [ev(T0 + 3 * 3600 + 3 * day)]  # then once at 03:00
    events += [ev(T0 + 10 * 3600 + 3 * day)]  # and at 10:00 again
    table = closed(events)
    shares = [table.X[i, F["hour_share"]] for i in rows(table, "subject", "alice")]
    prior = 24.0
    assert shares[0] == pytest.approx(1 / 24)
    assert shares[3] == pytest.approx((0 + prior / 24) / (30 + prior))  # 03:00: none of its 30 requests
    assert shares[4] == pytest.approx((30 + prior / 24) / (31 + prior))  # 10:00: nearly all of them
    assert shares[3] < 0.02 < 0.5 < shares[4]


def test_windows_close_on_the_watermark_and_late_events_within_lateness_still_land() -> None:
    wf = WindowFeatures(window_seconds=60, lateness_seconds=30)
    wf.observe([ev(T0 + 10), ev(T0 + 50)])
    assert len(wf.close(T0 + 59)) == 0  # window [T0, T0+60) not over yet
    wf.observe([ev(T0 + 85), ev(T0 + 55)])  # watermark before the late one: 85 - 30 = 55 < 60: it lands
    assert wf.too_late == 0
    table = wf.close(T0 + 85 - 30)
    assert len(table) == 0
    wf.observe([ev(T0 + 95)])
    table = wf.close(T0 + 95 - 30)  # watermark 65 passes the end of window 0
    assert row(table, "subject", "alice")[F["requests"]] == 3
    wf.observe([ev(T0 + 20)])  # its window is closed: dropped, counted
    assert wf.too_late == 1
    assert row(wf.close(math.inf), "subject", "alice")[F["requests"]] == 2  # the window [60, 120)


def test_a_redelivered_event_counts_once() -> None:
    e = ev(T0 + 1, event_id="same")
    table = closed([e, ev(T0 + 2), e])
    assert row(table, "subject", "alice")[F["requests"]] == 2


def test_token_events_move_the_watermark_but_make_no_rows() -> None:
    tok = Event(record=TokenRecord(event_id="t1", ts="x", tenant="acme", type="revoked", jti="j"), ts=T0 + 500)
    wf = WindowFeatures()
    wf.observe([ev(T0 + 1), tok, ev(T0 + 2)])  # the second access event is far behind the watermark now
    assert wf.too_late == 1
    assert len(wf.close(math.inf)) == 4  # the first event's subject, client, ip and tenant windows


def _stream(seed: int, n: int = 1500) -> list[Event]:
    """Out-of-order traffic of a few entities: most events in order, some late within and beyond lateness."""
    rng = random.Random(seed)
    out, t = [], T0
    for _ in range(n):
        t += rng.expovariate(2.0)
        ts = t - (rng.uniform(0, 25) if rng.random() < 0.05 else rng.uniform(40, 120) if rng.random() < 0.01 else 0)
        out.append(ev(ts, sub=f"u{rng.randrange(5)}", client=rng.choice(["web", "ios"]),
                      ip=f"198.51.100.{rng.randrange(4)}", path=f"/v1/x/{rng.randrange(30)}",
                      status=rng.choice([200] * 8 + [401, 404]), latency=rng.uniform(1, 100),
                      llm=(rng.randrange(1000), rng.randrange(300)) if rng.random() < 0.2 else None))
    return out


def _canonical(table: WindowTable) -> list[tuple]:
    return sorted((int(table.window[i]), int(table.kind[i]), table.tenant[i], table.value[i],
                   tuple(np.round(table.X[i], 9)), table.event_ids[i]) for i in range(len(table)))


@pytest.mark.parametrize("sizes", [(1,), (7,), (100, 3), (1500,)])
def test_rows_do_not_depend_on_how_the_stream_is_batched(sizes: tuple[int, ...]) -> None:
    stream = _stream(3)
    reference = closed(stream)
    wf = WindowFeatures()
    parts, i, k, top = [], 0, 0, -math.inf
    while i < len(stream):
        size = sizes[k % len(sizes)]
        batch = stream[i:i + size]
        wf.observe(batch)
        top = max(top, max(e.ts for e in batch))
        parts.append(wf.close(top - wf.lateness_seconds))
        i, k = i + size, k + 1
    parts.append(wf.close(math.inf))
    assert _canonical(WindowTable.concat(parts)) == _canonical(reference)
    assert len(reference) > 100


def test_transform_logs_amounts_and_keeps_shares() -> None:
    X = np.zeros((1, len(FEATURES)))
    X[0, F["requests"]] = math.e - 1
    X[0, F["share_401"]] = 0.5
    T = transform(X)
    assert T[0, F["requests"]] == pytest.approx(1.0) and T[0, F["share_401"]] == 0.5


def test_idle_entities_are_forgotten_after_the_ttl() -> None:
    wf = WindowFeatures(entity_ttl_seconds=3600)
    wf.observe([ev(T0 + s) for s in range(5)])
    wf.close(T0 + 120)
    assert wf.entities == 4
    wf.observe([ev(T0 + 4 * 3600, sub="bob", client="ios", ip="198.51.100.2")])
    wf.close(T0 + 4 * 3600 + 120)
    assert wf.entities == 4  # alice, web and the old ip gone; bob, ios, the new ip; the tenant stays
    wf.observe([ev(T0 + 4 * 3600 + 200)])  # alice again: a new entity, neutral hour share, no history
    table = wf.close(math.inf)
    i = rows(table, "subject", "alice")[0]
    assert table.history[i] == 0 and table.X[i, F["hour_share"]] == pytest.approx(1 / 24)


def test_windowing_one_kind_only_ignores_events_without_that_entity() -> None:
    """A worker of one re-keyed stream windows only its kind; events lacking it give no rows, no error."""
    from ingest.events import AccessRecord, Event
    from scoring.features import WindowFeatures

    wf = WindowFeatures(kinds=("subject",))
    rec = AccessRecord(event_id="e1", ts="x", gateway="g", tenant="acme", client_ip="10.0.0.1", method="GET",
                       path="/", status=200)
    wf.observe([Event(record=rec, ts=1_000.0)])  # no token, so no subject
    assert len(wf.close(float("inf")).kind) == 0
    both = WindowFeatures(kinds=("ip", "tenant"))
    both.observe([Event(record=rec, ts=1_000.0)])
    assert sorted(set(both.close(float("inf")).kind.tolist())) == [2, 3]  # ip and tenant rows only
