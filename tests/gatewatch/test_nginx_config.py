"""`gatewatch nginx-config` (gatewatch/nginx_config.py): every variant is a config the real nginx accepts
(`nginx -t`; a missing nginx fails, it does not skip), no value can inject a directive, and the committed
example is the renderer's output. What the config does is tests/integration/test_nginx_gateway.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gatewatch.cli import main
from gatewatch.nginx_config import DECISION_HEADERS, NginxOptions, Route, parse_route, render
from ingest.errors import ConfigError
from tests.nginx_helpers import chown_tree, nginx_binary, private_dir, unprivileged

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "nginx" / "gatewatch.conf.example"
# The README's example ("Put gatewatch in front of your gateway"); deploy/nginx/gatewatch.conf.example is its output.
EXAMPLE_ARGS = ["nginx-config", "--upstream", "127.0.0.1:8080", "--decision", "127.0.0.1:8081",
                "--collector", "udp:127.0.0.1:5140",
                "--listen", "8000", "--route", "/api/=acme:orders", "--route", "/llm/=acme:chat",
                "--fail-mode", "open", "--trusted-proxy", "10.0.0.0/8", "--gateway", "edge-1"]
BASE = {"upstream": "127.0.0.1:8080", "decision": "127.0.0.1:8081", "collector": "unix:/run/gatewatch/access.sock"}


def nginx_t(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    with private_dir(tmp_path) as prefix:
        (prefix / "conf").mkdir()
        (prefix / "conf" / "nginx.conf").write_text(text)
        for d in ("logs", "tmp"):
            (prefix / d).mkdir()
        chown_tree(prefix)
        return subprocess.run([nginx_binary(), "-t", "-p", f"{prefix}/", "-c", "conf/nginx.conf", "-e", "stderr"],
                              capture_output=True, text=True, timeout=30, **unprivileged())


@pytest.mark.parametrize("options", [
    {"fail": "open"},
    {"fail": "closed"},
    {"fail": "closed", "fail_status": 403, "collector": "udp:127.0.0.1:5140", "workers": "2"},
    {"fail": "open", "trusted_proxies": ("10.0.0.0/8", "2001:db8::/32", "unix:"), "gateway": "edge-1",
     "routes": (Route("/", "acme", "web"), Route("/api/v1/", "acme", "api"), Route("/x%20y/", "beta"))},
    {"fail": "open", "listen": "[::1]:8443", "upstream": "[::1]:9000", "decision": "localhost:8081",
     "max_token_bytes": 65_536, "read_timeout_ms": 1000},
])
def test_every_variant_is_accepted_by_the_real_nginx(tmp_path: Path, options: dict[str, object]) -> None:
    text = render(NginxOptions(**{**BASE, **options}))  # type: ignore[arg-type]
    done = nginx_t(tmp_path, text)
    assert done.returncode == 0, done.stderr + text


def test_the_fail_mode_and_the_decision_headers_are_in_the_config() -> None:
    opened = render(NginxOptions(**BASE, fail="open"))
    closed = render(NginxOptions(**BASE, fail="closed"))
    assert "error_page 500 502 503 504 = @gatewatch_fail_open;" in opened and "@gatewatch_fail_closed" not in opened
    assert "error_page 500 = @gatewatch_fail_closed;" in closed and "return 503;" in closed
    assert "Retry-After" in closed and "Retry-After" not in render(NginxOptions(**BASE, fail="closed", fail_status=403))
    for name, value in DECISION_HEADERS:
        assert f"proxy_set_header {name} {value};" in opened
    assert "proxy_pass_request_headers off;" in opened and "proxy_pass_request_body off;" in opened
    assert "set_real_ip_from" not in opened  # no trusted proxies, no X-Forwarded-For believed
    assert "access_log syslog:server=unix:/run/gatewatch/access.sock,tag=gatewatch,nohostname gatewatch;" in opened
    assert opened.count("access_log") == 1 and "location / {" in opened  # nothing routed at /: 404


@pytest.mark.parametrize(("change", "named"), [
    ({"routes": (Route("/api/;return 200", "acme"),)}, "--route PATH"),
    ({"routes": (Route("/api/ {", "acme"),)}, "--route PATH"),
    ({"routes": (Route("api/", "acme"),)}, "--route PATH"),
    ({"routes": (Route("/a/", 'acme";'),)}, "--route TENANT"),
    ({"routes": (Route("/a/", "acme", "$x"),)}, "--route ROUTE"),
    ({"routes": (Route("/a/", "acme"), Route("/a/", "beta"))}, "given twice"),
    ({"collector": "unix:/run/x.sock,tag=evil"}, "--collector"),
    ({"collector": "unix:relative.sock"}, "--collector"),
    ({"collector": "tcp:127.0.0.1:514"}, "--collector"),
    ({"upstream": "127.0.0.1"}, "--upstream"),
    ({"decision": "evil;host:80"}, "--decision"),
    ({"gateway": "$hostname"}, "--gateway"),
    ({"default_tenant": ""}, "--default-tenant"),
    ({"trusted_proxies": ("10.0.0.0/33",)}, "--trusted-proxy"),
    ({"fail": "sometimes"}, "--fail"),
    ({"fail_status": 500}, "--fail-status"),
    ({"workers": "0"}, "--workers"),
    ({"user": "root;"}, "--user"),
])
def test_a_value_that_could_inject_a_directive_is_refused(change: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("$", r"\$")):
        render(NginxOptions(**{**BASE, "fail": "open", **change}))  # type: ignore[arg-type]


def test_parse_route() -> None:
    assert parse_route("/api/=acme:orders") == Route("/api/", "acme", "orders")
    assert parse_route("/api/=acme") == Route("/api/", "acme", "")
    with pytest.raises(ConfigError):
        parse_route("/api/")


def test_the_committed_example_is_the_renderers_output(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # default settings: no ./gatewatch.toml
    monkeypatch.delenv("GATEWATCH_CONFIG", raising=False)
    monkeypatch.delenv("GATEWATCH_LIMITS__MAX_TOKEN_BYTES", raising=False)
    assert main(EXAMPLE_ARGS) == 0
    assert EXAMPLE.read_text(encoding="utf-8") == capsys.readouterr().out, \
        "deploy/nginx/gatewatch.conf.example is stale: regenerate it with `gatewatch " + " ".join(EXAMPLE_ARGS) + "`"


def test_cli_defaults_come_from_the_decision_settings(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWATCH_DECISION__BIND", "127.0.0.2:9999")
    monkeypatch.setenv("GATEWATCH_DECISION__FAIL_MODE", "closed")
    monkeypatch.setenv("GATEWATCH_LIMITS__MAX_TOKEN_BYTES", "32768")
    assert main(["nginx-config", "--upstream", "127.0.0.1:1", "--collector", "udp:127.0.0.1:2"]) == 0
    out = capsys.readouterr().out
    assert "server 127.0.0.2:9999;" in out and "@gatewatch_fail_closed" in out
    assert "large_client_header_buffers 4 33k;" in out
    out_file = tmp_path / "n.conf"
    assert main(["nginx-config", "--upstream", "127.0.0.1:1", "--collector", "udp:127.0.0.1:2", "--fail-mode", "open",
                 "--out", str(out_file)]) == 0
    assert "@gatewatch_fail_open" in out_file.read_text()
    assert main(["nginx-config", "--upstream", "127.0.0.1:1", "--collector", "udp:127.0.0.1:2",
                 "--route", "/a b=acme"]) == 2
    assert "--route PATH" in capsys.readouterr().err


def test_a_missing_nginx_fails_the_test_with_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWATCH_NGINX", str(tmp_path / "no-nginx"))
    with pytest.raises(pytest.fail.Exception, match=r"deploy/system-deps.sh test.*apt-get install -y nginx"):
        nginx_binary()
