"""Small helpers over the real broker: produce records, read a topic to its end."""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def produce(bootstrap: str, topic: str, values: Iterable[bytes], key: bytes | None = None) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    futures = [producer.send(topic, value=v, key=key) for v in values]
    producer.flush()
    for f in futures:
        f.get(timeout=30)
    producer.close()
    return len(futures)


def read_all(bootstrap: str, topic: str, expect_at_least: int = 0, timeout: float = 30.0) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    try:
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list = []
        while time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=300).values():
                out += msgs
            ends = consumer.end_offsets(tps)
            if len(out) >= expect_at_least and all(consumer.position(tp) >= ends[tp] for tp in tps):
                break
        return out
    finally:
        consumer.close()


# -- poison test helpers (tests/integration/test_poison.py) -------------------------------------
import os  # noqa: E402
from collections.abc import Collection, Sequence  # noqa: E402

from kafka.admin import KafkaAdminClient  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402


def produce_tracked(bootstrap: str,
                    records: Sequence[tuple[str, bytes | None, bytes | None]]) -> list[tuple[str, int, int]]:
    """Produce (topic, key, value) records in order; returns the (topic, partition, offset) of each."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024,
                             max_request_size=1_048_576)
    try:
        futures = [producer.send(topic, value=value, key=key) for topic, key, value in records]
        producer.flush()
        out = []
        for f in futures:
            md = f.get(timeout=60)
            out.append((md.topic, md.partition, md.offset))
        return out
    finally:
        producer.close()


class GroupProbe:
    """From outside a worker: how far the consumer groups whose ids start with `prefix` have committed on
    `topics` (a worker may use several groups; only the one reading `topics` counts)."""

    def __init__(self, bootstrap: str, prefix: str, topics: Collection[str]) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.topics = set(topics)
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-probe")
        self.groups: set[str] = set()
        self._listed = float("-inf")

    def _offsets(self, topics: Collection[str] | None) -> dict[str, dict[TopicPartition, int]]:
        now = time.monotonic()
        try:
            if now - self._listed > 1.0:
                self._listed = now
                self.groups |= {g["group_id"] for g in self.admin.list_groups()
                                if str(g["group_id"]).startswith(self.prefix)}
            if not self.groups:
                return {}
            fetched = self.admin.list_group_offsets(sorted(self.groups))
        except KafkaError:
            return {}
        return {g: {tp: om.offset for tp, om in offs.items() if (topics is None or tp.topic in topics)
                    and om.offset >= 0} for g, offs in fetched.items()}

    def committed(self) -> tuple[int, int]:
        """(the largest, over the groups, sum of committed offsets on `topics`; the sum of every committed
        offset of the groups on any topic). The second one moves whenever the worker commits anything."""
        offsets = self._offsets(None)
        on_topics = max((sum(o for tp, o in offs.items() if tp.topic in self.topics) for offs in offsets.values()),
                        default=0)
        return on_topics, sum(sum(offs.values()) for offs in offsets.values())

    def behind(self, topics: Collection[str] | None = None) -> dict[str, dict[str, tuple[int, int]]]:
        """Per group: the partitions of the `topics` it consumes (default: the probe's) whose committed offset
        is short of their end, as (committed, end)."""
        offsets = self._offsets(set(topics) if topics is not None else self.topics)
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        try:
            out: dict[str, dict[str, tuple[int, int]]] = {}
            for g, offs in offsets.items():
                consumed = sorted({tp.topic for tp in offs})
                tps = [TopicPartition(t, p) for t in consumed for p in sorted(consumer.partitions_for_topic(t) or [])]
                ends = consumer.end_offsets(tps) if tps else {}
                short = {f"{tp.topic}/{tp.partition}": (offs.get(tp, 0), ends[tp]) for tp in tps
                         if offs.get(tp, 0) != ends[tp]}
                if short:
                    out[g] = short
            return out
        finally:
            consumer.close()

    def close(self) -> None:
        self.admin.close()


def rss_kib(pid: int) -> int | None:
    """Resident set size of a live process in KiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process, all its threads (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# -- crash test helpers (tests/integration/test_crash.py) ----------------------------------------
def committed_by_partition(probe: GroupProbe) -> dict[str, dict[TopicPartition, int]]:
    """Per group of the probe: the committed offset of every partition of the probe's topics
    ({} while the broker does not answer)."""
    return probe._offsets(probe.topics)


def group_members(probe: GroupProbe, group: str) -> tuple[str, list[str]]:
    """(state, member ids that hold an assignment) of one consumer group; ("?", []) if the broker
    does not answer."""
    try:
        info = probe.admin.describe_groups([group])[group]
    except KafkaError:
        return "?", []
    return str(info.get("group_state")), [m["member_id"] for m in info.get("members", [])
                                          if m.get("member_assignment")]


def remove_members(probe: GroupProbe, group: str, member_ids: Collection[str]) -> dict[str, str]:
    """Take members out of a group at once (what the broker does by itself once their session times out:
    a killed consumer sends no LeaveGroup). Returns member id -> error name ("NoError")."""
    from kafka.admin import MemberToRemove

    if not member_ids:
        return {}
    out = probe.admin.remove_group_members(group, [MemberToRemove(member_id=m) for m in member_ids])
    return {str(k): getattr(v, "__name__", str(v)) for k, v in out.items()}


class FramedEvents:
    """Turns committed offsets on a re-keyed topic into events: a record there is a frame of many events
    (ingest/routing.py), so a detect group's progress in events is the entries of the frames before its
    committed offsets. Reads the topic from the start as far as it is asked to."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        self.before: dict[TopicPartition, list[int]] = {}  # tp -> events in the frames before offset i

    def _assign(self) -> None:
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        if tps and set(tps) != set(self.before):
            self.consumer.assign(tps)
            self.consumer.seek_to_beginning(*tps)
            self.before = {tp: [0] for tp in tps}

    def events_before(self, offsets: dict[TopicPartition, int], timeout: float = 10.0) -> int:
        from ingest.routing import decode_frame

        self._assign()
        deadline = time.monotonic() + timeout
        while any(len(self.before.get(tp, [0])) <= off for tp, off in offsets.items()) \
                and time.monotonic() < deadline:
            for tp, msgs in self.consumer.poll(timeout_ms=200).items():
                counts = self.before[tp]
                for m in msgs:
                    while len(counts) <= m.offset:  # offsets with no record (none here) hold nothing
                        counts.append(counts[-1])
                    counts.append(counts[-1] + len(decode_frame(m.value).entries))
        return sum(self.before[tp][min(off, len(self.before[tp]) - 1)] for tp, off in offsets.items()
                   if tp in self.before)

    def close(self) -> None:
        self.consumer.close()
