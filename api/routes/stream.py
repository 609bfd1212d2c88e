"""`GET /v1/alerts/stream`: server-sent events of new and changed alerts (CONTRACT.md §6).

The feed is the store's `updated_seq`: every visible change of an alert (a new alert, a merge that
changed it, a triage) gives it a new, higher seq, and the stream sends the alert's state at that seq:

    id: <updated_seq>
    event: alert
    data: <the alert, exactly as GET /v1/alerts/{id} returns it>

An alert changed twice between two polls is sent once, in its newest state. Suppressed alerts are sent
too (the JSON carries `suppression`; the console decides what to show). A caller only ever receives
alerts of its credential's tenants.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require
from api.errors import BadRequest
from api.routes import StoreDep
from api.routes.alerts import AlertOut
from api.store import AlertStore, StoredAlert

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

Reader = Annotated[Principal, Depends(require("alerts:read"))]
POLL_SECONDS = 0.5
KEEP_ALIVE_SECONDS = 15.0
BATCH = 100  # changes read per poll; a full batch is followed by another read at once, not a sleep
_MAX_SEQ_CHARS = 20


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def _start(last_event_id: str | None, after: int | None, store: AlertStore) -> int:
    """Where the stream starts: after Last-Event-ID (a reconnect), else `after`, else at the head.

    An id beyond the head (a store that was since replaced) counts as the head: from now on.
    """
    head = store.max_seq()
    if last_event_id is not None:
        text = last_event_id.strip()
        if not text.isascii() or not text.isdigit() or len(text) > _MAX_SEQ_CHARS:
            raise BadRequest("Last-Event-ID must be an event id (a non-negative integer)")
        return min(int(text), head)
    if after is not None:
        return min(after, head)
    return head


def _event(seq: int, alert: StoredAlert) -> str:
    # Compact JSON has no raw newlines, so one `data:` line carries it whole.
    return f"id: {seq}\nevent: alert\ndata: {AlertOut.of(alert).model_dump_json()}\n\n"


async def _changes(request: Request, store: AlertStore, tenants: frozenset[str] | None, cursor: int,
                   max_events: int | None, timeout: float | None) -> AsyncIterator[str]:
    # Wall clock on purpose throughout: polling and keep-alives are I/O pacing, not detection.
    started = last_sent = time.monotonic()
    sent = 0
    yield ": connected\n\n"  # headers and a first byte out now, so a client knows it is subscribed
    while True:
        head = await run_in_threadpool(store.max_seq)
        changes = await run_in_threadpool(store.changes_since, cursor, tenants, limit=BATCH)
        for change in changes:
            yield _event(change.seq, change.alert)
            cursor, sent, last_sent = change.seq, sent + 1, time.monotonic()
            if max_events is not None and sent >= max_events:
                return
        if len(changes) < BATCH:
            # Every seq up to `head` was committed before the read above, so whatever was not returned
            # belongs to other tenants: skip it for good rather than re-scan it on every poll.
            cursor = max(cursor, head)
        now = time.monotonic()
        if timeout is not None and now - started >= timeout:
            return
        if now - last_sent >= KEEP_ALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = now
        if await request.is_disconnected():
            return
        if len(changes) < BATCH:
            wait = POLL_SECONDS if timeout is None else min(POLL_SECONDS, max(0.0, started + timeout - now))
            await anyio.sleep(wait)


@router.get("/stream", response_class=EventStreamResponse,
            responses={200: {"description": "an endless text/event-stream of `alert` events",
                             "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                       400: {"description": "bad Last-Event-ID, after, max_events or timeout"},
                       401: {"description": "missing or invalid credential"},
                       403: {"description": "credential lacks alerts:read"}})
def stream_alerts(
    request: Request, principal: Reader, store: StoreDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64,
                                                description="resume after this event id")] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="start after this event id (seq)")] = None,
    max_events: Annotated[int | None, Query(ge=1, le=10_000, description="end after this many events")] = None,
    timeout: Annotated[float | None, Query(gt=0, le=3600, description="end after this many seconds")] = None,
) -> EventStreamResponse:
    """Server-sent events of new and changed alerts in the caller's tenants, suppressed ones included.

    Each event is `id: <seq>`, `event: alert`, `data: <alert JSON as GET /v1/alerts/{id}>`. Without
    `Last-Event-ID` (sent by a reconnecting EventSource) or `?after=<seq>` the stream starts at the
    current head: only changes from now on. `Last-Event-ID` wins over `after`.

    The stream opens with a `: connected` comment (from then on no change is missed), is endless by
    default, with a `: keep-alive` comment every 15 s of silence, and stops when the client disconnects.
    For scripts and tests: `?max_events=N` (1..10000) ends it after N
    events and `?timeout=S` (seconds, up to 3600) after S seconds, whichever comes first.
    """
    cursor = _start(last_event_id, after, store)
    return EventStreamResponse(
        _changes(request, store, principal.tenant_filter(), cursor, max_events, timeout),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
