"""The analyst console in a real headless Chromium (Debian's `chromium`, driven by Playwright).

The real app runs under uvicorn in a background thread on a free 127.0.0.1 port, over a SQLite store
seeded with alerts and risk rows. Full-page screenshots of each page go to test-artifacts/console/.

Which tests need which endpoints:
  test_console_sign_in_queue_triage   GET/PATCH /v1/alerts…, /v1/alerts/counts (pages render, and
                                      degrade, whether or not the stream and entity endpoints exist)
  test_console_tenants_and_errors     the same
  test_console_entity_risk_overview   GET /v1/entities/{kind}/{value}, GET /v1/entities?limit=20
  test_console_live_updates           GET /v1/alerts/stream (server-sent events)
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from api.app import create_app
from api.store import AlertStore
from gatewatch.settings import ApiSettings
from scoring.alerts import Alert, EntityRef, Suppression
from scoring.risk import RiskUpdate

API_ISSUER = "https://idp.example"  # as in conftest.py (its `key_dir` keys sign for it)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
TIMEOUT_MS = 10_000

ACME = "al_console_acme_token_context"   # acme, subject user-1: the one triaged
GLOBEX = "al_console_globex_cross_tenant"  # globex: viewer-acme must never see it
MUTED = "al_console_acme_muted"          # acme, suppressed: hidden from the default queue
VIEWER = "al_console_acme_viewer"        # acme: the viewer tries (and fails) to triage it


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


def seed(store: AlertStore) -> None:
    store.upsert_alerts([
        Alert(id=ACME, type="replay.token_context", severity="high", tenant="acme",
              entity=EntityRef(kind="subject", value="user-1"),
              first_seen="2026-11-28T10:00:00.000Z", last_seen="2026-11-28T10:04:30.250Z", count=3, risk=82.0,
              reasons=["access token used from 2 networks within 270 s", "user agent changed mid-session"],
              evidence={"event_ids": ["ev-1001", "ev-1002", "ev-1003"], "token_fps": ["9f2c4e1a0b3d5f67"],
                        "figures": {"distinct_networks": 2, "window_s": 270, "first_ip": "203.0.113.7"},
                        "entities": [{"kind": "ip", "value": "203.0.113.7"}]}),
        Alert(id=GLOBEX, type="token.cross_tenant", severity="critical", tenant="globex",
              entity=EntityRef(kind="client", value="globex-mallory"),
              first_seen="2026-11-28T10:02:00.000Z", last_seen="2026-11-28T10:03:00.000Z", count=1, risk=95.0,
              reasons=["token of tenant acme used on globex's API"],
              evidence={"event_ids": ["ev-2001"], "token_fps": [], "figures": {}}),
        Alert(id=MUTED, type="traffic.rate_limit", severity="medium", tenant="acme",
              entity=EntityRef(kind="ip", value="198.51.100.9"),
              first_seen="2026-11-28T09:00:00.000Z", last_seen="2026-11-28T09:10:00.000Z", count=40, risk=30.0,
              reasons=["120 requests/min over the limit of 60"],
              evidence={"event_ids": ["ev-3001"], "token_fps": [], "figures": {"rpm": 120, "limit": 60}},
              suppression=Suppression(rule="load-test-acme", owner="sre@acme.example",
                                      expires="2026-12-01T00:00:00.000Z", reason="weekly load test")),
        Alert(id=VIEWER, type="token.expired_use", severity="low", tenant="acme",
              entity=EntityRef(kind="subject", value="user-2"),
              first_seen="2026-11-28T08:00:00.000Z", last_seen="2026-11-28T08:00:00.000Z", count=1, risk=10.0,
              reasons=["token used 40 s after exp"], evidence={"event_ids": ["ev-4001"]}),
    ])
    # Risk of user-1 rising over time (one write each, so a history has several points).
    for at, score, level, action in (("2026-11-28T09:30:00Z", 12.0, "low", "allow"),
                                     ("2026-11-28T10:00:00Z", 48.0, "medium", "step_up"),
                                     ("2026-11-28T10:04:30Z", 82.0, "high", "deny")):
        store.upsert_risk([RiskUpdate(kind="subject", value="user-1", tenant="acme", score=score, level=level,
                                      action=action, reasons=("access token used from 2 networks",), ts=_ts(at))])
    store.upsert_risk([RiskUpdate(kind="client", value="globex-mallory", tenant="globex", score=95.0,
                                  level="critical", action="deny", reasons=("cross-tenant token",),
                                  ts=_ts("2026-11-28T10:03:00Z"))])


# -- the server and the browser ------------------------------------------------------------------
@dataclass
class Server:
    url: str
    store: AlertStore


@pytest.fixture(scope="module")
def server(key_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store = AlertStore(tmp_path_factory.mktemp("console") / "alerts.db")
    seed(store)
    settings = ApiSettings(jwks=key_dir / "api-issuer.jwks.json", api_keys=key_dir / "api-keys.json",
                           issuers=[API_ISSUER], audience="gatewatch")
    app = create_app(api_settings=settings, store=store)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on: no race with other processes
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield Server(url=f"http://127.0.0.1:{port}", store=store)
    uv.should_exit = True
    thread.join(10)
    sock.close()
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed (no `chromium` on PATH): run `apt-get install chromium`."
                    " The console's browser test drives it through Playwright; it never downloads a browser.")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@dataclass
class Watch:
    """What the page did that it should not: uncaught errors, other origins, CSP violations, 5xx."""

    origin: str
    page_errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        page.on("response", lambda r: self.server_errors.append(f"{r.status} {r.url}") if r.status >= 500 else None)
        page.on("console", lambda m: self.csp.append(m.text) if "Content Security Policy" in m.text else None)

    def _request(self, request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(request.url)

    def _failed(self, request: Any) -> None:
        error = request.failure or ""
        parts = urlsplit(request.url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.failed.append(f"{request.url}: {error}")
        elif "ERR_ABORTED" not in error:  # a fetch aborted by leaving a page (e.g. the stream) is fine
            self.failed.append(f"{request.url}: {error}")

    def assert_clean(self) -> None:
        assert self.page_errors == [], f"uncaught JS errors: {self.page_errors}"
        assert self.foreign == [], f"requests to other origins: {self.foreign}"
        assert self.failed == [], f"failed requests: {self.failed}"
        assert self.csp == [], f"Content-Security-Policy violations: {self.csp}"
        assert self.server_errors == [], f"server errors: {self.server_errors}"


@pytest.fixture
def open_page(server: Server, browser: Browser) -> Iterator[Any]:
    contexts, watches = [], []

    def open_() -> tuple[Page, Watch]:
        context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=server.url)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        watch = Watch(origin=server.url)
        watch.attach(page)
        contexts.append(context)
        watches.append(watch)
        return page, watch

    yield open_
    for context in contexts:
        context.close()
    for watch in watches:
        watch.assert_clean()


def sign_in(page: Page, credential: str) -> None:
    page.goto("/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-key", credential)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login")).to_be_hidden()


def row(page: Page, alert_id: str) -> Any:
    return page.locator(f'table.alerts tr[data-id="{alert_id}"]')


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.wait_for_timeout(150)  # let a last layout (the chart's resize, row highlight) settle
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 1000, f"empty screenshot {path}"
    return path


# -- tests ---------------------------------------------------------------------------------------
def test_index_headers(server: Server) -> None:
    import httpx
    r = httpx.get(server.url + "/")
    assert r.status_code == 200
    assert r.headers["content-security-policy"].startswith("default-src 'self'; style-src 'self'; img-src 'self' data:")
    assert r.headers["cache-control"] == "no-cache"
    assert "http" not in r.text.replace("http-equiv", "")  # nothing loaded from another origin


def test_console_sign_in_queue_triage(server: Server, open_page: Any, creds: dict[str, str]) -> None:
    page, _ = open_page()
    sign_in(page, creds["analyst"])

    # The queue: newest first, both tenants for the analyst, the muted alert hidden by default.
    expect(row(page, ACME)).to_be_visible()
    expect(row(page, GLOBEX)).to_be_visible()
    expect(row(page, MUTED)).to_have_count(0)
    ids = page.locator("table.alerts tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert [i for i in ids if i in (ACME, GLOBEX, MUTED, VIEWER)] == [ACME, GLOBEX, VIEWER]
    expect(row(page, GLOBEX).locator(".badge.sev-critical")).to_have_text("critical")
    total = str(server.store.counts()["total"])
    expect(page.locator('[data-count="total"]')).to_have_text(total)  # counts include the muted one
    expect(page.locator('[data-count="suppressed"]')).to_have_text("1")
    expect(page.locator('.count-group[data-group="tenant"]')).to_contain_text("globex")
    screenshot(page, "queue")

    # Filters live in the URL: only the muted alerts; then one severity.
    page.select_option("select[name=suppressed]", "only")
    expect(row(page, MUTED)).to_be_visible()
    expect(page.locator("table.alerts tbody tr")).to_have_count(1)
    page.goto("/#/alerts?severity=critical")
    expect(row(page, GLOBEX)).to_be_visible()
    expect(page.locator("table.alerts tbody tr")).to_have_count(1)
    # Pages of one: "load more" follows next_cursor.
    page.goto("/#/alerts?type=replay.token_context,token.expired_use&limit=1")
    expect(page.locator("table.alerts tbody tr")).to_have_count(1)
    page.click("button.more")
    expect(page.locator("table.alerts tbody tr")).to_have_count(2)
    expect(page.locator("button.more")).to_be_hidden()
    page.goto("/#/alerts")

    # The alert page.
    row(page, ACME).locator("a.alert-link").click()
    expect(page).to_have_url(f"{server.url}/#/alerts/{ACME}")
    expect(page.locator("#view h1")).to_contain_text("replay.token_context")
    expect(page.locator('dd[data-field="tenant"]')).to_have_text("acme")
    expect(page.locator('dd[data-field="status"]')).to_have_text("open")
    expect(page.locator("section.alert-reasons li")).to_have_text(["access token used from 2 networks within 270 s",
                                                         "user agent changed mid-session"])
    evidence = page.locator("section.evidence")
    expect(evidence).to_contain_text("ev-1002")
    expect(evidence).to_contain_text("9f2c4e1a0b3d5f67")
    expect(evidence.locator("table.kv")).to_contain_text("distinct_networks")

    # Triage: acknowledge, then a note and an assignee; the page and the store both show them.
    page.click("#triage button.quick-acknowledged")
    expect(page.locator('dd[data-field="status"]')).to_have_text("acknowledged")
    expect(page.locator("#triage .ok")).to_have_text("Saved.")
    assert server.store.get_alert(ACME).status == "acknowledged"
    page.fill("#triage input[name=assignee]", "bob")
    page.fill("#triage textarea[name=note]", "<b>not html</b> checked with the customer")
    page.click("#triage button[type=submit]")
    expect(page.locator('dd[data-field="assignee"]')).to_have_text("bob")
    expect(page.locator("ul.notes .text")).to_have_text("<b>not html</b> checked with the customer")
    stored = server.store.get_alert(ACME)
    assert (stored.status, stored.assignee, stored.notes[-1].author) == ("acknowledged", "bob", "analyst")
    expect(page.locator("table.audit tbody tr").first).to_contain_text("open")
    expect(page.locator("table.audit tbody tr").first).to_contain_text("acknowledged")
    expect(page.locator("table.audit tbody tr")).to_have_count(3)  # status, assignee, note
    expect(page.locator("section.risk")).not_to_contain_text("Loading")
    expect(page.locator("#view")).not_to_contain_text("null")  # no missing value printed as "null"
    screenshot(page, "alert")

    # Closing needs a reason: without one the API's 422 is shown and nothing changes; with one it is kept.
    page.click("#triage button.quick-resolved")
    expect(page.locator("#triage .error")).to_contain_text("status resolved needs a reason")
    assert server.store.get_alert(ACME).status == "acknowledged"
    page.fill("#triage input[name=reason]", "customer confirmed the second device")
    page.click("#triage button.quick-resolved")
    expect(page.locator('dd[data-field="status"]')).to_have_text("resolved")
    expect(page.locator('dd[data-field="closed because"]')).to_have_text("customer confirmed the second device")
    expect(page.locator("table.audit tbody tr")).to_have_count(4)
    expect(page.locator("table.audit tbody tr").last).to_contain_text("customer confirmed the second device")
    assert server.store.get_alert(ACME).close_reason == "customer confirmed the second device"

    # The entity page (linked from the alert), then the overview.
    page.locator('dd[data-field="entity"] a').click()
    expect(page).to_have_url(f"{server.url}/#/entities/subject/user-1")
    expect(page.locator("#view h1")).to_contain_text("user-1")
    expect(row(page, ACME)).to_be_visible()
    expect(page.locator("#view")).not_to_contain_text("null")
    screenshot(page, "entity")
    page.click("a[data-nav=overview]")
    expect(page.locator("#view h1")).to_have_text("Overview")
    expect(page.locator('[data-count="total"]')).to_have_text(total)
    expect(page.locator("main")).not_to_contain_text("Loading")
    screenshot(page, "overview")

    for name in ("queue", "alert", "entity", "overview"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 0


def test_console_tenants_and_errors(server: Server, open_page: Any, creds: dict[str, str], mint: Any) -> None:
    # A rejected credential: back on the login form with the API's message.
    page, _ = open_page()
    sign_in_fails = page
    sign_in_fails.goto("/")
    sign_in_fails.fill("#login-key", "gw_not-a-real-key")
    sign_in_fails.click("#login-form button[type=submit]")
    expect(sign_in_fails.locator("#login-error")).to_contain_text("rejected")
    assert sign_in_fails.evaluate("sessionStorage.length") == 0

    # viewer-acme sees acme's alerts only, and cannot open globex's even by URL.
    page, _ = open_page()
    sign_in(page, creds["viewer-acme"])
    expect(row(page, ACME)).to_be_visible()
    expect(row(page, VIEWER)).to_be_visible()
    expect(row(page, GLOBEX)).to_have_count(0)
    expect(page.locator('.count-group[data-group="tenant"]')).not_to_contain_text("globex")
    page.goto(f"/#/alerts/{GLOBEX}")
    expect(page.locator("main")).to_contain_text("No such alert")
    expect(page.locator("main")).not_to_contain_text("cross_tenant")

    # It lacks alerts:write: triage shows the API's 403 message and changes nothing.
    page.goto(f"/#/alerts/{VIEWER}")
    page.click("#triage button.quick-resolved")
    expect(page.locator("#triage .error")).to_contain_text("credential lacks scope alerts:write")
    expect(page.locator('dd[data-field="status"]')).to_have_text("open")
    assert server.store.get_alert(VIEWER).status == "open"

    # A credential the API stops accepting mid-session: back to the login form, with a message.
    page.evaluate("sessionStorage.setItem('gatewatch.credential', 'gw_revoked')")
    page.goto("/#/overview")
    expect(page.locator("#login-error")).to_contain_text("Signed out")
    assert page.evaluate("sessionStorage.length") == 0

    # Signing out forgets the credential.
    page, _ = open_page()
    sign_in(page, creds["viewer-acme"])
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0

    # A bearer JWT for globex only sees globex.
    token = mint(scope="alerts:read", tenants=["globex"])
    page, _ = open_page()
    sign_in(page, token)
    expect(page.locator("#whoami")).to_have_text("JWT: alice@example")
    expect(row(page, GLOBEX)).to_be_visible()
    expect(page.locator("table.alerts tbody tr")).to_have_count(1)


def test_console_entity_risk_overview(server: Server, open_page: Any, creds: dict[str, str]) -> None:
    """Needs GET /v1/entities/{kind}/{value} and GET /v1/entities (the risk history, the riskiest list)."""
    page, _ = open_page()
    sign_in(page, creds["analyst"])
    page.goto("/#/entities/subject/user-1")
    risk_now = page.locator("table.risk-now")
    expect(risk_now.locator('tr[data-tenant="acme"]')).to_contain_text("82.0")
    expect(risk_now).to_contain_text("deny")
    expect(risk_now).to_contain_text("access token used from 2 networks")
    expect(page.locator(".chart-box .uplot canvas")).to_have_count(1)
    expect(row(page, ACME)).to_be_visible()

    page.goto(f"/#/alerts/{ACME}")
    expect(page.locator("section.risk .uplot canvas")).to_have_count(1)
    expect(page.locator("section.risk table.risk-now")).to_contain_text("82.0")

    page.goto("/#/overview")
    riskiest = page.locator("table.riskiest")
    expect(riskiest.locator('tr[data-value="globex-mallory"]')).to_contain_text("95.0")
    expect(riskiest.locator('tr[data-value="user-1"]')).to_contain_text("82.0")
    values = riskiest.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.value)")
    assert values[:2] == ["globex-mallory", "user-1"]  # riskiest first


def test_a_single_risk_point_gets_an_hour_of_time_axis(server: Server, open_page: Any,
                                                       creds: dict[str, str]) -> None:
    """One December value once drew an axis of years: uPlot stretches a zero-width range. globex-mallory has
    one risk row: its chart draws, and the console's axis range is an hour around that instant."""
    page, _ = open_page()
    sign_in(page, creds["analyst"])
    page.goto("/#/entities/client/globex-mallory")
    expect(page.locator(".chart-box .uplot canvas")).to_have_count(1)
    spans = page.evaluate("""async () => {
        const { xRange } = await import("/console/js/chart.js");
        const t = Date.parse("2026-12-03T10:00:00Z") / 1000;
        return [xRange(t, t), xRange(t - 600, t)].map(([a, b]) => b - a);
    }""")
    assert spans == [3600, 600]  # a lone instant: an hour around it; a real span: as it is


