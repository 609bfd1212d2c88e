"""`[ingest]`: which input topics carry another gateway's access log, and where its events get their tenant and
gateway name (ingest/adapters). Part of the one `Settings` object (gatewatch/settings.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from gatewatch.detector_settings import Section as _Section
from ingest.adapters import DEFAULT_ORIGINS, Adapter, FormatName, Origin, bind


class AdapterSettings(_Section):
    """`[ingest.<format>]`: where one gateway log format's events get their tenant and gateway name
    (ingest/adapters): the record's `*_field` when it holds a string, else the static value; "" is unset, and a
    record left without a tenant is dead-lettered (`missing_field`) rather than given a wrong one."""

    tenant: str = Field("", max_length=256)
    tenant_field: str = Field("tenant", max_length=256)
    gateway: str = Field("", max_length=256)
    gateway_field: str = Field("", max_length=256)

    def origin(self, name: str) -> Origin:
        return Origin(tenant=self.tenant, tenant_field=self.tenant_field, gateway=self.gateway,
                      gateway_field=self.gateway_field, setting=f"ingest.{name}")


class EnvoyAdapterSettings(AdapterSettings):
    tenant_field: str = Field(DEFAULT_ORIGINS["envoy"].tenant_field, max_length=256)
    gateway: str = Field(DEFAULT_ORIGINS["envoy"].gateway, max_length=256)
    gateway_field: str = Field(DEFAULT_ORIGINS["envoy"].gateway_field, max_length=256)


class KongAdapterSettings(AdapterSettings):
    tenant_field: str = Field(DEFAULT_ORIGINS["kong"].tenant_field, max_length=256)
    gateway: str = Field(DEFAULT_ORIGINS["kong"].gateway, max_length=256)
    gateway_field: str = Field(DEFAULT_ORIGINS["kong"].gateway_field, max_length=256)


class AwsApigwAdapterSettings(AdapterSettings):
    tenant_field: str = Field(DEFAULT_ORIGINS["aws_apigw"].tenant_field, max_length=256)
    gateway: str = Field(DEFAULT_ORIGINS["aws_apigw"].gateway, max_length=256)
    gateway_field: str = Field(DEFAULT_ORIGINS["aws_apigw"].gateway_field, max_length=256)


_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class IngestSettings(_Section):
    """`[ingest]`: which input topics carry another gateway's access log instead of gatewatch's events."""

    # input topic -> format (ingest.adapters.FORMATS); a topic not named is "gatewatch"
    formats: dict[str, FormatName] = {}
    envoy: EnvoyAdapterSettings = EnvoyAdapterSettings()
    kong: KongAdapterSettings = KongAdapterSettings()
    aws_apigw: AwsApigwAdapterSettings = AwsApigwAdapterSettings()

    @field_validator("formats")
    @classmethod
    def _topic_names(cls, v: dict[str, str]) -> dict[str, str]:
        for topic in v:  # Kafka's rule for a topic name
            if not 0 < len(topic) <= 249 or not _TOPIC_CHARS.issuperset(topic):
                raise ValueError(f"{topic!r} is not a Kafka topic name")
        return v

    def adapter(self, name: str) -> Adapter | None:
        """The adapter of format `name` with its `[ingest.<name>]` origin; None for "gatewatch"."""
        section = getattr(self, name, None)
        return bind(name, section.origin(name) if isinstance(section, AdapterSettings) else None)

    def topic_adapters(self) -> dict[str, Adapter]:
        """Input topic -> adapter, for the topics whose format is not gatewatch's own."""
        out = {topic: self.adapter(name) for topic, name in self.formats.items()}
        return {topic: adapter for topic, adapter in out.items() if adapter is not None}
