"""How `june bench asr` counts word errors and compares a system's WER with the full window."""

import pytest

from benchmarks.asr import (
    BASELINE,
    FULL_WINDOW,
    AsrResult,
    clip_errors,
    markdown_table,
    rows,
    wer_difference,
)


def result(system: str, errors: tuple[int, ...], words: tuple[int, ...]) -> AsrResult:
    wer = sum(errors) / sum(words)
    return AsrResult("questions", system, 0.1, wer, [0.1], 3.0, errors, words)


def test_clip_errors_count_substitutions_deletions_and_insertions_per_clip():
    refs = ["set a timer for twelve minutes", "call my sister", "what is the time", "hello"]
    hyps = ["at a timer for twelve minutes", "call sister", "what is the time now please", ""]
    assert clip_errors(refs, hyps) == (1, 1, 2, 1)


def test_the_same_transcripts_differ_by_nothing():
    full = result(FULL_WINDOW, (1, 0, 2, 0), (8, 7, 9, 6))
    d = wer_difference(result("other", (1, 0, 2, 0), (8, 7, 9, 6)), full)
    assert (d.points, d.low, d.high, d.worse, d.better) == (0.0, 0.0, 0.0, 0, 0)


def test_a_system_worse_on_every_clip_has_an_interval_above_zero():
    words = (8,) * 40
    full = result(FULL_WINDOW, (0,) * 40, words)
    d = wer_difference(result("worse", (1,) * 40, words), full)
    assert d.points == pytest.approx(100 / 8)
    assert 0 < d.low <= d.points <= d.high
    assert (d.worse, d.better) == (40, 0)


def test_changes_both_ways_give_an_interval_around_zero():
    # one word lost on 10 clips and one won on 10 others: no difference, but a spread
    words = (8,) * 100
    full = result(FULL_WINDOW, (1,) * 100, words)
    mixed = result("mixed", (2,) * 10 + (0,) * 10 + (1,) * 80, words)
    d = wer_difference(mixed, full)
    assert d.points == 0.0
    assert d.low < -0.5 and d.high > 0.5
    assert (d.worse, d.better) == (10, 10)


def test_systems_run_on_different_clips_are_not_compared():
    full = result(FULL_WINDOW, (0, 0), (5, 6))
    with pytest.raises(ValueError, match="not run on the same clips"):
        wer_difference(result("other", (0, 0, 0), (5, 6, 7)), full)


def test_the_table_compares_each_system_with_the_full_window_on_its_set():
    words = (8,) * 20
    results = [
        result(BASELINE, (0,) * 20, words),
        result(FULL_WINDOW, (0,) * 20, words),
        result("Triton asr, adaptive", (1,) + (0,) * 19, words),
    ]
    table = {row[1]: row for row in rows(results)}
    assert table[FULL_WINDOW][-2:] == ["-", "-"]
    assert table["Triton asr, adaptive"][-2].startswith("+0.6 (")
    assert table["Triton asr, adaptive"][-1] == "1 / 0"
    assert table[BASELINE][0] == "questions (20 clips, 3.0 s avg)"
    assert markdown_table(results).count("\n") == len(results) + 1
