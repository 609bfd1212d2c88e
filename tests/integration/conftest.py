"""The real Kafka broker for integration tests, started by the project's own script.

The broker is started once per session (idempotent: an already running broker of ours is reused)
and stopped at the end only if this session started it. Every test uses its own topics and group.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"
BOOTSTRAP = "127.0.0.1:9092"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    running = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    if not running:
        subprocess.run([str(SCRIPT), "start"], check=True, timeout=600)
    yield BOOTSTRAP
    if not running:
        subprocess.run([str(SCRIPT), "stop"], check=False, timeout=120)


@pytest.fixture()
def kafka_env(broker: str) -> dict[str, str]:
    """Environment overrides that give one test its own topics and consumer group."""
    tag = uuid.uuid4().hex[:8]
    return {
        "GATEWATCH_KAFKA__BOOTSTRAP_SERVERS": broker,
        "GATEWATCH_KAFKA__GROUP_ID": f"test-{tag}",
        "GATEWATCH_KAFKA__ACCESS_TOPIC": f"t{tag}.access",
        "GATEWATCH_KAFKA__TOKENS_TOPIC": f"t{tag}.tokens",
        "GATEWATCH_KAFKA__ALERTS_TOPIC": f"t{tag}.alerts",
        "GATEWATCH_KAFKA__RISK_TOPIC": f"t{tag}.risk",
        "GATEWATCH_KAFKA__DLQ_TOPIC": f"t{tag}.dlq",
        "GATEWATCH_KAFKA__TRIAGE_TOPIC": f"t{tag}.triage",
        "GATEWATCH_KAFKA__EVENTS_TOPIC": f"t{tag}.events",
        "GATEWATCH_KAFKA__KEYED_TOPIC": f"t{tag}.bykey",
        "GATEWATCH_KAFKA__POLL_TIMEOUT_MS": "200",
    }
