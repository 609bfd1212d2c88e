"""Static material of the simulated world: API products and their endpoints, user agents, LLM models.

An endpoint's latency is lognormal (median, sigma in ms); bytes are lognormal around their medians.
Route names are the gateway's API product names; every tenant has its own instances of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from string import Formatter


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # path with {placeholders}: oid, cid, sku, pid, uid, page, q, n
    weight: float
    ok: int = 200
    latency_ms: float = 40.0  # median
    sigma: float = 0.6
    bytes_out: int = 1_500  # median
    bytes_in: int = 0  # median request body (0 for bodiless requests)
    llm: str | None = None  # "chat" or "embeddings" on the LLM gateway

    @cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in Formatter().parse(self.template) if f)

    @cached_property
    def by_id(self) -> bool:
        return any(f in ("oid", "cid", "sku", "pid", "uid") for f in self.fields)


E = Endpoint
APIS: dict[str, tuple[Endpoint, ...]] = {
    "orders-api": (
        E("GET", "/v1/orders?page={page}", 3, latency_ms=55, bytes_out=6_000),
        E("GET", "/v1/orders/{oid}", 5, latency_ms=35, bytes_out=1_800),
        E("GET", "/v1/orders/{oid}/items", 1.5, latency_ms=45, bytes_out=2_600),
        E("POST", "/v1/orders", 1, ok=201, latency_ms=120, bytes_out=1_900, bytes_in=900),
        E("PATCH", "/v1/orders/{oid}", 0.5, latency_ms=90, bytes_out=1_800, bytes_in=300),
        E("DELETE", "/v1/orders/{oid}/items/{n}", 0.2, ok=204, latency_ms=70, bytes_out=0),
    ),
    "payments-api": (
        E("GET", "/v1/payments/{pid}", 3, latency_ms=60, bytes_out=1_200),
        E("GET", "/v1/payment-methods", 1, latency_ms=45, bytes_out=900),
        E("POST", "/v1/payments", 1, ok=201, latency_ms=380, sigma=0.5, bytes_out=1_100, bytes_in=700),
        E("POST", "/v1/payments/{pid}/refunds", 0.15, ok=201, latency_ms=420, bytes_out=800, bytes_in=250),
    ),
    "customers-api": (
        E("GET", "/v1/customers/{cid}", 5, latency_ms=30, bytes_out=2_200),
        E("GET", "/v1/customers?page={page}", 1, latency_ms=70, bytes_out=9_000),
        E("GET", "/v1/customers/{cid}/addresses", 1, latency_ms=35, bytes_out=1_100),
        E("PUT", "/v1/customers/{cid}", 0.5, latency_ms=85, bytes_out=2_200, bytes_in=1_400),
    ),
    "catalog-api": (
        E("GET", "/v1/products?page={page}", 3, latency_ms=40, bytes_out=14_000),
        E("GET", "/v1/products/{sku}", 6, latency_ms=18, bytes_out=3_500),
        E("GET", "/v1/search?q={q}", 3, latency_ms=95, sigma=0.7, bytes_out=11_000),
    ),
    "llm-gateway": (
        E("POST", "/v1/chat/completions", 6, latency_ms=0, llm="chat"),
        E("POST", "/v1/embeddings", 2, latency_ms=110, sigma=0.4, llm="embeddings"),
        E("GET", "/v1/models", 0.4, latency_ms=12, bytes_out=2_400),
    ),
    "admin-api": (
        E("GET", "/admin/v1/users?page={page}", 3, latency_ms=80, bytes_out=12_000),
        E("GET", "/admin/v1/users/{uid}", 3, latency_ms=40, bytes_out=1_600),
        E("PATCH", "/admin/v1/users/{uid}/roles", 0.6, latency_ms=110, bytes_out=700, bytes_in=200),
        E("GET", "/admin/v1/audit-log?page={page}", 1.5, latency_ms=160, bytes_out=20_000),
        E("POST", "/admin/v1/api-keys", 0.2, ok=201, latency_ms=140, bytes_out=600, bytes_in=180),
    ),
    # Public, unauthenticated endpoints (no token).
    "public": (
        E("GET", "/v1/status", 2, latency_ms=6, sigma=0.4, bytes_out=180),
        E("GET", "/.well-known/openid-configuration", 1, latency_ms=5, sigma=0.4, bytes_out=1_400),
        E("GET", "/.well-known/jwks.json", 1, latency_ms=5, sigma=0.4, bytes_out=1_900),
        E("GET", "/v1/public/products/{sku}", 5, latency_ms=22, bytes_out=3_200),
        E("GET", "/v1/public/search?q={q}", 3, latency_ms=100, sigma=0.7, bytes_out=10_500),
    ),
}
BUSINESS_APIS = ("orders-api", "payments-api", "customers-api", "catalog-api", "llm-gateway")

# Which API products a kind of caller uses, and how much. Restricted to what the tenant offers.
MIXES: dict[str, dict[str, float]] = {
    "browser": {"orders-api": 3, "customers-api": 3, "catalog-api": 3, "payments-api": 1, "llm-gateway": 1},
    "admin": {"admin-api": 3, "customers-api": 2, "orders-api": 2, "catalog-api": 1},
    "mobile": {"catalog-api": 4, "orders-api": 3, "payments-api": 1.5, "customers-api": 0.5},
    "sdk": {"llm-gateway": 5, "orders-api": 1, "customers-api": 1, "catalog-api": 1},
    "svc-billing-sync": {"payments-api": 3, "orders-api": 2},
    "svc-crm-sync": {"customers-api": 4, "orders-api": 1},
    "svc-ai-summarizer": {"llm-gateway": 5, "customers-api": 1},
    "svc-inventory": {"catalog-api": 4, "orders-api": 1},
    "svc-reporting": {"orders-api": 2, "customers-api": 1, "payments-api": 1},
}
SERVICE_KINDS = tuple(k for k in MIXES if k.startswith("svc-"))

BROWSER_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 "
    "Safari/537.36 Edg/125.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
)
IOS_VERSIONS = ("17.5.1", "17.4.1", "16.7.8", "18.0")
ANDROID_DEVICES = ("Android 14; Pixel 8", "Android 13; SM-S911B", "Android 14; SM-A546B", "Android 12; moto g(60)")
SDK_UAS = (
    "{tenant}-sdk-python/2.4.1 python/3.12.3",
    "{tenant}-sdk-js/3.2.0 node/20.14.0",
    "{tenant}-cli/1.8.2 (darwin; arm64)",
    "openai-python/1.35.3",
    "{tenant}-sdk-java/1.11.0 (Java/17.0.11)",
)
SERVER_UAS = (
    "Go-http-client/2.0", "Apache-HttpClient/4.5.14 (Java/17.0.10)", "okhttp/4.12.0",
    "python-httpx/0.27.0", "Ruby/3.3 Faraday/2.9.1",
)
# What intruders use: command-line tools and scripting libraries.
TOOL_UAS = ("curl/8.7.1", "python-requests/2.32.3", "Go-http-client/1.1", "Wget/1.21.4", "axios/1.7.2",
            "python-urllib3/2.2.1")
HEALTH_UAS = ("kube-probe/1.30", "ELB-HealthChecker/2.0")
CRAWLER_UAS = (
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)

# (provider, model, milliseconds per completion token)
LLM_MODELS = (
    ("openai", "gpt-4o-mini", 9.0), ("openai", "gpt-4o", 18.0), ("anthropic", "claude-3-5-sonnet", 16.0),
    ("anthropic", "claude-3-haiku", 7.0), ("mistral", "mistral-large", 14.0), ("google", "gemini-1.5-flash", 6.0),
)
EMBEDDING_MODELS = (("openai", "text-embedding-3-small"), ("mistral", "mistral-embed"))

SEARCH_TERMS = ("shoes", "usb-c cable", "invoice", "blue jacket", "refund", "laptop stand", "coffee",
                "gift card", "headphones", "winter tyres", "desk lamp", "shipping", "vitamin d", "backpack")
