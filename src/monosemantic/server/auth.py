"""Who may talk to the server: anyone on this machine by default, a bearer token otherwise.

Bound to a loopback address the server needs no token (only local users reach it). Bound to
any other address it refuses to start without `serve.token`, and every request must carry it:
`Authorization: Bearer TOKEN`, or (for a browser) `?token=TOKEN` once, which sets a cookie.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from monosemantic.utils.errors import ConfigError

COOKIE = "monosemantic_token"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the server beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"serve.host={host!r} is reachable from other machines; set serve.token to a secret of 16+ "
            "characters (clients send `Authorization: Bearer TOKEN`), or bind to 127.0.0.1"
        )


def _given(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("token") or request.cookies.get(COOKIE)


def token_middleware(
    token: str,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """An HTTP middleware answering 401 to any request without `token`."""

    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = _given(request)
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse(
                {"detail": "missing or wrong token; send `Authorization: Bearer TOKEN` (serve.token)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    return check
