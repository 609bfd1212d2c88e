"""`gatewatch simulate`: realistic API / LLM gateway traffic with labelled attacks.

    spec = SimulationSpec(seed=7, events=10_000)
    for ev in generate(spec, TokenMinter.from_dir(keys_dir, issuer=..., audience=...)):
        ev.topic, ev.key, ev.event, ev.labels

What is simulated (all on event time, deterministic for a seed except the random bytes of token
cryptography):

* tenants (`population.DEFAULT_TENANTS`) in different time zones, each with its API products
  (`catalog.APIS`), gateway instances, corporate ranges (`ADMIN_ALLOWED_CIDRS`, the only sources of
  normal `admin-api` traffic) and LLM models;
* users with browsers, phones (DPoP, Wi-Fi <-> mobile data hops) and SDKs; service clients using the
  client-credentials grant; anonymous visitors, crawlers and load-balancer health checks;
* the token lifecycle: logins, proactive refresh with rotation (and the occasional two-tab refresh
  race), logouts with revocation; real nested JWTs from `TokenMinter`, cached per client;
* a daily rhythm per tenant, lognormal latencies and sizes, a realistic status mix, and ~0.5 % of
  access events arriving up to 20 s late;
* attack scenarios (`ALL_ATTACKS`, `attacks/`), one every `attack_every` events, their events labelled.
"""

from __future__ import annotations

from gatewatch.simulate.attacks import ASSUMED_LIMITS
from gatewatch.simulate.engine import LATE_SHARE, MAX_LATENESS_SECONDS, build, generate, generate_with
from gatewatch.simulate.model import (ACCESS_TOPIC, ALL_ATTACKS, BEHAVIOURAL_ATTACKS, TOKENS_TOPIC, SimEvent,
                                      SimulationSpec, label_type)
from gatewatch.simulate.output import write_jsonl
from gatewatch.simulate.population import ADMIN_ALLOWED_CIDRS, admin_allowed_cidrs

__all__ = [
    "ACCESS_TOPIC", "ADMIN_ALLOWED_CIDRS", "ALL_ATTACKS", "ASSUMED_LIMITS", "BEHAVIOURAL_ATTACKS", "LATE_SHARE",
    "MAX_LATENESS_SECONDS", "TOKENS_TOPIC", "SimEvent", "SimulationSpec", "admin_allowed_cidrs", "build",
    "generate", "generate_with", "label_type", "write_jsonl",
]
