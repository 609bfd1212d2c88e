"""gatewatch's Kafka topics, created when missing (the broker script creates them too)."""

from __future__ import annotations

from typing import Any

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError


DLQ_MAX_BYTES = 4 * 1024 * 1024


def topic_specs(kafka: Any, input_partitions: int = 4) -> list[NewTopic]:
    return [
        NewTopic(kafka.access_topic, input_partitions, 1),
        NewTopic(kafka.tokens_topic, input_partitions, 1),
        # Compacted: a replica that starts later rebuilds its store from each alert's newest state.
        NewTopic(kafka.alerts_topic, 4, 1, topic_configs={"cleanup.policy": "compact"}),
        NewTopic(kafka.risk_topic, 4, 1, topic_configs={"cleanup.policy": "compact"}),
        # A dead letter carries the original bytes (base64): an oversize input record of up to the broker's
        # 1 MB limit must still fit.
        NewTopic(kafka.dlq_topic, 1, 1, topic_configs={"max.message.bytes": str(DLQ_MAX_BYTES)}),
        # Every triage change ever made, kept for good (a few per analyst-minute): a new replica replays it.
        NewTopic(kafka.triage_topic, 1, 1, topic_configs={"retention.ms": "-1"}),
        NewTopic(kafka.events_topic, kafka.event_partitions, 1),
        NewTopic(kafka.keyed_topic, kafka.event_partitions, 1),
    ]


def ensure_topics(kafka: Any, input_partitions: int = 4) -> list[str]:
    """Create whichever topics are missing; returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id="gatewatch-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topic_specs(kafka, input_partitions) if t.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
        return [t.name for t in missing]
    finally:
        admin.close()
