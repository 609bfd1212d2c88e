"""`gatewatch train` and the behaviour model end to end on simulated traffic.

History: a clean simulated day. Then, through the pipeline with that model: a clean day of other users
raises fewer than 5 `anomaly.behaviour` alerts per 100,000 events, and every behavioural attack of a
simulated half day (scraping at night, LLM cost abuse, a flood under the fixed limits, credential
stuffing) raises one about the entity its label names; replay in other batch sizes gives the same alerts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections import defaultdict

import pytest

from gatewatch.backtest import labelled_event_times, score
from gatewatch.cli import main
from gatewatch.pipeline import Pipeline
from gatewatch.settings import load_settings
from gatewatch.simulate import BEHAVIOURAL_ATTACKS, SimulationSpec, generate
from ingest.errors import ConfigError
from scoring.anomaly import MANIFEST_FILE, MODEL_FILE, AnomalyModel
from scoring.features import FEATURES
from tests.conftest import write_config

pytestmark = pytest.mark.quality  # simulated days: run by `make test`, left out of `make unit`

RATE = 0.6  # events/s over the simulated day (~55,000 events a day); the same for history and tests
DAY = 86_400.0


def simulated(minter, spec: SimulationSpec) -> tuple[list[bytes], list[dict]]:
    lines, labels = [], []
    for ev in generate(spec, minter):
        lines.append(json.dumps(ev.event, separators=(",", ":")).encode())
        labels += [{"event_id": ev.event["event_id"], "attack_id": lab["attack_id"], "type": lab["type"],
                    "entity": (lab["entity"]["kind"], lab["entity"]["value"])} for lab in ev.labels]
    return lines, labels


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def config(workdir, keys_dir):
    return write_config(workdir, keys_dir, f'[model]\npath = "{workdir}/model"\n')


@pytest.fixture(scope="module")
def history(minter, workdir):
    lines, _ = simulated(minter, SimulationSpec(seed=41, events=None, duration_seconds=DAY, rate=RATE, attacks=()))
    path = workdir / "history.jsonl"
    path.write_bytes(b"\n".join(lines[:100] + [b'{"kind": "access", "broken'] + lines[100:]) + b"\n")
    return path, lines


@pytest.fixture(scope="module")
def trained(config, history):
    code, out = run_cli("--config", str(config), "train", str(history[0]))
    assert code == 0
    return json.loads(out)


def replay_events(settings, validator, events, batch: int = 5_000):
    """The decoded events through a fresh pipeline (model loaded from `[model] path`), then `finish`."""
    pipeline = Pipeline.from_settings(settings, validator)
    assert pipeline.behaviour.status == "active", pipeline.behaviour.reason
    alerts = {}
    for i in range(0, len(events), batch):
        for alert in pipeline.process_events(events[i:i + batch]).alerts:
            alerts[alert.id] = alert
    for alert in pipeline.finish().alerts:
        alerts[alert.id] = alert
    return alerts


@pytest.fixture(scope="module")
def settings(config, trained):
    return load_settings(config, environ={})


@pytest.fixture(scope="module")
def attacked(minter, validator, settings):
    lines, labels = simulated(minter, SimulationSpec(seed=43, events=None, duration_seconds=DAY / 2, rate=RATE,
                                                     attacks=BEHAVIOURAL_ATTACKS, attack_every=2_000))
    events = Pipeline.from_settings(settings, validator).decode((line, None) for line in lines)[0]
    return lines, labels, events, replay_events(settings, validator, events)


def test_train_writes_a_verified_artifact_and_a_json_summary(trained, history, workdir) -> None:
    _, lines = history
    assert trained["events"] == len(lines) and trained["bad_records"] == 1
    assert trained["bad_record_codes"] == {"not_json": 1}
    assert trained["features"] == len(FEATURES) and trained["kinds"] == ["subject", "client", "ip", "tenant"]
    assert trained["rows"]["total"] == sum(v for k, v in trained["rows"].items() if k != "total") > 10_000
    times = sorted(json.loads(line)["ts"] for line in lines)
    first, last = times[0], times[-1]
    assert trained["training_window"]["start"][:16] == first[:16]
    assert trained["training_window"]["end"][:16] == last[:16]
    assert trained["seconds"] > 0 and trained["model"] == str(workdir / "model")
    manifest = json.loads((workdir / "model" / MANIFEST_FILE).read_text())
    assert manifest["sha256"] == trained["sha256"] == hashlib.sha256(
        (workdir / "model" / MODEL_FILE).read_bytes()).hexdigest()
    assert manifest["params"]["window_seconds"] == 60 and manifest["params"]["random_state"] == 0
    assert AnomalyModel.load(workdir / "model").kinds == ("subject", "client", "ip", "tenant")


def test_the_same_seed_gives_the_same_artifact(config, history, workdir) -> None:
    part = workdir / "part.jsonl"
    part.write_bytes(b"\n".join(history[1][:8_000]) + b"\n")
    digests = []
    for out, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        code, text = run_cli("--config", str(config), "train", str(part), "--out", str(workdir / out), "--seed", seed)
        assert code == 0
        digests.append(json.loads(text)["sha256"])
    assert digests[0] == digests[1] != digests[2]


def test_too_little_history_is_a_failure_of_the_work(config, history, workdir, capsys) -> None:
    tiny = workdir / "tiny.jsonl"
    tiny.write_bytes(b"\n".join(history[1][:50]) + b"\n")
    assert main(["--config", str(config), "train", str(tiny), "--out", str(workdir / "tiny")]) == 1
    assert "not enough history" in capsys.readouterr().err


def test_a_clean_day_raises_fewer_than_5_alerts_per_100k_events(minter, validator, settings) -> None:
    """Every alert type counts, rules and the behaviour model together (the model is loaded here)."""
    lines, _ = simulated(minter, SimulationSpec(seed=42, events=None, duration_seconds=DAY, rate=RATE, attacks=()))
    events = Pipeline.from_settings(settings, validator).decode((line, None) for line in lines)[0]
    assert len(events) > 40_000
    alerts = list(replay_events(settings, validator, events).values())
    per_100k = len(alerts) * 100_000 / len(events)
    assert per_100k < 5, [(a.type, a.entity.kind, a.entity.value, a.reasons[0]) for a in alerts]


def test_every_behavioural_attack_raises_an_alert_about_its_entity(attacked) -> None:
    _, labels, _, alerts = attacked
    behaviour = [a for a in alerts.values() if a.type == "anomaly.behaviour"]
    entity_of = {row["attack_id"]: row["entity"] for row in labels}
    assert {a.split("-", 2)[2] for a in entity_of} == set(BEHAVIOURAL_ATTACKS)
    about = defaultdict(list)
    for a in behaviour:
        about[(a.entity.kind, a.entity.value)].append(a)
    missed = [aid for aid, ent in entity_of.items() if not about.get(ent)]
    assert missed == []
    words = {"anomaly.scraping": ("distinct paths", "requests"), "anomaly.llm_abuse": ("completion tokens",),
             "anomaly.flood": ("requests",), "anomaly.credential_stuffing": ("401", "4xx", "distinct IPs")}
    for aid, ent in entity_of.items():
        reasons = " | ".join(r for a in about[ent] for r in a.reasons)
        assert any(w in reasons for w in words[aid.split("-", 2)[2]]), (aid, reasons)
        assert "training max" in reasons and "rarer than" in reasons


def test_the_behaviour_alerts_are_attributable_to_the_attacks(attacked) -> None:
    lines, labels, events, alerts = attacked
    behaviour = [a for a in alerts.values() if a.type == "anomaly.behaviour"]
    report = score(behaviour, labels, events=len(events),
                   event_times=labelled_event_times([(line, None) for line in lines], labels))
    assert report["by_type"]["anomaly.behaviour"]["recall"] == 1.0
    assert report["false_alerts_per_100k_events"] < 5, report["by_type"]["anomaly.behaviour"]


@pytest.mark.parametrize("batch", [1_777, 100_000])
def test_replay_in_other_batch_sizes_gives_the_same_alerts(attacked, settings, validator, batch: int) -> None:
    _, _, events, alerts = attacked
    again = replay_events(settings, validator, events, batch=batch)
    assert {k: v.model_dump() for k, v in again.items()} == {k: v.model_dump() for k, v in alerts.items()}
    assert any(a.type == "anomaly.behaviour" for a in alerts.values())


def test_replay_says_whether_the_model_is_loaded(config, trained, history, workdir, keys_dir) -> None:
    part = workdir / "few.jsonl"
    part.write_bytes(b"\n".join(history[1][:2_000]) + b"\n")
    code, out = run_cli("--config", str(config), "replay", str(part))
    assert code == 0 and json.loads(out)["anomaly_model"] == "active"
    (workdir / "bare").mkdir()
    bare = write_config(workdir / "bare", keys_dir, f'[model]\npath = "{workdir}/nothing-here"\n')
    code, out = run_cli("--config", str(bare), "replay", str(part))
    assert code == 0 and json.loads(out)["anomaly_model"] == "silent"


@pytest.mark.parametrize(("extra", "key"), [("[model]\nwindow_seconds = 7\n", "model.window_seconds"),
                                            ("[scoring]\nanomaly_threshold = 1.5\n", "scoring.anomaly_threshold"),
                                            ("[model]\nmin_requests = 0\n", "model.min_requests")])
def test_bad_model_and_scoring_keys_are_named(tmp_path, keys_dir, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(write_config(tmp_path, keys_dir, extra), environ={})
