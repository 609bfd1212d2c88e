"""replay.token_context: one token from two incompatible client contexts; silent on moving phones."""

from __future__ import annotations

import itertools

import pytest

from detectors.packed_store import PackedStore
from detectors.client_context import classify_agent, network_of
from detectors.replay_token_context import TokenContextReplayDetector
from detectors.state import MemoryStore
from gatewatch.simulate import SimulationSpec
from ingest.decode import EventDecoder
from ingest.events import Source
from tests.detectors.helpers import observe, run_simulated, within_lateness
from tests.conftest import T0
from tests.events import access, raw

SAFARI_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.5 Safari/605.1.15")
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0"
IOS_APP = "AcmeApp/5.9.0 (iPhone; iOS 17.5.1; Scale/3.00)"
ANDROID_APP = "AcmeApp/5.9.0 (Linux; Android 14; Pixel 8) okhttp/4.12.0"
SERVER = "Go-http-client/2.0"
HOME, HOME2 = "198.18.4.20", "198.18.77.3"  # one /16
CARRIER = ["100.70.1.9", "100.71.200.4", "100.64.3.3"]  # CGNAT: a new /16 on most reconnects
HOSTING = "203.0.113.50"


@pytest.fixture()
def decode(validator):
    dec = EventDecoder(validator=validator, max_event_bytes=65536)
    return lambda recs: [dec.decode(raw(r), Source("t", 0, i)) for i, r in enumerate(recs)]


@pytest.fixture(scope="module")
def tok(minter):
    return minter.mint({"sub": "alice", "client_id": "acme-web", "exp": T0 + 3600, "iat": T0})


def test_classify_agent_families() -> None:
    assert classify_agent(SAFARI_MAC) == ("browser", "Safari on macOS")
    assert classify_agent(FIREFOX) == ("browser", "Firefox on Windows")
    assert classify_agent(IOS_APP) == ("mobile", "AcmeApp on iOS")
    assert classify_agent(ANDROID_APP) == ("mobile", "AcmeApp on Android")  # not "server" for its okhttp
    assert classify_agent("okhttp/4.12.0")[0] == "server"
    assert classify_agent("acme-sdk-python/2.4.1 python/3.12.3")[0] == "sdk"
    assert classify_agent("openai-python/1.35.3")[0] == "sdk"
    assert classify_agent("python-requests/2.32.3") == ("script", "python-requests")
    assert classify_agent("curl/8.7.1") == ("script", "curl")
    assert classify_agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")[0] == "bot"
    assert classify_agent("kube-probe/1.30")[0] == "probe"
    assert classify_agent(None) == ("none", "no User-Agent")
    assert classify_agent("FooClient/1.0") == ("other:fooclient", "FooClient")


def test_network_is_v4_16_or_v6_48() -> None:
    assert network_of("81.2.69.160") == "81.2.0.0/16"
    assert network_of("2001:db8:4135:9:1::2") == "2001:db8:4135::/48"
    assert network_of("::ffff:81.2.69.160") == "81.2.0.0/16"
    assert network_of("81.2.69.160", 24, 64) == "81.2.69.0/24"


def test_stolen_token_used_by_a_script_elsewhere(decode, tok) -> None:
    events = decode([
        access("v1", T0 + 10, token=tok, client_ip=HOME, user_agent=SAFARI_MAC),
        access("v2", T0 + 30, token=tok, client_ip=HOME2, user_agent=SAFARI_MAC),
        access("a1", T0 + 250, token=tok, client_ip=HOSTING, user_agent="python-requests/2.32.3"),
        access("a2", T0 + 260, token=tok, client_ip="203.0.113.51", user_agent="python-requests/2.32.3"),
        access("v3", T0 + 270, token=tok, client_ip="192.0.2.40", user_agent=SAFARI_MAC),  # victim at the office
    ])
    sigs = observe(TokenContextReplayDetector(), events)
    assert len(sigs) == 1
    s = sigs[0]
    assert s.type == "replay.token_context" and s.event_ids == ("v1", "a1") and s.ts == T0 + 250
    assert [(e.kind, e.value) for e in s.entities] == [("subject", "alice"), ("token", s.token_fps[0]),
                                                       ("ip", HOSTING)]
    assert s.reasons[0] == (f"token tfp {s.token_fps[0][:8]}… used from 203.0.0.0/16 with python-requests "
                            "4 minutes after use from 198.18.0.0/16 with Safari on macOS")
    assert "browser → script" in s.reasons[1]
    assert s.figures["gap_seconds"] == 240.0 and s.figures["rule"] == "context"
    assert 0.0 <= s.strength <= 1.0 and s.strength >= 0.9
    assert tok not in repr(s)


