"""Telegram's webhook: updates posted by Telegram, checked by its secret token."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, Response, status

router = APIRouter(tags=["telegram"])

MAX_UPDATE_BYTES = 1024 * 1024  # an update is JSON metadata; files are fetched separately


@router.post("/telegram/webhook", include_in_schema=False)
async def telegram_webhook(
    request: Request,
    secret: Annotated[str | None, Header(alias="X-Telegram-Bot-Api-Secret-Token")] = None,
) -> Response:
    """Queue the update for the bot (webhook mode).

    The secret token is checked, in constant time, before the body is read: a forger
    gets 403 and costs nothing. (Webhook mode does not start without a secret.)
    """
    bot = getattr(request.app.state, "bot", None)
    if bot is None or not request.app.state.settings.telegram_webhook_url:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the Telegram webhook is not enabled")
    if not bot.secret_ok(secret):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong Telegram secret token")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_UPDATE_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "update too large")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the update is not JSON") from exc
    if not isinstance(payload, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the update is not a JSON object")
    await bot.feed(payload)
    return Response(status_code=status.HTTP_200_OK)