def test_console_live_updates(server: Server, open_page: Any, creds: dict[str, str]) -> None:
    """Needs GET /v1/alerts/stream: new and changed alerts reach the open queue without a reload."""
    page, _ = open_page()
    sign_in(page, creds["analyst"])
    expect(row(page, GLOBEX)).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    total = int(page.locator('[data-count="total"]').inner_text())

    fresh = Alert(id="al_console_live_new", type="token.revoked_use", severity="high", tenant="acme",
                  entity=EntityRef(kind="subject", value="user-9"), first_seen="2026-11-28T11:00:00.000Z",
                  last_seen="2026-11-28T11:00:00.000Z", count=1, risk=70.0, reasons=["token used after revocation"],
                  evidence={"event_ids": ["ev-9001"]})
    server.store.upsert_alerts([fresh])
    expect(row(page, fresh.id)).to_be_visible()
    first = page.locator("table.alerts tbody tr").first
    expect(first).to_have_attribute("data-id", fresh.id)  # inserted at the top
    expect(page.locator('[data-count="total"]')).to_have_text(str(total + 1))

    # A change to a listed alert updates its row in place.
    changed = fresh.model_copy(update={"count": 5, "last_seen": "2026-11-28T11:05:00.000Z"})
    server.store.upsert_alerts([changed])
    expect(row(page, fresh.id).locator("td.num").first).to_have_text("5")
    expect(row(page, fresh.id)).to_have_count(1)


