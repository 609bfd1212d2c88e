"""The `[detectors.*]` sections of the configuration: one typed section per detector (gatewatch/settings.py
holds the rest and loads the file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A configuration section: unknown keys refused, values frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NonceReplaySettings(Section):
    enabled: bool = True
    # Seconds a nonce stays remembered; None = [tokens] nonce_window_seconds.
    window_seconds: int | None = Field(None, ge=1)
    max_evidence: int = Field(20, ge=1, le=1000)


class UnencryptedTokenSettings(Section):
    enabled: bool = True
    realert_seconds: int = Field(86_400, ge=60)  # one alert per issuer and client per day


class InvalidTokenSettings(Section):
    enabled: bool = True
    threshold: int = Field(20, ge=2)  # refused tokens from one IP ...
    window_seconds: int = Field(60, ge=1)  # ... inside this much event time


class ExpiredUseSettings(Section):
    enabled: bool = True
    realert_seconds: int = Field(600, ge=1)  # one signal per token per this much event time


class CrossTenantSettings(Section):
    enabled: bool = True
    realert_seconds: int = Field(600, ge=1)  # one signal per token and tenant per this much event time


class JtiCollisionSettings(Section):
    enabled: bool = True
    # A jti is remembered until its token's exp (+ leeway), but never longer than this.
    max_remember_seconds: int = Field(86_400, ge=60)


class TokenContextReplaySettings(Section):
    enabled: bool = True
    # A client's "network": its IPv4 prefix (16 = /16, wide enough for ISP/carrier address churn) ...
    ipv4_prefix: int = Field(16, ge=8, le=32)
    # ... or its IPv6 prefix (48 = one site's allocation)
    ipv6_prefix: int = Field(48, ge=16, le=128)
    # Flapping: this many switches back and forth between the same two client contexts ...
    flap_switches: int = Field(5, ge=2, le=50)
    # ... within this many seconds of event time = two clients sharing one token
    flap_window_seconds: int = Field(120, ge=1, le=3600)


class RefreshReuseSettings(Section):
    enabled: bool = True
    # A rotated refresh token presented again within this many seconds is a two-tab race (silent)
    grace_seconds: int = Field(10, ge=0, le=300)
    # Rotated refresh-token jtis are remembered this long; a reuse after that goes undetected
    remember_seconds: int = Field(86_400, ge=60)


class RevokedUseSettings(Section):
    enabled: bool = True
    # Requests up to this many seconds after a revocation were in flight at logout (silent)
    grace_seconds: int = Field(5, ge=0, le=300)
    # How long a revocation is remembered when the token's exp was never seen (else until exp + leeway)
    remember_seconds: int = Field(86_400, ge=60)
    # Each token's uses in the last this-many seconds are kept, so a revocation read late still catches them
    reorder_seconds: int = Field(30, ge=0, le=3600)


class RateLimits(Section):
    # Requests allowed per window on one route; 0 = that dimension is not limited.
    subject: int = Field(600, ge=0)  # one token subject (a user or a service)
    client: int = Field(6_000, ge=0)  # one OAuth client: all of its users together
    ip: int = Field(600, ge=0)  # one client address (an office NAT or CGNAT address is shared)
    tenant: int = Field(60_000, ge=0)  # the whole tenant: ~3x the biggest tenant's busiest minute


class RouteRateLimits(Section):
    # One route's overrides; an unset dimension keeps [..limits]; 0 switches it off on that route.
    subject: int | None = Field(None, ge=0)
    client: int | None = Field(None, ge=0)
    ip: int | None = Field(None, ge=0)
    tenant: int | None = Field(None, ge=0)


class RateLimitSettings(Section):
    enabled: bool = True
    window_seconds: int = Field(60, ge=1, le=86_400)  # the sliding window the limits count over
    sub_windows: int = Field(6, ge=1, le=60)  # counters per key; the count errs by at most one of them
    max_evidence: int = Field(20, ge=1, le=1000)  # event ids kept as evidence per signal
    limits: RateLimits = RateLimits()
    route_limits: dict[str, RouteRateLimits] = {}  # route -> overrides, e.g. llm-gateway = {subject = 120}


class IpAllowlistSettings(Section):
    enabled: bool = True
    # tenant -> CIDRs (IPv4/IPv6): the tenant accepts requests only from these, on every route
    tenants: dict[str, list[str]] = {}
    # tenant -> route -> CIDRs: only that route of that tenant is restricted
    routes: dict[str, dict[str, list[str]]] = {}
    realert_seconds: int = Field(3600, ge=60)  # one alert per (tenant, route, address) per hour


class LlmMinuteBudgets(Section):
    # LLM tokens (prompt + completion, all models together) per clock minute; 0 = no budget for that scope.
    subject: int = Field(1_000_000, ge=0)  # one token subject (a user or a service)
    client: int = Field(2_000_000, ge=0)  # one OAuth client: all of its users together
    tenant: int = Field(5_000_000, ge=0)  # the whole tenant


class LlmDayBudgets(Section):
    # LLM tokens (prompt + completion, all models together) per UTC day; 0 = no budget for that scope.
    subject: int = Field(500_000_000, ge=0)
    client: int = Field(1_000_000_000, ge=0)
    tenant: int = Field(5_000_000_000, ge=0)


class LlmBudgetTable(Section):
    # One model's or one tenant's budgets of one window; unset: none of the model's own / the default.
    subject: int | None = Field(None, ge=0)
    client: int | None = Field(None, ge=0)
    tenant: int | None = Field(None, ge=0)


class LlmBudgetOverride(Section):
    per_minute: LlmBudgetTable = LlmBudgetTable()
    per_day: LlmBudgetTable = LlmBudgetTable()


class LlmBudgetSettings(Section):
    enabled: bool = True
    per_minute: LlmMinuteBudgets = LlmMinuteBudgets()
    per_day: LlmDayBudgets = LlmDayBudgets()
    # model -> budgets of its own, on its tokens alone, checked besides the overall ones,
    # e.g. "gpt-4o" = {per_minute = {subject = 200000}}
    models: dict[str, LlmBudgetOverride] = {}
    # tenant -> its own overall budgets (an unset scope keeps per_minute / per_day; 0 = none)
    tenants: dict[str, LlmBudgetOverride] = {}
    max_evidence: int = Field(20, ge=1, le=1000)  # event ids kept as evidence per signal


class DetectorsSettings(Section):
    replay_nonce: NonceReplaySettings = NonceReplaySettings()
    replay_token_context: TokenContextReplaySettings = TokenContextReplaySettings()
    replay_refresh_reuse: RefreshReuseSettings = RefreshReuseSettings()
    token_revoked_use: RevokedUseSettings = RevokedUseSettings()
    traffic_rate_limit: RateLimitSettings = RateLimitSettings()
    traffic_ip_not_allowed: IpAllowlistSettings = IpAllowlistSettings()
    token_unencrypted: UnencryptedTokenSettings = UnencryptedTokenSettings()
    token_invalid: InvalidTokenSettings = InvalidTokenSettings()
    token_expired_use: ExpiredUseSettings = ExpiredUseSettings()
    token_cross_tenant: CrossTenantSettings = CrossTenantSettings()
    token_jti_collision: JtiCollisionSettings = JtiCollisionSettings()
    traffic_llm_budget: LlmBudgetSettings = LlmBudgetSettings()
