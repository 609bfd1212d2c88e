"""gatewatch/collector.py with a fake producer (the real broker: tests/integration/test_nginx_gateway.py):
bounded memory with back-pressure on the socket, delivery through an outage without duplicates, dead letters
for bad lines and for records Kafka refuses, a clean stop that drains, loss counted and named by fingerprint
and never by the raw token."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from gatewatch.collector import Collector, LineBuffer, fingerprint, kernel_drops, open_listener, unix_queue_warning
from ingest.errors import ConfigError

TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJl"


def datagram(i: int, token: str = TOKEN) -> bytes:
    line = {"kind": "access", "event_id": f"ev{i}", "msec": "1796319712.077", "gateway": "g", "tenant": "t",
            "client_ip": "192.0.2.1", "method": "GET", "path": "/p", "status": "200", "token": token}
    return b"<190>Dec  3 17:41:52 gatewatch: " + json.dumps(line).encode()


class Future:
    def __init__(self, exception: BaseException | None = None, done: bool = True) -> None:
        self.exception, self.is_done = exception, done

    def failed(self) -> bool:
        return self.exception is not None


class FakeProducer:
    """Records what was acknowledged; `fail(n, exc)` makes the next n sends fail with exc."""

    def __init__(self) -> None:
        self.acked: list[tuple[str, bytes]] = []
        self.failures: list[BaseException] = []
        self.refuse_topic: dict[str, BaseException] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.sends = 0

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Future:
        self.gate.wait()
        self.sends += 1
        if topic in self.refuse_topic:
            return Future(self.refuse_topic[topic])
        if self.failures:
            return Future(self.failures.pop(0))
        self.acked.append((topic, value))
        return Future()

    def flush(self, timeout: float | None = None) -> None:
        pass


@pytest.fixture()
def unix_path(tmp_path: Path) -> str:
    return str(tmp_path / "c.sock")


def start(collector: Collector) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(collector.run()), daemon=True)
    thread.start()
    return thread, out


def sender(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(path)
    return s


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def make(path: str, producer: FakeProducer, lines: list[str], **kw: Any) -> Collector:
    sock = open_listener(f"unix:{path}", mode=0o600)
    return Collector(sock, producer, listen=f"unix:{path}", access_topic="access", dlq_topic="dlq",
                     log=lines.append, sleep=lambda s: time.sleep(min(s, 0.01)), **kw)


def test_lines_are_published_and_bad_ones_dead_lettered(unix_path: str) -> None:
    producer, lines = FakeProducer(), []
    collector = make(unix_path, producer, lines)
    thread, summary = start(collector)
    s = sender(unix_path)
    for d in (datagram(1), b"garbage", datagram(2).replace(b'"192.0.2.1"', b'"nope"'), datagram(3)):
        s.send(d)
    wait_until(lambda: len(producer.acked) == 4)
    collector.request_stop()
    thread.join(10)
    assert summary["published"] == 2 and summary["dead_letter_codes"] == {"not_json": 1, "invalid_field": 1}
    events = [json.loads(v) for t, v in producer.acked if t == "access"]
    assert [e["event_id"] for e in events] == ["ev1", "ev3"] and events[0]["token"] == TOKEN
    dead = [json.loads(v) for t, v in producer.acked if t == "dlq"]
    assert [d["source"]["offset"] for d in dead] == [2, 3] and {d["stage"] for d in dead} == {"collect"}


def test_an_outage_is_ridden_out_without_sending_a_record_twice(unix_path: str) -> None:
    producer, lines = FakeProducer(), []
    producer.failures = [KafkaConnectionError("down")] * 5
    collector = make(unix_path, producer, lines)
    thread, summary = start(collector)
    s = sender(unix_path)
    for i in range(3):
        s.send(datagram(i))
    wait_until(lambda: len(producer.acked) == 3)
    collector.request_stop()
    thread.join(10)
    assert sorted(json.loads(v)["event_id"] for _, v in producer.acked) == ["ev0", "ev1", "ev2"]
    assert summary["published"] == 3 and summary["lost"] == 0 and summary["retries"] >= 1
    assert any("Kafka unavailable" in line for line in lines) and lines[-1] == "gatewatch: publishing again"


def test_a_record_kafka_refuses_for_good_becomes_a_dead_letter(unix_path: str) -> None:
    producer, lines = FakeProducer(), []
    producer.failures = [MessageSizeTooLargeError("too big")]
    collector = make(unix_path, producer, lines)
    thread, summary = start(collector)
    sender(unix_path).send(datagram(1))
    wait_until(lambda: summary or producer.acked)
    collector.request_stop()
    thread.join(10)
    (topic, value), = producer.acked
    dead = json.loads(value)
    assert topic == "dlq" and dead["code"] == "publish_failed" and "MessageSizeTooLargeError" in dead["reason"]
    assert summary["published"] == 0 and summary["dead_letter_codes"] == {"publish_failed": 1}


def test_stopping_in_an_outage_counts_the_loss_and_names_it_without_the_token(unix_path: str) -> None:
    producer, lines = FakeProducer(), []
    producer.failures = [KafkaConnectionError("down")] * 10_000
    collector = make(unix_path, producer, lines, drain_seconds=0.2)
    thread, summary = start(collector)
    s = sender(unix_path)
    for i in range(3):
        s.send(datagram(i))
    wait_until(lambda: producer.sends >= 3)
    collector.request_stop()
    thread.join(10)
    assert summary["lost"] == 3 and summary["published"] == 0
    named = [line for line in lines if line.startswith("gatewatch: lost ")]
    assert len(named) == 3 and "event_id=ev0 sha256=" in named[0]
    assert not any(TOKEN in line for line in lines)


def test_a_stop_takes_what_is_queued_in_the_socket(unix_path: str) -> None:
    producer, lines = FakeProducer(), []
    collector = make(unix_path, producer, lines)
    s = sender(unix_path)
    for i in range(5):  # queued before the reader runs at all
        s.send(datagram(i))
    collector.request_stop()
    assert collector.run()["published"] == 5


def test_a_full_buffer_stops_the_reader_and_memory_stays_bounded(unix_path: str) -> None:
    producer, lines = FakeProducer(), []
    producer.gate.clear()  # Kafka hangs: nothing leaves
    collector = make(unix_path, producer, lines, queue_lines=4, batch=2)
    thread, summary = start(collector)
    s = sender(unix_path)
    s.setblocking(False)
    sent = 0
    try:
        for i in range(200):
            s.send(datagram(i))
            sent += 1
    except BlockingIOError:
        pass  # the socket's queue is full too: this is where nginx would drop
    wait_until(lambda: collector.buffer.full_waits >= 1)
    assert len(collector.buffer._items) <= 4 and sent < 200, sent
    producer.gate.set()
    collector.request_stop()
    thread.join(10)
    assert summary["published"] == sent and summary["reader_waits"] >= 1


def test_line_buffer_bounds_items_and_bytes() -> None:
    buf = LineBuffer(max_items=10, max_bytes=100)
    buf.put(1, b"x" * 60)
    done = threading.Event()
    threading.Thread(target=lambda: (buf.put(2, b"y" * 60), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # 120 bytes would not fit
    assert buf.take(5, 0.1) == [(1, b"x" * 60, False)]
    assert done.wait(2) and buf.take(5, 0.1) == [(2, b"y" * 60, False)]
    buf.put(3, b"z" * 500)  # larger than the bound on its own: let in alone
    buf.close()
    assert not buf.finished and buf.take(5, 0.1) and buf.finished


def test_listener_replaces_a_stale_socket_and_refuses_a_live_one_or_a_file(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    first = open_listener(f"unix:{path}")
    with pytest.raises(ConfigError, match="another process listens"):
        open_listener(f"unix:{path}")
    first.close()  # gone, its file left behind
    second = open_listener(f"unix:{path}", mode=0o600)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    second.close()
    (tmp_path / "plain").write_text("keep me")
    with pytest.raises(ConfigError, match="not a socket"):
        open_listener(f"unix:{tmp_path / 'plain'}")
    assert (tmp_path / "plain").read_text() == "keep me"
    for bad in ("unix:rel.sock", "tcp:127.0.0.1:1", "udp:nohost"):
        with pytest.raises(ConfigError):
            open_listener(bad)


def test_udp_drops_are_counted(tmp_path: Path) -> None:
    sock = open_listener("udp:127.0.0.1:0", rcvbuf=4096)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(200):
        out.sendto(b"x" * 1000, sock.getsockname())
    drops = kernel_drops(sock)
    assert drops is not None and drops > 0
    sock.close()


def test_unix_queue_warning_names_the_sysctl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    qlen = tmp_path / "qlen"
    qlen.write_text("10\n")
    monkeypatch.setattr("gatewatch.collector.UNIX_QLEN", str(qlen))
    assert "net.unix.max_dgram_qlen is 10" in (unix_queue_warning("unix:/x") or "")
    assert unix_queue_warning("udp:127.0.0.1:1") is None
    qlen.write_text("1024\n")
    assert unix_queue_warning("unix:/x") is None


def test_fingerprint_never_holds_the_record() -> None:
    raw = json.dumps({"event_id": "abc123", "token": TOKEN}).encode()
    assert fingerprint(raw).startswith("event_id=abc123 sha256=") and TOKEN not in fingerprint(raw)
    assert fingerprint(b"\xff" + TOKEN.encode()).startswith("sha256=")
    assert fingerprint(json.dumps({"event_id": TOKEN}).encode()).startswith("sha256=")  # not an id: not quoted
