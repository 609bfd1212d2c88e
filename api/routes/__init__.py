"""One router per resource; shared dependencies (the store, the caller's tenant filter) live here."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Annotated, Any

from fastapi import Depends, Request

from api.errors import BadRequest
from api.follow import Triage
from api.store import AlertStore

_QUERY_NAMES_ATTR = "_gatewatch_query_names"  # cached on the route object itself (routes are not hashable)


async def get_store(request: Request) -> AlertStore:  # async: no thread-pool hop (see api/auth.py)
    return request.app.state.store  # type: ignore[no-any-return]


StoreDep = Annotated[AlertStore, Depends(get_store)]


async def get_triage(request: Request) -> Triage:
    return request.app.state.triage  # type: ignore[no-any-return]


TriageDep = Annotated[Triage, Depends(get_triage)]


def declared_query_names(route: Any) -> frozenset[str]:
    """The query parameters a FastAPI route (its dependencies included) declares, by their URL names."""
    if route is None:
        return frozenset()
    names = getattr(route, _QUERY_NAMES_ATTR, None)
    if names is None:
        found: set[str] = set()
        pending = [getattr(route, "dependant", None)]
        while pending:
            dependant = pending.pop()
            if dependant is not None:
                found.update(f.alias for f in dependant.query_params)
                pending.extend(dependant.dependencies)
        names = frozenset(found)
        setattr(route, _QUERY_NAMES_ATTR, names)
    return names


async def refuse_unknown_query(request: Request) -> None:
    """App-wide dependency: a query parameter the route does not declare is 400, not silently ignored —
    a mistyped filter (`?statsu=open`) would otherwise show an analyst every alert as if filtered."""
    if request.scope.get("query_string"):
        only_declared(request.query_params.keys(), declared_query_names(request.scope.get("route")))


def only_declared(given: Iterable[str], declared: Collection[str]) -> None:
    """400 naming the first query parameter in `given` that is not in `declared`."""
    unknown = set(given).difference(declared)
    if unknown:
        raise BadRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
