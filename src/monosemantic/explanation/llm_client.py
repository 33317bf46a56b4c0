"""A small client for OpenAI-compatible chat endpoints: concurrency, retries, an on-disk cache.

Requests go to `{endpoint}/chat/completions` (the endpoint is a base URL such as
`https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`). At most `concurrency` are in flight;
429, 5xx, timeouts and dropped connections are retried with exponential backoff (honouring a
`Retry-After` header); other errors stop the run with one line. Every answer is cached on disk
under a hash of (model, messages, sampling parameters), so rerunning `explain` costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from monosemantic.utils.errors import MonosemanticError
from monosemantic.utils.files import write_json_atomic

Messages = list[dict[str, str]]
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def estimate_tokens(messages: Messages) -> int:
    """A rough prompt size (4 characters per token), good enough for a cost estimate."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)


class ChatClient:
    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str | None = None,
        cache_dir: str | Path | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff: float = 1.0,
        max_tokens: int = 300,
    ) -> None:
        base = endpoint.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else f"{base}/chat/completions"
        self.model, self.api_key = model, api_key
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.concurrency, self.max_retries = concurrency, max_retries
        self.timeout, self.backoff, self.max_tokens = timeout, backoff, max_tokens
        self.usage = {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "requests": 0,
            "cache_hits": 0,
            "retries": 0,
        }

    def _key(self, messages: Messages) -> str:
        blob = json.dumps([self.model, messages, self.max_tokens, 0.0], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cached(self, key: str) -> str | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / key[:2] / f"{key}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())["content"]
            except (json.JSONDecodeError, KeyError):
                return None
        return None

    def _store(self, key: str, content: str) -> None:
        if self.cache_dir is not None:
            write_json_atomic(
                self.cache_dir / key[:2] / f"{key}.json", {"model": self.model, "content": content}
            )

    async def _post(self, http: httpx.AsyncClient, messages: Messages) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": self.max_tokens}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        for attempt in range(self.max_retries + 1):
            wait = self.backoff * 2**attempt
            try:
                r = await http.post(self.url, json=body, headers=headers)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                if attempt == self.max_retries:
                    raise MonosemanticError(
                        f"chat endpoint {self.url} failed: {type(e).__name__} after {attempt + 1} tries"
                    ) from None
            else:
                if r.status_code == 200:
                    data = r.json()
                    usage = data.get("usage") or {}
                    self.usage["prompt_tokens"] += int(usage.get("prompt_tokens", 0))
                    self.usage["completion_tokens"] += int(usage.get("completion_tokens", 0))
                    self.usage["requests"] += 1
                    try:
                        return str(data["choices"][0]["message"]["content"] or "")
                    except (KeyError, IndexError, TypeError):
                        raise MonosemanticError(
                            f"chat endpoint {self.url} returned no choices[0].message.content"
                        ) from None
                if r.status_code not in RETRY_STATUS or attempt == self.max_retries:
                    raise MonosemanticError(
                        f"chat endpoint {self.url} answered HTTP {r.status_code}: {r.text[:200]!r}; "
                        "check explain.endpoint, explain.model and the API key variable"
                    )
                retry_after = r.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(float(retry_after), 60.0)
            self.usage["retries"] += 1
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _complete_all(self, prompts: Sequence[Messages], on_done: Callable[[], None]) -> list[str]:
        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as http:

            async def one(messages: Messages) -> str:
                key = self._key(messages)
                hit = self._cached(key)
                if hit is not None:
                    self.usage["cache_hits"] += 1
                else:
                    async with sem:
                        hit = await self._post(http, messages)
                    self._store(key, hit)
                on_done()
                return hit

            return list(await asyncio.gather(*(one(m) for m in prompts)))

    def complete_all(
        self, prompts: Sequence[Messages], on_done: Callable[[], None] = lambda: None
    ) -> list[str]:
        """Answers to every prompt, in order (cached answers are not re-requested)."""
        return asyncio.run(self._complete_all(prompts, on_done))

    def uncached(self, prompts: Sequence[Messages]) -> list[Messages]:
        """The prompts that would cost a request (for the cost estimate)."""
        return [m for m in prompts if self._cached(self._key(m)) is None]