def test_console_degrades_without_stream_and_entities(server: Server, open_page: Any,
                                                    creds: dict[str, str]) -> None:
    """A server without the stream and entity endpoints (404): the console says so and carries on."""
    page, _ = open_page()
    missing = {"status": 404, "content_type": "application/json",
               "body": json.dumps({"error": {"code": "not_found", "message": "Not Found"}})}
    page.route("**/v1/alerts/stream*", lambda route: route.fulfill(**missing))
    page.route("**/v1/entities**", lambda route: route.fulfill(**missing))
    sign_in(page, creds["analyst"])
    expect(page.locator("#live")).to_have_attribute("data-state", "unavailable")
    expect(page.locator("#live")).to_have_text("live updates unavailable")
    expect(row(page, GLOBEX)).to_be_visible()
    page.goto("/#/entities/client/globex-mallory")
    expect(page.locator("#view")).to_contain_text("No risk record for this entity.")
    expect(row(page, GLOBEX)).to_be_visible()  # found through GET /v1/alerts?entity=client:globex-mallory
    page.goto(f"/#/alerts/{GLOBEX}")
    expect(page.locator("section.risk")).to_contain_text("No risk record")
    page.goto("/#/overview")
    expect(page.locator("#view")).to_contain_text("Entity risk is unavailable on this server.")
    expect(page.locator('[data-count="total"]')).to_be_visible()


