"""The event-time scheduler that merges all actors, and `generate`.

Actors are generators of `Item`s in non-decreasing event time; a heap interleaves them so the output is
in event-time order. A small share of access events then arrives late (a gateway instance flushing its
buffer): held back up to `MAX_LATENESS_SECONDS` and emitted after newer events, with their own `ts`.
Attack scenarios are started by event count: one every `spec.attack_every` unlabelled events (so that
the attacks' own events cannot speed them up), cycling through `spec.attacks`, starting half a period in.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator

from gatewatch.keys import TokenMinter
from gatewatch.simulate import traffic
from gatewatch.simulate.attacks import SCENARIOS
from gatewatch.simulate.context import Item, Sim, Spawn
from gatewatch.simulate.model import ACCESS_TOPIC, AttackRun, SimEvent, SimulationSpec
from gatewatch.simulate.population import build_population
from gatewatch.simulate.tokens import TokenBroker

LATE_SHARE = 0.005
MAX_LATENESS_SECONDS = 20.0


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Iterator[Item], object]] = []
        self._seq = 0

    def add(self, actor: Iterator[Item]) -> None:
        first = next(actor, None)
        if first is not None:
            self._seq += 1
            heapq.heappush(self._heap, (first[0], self._seq, actor, first[1]))

    def __iter__(self) -> Iterator[tuple[float, SimEvent]]:
        heap = self._heap
        while heap:
            t, _, actor, payload = heap[0]
            nxt = next(actor, None)  # advance the actor now: its code runs at event time t
            if nxt is None:
                heapq.heappop(heap)
            elif nxt[0] < t:
                raise RuntimeError(f"actor {actor!r} went back in event time ({nxt[0]} < {t})")
            else:
                self._seq += 1
                heapq.heapreplace(heap, (nxt[0], self._seq, actor, nxt[1]))
            if type(payload) is SimEvent:
                yield t, payload
            elif type(payload) is Spawn:
                self.add(payload.actor)


def build(spec: SimulationSpec, minter: TokenMinter, tenants_names: list[str] | None = None) -> Sim:
    rng = random.Random(spec.seed)
    pop = build_population(spec, random.Random(rng.getrandbits(64)), tenants_names)
    sim = Sim(spec, minter, pop, random.Random(rng.getrandbits(64)))
    sim.tokens = TokenBroker(sim)
    return sim


def _normal_actors(sim: Sim, sched: Scheduler) -> None:
    start, rng = sim.spec.start, sim.rng
    for ten in sim.pop.tenants:
        for i in range(len(ten.gateways)):
            offset = 0.0 if (ten.index, i) == (0, 0) else rng.uniform(0.0, 5.0)
            sched.add(traffic.health_actor(sim, ten, i, start + offset))
    services = sim.pop.services
    total = sum(d.weight for d in services)
    for dev in services:
        sched.add(traffic.service_actor(sim, dev, start, dev.weight / total))
    sched.add(traffic.user_spawner(sim, start))
    sched.add(traffic.public_actor(sim, start))


def generate_with(sim: Sim) -> Iterator[SimEvent]:
    """The event stream of a built simulation (`build`); `sim.stats` fills in as it runs."""
    spec = sim.spec
    sched = Scheduler()
    _normal_actors(sim, sched)
    late_rng = random.Random(spec.seed ^ 0x5EED1A7E)
    end = spec.start + spec.duration_seconds if spec.duration_seconds is not None else None
    limit = spec.events
    attacks, every = spec.attacks, spec.attack_every
    next_attack, n_attacks = max(every // 2, 1), 0
    late: list[tuple[float, int, SimEvent]] = []
    count = normal = held = 0
    if limit == 0:
        return
    for t, ev in sched:
        if end is not None and t > end:
            break
        while late and late[0][0] <= t:
            yield heapq.heappop(late)[2]
            count += 1
            if count == limit:
                return
        if ev.topic == ACCESS_TOPIC and late_rng.random() < LATE_SHARE and count:
            delay = late_rng.uniform(0.5, MAX_LATENESS_SECONDS - 0.1)
            held += 1
            heapq.heappush(late, (t + delay, held, ev))
            sim.stats["late"] += 1
            continue
        yield ev
        count += 1
        if count == limit:
            return
        normal += not ev.labels
        if attacks and normal >= next_attack:
            name = attacks[n_attacks % len(attacks)]
            n_attacks += 1
            run = AttackRun(f"atk-{n_attacks:04d}-{name}", name)
            sched.add(SCENARIOS[name](sim, t, run))
            sim.stats["attacks"] += 1
            next_attack += every
    while late:  # the window closed: what was still buffered arrives now
        yield heapq.heappop(late)[2]
        count += 1
        if count == limit:
            return


def generate(spec: SimulationSpec, minter: TokenMinter, *,
             tenants_names: list[str] | None = None) -> Iterator[SimEvent]:
    """Simulated gateway traffic with labelled attacks; see the package docstring."""
    if tenants_names is not None and len(tenants_names) != spec.tenants:
        raise ValueError(f"tenants_names has {len(tenants_names)} names for spec.tenants={spec.tenants}")
    return generate_with(build(spec, minter, tenants_names))
