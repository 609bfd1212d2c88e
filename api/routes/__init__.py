"""One router per resource; shared dependencies (the store, the caller's tenant filter) live here."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.store import AlertStore


async def get_store(request: Request) -> AlertStore:  # async: no thread-pool hop (see api/auth.py)
    return request.app.state.store  # type: ignore[no-any-return]


StoreDep = Annotated[AlertStore, Depends(get_store)]
