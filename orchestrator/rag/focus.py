"""Trim a retrieved passage to the sentences that bear on the question.

Retrieval returns whole chunks (up to ``chunk_max_words``); every word of them is prompt
the LLM must prefill before it says anything. A passage longer than ``keep`` sentences is
cut to the (at most ``keep``) sentences sharing the most content words with the question
(ties go to the earlier sentence; sentences sharing none are left out), kept in their
original order; a passage that shares no word with the question keeps its first ``keep``
sentences (retrieval found it similar in meaning). Lexical, so it costs no model call on
the way to the first word.
"""

from __future__ import annotations

import re

from orchestrator.tts import split_sentences

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOP_WORDS = """
a an and are as at be but by can could did do does for from had has have he her his
how i if in into is it its me my no not of on or our she so that the their them then
there these they this to was we were what when where which who whom why will with
would you your please tell hello hi june
"""
_STOP = frozenset(_STOP_WORDS.split())


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOP}


def relevant_sentences(passage: str, question: str, keep: int) -> str:
    """``passage`` cut to its ``keep`` most relevant sentences (0: the whole passage)."""
    sentences = split_sentences(passage, max_chars=10_000)
    if keep <= 0 or len(sentences) <= keep:
        return passage
    asked = content_words(question)
    scores = [len(asked & content_words(s)) for s in sentences]
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))[:keep]
    # sentences that share nothing with the question are padding, once one does
    best = [i for i in ranked if scores[i] > 0] or ranked
    return " ".join(sentences[i] for i in sorted(best))
