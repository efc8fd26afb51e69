import itertools

import pytest

from orchestrator.rag.chunking import chunk_text, split_sentences


def test_sentences_are_split_and_whitespace_normalised():
    assert split_sentences("One.  Two!\n\nThree?   four") == ["One.", "Two!", "Three?", "four"]


def test_chunks_respect_word_budget_and_keep_every_word():
    text = " ".join(f"Sentence number {i} is here." for i in range(60))
    chunks = chunk_text(text, max_words=30, overlap_words=5)
    assert len(chunks) > 5
    assert all(len(c.split()) <= 30 for c in chunks)
    for i in range(60):  # nothing lost
        assert any(f"number {i} is" in c for c in chunks)


def test_consecutive_chunks_overlap():
    text = " ".join(f"Fact {i} is true." for i in range(40))
    chunks = chunk_text(text, max_words=20, overlap_words=4)
    for a, b in itertools.pairwise(chunks):
        assert a.split()[-4:] == b.split()[:4]


def test_overlong_sentence_is_cut_by_words():
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_text(text, max_words=30, overlap_words=5)
    assert all(len(c.split()) <= 30 for c in chunks)
    assert chunks[0].split()[0] == "w0" and chunks[-1].split()[-1] == "w99"


def test_empty_and_invalid():
    assert chunk_text("   \n\n ") == []
    with pytest.raises(ValueError):
        chunk_text("x", max_words=10, overlap_words=10)
    with pytest.raises(ValueError):
        chunk_text("x", max_words=0)