def test_phone_hopping_between_wifi_and_mobile_data_is_silent(decode, tok) -> None:
    recs = []
    t = T0
    ips = [HOME, CARRIER[0], HOME, CARRIER[1], "2001:db8:4135::9", HOME, CARRIER[2]]
    for n, ip in enumerate(ips):  # a network switch every few actions, with the same app
        for k in range(4):
            recs.append(access(f"p{n}-{k}", t, token=tok, client_ip=ip, user_agent=IOS_APP))
            t += 9
    assert observe(TokenContextReplayDetector(), decode(recs)) == []


def test_same_network_other_agent_or_same_agent_other_network_is_silent(decode, tok) -> None:
    events = decode([
        access("e1", T0, token=tok, client_ip=HOME, user_agent=SAFARI_MAC),
        access("e2", T0 + 5, token=tok, client_ip=HOME2, user_agent="curl/8.7.1"),  # the user's own script at home
        access("e3", T0 + 60, token=tok, client_ip="192.0.2.40", user_agent=FIREFOX),  # a browser at the office
    ])
    assert observe(TokenContextReplayDetector(), events) == []


def test_tokens_that_do_not_verify_or_expired_are_ignored(decode, minter) -> None:
    old = minter.mint({"sub": "bob", "exp": T0 - 600, "iat": T0 - 1200})
    events = decode([
        access("e1", T0, token=old, client_ip=HOME, user_agent=SAFARI_MAC),
        access("e2", T0 + 5, token=old, client_ip=HOSTING, user_agent="curl/8.7.1"),
        access("e3", T0 + 6, token="junk.a.b", client_ip=HOME, user_agent=SAFARI_MAC),
        access("e4", T0 + 7, token="junk.a.b", client_ip=HOSTING, user_agent="curl/8.7.1"),
    ])
    store = MemoryStore()
    assert observe(TokenContextReplayDetector(), events, store) == [] and len(store) == 0


def test_two_phones_sharing_one_token_flap(decode, tok) -> None:
    recs = []
    for i in range(12):  # A, B, A, B ... every 8 s: two devices at once
        ip = HOME if i % 2 == 0 else CARRIER[0]
        recs.append(access(f"f{i}", T0 + 8 * i, token=tok, client_ip=ip, user_agent=ANDROID_APP))
    sigs = observe(TokenContextReplayDetector(flap_switches=5, flap_window_seconds=120), decode(recs))
    assert len(sigs) == 1
    s = sigs[0]
    assert s.figures["rule"] == "flapping" and s.event_ids == ("f1", "f2", "f3", "f4", "f5")
    assert "alternated 5 times in 32 s between" in s.reasons[0] and s.strength == 0.7


def test_late_events_around_a_network_switch_do_not_flap(decode, tok) -> None:
    # the phone leaves Wi-Fi at T0+40; three of its Wi-Fi requests arrive late, after mobile-data ones
    order = [0, 1, 2, 5, 3, 6, 4, 7, 8, 9]
    recs = [access(f"l{i}", T0 + 10 * i, token=tok, client_ip=HOME if i < 5 else CARRIER[0], user_agent=IOS_APP)
            for i in range(10)]
    det = TokenContextReplayDetector(flap_switches=3, flap_window_seconds=300)
    assert observe(det, decode([recs[i] for i in order])) == []


def test_machine_clients_and_dual_stack_do_not_flap(decode, minter, tok) -> None:
    svc = minter.mint({"sub": "acme-svc-billing", "client_id": "acme-svc-billing", "exp": T0 + 900, "iat": T0})
    recs = []
    for i in range(20):
        recs.append(access(f"s{i}", T0 + 3 * i, token=svc, client_ip=("10.4.0.9", "10.8.0.9")[i % 2],
                           user_agent=SERVER))  # a service behind two egress NATs
        recs.append(access(f"d{i}", T0 + 3 * i + 1, token=tok, client_ip=(HOME, "2001:db8:1461::5")[i % 2],
                           user_agent=FIREFOX))  # happy eyeballs on a dual-stack line
    det = TokenContextReplayDetector(flap_switches=3, flap_window_seconds=300)
    assert observe(det, decode(recs)) == []


