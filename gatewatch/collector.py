"""`gatewatch collect`: nginx's syslog access log → the `[kafka] access_topic`, at least once from receipt.

    socket ──reader thread──> LineBuffer (bounded) ──publisher (main thread)──> Kafka (acks=all)
                                                                          └──> dead letters

* **The socket**: a unix datagram socket (`unix:/path`; only who may write the file can send) or UDP
  (`udp:127.0.0.1:PORT`). nginx sends one datagram per request and never retries: when the socket's queue is
  full its send fails and the line is gone. On Linux a unix datagram socket queues at most
  `net.unix.max_dgram_qlen` datagrams (10 by default; the collector warns) and nginx's loss is not visible
  here; a UDP socket queues up to its receive buffer (`--rcvbuf`) and the kernel counts what it dropped,
  which the collector reports (`kernel_drops`).
* **Bounded memory**: the reader puts datagrams into a `LineBuffer` bounded in lines and bytes; when it is
  full the reader stops reading, and the socket's own queue is what is left (back-pressure ends at nginx,
  which drops).
* **At least once from receipt**: the publisher parses each datagram (ingest/syslog.py), sends the events
  with the configured producer (ingest/kafka_io.py `make_producer`: acks=all) and waits for every
  acknowledgement; a broker error that goes away by itself is retried with backoff for as long as it lasts,
  a record Kafka refuses for good goes to the dead-letter topic (`publish_failed`), a dead letter Kafka
  refuses is counted and logged by fingerprint (`lost`). On SIGTERM/SIGINT the reader empties the socket's
  queue and stops, the publisher sends what is buffered and exits; what it still cannot deliver after
  `drain_seconds` is lost, counted and logged by fingerprint, and the exit code is 1.
* **Bad lines** (not a frame, not JSON, a field missing or of the wrong type, too large): a dead letter with
  the reason and the datagram as received (stage `collect`, source `syslog:<listen>`, 0, datagram number);
  never a crash.
* **Tokens**: a raw token is never logged: a lost record is named by its `event_id` and the SHA-256 of its
  bytes.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import socket
import stat
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.deadletter import DeadLetter
from ingest.delivery import is_transient
from ingest.errors import ConfigError, OversizeError, RecordError
from ingest.events import Source
from ingest.syslog import access_event

SO_MEMINFO = 55  # Linux: socket memory counters, SK_MEMINFO_DROPS is the 9th
UNIX_QLEN = "/proc/sys/net/unix/max_dgram_qlen"
LOST_LOGGED = 100  # lost records named one by one; beyond that only counted


def open_listener(listen: str, *, mode: int = 0o660, rcvbuf: int = 4 * 1024 * 1024) -> socket.socket:
    """The datagram socket `listen` names (`unix:/abs/path` or `udp:HOST:PORT`), bound, with a 0.2 s timeout.
    A unix path left by a collector that is gone is replaced; one that a live process listens on, or that is
    not a socket, is refused."""
    scheme, _, where = listen.partition(":")
    if scheme == "unix":
        if not where.startswith("/"):
            raise ConfigError(f"--listen unix:PATH needs an absolute path, got {where[:80]!r}")
        _clear_stale(where)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(where)
        os.chmod(where, mode)
    elif scheme == "udp":
        host, sep, port = where.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--listen udp:HOST:PORT, got {where[:80]!r}")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"--listen {listen}: {exc.strerror}") from None
    else:
        raise ConfigError(f"--listen must be unix:/PATH or udp:HOST:PORT, got {listen[:80]!r}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # capped by net.core.rmem_max
    except OSError:
        pass
    sock.settimeout(0.2)
    return sock


def _clear_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"--listen unix:{path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody bound to it: left by a collector that is gone
        return
    finally:
        probe.close()
    raise ConfigError(f"--listen unix:{path}: another process listens on it")


def unix_queue_warning(listen: str) -> str | None:
    """A warning when nginx would lose lines to a short unix datagram queue (None when fine or unknown)."""
    if not listen.startswith("unix:"):
        return None
    try:
        with open(UNIX_QLEN, encoding="ascii") as f:
            qlen = int(f.read())
    except (OSError, ValueError):
        return None
    if qlen >= 512:
        return None
    return (f"gatewatch: net.unix.max_dgram_qlen is {qlen}: nginx drops a log line whenever {qlen} wait in the "
            "socket (it never retries); raise it (sysctl net.unix.max_dgram_qlen=1024) or listen on udp:127.0.0.1:PORT")


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on this socket (UDP: receive buffer full); None where not known."""
    if sys.platform != "linux":
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 9 * 4)
    except OSError:
        return None
    return int(struct.unpack("9I", raw)[8]) if len(raw) == 36 else None


