"""The exception hierarchy of gatewatch. Every error a person or a record can cause is one of these.

    GatewatchError
    ├── ConfigError          bad configuration or usage (CLI exit 2; names the key)
    ├── KeyMaterialError     a JWKS file is missing, unreadable or holds an unusable key
    ├── ModelError           a model artifact fails its manifest or digest, or does not fit this code
    ├── QueryError           a read asked for what cannot be answered as asked (a bad filter or cursor);
    │                        also a ValueError
    ├── Unavailable          something needed is not answering now (e.g. the triage log's Kafka): retry
    └── RecordError          one input record is unusable; carries a stable `code`
        ├── DecodeError      not UTF-8 JSON, wrong shape, missing/ill-typed field
        └── OversizeError    larger than limits.max_event_bytes

A `RecordError` never stops a stream: the record becomes a dead-letter entry with `code` and the
message (ingest.deadletter). Token problems are *verdicts* (ingest.tokens), not exceptions: a refused
token is information for the detectors, the request it came with is still a valid event.
"""

from __future__ import annotations


class GatewatchError(Exception):
    """Base of every gatewatch error."""


class ConfigError(GatewatchError):
    """Bad configuration or command-line usage; the message names the key or argument."""


class KeyMaterialError(GatewatchError):
    """A key set could not be loaded or contains a key we refuse to use."""


class ModelError(GatewatchError):
    """A model artifact is incomplete, tampered with (digest mismatch) or made for other code; never loaded."""


class QueryError(GatewatchError, ValueError):
    """A query the caller asked for cannot be answered as asked; `code` is the API error code."""

    code = "bad_request"


class Unavailable(GatewatchError):
    """Something this needs is not answering right now; the same request may work later."""


class RecordError(GatewatchError):
    """One input record cannot be processed. `code` is stable and lands in the dead-letter entry."""

    code = "invalid_record"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class DecodeError(RecordError):
    code = "decode_error"


class OversizeError(RecordError):
    code = "oversize"
