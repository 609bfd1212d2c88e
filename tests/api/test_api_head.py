"""HEAD on every GET endpoint answers as GET would (status and headers), without a body."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/alerts", "/v1/alerts/counts", "/v1/entities",
                                  "/metrics", "/v1/risk?ip=10.0.0.1", "/", "/console/index.html"])
def test_head_answers_like_get_without_a_body(client, creds, auth, store, make_alert, path):
    store.upsert_alerts([make_alert(1)])
    headers = auth(creds["analyst"])
    got = client.get(path, headers=headers)
    head = client.head(path, headers=headers)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # its figures (request counts) move between the two requests
        assert head.headers["content-length"] == got.headers["content-length"]


def test_head_on_one_alert(client, creds, auth, store, make_alert):
    store.upsert_alerts([make_alert(1)])
    headers = auth(creds["analyst"])
    assert client.head(f"/v1/alerts/{make_alert(1).id}", headers=headers).status_code == 200
    missing = client.head("/v1/alerts/al_missing", headers=headers)
    assert missing.status_code == 404 and missing.content == b""


def test_head_needs_the_credential_get_needs(client):
    r = client.head("/v1/alerts")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and r.content == b""


def test_head_on_the_event_stream_ends(client, creds, auth):
    # Bounded by ?timeout= like every stream a test opens; a HEAD should end long before it.
    r = client.head("/v1/alerts/stream?timeout=60", headers=auth(creds["analyst"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.content == b""


def test_a_method_a_path_lacks_still_405s_naming_head(client, creds, auth):
    r = client.post("/v1/alerts", headers=auth(creds["analyst"]))
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "GET, HEAD"
