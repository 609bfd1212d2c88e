"""The API application factory (`gatewatch serve`): no import-time state, everything handed in.

    create_app(api_settings=settings.api, store=AlertStore.from_config(settings.store))

`api_settings` is duck-typed (the [api] section: `bind`, `issuers`, `audience`, `jwks`, `api_keys`,
`max_body_bytes`); this package never imports `gatewatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Depends, FastAPI

from api import console
from api.auth import Authenticator
from api.errors import BodyLimitMiddleware, RepeatedQueryMiddleware, install_error_handlers
from api.follow import LocalTriage, Triage
from api.head import HeadAsGetMiddleware
from api.metrics import ApiMetrics
from api.routes import alerts, entities, health, metrics, refuse_unknown_query, risk, stream
from api.store import AlertStore

ReadyCheck = Callable[[], tuple[bool, str]]
DEFAULT_MAX_BODY_BYTES = 65_536


def create_app(*, api_settings: Any, store: AlertStore, authenticator: Authenticator | None = None,
               ready_checks: Mapping[str, ReadyCheck] | None = None, triage: Triage | None = None) -> FastAPI:
    """Build the FastAPI app around a store; `authenticator` defaults to one built from `api_settings`,
    `triage` to writing the store itself (a replica following Kafka passes a `TriageLog`)."""
    app = FastAPI(
        title="gatewatch",
        version="1",
        description="Alerts, triage and risk look-ups of the gatewatch security analytics pipeline.",
        dependencies=[Depends(refuse_unknown_query)],
        # Starlette's slash redirect builds an absolute Location from the request's Host header, so a forged
        # Host would be echoed; a path with a stray slash is a 404 like any other unknown path.
        redirect_slashes=False,
    )
    app.state.api_settings = api_settings
    app.state.store = store
    app.state.authenticator = authenticator if authenticator is not None \
        else Authenticator.from_config(api_settings)
    app.state.ready_checks = dict(ready_checks or {})
    app.state.triage = triage if triage is not None else LocalTriage(lambda: app.state.store)
    # Reads `app.state.store` at each scrape, so a store swapped in later is the one measured.
    app.state.metrics = ApiMetrics(lambda: app.state.store)
    install_error_handlers(app)
    app.add_middleware(RepeatedQueryMiddleware)
    app.add_middleware(BodyLimitMiddleware,
                       max_body_bytes=int(getattr(api_settings, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)))
    app.add_middleware(HeadAsGetMiddleware)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(stream.router)  # before alerts: /v1/alerts/stream is not /v1/alerts/{alert_id}
    app.include_router(alerts.router)
    app.include_router(risk.router)
    app.router.routes.insert(0, risk.hot_path_route())  # the gateway's look-up, ahead of the documented route
    app.include_router(entities.router)
    console.mount(app)
    return app
