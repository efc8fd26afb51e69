"""The OpenAI-compatible routes driven by the real ``openai`` SDK (``base_url``), against a
real uvicorn server, real Triton and real Postgres. Bounded: 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import openai
import pytest

from orchestrator.api.routes.openai import EMBEDDING_MODEL
from tests.conftest import make_key
from tests.integration.test_many_users import LiveServer, live

LLM = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def server(triton, database_url) -> Iterator[LiveServer]:
    with live(triton, database_url, llm_prompt_tokens=256) as s:
        yield s


@pytest.fixture(scope="module")
def sdk(server, database_url) -> openai.OpenAI:
    key = make_key(database_url, "openai-user")
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def test_models_lists_what_is_served_with_its_source(sdk):
    models = {m.id: m for m in sdk.models.list()}
    assert set(models) == {LLM, EMBEDDING_MODEL}
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