def test_console_stream_reconnects_with_last_event_id(server: Server, open_page: Any,
                                                      creds: dict[str, str]) -> None:
    """After the stream ends, the console reconnects and resumes after the last event id it saw."""
    page, _ = open_page()
    calls: list[dict[str, str]] = []
    changed = server.store.get_alert(GLOBEX).model_dump(mode="json")
    changed.update(status="resolved", assignee="carol", audit=[])

    def stream(route: Any) -> None:
        calls.append(route.request.headers)
        if len(calls) == 1:  # one event (split over odd lines), then the server closes the stream
            body = f": hi\r\nid: 41\nevent: alert\ndata: {json.dumps(changed)}\n\n"
            route.fulfill(status=200, content_type="text/event-stream", body=body)
        else:
            route.fulfill(status=404, content_type="application/json", body='{"error": {}}')

    page.route("**/v1/alerts/stream*", stream)
    sign_in(page, creds["analyst"])
    expect(row(page, GLOBEX).locator(".badge")).to_have_text(["critical", "resolved"])
    expect(row(page, GLOBEX)).to_contain_text("carol")
    expect(page.locator("#live")).to_have_attribute("data-state", "unavailable", timeout=TIMEOUT_MS)
    assert len(calls) == 2
    assert "last-event-id" not in calls[0]
    assert calls[1]["last-event-id"] == "41"
    assert calls[1]["authorization"] == f"Bearer {creds['analyst']}"


def test_sse_parser_in_browser(server: Server, open_page: Any) -> None:
    """The console's own SSE parser (js/sse.js) against the event-stream format's edge cases."""
    page, _ = open_page()
    page.goto("/console/vendor/README.md")  # any same-origin page: the module is imported from it
    events = page.evaluate("""async () => {
        const { SseParser } = await import("/console/js/sse.js");
        const out = [];
        const p = new SseParser((e) => out.push(e));
        for (const chunk of [": keep-alive\\n\\n", "id: 7\\r", "\\nevent: alert\\ndata: {\\"a\\"", ":1}\\n\\n",
                             "data:x\\ndata: y\\r\\n\\r\\n", "id: 9\\nevent: alert\\ndata: z\\n"]) p.push(chunk);
        return { out, lastId: p.lastId };
    }""")
    assert events["out"] == [{"id": "7", "event": "alert", "data": json.dumps({"a": 1}, separators=(",", ":"))},
                             {"id": "7", "event": "message", "data": "x\ny"}]
    assert events["lastId"] == "9"  # seen, though its event is not complete yet
