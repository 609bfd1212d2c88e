"""The authorization server as the gateway sees it: logins, refresh-token rotation, client credentials,
logouts, and the `gateway.tokens` lifecycle events they produce.

Minting a nested JWT costs real cryptography, so a device keeps its access token until shortly before
`exp` (clients refresh proactively), exactly like real clients: the number of mints is bounded by
live sessions, not by requests. Refresh tokens are opaque: only their `jti`s appear, in "refreshed".
"""

from __future__ import annotations

from typing import Any

from gatewatch.simulate.context import NO_LABELS, Item, Sim
from gatewatch.simulate.population import Device

LEEWAY_SECONDS = 30  # the validator's default leeway: a token this far past `exp` is expired for it


class TokenBroker:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    # -- minting -------------------------------------------------------------------------------
    def claims(self, device: Device, iat: int, *, lifetime: int | None = None, jti: str | None = None,
               sub: str | None = None, use: str | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {
            "sub": sub or device.sub, "client_id": device.client_id, "tid": device.tenant.name,
            "jti": jti or self.sim.jti(), "iat": iat, "nbf": iat, "exp": iat + (lifetime or device.lifetime),
            "scope": device.scope,
        }
        if device.dpop_jkt:
            c["cnf"] = {"jkt": device.dpop_jkt}
        if use:
            c["use"] = use
        return c

    def mint(self, claims: dict[str, Any], *, encrypt: bool = True) -> str:
        self.sim.stats["mints"] += 1
        return self.sim.minter.mint(claims, encrypt=encrypt)

    def _install(self, device: Device, t: float, *, rotate: bool = True) -> str | None:
        """A fresh access token (and refresh token if the client gets one) on the device."""
        claims = self.claims(device, int(t))
        device.claims, device.jti, device.iat, device.exp = claims, claims["jti"], claims["iat"], claims["exp"]
        device.token = self.mint(claims)
        if device.refresh_lifetime and rotate:
            device.refresh_jti = self.sim.jti()
            if device.refresh_exp < t:  # a login starts a new refresh-token family
                device.refresh_exp = t + device.refresh_lifetime
        return device.refresh_jti

    # -- state ---------------------------------------------------------------------------------
    def margin(self, device: Device) -> float:
        return 120.0 if device.family == "mobile" else 60.0

    def usable(self, device: Device, t: float) -> bool:
        return device.token is not None and t < device.exp - self.margin(device)

    def stale(self, device: Device, t: float) -> bool:
        """Holding a token the validator would call expired (a phone back from the background)."""
        return device.token is not None and t > device.exp + LEEWAY_SECONDS

    def _adopt_existing(self, device: Device, t: float) -> None:
        """First sight of a device: most already hold a grant from before the simulated window."""
        device.seen = True
        sim = self.sim
        if sim.rng.random() >= 0.7:
            return
        if device.refresh_lifetime:
            device.refresh_jti = sim.jti()
            device.refresh_exp = t + sim.rng.uniform(0.1, 1.0) * device.refresh_lifetime
        if t - sim.spec.start < device.lifetime:
            iat = int(t - sim.rng.uniform(0.0, 0.85) * device.lifetime)
            claims = self.claims(device, iat)
            device.claims, device.jti, device.iat, device.exp = claims, claims["jti"], iat, claims["exp"]
            device.token = self.mint(claims)

    def ensure(self, device: Device, t: float, ip: str) -> list[Item]:
        """Whatever the client does so that it holds a usable access token at `t` (maybe nothing)."""
        if self.usable(device, t):
            return []
        if not device.seen:
            self._adopt_existing(device, t)
            if self.usable(device, t):
                return []
        if not device.refresh_lifetime:
            return self.client_credentials(device, t, ip)
        if device.refresh_jti is not None and t < device.refresh_exp:
            return self.refresh(device, t, ip)
        return self.login(device, t, ip)

    # -- flows ---------------------------------------------------------------------------------
    def token_call(self, device: Device, t: float, ip: str, path: str = "/oauth/token", status: int = 200,
                    labels: tuple[dict[str, Any], ...] = NO_LABELS) -> Item:
        """The client's call to the authorization server, as the gateway logs it (no bearer token)."""
        sim = self.sim
        ok = status < 300
        return sim.access(t, device.tenant, ip=ip, ua=device.user_agent, method="POST", path=path,
                          route="auth", status=status,
                          latency_ms=sim.lognormal(240.0 if path == "/v1/login" else 85.0, 0.4),
                          bytes_in=int(sim.lognormal(520, 0.3)),
                          bytes_out=int(sim.lognormal(1_900, 0.2)) if ok and path == "/oauth/token" else
                          int(sim.rng.uniform(60, 300)),
                          nonce=sim.nonce() if device.dpop_jkt else None, labels=labels)

    def _issued(self, device: Device, t: float, labels: tuple[dict[str, Any], ...] = NO_LABELS) -> Item:
        return self.sim.token_event(t, device.tenant, "issued", sub=device.sub, client_id=device.client_id,
                                    token=device.token, refresh_jti=device.refresh_jti, labels=labels)

    def login(self, device: Device, t: float, ip: str) -> list[Item]:
        sim = self.sim
        items: list[Item] = []
        if device.family in ("browser", "mobile"):
            if sim.rng.random() < 0.04:  # a mistyped password first
                items.append(self.token_call(device, t, ip, "/v1/login", 401))
                t += sim.rng.uniform(4.0, 15.0)
            items.append(self.token_call(device, t, ip, "/v1/login"))
            t += sim.rng.uniform(0.3, 1.5)  # redirect back with the code, then the code exchange
        items.append(self.token_call(device, t, ip))
        device.refresh_exp = 0.0
        self._install(device, t)
        items.append(self._issued(device, t + sim.rng.uniform(0.005, 0.04)))
        sim.stats["logins"] += 1
        return items

    def client_credentials(self, device: Device, t: float, ip: str) -> list[Item]:
        items = [self.token_call(device, t, ip)]
        self._install(device, t, rotate=False)
        items.append(self._issued(device, t + self.sim.rng.uniform(0.005, 0.04)))
        return items

    def refresh(self, device: Device, t: float, ip: str, *, race: bool | None = None) -> list[Item]:
        """Refresh-token rotation; in a browser, sometimes two tabs refresh at once (a legit race)."""
        sim = self.sim
        if race is None:
            race = device.family == "browser" and sim.rng.random() < 0.05
        presented = device.refresh_jti or sim.jti()
        items: list[Item] = []
        for n in range(2 if race else 1):
            if n:
                t += sim.rng.uniform(0.15, 1.9)
            items.append(self.token_call(device, t, ip))
            issued = self._install(device, t)
            te = t + sim.rng.uniform(0.005, 0.04)
            items.append(sim.token_event(te, device.tenant, "refreshed", sub=device.sub,
                                         client_id=device.client_id, presented_jti=presented, issued_jti=issued))
            items.append(self._issued(device, te + 0.002))
        sim.stats["refreshes"] += 1
        sim.stats["refresh_races"] += race
        return items

    def logout(self, device: Device, t: float, ip: str) -> tuple[list[Item], str | None, str]:
        """RFC 7009 revocation of the access token; the client forgets its grant. Returns the token too."""
        sim = self.sim
        token, jti = device.token, device.jti
        items = [self.token_call(device, t, ip, "/oauth/revoke")]
        if token is not None:
            items.append(sim.token_event(t + sim.rng.uniform(0.005, 0.03), device.tenant, "revoked",
                                         sub=device.sub, client_id=device.client_id, jti=jti))
        device.token, device.claims, device.refresh_jti, device.refresh_exp = None, None, None, 0.0
        sim.stats["logouts"] += 1
        return items, token, jti
