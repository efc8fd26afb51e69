"""Telegram's webhook: updates posted by Telegram, checked by its secret token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response, status

router = APIRouter(tags=["telegram"])


@router.post("/telegram/webhook", include_in_schema=False)
async def telegram_webhook(
    request: Request,
    payload: dict[str, Any],
    secret: Annotated[str | None, Header(alias="X-Telegram-Bot-Api-Secret-Token")] = None,
) -> Response:
    """Queue the update for the bot (webhook mode); a wrong secret token gets 403."""
    bot = getattr(request.app.state, "bot", None)
    if bot is None or not request.app.state.settings.telegram_webhook_url:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the Telegram webhook is not enabled")
    if not await bot.feed(payload, secret):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong Telegram secret token")
    return Response(status_code=status.HTTP_200_OK)
