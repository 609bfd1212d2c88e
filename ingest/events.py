"""The vocabulary: input records of CONTRACT.md §1 and the normalised `Event` the detectors see.

`AccessRecord` and `TokenRecord` are the wire schema (msgspec: strict types, unknown fields ignored
but kept in the raw bytes). `Event` is what flows through the pipeline: the record, its event time as
epoch seconds, what the token validator made of its token, and where it was read from.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ingest.tokens import TokenInfo


class LLMUsage(msgspec.Struct, frozen=True):
    provider: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class AccessRecord(msgspec.Struct, frozen=True, tag="access", tag_field="kind"):
    event_id: str
    ts: str
    gateway: str
    tenant: str
    client_ip: str
    method: str
    path: str
    status: int
    route: str | None = None
    latency_ms: float | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    user_agent: str | None = None
    token: str | None = None
    nonce: str | None = None
    llm: LLMUsage | None = None


TokenEventType = Literal["issued", "refreshed", "revoked"]


class TokenRecord(msgspec.Struct, frozen=True, tag="token", tag_field="kind"):
    event_id: str
    ts: str
    tenant: str
    type: TokenEventType
    token: str | None = None
    jti: str | None = None
    presented_jti: str | None = None
    issued_jti: str | None = None
    # `issued`: the refresh token issued together with this access token, which puts the access token in
    # that refresh token's family (a reused family is revoked whole, RFC 9700 §4.14.2)
    refresh_jti: str | None = None
    sub: str | None = None
    client_id: str | None = None


Record = AccessRecord | TokenRecord


class Source(msgspec.Struct, frozen=True, gc=False):
    """Where a record was read: a Kafka position, or a file and line. Identifies redeliveries."""

    topic: str
    partition: int
    offset: int


class Event(msgspec.Struct, frozen=True, gc=False):
    # A Struct, not a dataclass: one is built per event, and a frozen dataclass's __init__ costs ~1 µs
    # (object.__setattr__ per field) where a Struct's costs ~0.1. gc=False: it holds no cycles.
    record: Record
    ts: float  # event time, epoch seconds
    token: TokenInfo | None = None
    source: Source | None = None

    @property
    def event_id(self) -> str:
        return self.record.event_id

    @property
    def tenant(self) -> str:
        return self.record.tenant

    @property
    def kind(self) -> str:
        return "access" if isinstance(self.record, AccessRecord) else "token"
