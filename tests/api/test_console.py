"""The console's HTTP headers: every response at `/` and under `/console` carries the same CSP and frame
protection, so no page or file of the console can be framed by another origin (clickjacking)."""

from __future__ import annotations

import pytest

SECURITY_HEADERS = ("content-security-policy", "x-frame-options", "referrer-policy", "x-content-type-options")

CONSOLE_PATHS = ["/", "/console/index.html", "/console/console.css", "/console/js/app.js",
                 "/console/vendor/README.md", "/console/no-such-file.js", "/console/"]


@pytest.mark.parametrize("path", CONSOLE_PATHS)
def test_every_console_response_carries_the_index_security_headers(client, path):
    index = client.get("/")
    r = client.get(path)
    for name in SECURITY_HEADERS:
        assert r.headers.get(name) == index.headers[name], (path, name)
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


def test_a_revalidated_console_file_keeps_the_security_headers(client):
    first = client.get("/console/index.html")
    r = client.get("/console/index.html", headers={"If-None-Match": first.headers["etag"]})
    assert r.status_code == 304
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_api_responses_are_not_given_the_console_policy(client):
    assert "content-security-policy" not in client.get("/healthz").headers
