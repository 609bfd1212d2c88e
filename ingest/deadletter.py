"""Dead-letter entries: a record we could not use, why, and where it came from (original bytes kept)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from ingest.errors import RecordError
from ingest.events import Source


@dataclass(frozen=True, slots=True)
class DeadLetter:
    code: str
    reason: str
    original: bytes
    source: Source | None = None
    stage: str = "decode"

    @classmethod
    def from_error(cls, error: RecordError, original: bytes, source: Source | None,
                   stage: str = "decode") -> DeadLetter:
        return cls(code=error.code, reason=str(error)[:500], original=original, source=source, stage=stage)

    def to_json(self) -> bytes:
        src = self.source
        return json.dumps({
            "code": self.code,
            "reason": self.reason,
            "stage": self.stage,
            "source": None if src is None else {"topic": src.topic, "partition": src.partition,
                                                "offset": src.offset},
            "original_b64": base64.b64encode(self.original).decode("ascii"),
            "original_bytes": len(self.original),
        }, separators=(",", ":")).encode()
