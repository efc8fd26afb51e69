"""``POST /v1/chat``: text in, the LLM's reply out (JSON, or server-sent events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from orchestrator.admission import work_units
from orchestrator.api.deps import PrincipalDep, SettingsDep, TritonDep, TurnsDep
from orchestrator.api.routes.voice import text_turn
from orchestrator.api.schemas import ChatIn, ChatOut, ErrorOut, TurnOut
from orchestrator.chat import PromptTooLong, Sampling, fit_messages
from orchestrator.config import Settings
from orchestrator.triton.client import ChatChunk, LlmRequestError

router = APIRouter(prefix="/v1", tags=["chat"])


def sse_data(payload: dict | str) -> bytes:
    """One server-sent event of unnamed data: JSON, or a bare string such as ``[DONE]``."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


@router.post(
    "/chat",
    response_model=ChatOut | TurnOut,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"},
        **{code: {"model": ErrorOut} for code in (400, 404, 409, 422, 429, 502, 503)},
    },
)
async def chat(
    body: ChatIn,
    request: Request,
    triton: TritonDep,
    turns: TurnsDep,
    settings: SettingsDep,
    caller: PrincipalDep,
) -> object:
    """Generate a reply. With ``stream: true``, deltas arrive as server-sent events.

    With ``text`` instead of ``messages`` this is a turn, the same as ``/v1/voice`` runs
    without the audio: answered from the caller's documents and the conversation so far,
    stored, and spoken too when ``audio`` names a format. The answer is a turn (see
    ``/v1/voice``).
    """
    if body.text is not None:
        return await text_turn(turns, caller, body)
    assert body.messages is not None
    await turns.work.charge(caller.key_id, work_units(tokens=body.max_tokens))
    messages = [m.model_dump() for m in body.messages]
    if body.system:
        messages.insert(0, {"role": "system", "content": body.system})
    try:
        budget = await triton.prompt_budget(settings.llm_prompt_tokens, body.max_tokens)
        fitted, dropped = fit_messages(messages, budget=budget, count=turns.count_tokens)
    except PromptTooLong as exc:
        raise HTTPException(400, str(exc)) from exc
    chunks = triton.chat_stream(
        fitted,
        max_tokens=body.max_tokens,
        sampling=Sampling(body.temperature, body.top_p, body.top_k, body.repetition_penalty),
        stop=body.stop,
        seed=body.seed,
        thinking=chat_thinking(settings, body.thinking),
    )
    if body.stream:
        first = await _first_chunk(chunks)  # errors before the stream starts stay HTTP errors
        return StreamingResponse(
            _events(first, chunks, dropped, request, reasoning=body.include_reasoning),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )  # fmt: skip
    text, thought, final = [], [], ChatChunk()
    try:
        async for chunk in chunks:
            text.append(chunk.delta)
            thought.append(chunk.reasoning)
            final = chunk
    except LlmRequestError as exc:
        raise HTTPException(400, str(exc)) from exc
    return ChatOut(
        text="".join(text),
        reasoning="".join(thought) if body.include_reasoning else None,
        finish_reason=final.finish_reason,
        prompt_tokens=final.prompt_tokens,
        completion_tokens=final.completion_tokens,
        dropped_messages=dropped,
    )


async def _first_chunk(chunks: AsyncIterator[ChatChunk]) -> ChatChunk | None:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None
    except LlmRequestError as exc:
        raise HTTPException(400, str(exc)) from exc


def chat_thinking(settings: Settings, asked: bool | None) -> bool | None:
    """Whether a plain chat thinks first: as asked, else JUNE_THINKING_CHAT (``None``: the
    chat template's own default)."""
    if asked is not None:
        return asked
    return {"on": True, "off": False}.get(settings.thinking_chat)


async def _events(
    first: ChatChunk | None,
    chunks: AsyncIterator[ChatChunk],
    dropped: int,
    request: Request,
    *,
    reasoning: bool,
) -> AsyncIterator[bytes]:
    try:
        chunk = first
        while chunk is not None:
            if reasoning and chunk.reasoning:
                yield sse_data({"reasoning": chunk.reasoning})
            if chunk.delta:
                yield sse_data({"delta": chunk.delta})
            if chunk.finish_reason:
                yield sse_data(
                    {
                        "finish_reason": chunk.finish_reason,
                        "prompt_tokens": chunk.prompt_tokens,
                        "completion_tokens": chunk.completion_tokens,
                        "dropped_messages": dropped,
                    }
                )
                break
            if await request.is_disconnected():
                break
            chunk = await anext(chunks, None)
        yield sse_data("[DONE]")
    except Exception as exc:  # the stream is open: report the error in-band
        yield sse_data({"error": str(exc)})
    finally:
        await chunks.aclose()  # cancels the Triton stream when the client leaves
