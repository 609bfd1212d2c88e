"""docker-compose.yml parses and names the services a deployment needs (no Docker engine here)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_is_valid_and_complete() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"kafka", "worker", "api"} <= set(services)
    assert "healthcheck" in services["kafka"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in ("worker", "api"):
        svc = services[name]
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert svc["environment"]["GATEWATCH_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert (ROOT / svc["build"]["dockerfile"]).is_file()
    assert services["worker"]["command"][:2] == ["gatewatch", "run"]
    assert services["api"]["command"][:2] == ["gatewatch", "serve"]
    assert set(doc["volumes"]) >= {"kafka-data", "store"}