class LineBuffer:
    """A FIFO bounded in items and bytes. `put` blocks while it is full (one item larger than the byte bound
    is let in alone); `take` hands out up to n items; `close` ends it once emptied."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: collections.deque[tuple[int, bytes, bool]] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self.full_waits = 0  # times the reader had to stop reading

    def _full(self, size: int) -> bool:
        return len(self._items) >= self.max_items or (bool(self._items) and self._bytes + size > self.max_bytes)

    def put(self, seq: int, item: bytes, truncated: bool = False) -> None:
        with self._cond:
            if self._full(len(item)):
                self.full_waits += 1
                while self._full(len(item)):
                    self._cond.wait(0.5)
            self._items.append((seq, item, truncated))
            self._bytes += len(item)
            self._cond.notify_all()

    def take(self, n: int, timeout: float) -> list[tuple[int, bytes, bool]]:
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            out = [self._items.popleft() for _ in range(min(n, len(self._items)))]
            self._bytes -= sum(len(item) for _, item, _ in out)
            if out:
                self._cond.notify_all()
            return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._closed and not self._items


@dataclass
class Outgoing:
    topic: str
    value: bytes
    key: bytes | None
    seq: int
    original: bytes  # the datagram as received
    dead: bool  # a dead letter (its own failure is final)


class Collector:
    def __init__(self, sock: socket.socket, producer: Any, *, listen: str, access_topic: str, dlq_topic: str,
                 tag: str | None = "gatewatch", max_event_bytes: int = 65_536, queue_lines: int = 10_000,
                 queue_bytes: int = 64 * 1024 * 1024, batch: int = 500, drain_seconds: float = 30.0,
                 log: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sock, self.producer = sock, producer
        self.listen, self.access_topic, self.dlq_topic, self.tag = listen, access_topic, dlq_topic, tag
        self.max_event_bytes, self.batch, self.drain_seconds = max_event_bytes, batch, drain_seconds
        self.buffer = LineBuffer(queue_lines, queue_bytes)
        self.stop = threading.Event()
        self._stopped_at: float | None = None
        self._say = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._sleep = sleep
        self.received = self.published = self.lost = self.retries = 0
        self.dead_letters: Counter[str] = Counter()
        self._drops_at_start = kernel_drops(sock) or 0
        self._drops_seen = 0
        self._drops_said = 0.0

    # -- the reader thread ----------------------------------------------------------------------
    def read_loop(self) -> None:
        size = self.max_event_bytes + 1024
        seq = 0
        try:
            while not self.stop.is_set():
                try:
                    data, _, flags, _ = self.sock.recvmsg(size)
                except (socket.timeout, InterruptedError):
                    continue
                seq += 1
                self.buffer.put(seq, data, bool(flags & socket.MSG_TRUNC))
            self.sock.setblocking(False)  # stopping: what is queued in the socket was sent to us; take it
            while True:
                try:
                    data, _, flags, _ = self.sock.recvmsg(size)
                except (BlockingIOError, InterruptedError):
                    break
                seq += 1
                self.buffer.put(seq, data, bool(flags & socket.MSG_TRUNC))
        except OSError as exc:  # the socket went away under us: stop like a signal would
            self._say(f"gatewatch: collector socket failed ({type(exc).__name__}); stopping")
            self.request_stop()
        finally:
            self.buffer.close()

    def request_stop(self) -> None:
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self.stop.set()

    # -- the publisher (caller's thread) --------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        reader = threading.Thread(target=self.read_loop, name="gatewatch-collect-reader", daemon=True)
        reader.start()
        while True:
            got = self.buffer.take(self.batch, timeout=0.2)
            if got:
                self.received += len(got)
                self._deliver([self._outgoing(seq, raw, cut) for seq, raw, cut in got])
            elif self.buffer.finished:
                break
            self._watch_drops()
        reader.join(timeout=5)
        self._watch_drops(final=True)
        return {"received": self.received, "published": self.published,
                "dead_letters": sum(self.dead_letters.values()), "dead_letter_codes": dict(self.dead_letters),
                "lost": self.lost, "kernel_drops": self._drops_seen, "reader_waits": self.buffer.full_waits,
                "retries": self.retries, "seconds": round(time.monotonic() - started, 3)}

    def _outgoing(self, seq: int, raw: bytes, truncated: bool = False) -> Outgoing:
        try:
            if truncated:
                raise OversizeError(f"datagram larger than {self.max_event_bytes + 1024} bytes (cut when read)")
            value = access_event(raw, tag=self.tag, max_event_bytes=self.max_event_bytes)
        except RecordError as exc:
            return self._dead(seq, raw, exc.code, str(exc))
        return Outgoing(self.access_topic, value, None, seq, raw, dead=False)

    def _dead(self, seq: int, raw: bytes, code: str, reason: str) -> Outgoing:
        letter = DeadLetter(code=code, reason=reason[:500], original=raw,
                            source=Source(topic=f"syslog:{self.listen}", partition=0, offset=seq), stage="collect")
        return Outgoing(self.dlq_topic, letter.to_json(), code.encode(), seq, raw, dead=True)

    def _giving_up(self) -> bool:
        return self._stopped_at is not None and time.monotonic() - self._stopped_at > self.drain_seconds

    def _deliver(self, records: list[Outgoing]) -> None:
        """Send until every record is acknowledged, dead-lettered or (stopping, past the drain time) lost.
        A record in flight is never sent twice: the producer retries it itself until its delivery timeout,
        and only a failed one is sent again."""
        to_send, inflight = records, []
        backoff, announced = 0.2, False
        while to_send or inflight:
            if self._giving_up():
                for r in [*to_send, *(r for r, _ in inflight)]:
                    self._lose(r, "stopped while Kafka was unavailable")
                return
            failures: list[BaseException] = []
            later: list[Outgoing] = []
            for r in to_send:
                try:
                    inflight.append((r, self.producer.send(r.topic, value=r.value, key=r.key)))
                except Exception as exc:  # raised by send itself: no metadata in an outage, or a record too large
                    failures.append(exc)
                    self._failed(r, exc, later)
            try:
                self.producer.flush(timeout=1.0)
            except Exception:  # not all done within the second: the futures say which
                pass
            waiting = []
            for r, future in inflight:
                if not future.is_done:
                    waiting.append((r, future))
                elif future.failed():
                    failures.append(future.exception)
                    self._failed(r, future.exception, later)
                elif r.dead:
                    self.dead_letters[json.loads(r.value)["code"]] += 1
                else:
                    self.published += 1
            to_send, inflight = later, waiting
            if failures and to_send:
                self.retries += 1
                if not announced:
                    announced = True
                    self._say(f"gatewatch: Kafka unavailable while publishing ({type(failures[0]).__name__}); "
                              f"retrying {len(to_send) + len(inflight)} record(s)")
                self._sleep(backoff)
                backoff = min(5.0, backoff * 2)
        if announced:
            self._say("gatewatch: publishing again")

    def _failed(self, r: Outgoing, exc: BaseException, later: list[Outgoing]) -> None:
        if is_transient(exc):
            later.append(r)
        else:
            self._refused(r, exc, later)

    def _refused(self, r: Outgoing, exc: BaseException, again: list[Outgoing]) -> None:
        """Kafka refused `r` for good: an event becomes a dead letter, a dead letter is lost."""
        if r.dead:
            self._lose(r, f"Kafka refused the dead letter: {type(exc).__name__}")
        else:
            again.append(self._dead(r.seq, r.original, "publish_failed", f"Kafka refused it: {type(exc).__name__}"))

    def _lose(self, r: Outgoing, why: str) -> None:
        self.lost += 1
        if self.lost <= LOST_LOGGED:
            self._say(f"gatewatch: lost {fingerprint(r.value if not r.dead else r.original)} ({why})")
        elif self.lost == LOST_LOGGED + 1:
            self._say("gatewatch: more records lost; only counted from here (see the summary)")

    def _watch_drops(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._drops_said < 10.0:
            return
        drops = kernel_drops(self.sock) if self.sock.fileno() >= 0 else None
        if drops is None:
            return
        drops -= self._drops_at_start
        if drops > self._drops_seen:
            self._say(f"gatewatch: the kernel dropped {drops - self._drops_seen} log line(s): the socket's receive "
                      "buffer was full (raise --rcvbuf and net.core.rmem_max)")
            self._drops_seen = drops
        self._drops_said = now


def fingerprint(record: bytes) -> str:
    """How a record is named in a log line: its event_id when it has one, and the SHA-256 of its bytes —
    never the bytes themselves (they hold a raw token)."""
    digest = hashlib.sha256(record).hexdigest()[:16]
    try:
        event_id = json.loads(record).get("event_id")
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        event_id = None
    if isinstance(event_id, str) and event_id.isalnum() and len(event_id) <= 64:
        return f"event_id={event_id} sha256={digest}"
    return f"sha256={digest}"
