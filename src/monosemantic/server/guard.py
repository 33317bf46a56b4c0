"""What every request passes before any route sees it: the server is safe from a browser.

One ASGI middleware, so routes added later are covered without a line of their own:

- **Host allowlist**: a web page can reach a token-free loopback server by DNS rebinding (its own
  name resolving to 127.0.0.1); such requests carry the page's host name in `Host`, so only this
  machine's loopback names and the configured host (`serve.host`, `serve.allowed_hosts`) pass.
- **Cross-origin requests**: a request whose `Origin` is another site (or `null`) is refused,
  unless `serve.cors_origins` lists it (then CORS headers let that site read the answers).
- **Bodies**: read on the stream and cut at `MAX_BODY` bytes whether or not `Content-Length` is
  sent (a chunked upload cannot grow the process); a body must be JSON (a cross-site form cannot
  post one), and JSON's `NaN`/`Infinity` and NUL characters are refused with 422.
- **NUL** in the path or query string (a search for it matched every feature): 422.
- **Headers** on every answer: a Content-Security-Policy (scripts from this origin, plus inline
  ones carrying the request's nonce), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
  `Referrer-Policy: no-referrer`.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from pydantic import BaseModel, ConfigDict

MAX_BODY = 1 << 20  # bytes; live requests carry a text of at most serve.max_text_chars
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class Body(BaseModel):
    """The base of every JSON request body: types are strict (`"dictionary": true` is not id 1,
    `"3"` is not 3), numbers finite, unknown keys refused; a bad body is a 422 naming the field."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> set[str] | None:
    """Host names requests may address: the loopback names, the bind address, `extra`; None (any)
    when the server listens on every interface and no names are given (it then needs a token)."""
    names = {h.lower().strip("[]") for h in extra}
    if "*" in names or (bind in WILDCARDS and not names):
        return None
    if bind not in WILDCARDS:
        names.add(bind.lower().strip("[]"))
    return names | set(LOOPBACK_NAMES)


def host_name(header: str) -> str:
    """`example.org:8765` -> `example.org`, `[::1]:8765` -> `::1` (lower case)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_loopback_name(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def body_problem(body: bytes, content_type: str) -> tuple[int, str] | None:
    """(status, detail) when a request body may not reach a route, else None."""
    if not body:
        return None
    kind = content_type.split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        return 415, "request bodies are JSON: send Content-Type: application/json"
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return 422, "the request body is not UTF-8 JSON"
    except ValueError as e:
        return 422, str(e).splitlines()[0]
    if _has_nul(data):
        return 422, "a string in the request holds a NUL character"
    return None


class Guard:
    """The ASGI middleware of the module docstring."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        hosts: set[str] | None,
        origins: Iterable[str] = (),
        max_body: int = MAX_BODY,
    ) -> None:
        self.app, self.hosts, self.max_body = app, hosts, max_body
        self.origins = {o.rstrip("/").lower() for o in origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        send = self._with_headers(send, nonce)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._request_problem(scope, headers)
        if problem is None:
            body, problem = await self._read_body(receive, headers)
        if problem is not None:
            await _answer(send, *problem)
            return
        await self.app(scope, _replay(body, receive), send)

    def _request_problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = host_name(headers.get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            return 400, (
                f"host {host!r} is not served here (it may be a DNS-rebinding page); use "
                f"http://127.0.0.1, or add the name to serve.allowed_hosts"
            )
        origin = headers.get("origin")
        if origin is not None and not self._same_or_allowed(origin, headers.get("host", ""), scope):
            return 403, f"cross-origin requests from {origin} are refused; list it in serve.cors_origins"
        query = scope.get("query_string", b"").decode("latin-1")
        if "\x00" in scope.get("path", "") or "\x00" in unquote_plus(query):
            return 422, "the request's path or query holds a NUL character"
        return None

    def _same_or_allowed(self, origin: str, host: str, scope: Scope) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return (
            origin != "null" and parts.scheme == scope.get("scheme", "http") and parts.netloc == host.lower()
        )

    async def _read_body(
        self, receive: Receive, headers: dict[str, str]
    ) -> tuple[bytes, tuple[int, str] | None]:
        size = headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > self.max_body):
            return b"", (413, f"request body over {self.max_body} bytes")
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:  # stop reading: the rest never reaches memory
                return b"", (413, f"request body over {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        return body, body_problem(body, headers.get("content-type", ""))

    def _with_headers(self, send: Send, nonce: str) -> Send:
        csp = (
            f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'"
        )
        extra = [
            (b"content-security-policy", csp.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {
                    **message,
                    "headers": [*message.get("headers", []), *(h for h in extra if h[0] not in have)],
                }
            await send(message)

        return wrapped


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then waits on the real one (for the
    client's disconnect, which a streamed answer listens for)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})
