"""`gatewatch replay --jobs N` (gatewatch/replay_jobs.py): the alerts of `--jobs 1`, byte for byte.

A simulated half day with every attack the simulator knows (rule and behavioural), replayed through the
CLI with the behaviour model trained in tests/gatewatch/test_train.py, on one, two and three jobs: the
alert files are identical, and they hold rule alerts and behaviour alerts both (so both merge paths —
tagged detector signals and the model's ordered ones — were exercised). Bad `--jobs` use is one line,
exit code 2. tests/gatewatch/test_replay_fixture.py checks the jobs against recorded alerts too.
"""

from __future__ import annotations

import json
import tempfile

import pytest

from gatewatch.replay_jobs import detect_job
from gatewatch.simulate import SimulationSpec
from tests.conftest import write_config
from tests.gatewatch.test_replay import BAD_LINES, MB, garbage_file, peak_of
from tests.gatewatch.test_train import (DAY, RATE, config, history, run_cli, simulated,  # noqa: F401 (fixtures)
                                        trained, workdir)

pytestmark = pytest.mark.quality  # simulated days: run by `make test`, left out of `make unit`


@pytest.fixture(scope="module")
def attacked_file(minter, workdir, trained):  # noqa: F811
    lines, _ = simulated(minter, SimulationSpec(seed=47, events=None, duration_seconds=DAY / 2, rate=RATE,
                                                attack_every=1_500))
    path = workdir / "attacked.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_jobs_give_the_alerts_of_one_process_byte_for_byte(config, attacked_file, workdir) -> None:  # noqa: F811
    outputs = {}
    for jobs in (1, 2, 3):
        out = workdir / f"alerts-{jobs}.jsonl"
        code, summary = run_cli("--config", str(config), "replay", str(attacked_file), "--jobs", str(jobs),
                                "--out", str(out))
        assert code == 0
        outputs[jobs] = (out.read_bytes(), json.loads(summary))
    one, summary = outputs[1]
    assert outputs[2][0] == one and outputs[3][0] == one
    assert outputs[3][1]["events"] == summary["events"] and outputs[3][1]["alerts"] == summary["alerts"]
    types = {json.loads(line)["type"] for line in one.splitlines()}
    assert "anomaly.behaviour" in types and {"replay.nonce", "token.revoked_use", "traffic.rate_limit"} <= types


@pytest.mark.parametrize("argv", [["-", "--jobs", "2"], ["--from-topic", "t", "--since", "2026-01-01T00:00:00Z",
                                                        "--jobs", "2"], ["x.jsonl", "--jobs", "0"]])
def test_jobs_on_stdin_a_topic_or_zero_is_one_clear_error(config, argv, capsys) -> None:  # noqa: F811
    code, _ = run_cli("--config", str(config), "replay", *argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--jobs" in err[0], err


def test_jobs_write_and_count_dead_letters_once(tmp_path, keys_dir, monkeypatch) -> None:
    """Every job decodes the whole input; only job 0's decode dead letters count, and the --dlq file
    is the one of `--jobs 1`."""
    cfg = write_config(tmp_path, keys_dir)
    spools = tmp_path / "tmp"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    src = garbage_file(tmp_path / "events.jsonl", bad=20, good=60, size=100_000)
    files, summaries = {}, {}
    for jobs in (1, 2):
        dlq = tmp_path / f"dlq-{jobs}.jsonl"
        code, summary = run_cli("--config", str(cfg), "replay", str(src), "--jobs", str(jobs), "--dlq", str(dlq))
        assert code == 0
        files[jobs], summaries[jobs] = dlq.read_bytes(), json.loads(summary)
    assert summaries[2]["dead_letters"] == 20 and summaries[2]["dead_letter_codes"] == {"oversize": 20}
    assert {k: summaries[2][k] for k in ("records", "events", "dead_letters", "dead_letter_codes", "alerts")} \
        == {k: summaries[1][k] for k in ("records", "events", "dead_letters", "dead_letter_codes", "alerts")}
    assert files[2] == files[1] and files[1].count(b"\n") == 20
    assert not list(spools.iterdir())  # the jobs' spool files are gone


def test_a_detect_job_keeps_no_dead_letter_in_memory(tmp_path, settings) -> None:
    src = garbage_file(tmp_path / "events.jsonl")
    out, peak = peak_of(lambda: detect_job(settings, [str(src)], 2, 0))
    assert peak < 150 * MB, f"peak {peak / MB:.0f} MB"
    assert out.dead_letter_codes == {"oversize": BAD_LINES}
    assert sum(b.records for b in out.batches) == BAD_LINES + 60
    other = detect_job(settings, [str(src)], 2, 1)
    assert not other.dead_letter_codes  # decode dead letters are job 0's alone
