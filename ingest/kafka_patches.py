"""A fix applied to kafka-python's group coordinator (3.0.12, the pinned version): a finished join is kept.

The bug: `BaseCoordinator.join_group_async` runs JoinGroup → SyncGroup as a task and awaits it for at most
the poll's timeout; when the wait times out, the task goes on in the background. On the next poll it
starts a *new* task if the old one `is_done` — so a join that finished between two polls is thrown away,
assignment included, and the member joins again. A consumer polled with a short timeout and busy between
polls (a keyed worker's detect consumer polls with `timeout_ms=0` while its ingest stage has records) almost
always lets the join finish between polls: it never completes a rebalance, and when it is the group's
leader every new JoinGroup starts another rebalance for the whole group. Measured with two consumers on
the real broker: the one polled with timeout 0 and 50 ms of work between polls was without partitions for
9 s while the other was revoked three times; a keyed worker in that state held its partitions "pending
revocation", fetched nothing, and reported no lag (tests/integration/test_skew.py lost 10–25 % of events
in 3 runs of 10). `tests/integration/test_kafka_patches.py` reproduces it with the fix switched off.

The fix: before the original runs, a join task that finished successfully (and whose generation is still
the member's) is completed the way the original completes an awaited one — the listener's
`on_partitions_assigned` with the assignment it brought. Applied only where the original still has the
faulty test (its source is checked), so a kafka-python release that fixes it is left alone.

A second hole of the same kind: `ConsumerCoordinator.poll` drives the join only while `need_rejoin()` is
true. A leader that rejoins because the topics' metadata changed sends JoinGroup with heartbeats disabled;
the SyncGroup it runs sets the assignment snapshot, after which `need_rejoin()` is false — so when that
join finished between two polls, nothing ever completed it: no assignment, no heartbeats, and the broker
dropped the member 45 s later (tests/integration/test_crash_keyed.py's clean keyed run once read nothing
for 8 minutes; the broker log showed generation 2 assigned and the member then timing out). So a join in
flight, or finished and not yet completed, counts as needing the rejoin until it is completed.
"""

from __future__ import annotations

import inspect
from typing import Any

_FAULTY = "if self._join_task is None or self._join_task.is_done:"
_MARK = "_gatewatch_keeps_finished_joins"


def keep_finished_joins() -> bool:
    """Install the fix (idempotent); True if kafka-python needs it and now has it."""
    from kafka.coordinator.base import BaseCoordinator, MemberState

    original = BaseCoordinator.join_group_async
    if getattr(original, _MARK, False):
        return True
    try:
        faulty = _FAULTY in inspect.getsource(original)
    except (OSError, TypeError):  # no source to check (a frozen build): leave the client as it is
        return False
    if not faulty:
        return False

    async def join_group_async(self: Any, timeout_ms: Any = None) -> Any:
        task = self._join_task
        if task is not None and task.succeeded() and self.rejoining and not self._generation.is_lost():
            # what the original does after awaiting the task itself (kafka/coordinator/base.py)
            self._join_task = None
            with self._lock:
                self.rejoining = False
                self.rejoin_needed = False
                self.state = MemberState.STABLE
                self._enable_heartbeat()
            await self._on_join_complete_async(self._generation.generation_id, self._generation.member_id,
                                               self._generation.protocol, task.value)
            return True
        return await original(self, timeout_ms)

    setattr(join_group_async, _MARK, True)
    join_group_async.__wrapped__ = original  # type: ignore[attr-defined]
    BaseCoordinator.join_group_async = join_group_async

    from kafka.coordinator.consumer import ConsumerCoordinator

    needs = ConsumerCoordinator.need_rejoin

    def need_rejoin(self: Any) -> Any:
        if self.rejoining and self._join_task is not None:  # a join started and not completed: drive it
            return True
        return needs(self)

    setattr(need_rejoin, _MARK, True)
    need_rejoin.__wrapped__ = needs  # type: ignore[attr-defined]
    ConsumerCoordinator.need_rejoin = need_rejoin
    return True


def undo() -> None:
    """Put the original back (tests that show the bug)."""
    from kafka.coordinator.base import BaseCoordinator

    from kafka.coordinator.consumer import ConsumerCoordinator

    current = BaseCoordinator.join_group_async
    if getattr(current, _MARK, False):
        BaseCoordinator.join_group_async = current.__wrapped__
    needs = ConsumerCoordinator.need_rejoin
    if getattr(needs, _MARK, False):
        ConsumerCoordinator.need_rejoin = needs.__wrapped__
