"""Alerts: list with filters and cursor pagination, one alert, triage (CONTRACT.md §5, §6)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import Principal, require
from api.errors import ApiError, BadRequest, NotFound, ServiceUnavailable, error_responses
from api.follow import TriageUnavailable
from api.routes import StoreDep, TriageDep
from api.store import CLOSED_STATUSES, UNSET, StoredAlert, StoreQueryError, utc_now
from scoring.alerts import Severity, Status

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

Reader = Annotated[Principal, Depends(require("alerts:read"))]
Writer = Annotated[Principal, Depends(require("alerts:write"))]
AlertId = Annotated[str, Path(min_length=1, max_length=200)]
_ERRORS = error_responses(400, 401, 403)
_STATUS_LIST = r"^(open|acknowledged|resolved|false_positive)(,(open|acknowledged|resolved|false_positive))*$"
_SEVERITY_LIST = r"^(low|medium|high|critical)(,(low|medium|high|critical))*$"
_RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"



# -- response and request schemas (separate from the stored rows) ---------------------------------
class EntityOut(BaseModel):
    kind: str
    value: str


class NoteOut(BaseModel):
    author: str
    at: str
    text: str


class AuditOut(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    at: str
    actor: str
    field: str
    from_: Any = Field(None, alias="from")
    to: Any = None
    reason: str | None = Field(None, description="why the alert was closed "
                                                 "(status changes to resolved or false_positive)")


class SuppressionOut(BaseModel):
    rule: str
    owner: str
    expires: str
    reason: str


class AlertOut(BaseModel):
    """An alert as CONTRACT.md §5 describes it, plus its triage audit trail."""

    id: str
    type: str
    severity: Severity
    tenant: str
    entity: EntityOut
    first_seen: str
    last_seen: str
    count: int
    risk: float
    reasons: list[str]
    evidence: dict[str, Any]
    status: Status
    assignee: str | None
    notes: list[NoteOut]
    audit: list[AuditOut]
    close_reason: str | None = Field(None, description="why it was resolved or marked a false positive (while it is)")
    suppression: SuppressionOut | None = Field(
        None, description="the rule muting this alert: stored and counted, hidden from the queue by default")

    @classmethod
    def of(cls, alert: StoredAlert) -> AlertOut:
        return cls.model_validate(alert.model_dump(mode="json"))


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class AlertCounts(BaseModel):
    """Counts over every alert the caller may see, muted ones included (`suppressed` says how many)."""

    total: int
    suppressed: int
    by_type: dict[str, int]
    by_tenant: dict[str, int]
    by_status: dict[str, int]
    by_severity: dict[str, int]


class AlertPatch(BaseModel):
    """Triage. `assignee: null` unassigns; `note` is appended with its author and time; closing the alert
    (status `resolved` or `false_positive`) needs a `reason`, kept on the alert and in the audit trail."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "anyOf": [{"required": ["status"]}, {"required": ["assignee"]}, {"required": ["note"]}],
        # closing needs a reason; a reason needs a closing status
        "allOf": [
            {"if": {"required": ["status"], "properties": {"status": {"enum": sorted(CLOSED_STATUSES)}}},
             "then": {"required": ["reason"], "properties": {"reason": {"type": "string"}}}},
            {"if": {"required": ["reason"], "properties": {"reason": {"type": "string"}}},
             "then": {"required": ["status"], "properties": {"status": {"enum": sorted(CLOSED_STATUSES)}}}},
        ]})

    status: Status | None = None
    assignee: str | None = Field(None, min_length=1, max_length=200)
    note: str | None = Field(None, min_length=1, max_length=4000)
    reason: str | None = Field(None, min_length=1, max_length=500,
                               description="why: required with status resolved or false_positive")

    @model_validator(mode="after")
    def _not_empty(self) -> AlertPatch:
        if not self.model_fields_set - {"reason"}:
            raise ValueError("give at least one of status, assignee, note")
        if self.status in CLOSED_STATUSES and self.reason is None:
            raise ValueError(f"status {self.status} needs a reason")
        if self.reason is not None and self.status not in CLOSED_STATUSES:
            raise ValueError("reason goes with status resolved or false_positive")
        return self


_SUPPRESSED: dict[str, bool | None] = {"exclude": False, "include": None, "only": True}


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",")]


def _query_error(exc: StoreQueryError) -> ApiError:
    return BadRequest(str(exc), code=exc.code)


# -- routes ----------------------------------------------------------------------------------------
@router.get("", response_model=AlertPage, responses=_ERRORS)
def list_alerts(
    principal: Reader, store: StoreDep,
    status: Annotated[str | None, Query(max_length=200, pattern=_STATUS_LIST,
                                        description="comma-separated statuses")] = None,
    severity: Annotated[str | None, Query(max_length=200, pattern=_SEVERITY_LIST,
                                          description="comma-separated severities")] = None,
    type_: Annotated[str | None, Query(alias="type", min_length=1, max_length=1000,
                                       description="comma-separated alert types")] = None,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
    entity: Annotated[str | None, Query(min_length=1, max_length=1000, description="kind:value, or a bare value")] = None,
    since: Annotated[str | None, Query(max_length=64, pattern=_RFC3339, json_schema_extra={"format": "date-time"},
                                       description="RFC 3339 with a zone; on last_seen")] = None,
    until: Annotated[str | None, Query(max_length=64, pattern=_RFC3339, json_schema_extra={"format": "date-time"},
                                       description="RFC 3339 with a zone; on last_seen")] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    suppressed: Annotated[Literal["exclude", "include", "only"], Query(
        description="alerts muted by a suppression rule: hidden (default), shown too, or only those")] = "exclude",
) -> AlertPage:
    try:
        items, next_cursor = store.list_alerts(
            tenants=principal.tenant_filter(), status=_split(status), severity=_split(severity),
            type=_split(type_), tenant=tenant, entity=entity, since=since, until=until, cursor=cursor,
            limit=limit, suppressed=_SUPPRESSED[suppressed])
    except StoreQueryError as exc:
        raise _query_error(exc) from None
    return AlertPage(items=[AlertOut.of(a) for a in items], next_cursor=next_cursor)


@router.get("/counts", response_model=AlertCounts, responses=_ERRORS)
def count_alerts(principal: Reader, store: StoreDep) -> AlertCounts:
    return AlertCounts(**store.counts(principal.tenant_filter()))


@router.get("/{alert_id}", response_model=AlertOut,
            responses=error_responses(400, 401, 403, 404))
def get_alert(alert_id: AlertId, principal: Reader, store: StoreDep) -> AlertOut:
    alert = store.get_alert(alert_id, principal.tenant_filter())
    if alert is None:
        raise NotFound("no such alert")
    return AlertOut.of(alert)


@router.patch("/{alert_id}", response_model=AlertOut,
              responses=error_responses(400, 401, 403, 404, 413, 422, 503))
def patch_alert(alert_id: AlertId, patch: AlertPatch, principal: Writer, triage: TriageDep) -> AlertOut:
    given = patch.model_fields_set
    try:
        alert = triage.apply(
            alert_id, principal.tenant_filter(), actor=principal.id, at=utc_now(),
            status=patch.status, assignee=patch.assignee if "assignee" in given else UNSET, note=patch.note,
            reason=patch.reason)
    except StoreQueryError as exc:
        raise _query_error(exc) from None
    except TriageUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from None
    if alert is None:
        raise NotFound("no such alert")
    return AlertOut.of(alert)