def test_redelivery_never_signals(decode, tok) -> None:
    recs = [access("v1", T0, token=tok, client_ip=HOME, user_agent=SAFARI_MAC),
            access("a1", T0 + 100, token=tok, client_ip=HOSTING, user_agent="curl/8.7.1")]
    recs += [access(f"f{i}", T0 + 200 + 5 * i, token=tok, client_ip=(HOME, CARRIER[0])[i % 2],
                    user_agent=SAFARI_MAC) for i in range(8)]
    events = decode(recs)
    det = TokenContextReplayDetector()
    once = observe(det, events)
    assert [s.figures["rule"] for s in once] == ["context", "flapping"]
    store = MemoryStore()
    twice = observe(det, events, store)
    assert observe(det, events, store) == [] and observe(det, events[::-1], store) == []
    assert [s.event_ids for s in twice] == [s.event_ids for s in once]


def test_out_of_order_within_30s_gives_the_same_event_sets(decode, tok) -> None:
    events = decode([
        access("v1", T0, token=tok, client_ip=HOME, user_agent=SAFARI_MAC),
        access("v2", T0 + 12, token=tok, client_ip=HOME, user_agent=SAFARI_MAC),
        access("a1", T0 + 40, token=tok, client_ip=HOSTING, user_agent="curl/8.7.1"),
        access("v3", T0 + 45, token=tok, client_ip=CARRIER[0], user_agent=SAFARI_MAC),
        access("b1", T0 + 60, token=tok, client_ip="2001:db8:f00d::1", user_agent="Wget/1.21.4"),
        access("v4", T0 + 70, token=tok, client_ip=HOME, user_agent=SAFARI_MAC),
    ])
    det = TokenContextReplayDetector()
    base = sorted(s.event_ids for s in observe(det, events))
    assert base == [("v1", "a1"), ("v1", "b1")]
    orders = [list(p) for p in itertools.permutations(events) if within_lateness(p)]
    assert len(orders) > 20
    for order in orders:
        assert sorted(s.event_ids for s in observe(det, order)) == base


def test_attacker_read_before_the_owner_gives_the_same_pair(decode, tok) -> None:
    v1, a1 = decode([access("v1", T0, token=tok, client_ip=HOME, user_agent=SAFARI_MAC),
                     access("a1", T0 + 10, token=tok, client_ip=HOSTING, user_agent="curl/8.7.1")])
    det = TokenContextReplayDetector()
    [late] = observe(det, [a1, v1])
    [timely] = observe(det, [v1, a1])
    assert late.event_ids == timely.event_ids == ("v1", "a1") and late.ts == timely.ts
    assert late.reasons == timely.reasons


@pytest.mark.parametrize("store_cls", [MemoryStore, PackedStore])
def test_state_lives_until_exp_plus_leeway(decode, tok, store_cls) -> None:
    store = store_cls()
    [ev] = decode([access("e1", T0, token=tok)])
    observe(TokenContextReplayDetector(leeway_seconds=30), [ev], store)
    store.expire(T0 + 3600 + 29)
    # the token's context (one packed int) and the two entries naming its agent; the first use's
    # event id went 120 s after that use
    assert isinstance(store.get(("tctx", ev.token.identity)), int) and len(store) == 3
    store.expire(T0 + 3600 + 31)
    assert len(store) == 0


def test_one_context_token_is_one_packed_int_until_a_second_context(decode, tok) -> None:
    store = PackedStore()
    events = decode([access("v1", T0, token=tok, client_ip=HOME, user_agent=SAFARI_MAC),
                     access("v2", T0 + 30, token=tok, client_ip=HOME2, user_agent=SAFARI_MAC),
                     access("v3", T0 + 60, token=tok, client_ip=CARRIER[0], user_agent=SAFARI_MAC)])
    key = ("tctx", events[0].token.identity)
    det = TokenContextReplayDetector()
    assert observe(det, events[:2], store) == [] and isinstance(store.get(key), int)
    assert observe(det, events[2:], store) == [] and not isinstance(store.get(key), int)


