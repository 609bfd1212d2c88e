"""Client context: where and with what a request was made, for `replay.token_context`.

A client context is (network, agent family). *Network* is the client IP's IPv4 /16 or IPv6 /48
(`ipv4_prefix`, `ipv6_prefix`): wide enough that a home router's or a carrier's address churn stays
inside it, narrow enough that a hosting provider is another network. *Agent family* is the
User-Agent classified into a few families: browser, mobile (native app), sdk, script (curl, wget,
python-requests and other hand-driven tools), server (HTTP libraries of backend services), bot,
probe, none (no User-Agent), else `other:<product>` (two unknown products are two families). A
gateway that logs no User-Agent at all puts every use in family none: then only flapping can fire.
Both classifications are cached per distinct value (a gateway sees few agents and, per token, few
addresses).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

_BOT = re.compile(r"([A-Za-z-]*(?:bot|crawler|spider|slurp))", re.IGNORECASE)
_SCRIPT = ("curl", "wget", "python-requests", "python-urllib", "python-urllib3", "urllib3", "urllib", "httpie",
           "postmanruntime", "insomnia", "powershell", "windowspowershell", "axios", "node-fetch", "undici",
           "got", "libwww-perl", "lwp-request", "http.rb", "aria2", "scrapy", "python-aiohttp")
_SERVER = ("apache-httpclient", "okhttp", "go-http-client", "python-httpx", "aiohttp", "faraday", "java",
           "jersey", "reactor-netty", "dotnet", "restsharp", "guzzlehttp", "ruby", "grpc-java", "grpc-go",
           "vert.x-webclient", "spring", "feign", "akka-http", "hackney", "finagle")
_PROBE = ("kube-probe", "elb-healthchecker", "googlehc", "consul", "prometheus", "blackbox-exporter")
NO_FLAP = ("server", "probe")  # machine clients: several egress addresses in turn are normal
_SDK_SUFFIXES = ("-cli", "-python", "-node", "-js", "-java", "-go", "-ruby", "-dotnet", "-php", "-swift")


@dataclass(frozen=True, slots=True)
class Context:
    """Where and with what a token was used."""

    network: str  # "81.2.0.0/16"
    family: str  # browser | mobile | sdk | script | server | bot | probe | none | other:<product>
    label: str  # "Safari on iOS", "python-requests": for people

    @property
    def key(self) -> str:
        return f"{self.network}|{self.family}"

    def compatible(self, other: Context) -> bool:
        """Same network or same agent family: what one owner's devices and movements look like."""
        return self.network == other.network or self.family == other.family


@lru_cache(maxsize=4096)
def classify_agent(user_agent: str | None) -> tuple[str, str]:
    """User-Agent → (family, short label)."""
    ua = (user_agent or "").strip()
    if not ua:
        return "none", "no User-Agent"
    low = ua.lower()
    product = ua.split()[0].split("/")[0]
    plow = product.lower()
    bot = _BOT.search(ua)
    if bot:
        return "bot", bot.group(1)
    if plow == "mozilla":
        return "browser", _browser_label(low)
    if plow in _PROBE:
        return "probe", product
    if "iphone" in low or "ipad" in low or "ios " in low or "cfnetwork" in low:
        return "mobile", f"{product} on iOS"
    if "android" in low or "dalvik" in low:
        return "mobile", f"{product} on Android"
    if "sdk" in plow or plow.endswith(_SDK_SUFFIXES) and plow not in _SCRIPT:
        return "sdk", product
    if plow in _SCRIPT:
        return "script", product
    if plow in _SERVER:
        return "server", product
    return f"other:{plow[:40]}", product[:40]


# (substrings of the lower-cased User-Agent, name): the first that matches names the browser, its OS
_BROWSERS = ((("edg/",), "Edge"), (("opr/",), "Opera"), (("firefox/", "fxios/"), "Firefox"),
             (("chrome/", "crios/"), "Chrome"), (("safari/",), "Safari"))
_OSES = ((("iphone", "ipad"), "iOS"), (("android",), "Android"), (("windows",), "Windows"),
         (("mac os x", "macintosh"), "macOS"), (("linux", "x11"), "Linux"))


def _first_named(low: str, table: tuple[tuple[tuple[str, ...], str], ...]) -> str | None:
    return next((name for needles, name in table if any(n in low for n in needles)), None)


def _browser_label(low: str) -> str:
    name = _first_named(low, _BROWSERS) or "a browser"
    os_ = _first_named(low, _OSES)
    return name if os_ is None else f"{name} on {os_}"


@lru_cache(maxsize=65_536)
def network_of(ip: str, ipv4_prefix: int = 16, ipv6_prefix: int = 48) -> str:
    """The client's network: its IPv4 /16 or IPv6 /48 (IPv4-mapped IPv6 counts as IPv4)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    plen = ipv4_prefix if addr.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{addr}/{plen}", strict=False))
