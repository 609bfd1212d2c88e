"""The app factory's HTTP behaviour: no redirect ever names the host a request claimed."""

from __future__ import annotations

import pytest

FORGED_HOST = "evil.example"


@pytest.mark.parametrize("path", ["/v1/alerts/", "/v1/alerts/counts/", "/v1/entities/", "/healthz/", "/console",
                                  "/v1/risk/?ip=10.0.0.1"])
def test_a_forged_host_never_reaches_location(client, creds, auth, path):
    r = client.get(path, headers={**auth(creds["analyst"]), "Host": FORGED_HOST}, follow_redirects=False)
    assert FORGED_HOST not in r.headers.get("location", "")
    if "location" in r.headers:
        assert r.headers["location"].startswith("/") and not r.headers["location"].startswith("//")