def test_theft_long_after_the_first_use_names_it_by_time_and_ip(decode, tok) -> None:
    # the first use's event id is kept 120 s (first_event_seconds); a swept store then names that
    # use by its time and address: same signal, one event id less
    events = decode([access("v1", T0 + 10, token=tok, client_ip=HOME, user_agent=SAFARI_MAC),
                     access("a1", T0 + 3000, token=tok, client_ip=HOSTING, user_agent="python-requests/2.32.3")])
    det, store = TokenContextReplayDetector(), PackedStore()
    observe(det, events[:1], store)
    store.expire(T0 + 2900)
    [s] = observe(det, events[1:], store)
    [fresh] = observe(det, events)
    assert s.event_ids == ("a1",) and fresh.event_ids == ("v1", "a1")
    assert s.reasons[:2] == fresh.reasons[:2] and s.ts == fresh.ts and s.strength == fresh.strength
    assert s.reasons[2].startswith(f"first use from {HOME} at 2026-11-18T") and s.figures["first_ip"] == HOME
    assert s.figures["gap_seconds"] == fresh.figures["gap_seconds"] == 2990.0


# -- in simulated traffic -------------------------------------------------------------------------
def _run(minter, settings, validator, spec):
    return run_simulated(minter, settings, validator, spec, "replay.token_context")


def test_caught_in_simulated_traffic(minter, settings, validator) -> None:
    spec = SimulationSpec(seed=5, events=30_000, attacks=("replay.token_context",), attack_every=1500)
    found, labels, _ = _run(minter, settings, validator, spec)
    attacked = {eid for eid, lab in labels if lab["type"] == "replay.token_context"}
    assert found and all(set(a.evidence["event_ids"]) & attacked for a in found)
    evidence = {eid for a in found for eid in a.evidence["event_ids"]}
    runs = {lab["attack_id"] for _, lab in labels}
    caught = {lab["attack_id"] for eid, lab in labels if eid in evidence}
    assert len(runs) >= 8 and caught == runs


def test_silent_on_clean_simulated_traffic(minter, settings, validator) -> None:
    # 6 h of clean traffic: ~60k events with hundreds of Wi-Fi <-> mobile-data switches (same app),
    # late events, dual-stack homes and services calling from two egress addresses
    spec = SimulationSpec(seed=12, events=None, duration_seconds=6 * 3600, rate=3.0, attacks=())
    found, labels, stats = _run(minter, settings, validator, spec)
    assert not labels and stats["network_switches"] >= 150 and stats["late"] >= 100
    assert [a.reasons[0] for a in found] == []


# P-256 group order: an ECDSA signature (r, s) verifies as (r, n - s) too
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _flip_s(jws: str) -> str:
    """The same ES256 JWS with its signature's s replaced by n − s: still valid, another compact form."""
    import base64

    head, payload, sig = jws.split(".")
    raw_sig = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    r, s = raw_sig[:32], int.from_bytes(raw_sig[32:], "big")
    flipped = r + (_P256_N - s).to_bytes(32, "big")
    return f"{head}.{payload}." + base64.urlsafe_b64encode(flipped).rstrip(b"=").decode()


def test_a_resigned_copy_is_the_same_token(decode, minter) -> None:
    """A thief who flips an ES256 signature's s gets a valid token with a new fingerprint: the state is
    kept by the token as issued (its signing input), so the copy is judged against the owner's uses."""
    jws = minter.mint({"sub": "alice", "client_id": "acme-web", "exp": T0 + 3600, "iat": T0}, encrypt=False)
    copy = _flip_s(jws)
    assert copy != jws
    owner, thief = decode([access("v1", T0, token=jws, client_ip=HOME, user_agent=SAFARI_MAC),
                           access("a1", T0 + 60, token=copy, client_ip=HOSTING, user_agent="curl/8.7.1")])
    assert owner.token.ok and thief.token.ok  # the flipped signature verifies
    assert owner.token.tfp != thief.token.tfp and owner.token.identity == thief.token.identity
    for store in (PackedStore(), MemoryStore()):
        [sig] = observe(TokenContextReplayDetector(), [owner, thief], store)
        assert sig.type == "replay.token_context" and sig.event_ids == ("v1", "a1")
        assert sig.figures["first_ip"] == HOME and sig.figures["ip"] == HOSTING
