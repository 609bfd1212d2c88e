"""Detectors: one module per detector, registered here (adding one = one line in DETECTORS)."""

from detectors.base import Detector, Entity, Signal
from detectors.replay_nonce import NonceReplayDetector

DETECTORS: tuple[type, ...] = (
    NonceReplayDetector,
)

__all__ = ["DETECTORS", "Detector", "Entity", "Signal"]
