"""Detectors: one module per detector, registered here (adding one = one line in DETECTORS)."""

from typing import Any

from detectors.base import Detector, Entity, Signal
from detectors.packed_store import PackedStore
from detectors.replay_nonce import NonceReplayDetector
from detectors.replay_refresh_reuse import RefreshReuseDetector
from detectors.replay_token_context import TokenContextReplayDetector
from detectors.state import MemoryStore, StateStore
from detectors.token_invalid import InvalidTokenBurstDetector
from detectors.token_jti_collision import JtiCollisionDetector
from detectors.token_misuse import CrossTenantDetector, ExpiredUseDetector
from detectors.token_revoked_use import RevokedUseDetector
from detectors.token_unencrypted import UnencryptedTokenDetector
from detectors.traffic_ip_allowlist import IpAllowlistDetector
from detectors.traffic_llm_budget import LlmBudgetDetector
from detectors.traffic_rate_limit import RateLimitDetector

DETECTORS: tuple[type[Detector], ...] = (
    NonceReplayDetector,
    TokenContextReplayDetector,
    RefreshReuseDetector,
    RevokedUseDetector,
    UnencryptedTokenDetector,
    InvalidTokenBurstDetector,
    ExpiredUseDetector,
    CrossTenantDetector,
    JtiCollisionDetector,
    RateLimitDetector,
    IpAllowlistDetector,
    LlmBudgetDetector,
)


def build(det_cls: type[Detector], section: Any, tokens: Any, partition: str | None = None) -> Detector | None:
    """The detector from its settings, for every stream (`partition` None: one process sees all) or
    for one re-keyed stream — None when it keeps no state by that stream's key."""
    if partition is None:
        return det_cls.from_config(section, tokens)
    if partition not in det_cls.partition_by:
        return None
    factory = getattr(det_cls, "for_partition", None)
    if factory is not None:
        part: Detector = factory(section, tokens, partition)
        return part
    return det_cls.from_config(section, tokens)


def store_for(detector: Detector) -> StateStore:
    """A fresh state store of the kind the detector asks for (`state_kind`, default "memory")."""
    return PackedStore() if getattr(detector, "state_kind", "memory") == "packed" else MemoryStore()


__all__ = ["DETECTORS", "Detector", "Entity", "Signal", "build", "store_for"]
