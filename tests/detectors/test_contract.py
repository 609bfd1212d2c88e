"""Every registered detector passes the same contract (docs/DEVELOPING.md "How to add a detector")."""

import random

import pytest

import detectors
from detectors import DETECTORS
from detectors import store_for
from detectors.base import EVENT_CLASSES, event_class, reads
from detectors.traffic_ip_allowlist import IpAllowlistDetector, route_allow_lists
from gatewatch.simulate import ADMIN_ALLOWED_CIDRS
from gatewatch.settings import load_settings
from ingest.decode import EventDecoder
from ingest.events import Source
from scoring.alerts import AlertBuilder
from tests.conftest import T0
from tests.events import access, raw, token_event


def make(det_cls):
    s = load_settings(environ={})
    section = getattr(s.detectors, det_cls.settings_key)
    if det_cls is IpAllowlistDetector:  # nothing is restricted by default: restrict the admin routes
        section = section.model_copy(update={"routes": route_allow_lists(ADMIN_ALLOWED_CIDRS)})
    return det_cls.from_config(section, s.tokens)


def test_every_detector_module_is_registered() -> None:
    import importlib
    import inspect
    import pkgutil

    found = set()
    for mod in pkgutil.iter_modules(detectors.__path__):
        module = importlib.import_module(f"detectors.{mod.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and hasattr(obj, "observe") and hasattr(obj, "name"):
                found.add(obj)
    assert found and found <= set(DETECTORS)


@pytest.fixture(scope="module")
def stream(validator, minter):
    """A small mixed stream that gives every detector something to find: repeated nonces, plain
    JWS tokens, a burst of garbage tokens from one IP, a subject over its LLM token budget."""
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    toks = [minter.mint({"sub": f"u{i}", "client_id": f"c{i}", "exp": T0 + 900, "iat": T0,
                         "cnf": {"jkt": f"k{i}"}}) for i in range(3)]
    plain = minter.mint({"sub": "legacy", "client_id": "old-app", "exp": T0 + 900, "iat": T0}, encrypt=False)
    rng = random.Random(3)
    expired = minter.mint({"sub": "late", "client_id": "c9", "exp": T0 - 600, "iat": T0 - 1200, "tid": "acme"})
    foreign = minter.mint({"sub": "visitor", "client_id": "c8", "exp": T0 + 900, "iat": T0, "tid": "globex"})
    twin_a = minter.mint({"sub": "alice", "jti": "dup-1", "exp": T0 + 900, "iat": T0})
    twin_b = minter.mint({"sub": "mallory", "jti": "dup-1", "exp": T0 + 900, "iat": T0 + 30})
    revocable = minter.mint({"sub": "rita", "client_id": "c7", "jti": "rv-1", "exp": T0 + 900, "iat": T0})
    recs = []
    for i in range(90):
        if i % 3 == 0:
            recs.append(access(f"e{i}", T0 + i / 2, token=f"garbage.{i}.x", client_ip="198.51.100.1", status=401))
        elif i % 7 == 0:
            recs.append(access(f"e{i}", T0 + i / 2, token=plain))
        elif i % 11 == 0:
            recs.append(access(f"e{i}", T0 + i / 2, token=expired))
        elif i % 13 == 0:
            recs.append(access(f"e{i}", T0 + i / 2, token=foreign))
        elif i % 17 == 0:
            recs.append(access(f"e{i}", T0 + i / 2, token=twin_a if i < 40 else twin_b))
        elif i in (20, 50, 80):  # a stolen bearer token: curl from another network
            recs.append(access(f"e{i}", T0 + i / 2, token=toks[i % 3], client_ip="192.0.2.200",
                               user_agent="curl/8.7.1"))
        elif i in (4, 35, 62, 86):  # a refresh token rotated, then presented again
            recs.append(token_event(f"e{i}", T0 + i / 2, "refreshed", presented_jti="rt-0", issued_jti=f"rt-{i}",
                                    sub="u1", client_id="c1"))
        elif i == 10:  # logout ...
            recs.append(token_event(f"e{i}", T0 + i / 2, "revoked", jti="rv-1", sub="rita", client_id="c7"))
        elif i in (8, 25, 59, 88):  # ... and the token used after it
            recs.append(access(f"e{i}", T0 + i / 2, token=revocable))
        else:
            recs.append(access(f"e{i}", T0 + i / 2, token=toks[i % 3], nonce=f"n{rng.randint(0, 12)}"))
    recs += [access(f"rl{i}", T0 + i / 20, client_ip="192.0.2.250", route="public", path="/v1/status")
             for i in range(620)]  # 620 > 600 in 31 s: traffic.rate_limit on that IP
    recs += [access(f"adm{i}", T0 + 3 * i, route="admin-api", path="/admin/v1/users", status=403,
                    client_ip="203.0.113.66" if i % 2 else "2001:db8:f000::66") for i in range(6)]
    burner = minter.mint({"sub": "burner", "client_id": "batch-job", "exp": T0 + 900, "iat": T0})
    recs += [access(f"llm{i}", T0 + 21 + 3 * i, token=burner, route="llm-gateway", method="POST",
                    path="/v1/chat/completions", llm={"provider": "openai", "model": "gpt-4o",
                                                      "prompt_tokens": 95_000, "completion_tokens": 2_000})
             for i in range(12)]  # 1,164,000 LLM tokens in one clock minute: traffic.llm_budget
    recs.sort(key=lambda r: r["ts"])
    return [dec.decode(raw(r), Source("t", 0, i)) for i, r in enumerate(recs)]


def fresh(det_cls):
    det = make(det_cls)
    return det, store_for(det)


def observe_all(det, store, events):
    out = []
    for ev in events:
        out += det.observe(ev, store)
    return out


def alert_ids(signals):
    builder = AlertBuilder()
    return {builder.add(s, 0.0) for s in signals} - {None}


@pytest.mark.parametrize("det_cls", DETECTORS)
class TestDetectorContract:
    def test_names(self, det_cls) -> None:
        assert isinstance(det_cls.name, str) and "." in det_cls.name
        assert isinstance(det_cls.settings_key, str)

    def test_its_state_expires_once_event_time_has_moved_past_it(self, det_cls, stream) -> None:
        """Bounded memory: everything a detector keeps has an expiry on event time, so a watermark far
        past the stream leaves its store empty (a key set without one would stay forever)."""
        det, store = fresh(det_cls)
        observe_all(det, store, stream)
        assert len(store) > 0  # it did keep something about the stream ...
        store.expire(stream[-1].ts + 10 * 365 * 86_400)
        assert len(store) == 0  # ... and all of it expires

    def test_the_stream_gives_it_something_to_find(self, det_cls, stream) -> None:
        det = make(det_cls)
        assert observe_all(det, store_for(det), stream)

    def test_redelivered_input_adds_no_signal(self, det_cls, stream) -> None:
        once = observe_all(*fresh(det_cls), stream)
        twice = observe_all(*fresh(det_cls), stream + stream)
        assert [s.event_ids for s in twice] == [s.event_ids for s in once]

    def test_out_of_order_within_lateness_finds_the_same(self, det_cls, stream) -> None:
        shuffled = list(stream)
        # swap neighbours: every event moves at most a few seconds, inside the 30 s lateness
        for i in range(0, len(shuffled) - 1, 2):
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
        a = observe_all(*fresh(det_cls), stream)
        b = observe_all(*fresh(det_cls), shuffled)
        assert alert_ids(a) == alert_ids(b)  # the same alerts; evidence may name other members of a burst

    def test_events_of_classes_it_does_not_read_change_nothing(self, det_cls, stream) -> None:
        """The pipeline calls a detector only for the event classes it `reads`: the others must give no
        signal and leave its state as it was (what it finds over the whole stream is what it finds
        over the classes it reads)."""
        assert {event_class(ev) for ev in stream} == set(EVENT_CLASSES)  # the stream has every class
        det, store = fresh(det_cls)
        everything = []
        for ev in stream:
            found = det.observe(ev, store)
            if event_class(ev) not in reads(det):
                assert found == [], (ev.event_id, event_class(ev))
            everything += found
        det2, store2 = fresh(det_cls)
        declared = observe_all(det2, store2, [ev for ev in stream if event_class(ev) in reads(det2)])
        assert declared == everything and len(store2) == len(store)

    def test_state_expires_on_event_time(self, det_cls, stream) -> None:
        det, store = fresh(det_cls)
        observe_all(det, store, stream)
        assert len(store) > 0
        store.expire(T0 + 10 * 86_400)
        assert len(store) == 0


def test_every_detector_names_the_streams_its_state_is_keyed_by() -> None:
    from detectors import DETECTORS
    from ingest.routing import KEY_KINDS

    for det_cls in DETECTORS:
        assert det_cls.partition_by and set(det_cls.partition_by) <= set(KEY_KINDS), det_cls.__name__
