"""Other gateways' access logs → gatewatch's access event (CONTRACT.md §1, "Other gateways' logs").

One module per gateway, each a pure function `adapt(obj, origin)`: a parsed JSON object → the fields of an
access event, or a `DecodeError` (`missing_field`, `invalid_field`, `bad_timestamp`) naming the field. The
decoder (ingest/decode.py) then validates the result exactly as it validates a gatewatch record, so every rule
of the contract still applies. `FORMATS` names them; "gatewatch" (None) is the contract's own format, decoded
directly. `Origin` says where the tenant and the gateway name come from (`[ingest.<format>]` settings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

from ingest.adapters import aws_apigw, envoy, kong
from ingest.adapters._common import Origin, json_type

# A parsed JSON object → the fields of an access event, with its `Origin` bound.
Adapter = Callable[[Mapping[str, Any]], dict[str, Any]]
AdaptFunction = Callable[[Mapping[str, Any], Origin], dict[str, Any]]

FormatName = Literal["gatewatch", "envoy", "kong", "aws_apigw"]
FORMATS: dict[str, AdaptFunction | None] = {
    "gatewatch": None,
    "envoy": envoy.adapt,
    "kong": kong.adapt,
    "aws_apigw": aws_apigw.adapt,
}
DEFAULT_ORIGINS: dict[str, Origin] = {
    "envoy": envoy.DEFAULT_ORIGIN,
    "kong": kong.DEFAULT_ORIGIN,
    "aws_apigw": aws_apigw.DEFAULT_ORIGIN,
}
assert set(get_args(FormatName)) == set(FORMATS), "FormatName and FORMATS name the same formats"


def bind(name: str, origin: Origin | None = None) -> Adapter | None:
    """The adapter of format `name` with its origin (default: the format's own); None for "gatewatch".
    An unknown name is a KeyError (settings and the CLI check names against `FORMATS` first)."""
    adapt = FORMATS[name]
    if adapt is None:
        return None
    bound = origin if origin is not None else DEFAULT_ORIGINS[name]

    def adapter(obj: Mapping[str, Any]) -> dict[str, Any]:
        return adapt(obj, bound)
    return adapter


__all__ = ["FORMATS", "DEFAULT_ORIGINS", "Adapter", "FormatName", "Origin", "bind", "json_type"]
