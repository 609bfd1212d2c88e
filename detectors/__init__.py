"""Detectors: one module per detector, registered here (adding one = one line in DETECTORS)."""

from detectors.base import Detector, Entity, Signal
from detectors.replay_nonce import NonceReplayDetector
from detectors.token_invalid import InvalidTokenBurstDetector
from detectors.token_unencrypted import UnencryptedTokenDetector

DETECTORS: tuple[type, ...] = (
    NonceReplayDetector,
    UnencryptedTokenDetector,
    InvalidTokenBurstDetector,
)

__all__ = ["DETECTORS", "Detector", "Entity", "Signal"]
