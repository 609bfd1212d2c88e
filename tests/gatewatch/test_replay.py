"""`gatewatch replay` (gatewatch/replay.py): memory does not grow with the number or size of bad records.

A replay once kept every dead letter, with its whole original record, until the end (300 one-MB bad lines
added ≈ 290 MB), and held a batch's raw lines beside their decoded events. Now each record is decoded as
it is read, a dead letter goes to the `--dlq` file at once, and the result keeps counts per code only.
Peak memory is measured with tracemalloc (Python allocations of the replay call), not RSS.
"""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
from pathlib import Path

from gatewatch.cli import main
from gatewatch.pipeline import Pipeline
from gatewatch.replay import decoded_batches, read_jsonl, replay
from tests.conftest import T0, write_config
from tests.events import access

MB = 1_000_000
BAD_LINES = 300


def garbage_file(path: Path, *, bad: int = BAD_LINES, good: int = 60, size: int = MB) -> Path:
    """`bad` lines of `size` bytes of garbage, the first `good` of them each followed by a valid access event."""
    junk = (b"\x00\xffnot json {[" * (size // 12 + 1))[:size]
    with path.open("wb") as f:
        for i in range(max(bad, good)):
            if i < bad:
                f.write(junk + b"\n")
            if i < good:
                f.write(json.dumps(access(f"e{i}", T0 + i, nonce=f"n{i % 50}")).encode() + b"\n")
    return path


def peak_of(call):
    """(what `call()` returns, the peak of Python's traced memory during it, in bytes)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        value = call()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_300_one_mb_bad_lines_stay_out_of_memory_and_go_to_the_dlq_file(tmp_path: Path, keys_dir) -> None:
    cfg = write_config(tmp_path, keys_dir)
    src = garbage_file(tmp_path / "events.jsonl")
    dlq = tmp_path / "dlq.jsonl"
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            return main(["--config", str(cfg), "replay", str(src), "--dlq", str(dlq)])

    code, peak = peak_of(run)
    assert code == 0
    assert peak < 150 * MB, f"peak {peak / MB:.0f} MB"
    summary = json.loads(out.getvalue())
    assert summary["records"] == BAD_LINES + 60 and summary["events"] == 60
    assert summary["dead_letters"] == BAD_LINES and summary["dead_letter_codes"] == {"oversize": BAD_LINES}
    with dlq.open(encoding="utf-8") as f:
        entries = [json.loads(line) for line in f]
    assert len(entries) == BAD_LINES
    assert all(e["code"] == "oversize" and e["original_bytes"] == MB for e in entries)
    assert entries[0]["source"] == {"topic": "events.jsonl", "partition": 0, "offset": 1}
    assert entries[1]["source"]["offset"] == 3  # file order: a bad line, a good one, ...


def test_dead_letters_are_written_as_they_occur_and_counted_by_code(settings) -> None:
    dlq = io.StringIO()
    seen_in_dlq = []

    def records():
        yield b"not json", None
        yield json.dumps(access("e1", T0)).encode(), None
        seen_in_dlq.append(dlq.getvalue().count("\n"))  # read before the batch is over
        yield b'{"kind": "access"}', None
        yield json.dumps(access("e2", T0 + 1)).encode(), None

    result = replay(Pipeline.from_settings(settings, None), records(), batch_size=10, dlq=dlq)
    assert seen_in_dlq == [1]
    assert result.records == 4 and result.events == 2
    assert result.dead_letters == 2 and result.dead_letter_codes == {"not_json": 1, "schema": 1}
    lines = [json.loads(line) for line in dlq.getvalue().splitlines()]
    assert [d["code"] for d in lines] == ["not_json", "schema"]
    assert lines[0]["original_b64"] == "bm90IGpzb24=" and lines[0]["original_bytes"] == 8


def test_counts_without_a_dlq_file(settings) -> None:
    records = [(b"x" * 70_000, None), (json.dumps(access("e1", T0)).encode(), None)]
    result = replay(Pipeline.from_settings(settings, None), records)
    assert result.dead_letters == 1 and result.dead_letter_codes == {"oversize": 1} and result.events == 1


def test_3000_accepted_60_kb_lines_are_not_all_held_at_once(tmp_path: Path, settings) -> None:
    """The issue's "3,000 accepted 60 KB lines reached 573 MB": one batch held every raw line and, beside
    it, every decoded event, whose strings take 2 bytes a character when one is outside Latin-1."""
    src = tmp_path / "big.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for i in range(3000):
            rec = access(f"e{i}", T0 + i, client_ip=f"10.0.{i % 200}.{i % 250}", user_agent="A" * 59_700 + "€")
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    pipeline = Pipeline.from_settings(settings, None)
    result, peak = peak_of(lambda: replay(pipeline, read_jsonl([str(src)])))
    assert peak < 150 * MB, f"peak {peak / MB:.0f} MB"
    assert result.records == result.events == 3000


def test_a_batch_ends_at_its_byte_budget_counting_accepted_records_only(settings) -> None:
    good = json.dumps(access("e", T0)).encode()
    records = [(good, None)] * 5 + [(b"x" * 10_000, None)] * 3 + [(good, None)] * 4
    got = [(n, len(events)) for n, events in
           decoded_batches(Pipeline.from_settings(settings, None), records, 6, lambda _: None,
                           max_bytes=3 * len(good))]
    assert got == [(3, 3), (6, 3), (3, 3)]  # the bad 10 KB lines count as records, not as bytes held
