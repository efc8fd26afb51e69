"""The voice page at ``/``: static files from ``orchestrator/web``, no build step.

Served with a strict Content-Security-Policy (same-origin scripts, styles and
connections only; no inline code, no framing) and the usual security headers. The page
asks for the API key and keeps it in session storage; nothing here needs a key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

WEB = Path(__file__).resolve().parent.parent.parent / "web"
FILES = {
    "app.js": "text/javascript",
    "capture-worklet.js": "text/javascript",
    "style.css": "text/css",
}
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",  # app.js and the capture worklet; no inline script
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "connect-src 'self' blob:",  # the API, /v1/realtime, the replies' audio links
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


@router.api_route("/web/{name}", methods=["GET", "HEAD"])
async def asset(name: str) -> FileResponse:
    if name not in FILES:
        raise HTTPException(404, f"no file {name!r}")
    return FileResponse(WEB / name, media_type=FILES[name], headers=SECURITY_HEADERS)
