"""A thinking model's reasoning never reaches the reply: split tags, always-thinking
templates, and reasoning the token budget cuts short."""

import pytest

from orchestrator.chat import ReasoningSplitter

REPLY = "Paris is the capital of France."
THOUGHT = "The user asks about France. Its capital is Paris."


def run(pieces: list[str], *, inside: bool = False) -> tuple[str, str, bool]:
    splitter = ReasoningSplitter(inside=inside)
    reasoning, reply = [], []
    for piece in pieces:
        r, d = splitter.push(piece)
        reasoning.append(r)
        reply.append(d)
    r, d, unfinished = splitter.finish()
    return "".join(reasoning) + r, "".join(reply) + d, unfinished


def chars(text: str) -> list[str]:
    return list(text)


@pytest.mark.parametrize("inside", [False, True])
def test_every_split_of_the_tags_keeps_the_reasoning_out(inside):
    text = ("" if inside else "<think>\n") + THOUGHT + "\n</think>\n\n" + REPLY
    # one piece, one character at a time, and every two-piece split
    cases = [[text], chars(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]
    for pieces in cases:
        reasoning, reply, unfinished = run(pieces, inside=inside)
        assert reply == REPLY, pieces
        assert reasoning.strip() == THOUGHT
        assert not unfinished


def test_a_reply_without_thinking_streams_at_once():
    splitter = ReasoningSplitter()
    assert splitter.push("Hello") == ("", "Hello")  # not a possible "<think>": no wait
    assert splitter.push(" <b>there</b>") == ("", " <b>there</b>")
    assert splitter.finish() == ("", "", False)


def test_a_reply_that_starts_like_the_tag_is_held_only_until_it_differs():
    splitter = ReasoningSplitter()
    assert splitter.push("<th") == ("", "")
    assert splitter.push("ree>") == ("", "<three>")


def test_qwen3_with_thinking_off_has_an_empty_block_in_the_prompt_not_the_reply():
    assert run(["Paris", "."]) == ("", "Paris.", False)


def test_reasoning_cut_short_by_the_budget_is_unfinished_and_never_the_reply():
    reasoning, reply, unfinished = run(["<think>", "Let me think", " about </th"])
    assert unfinished and reply == ""
    assert "Let me think" in reasoning
    reasoning, reply, unfinished = run(["Let me", " think"], inside=True)
    assert unfinished and reply == "" and reasoning == "Let me think"


def test_an_empty_stream_is_an_empty_reply():
    assert run([]) == ("", "", False)
    assert run(["  "]) == ("", "  ", False)
