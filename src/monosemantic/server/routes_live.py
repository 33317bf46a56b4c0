"""Live routes: activations of typed text, steering side by side (optionally streamed), tracing a
prompt as a background job, and the jobs' progress. Each takes a chat prompt (`chat`) instead of
text; its results mark the turns.

Each request becomes a job for the one live worker (`jobs.Worker`); the handler awaits it without
holding a thread, so browsing is never starved. A full queue answers 429 with Retry-After.
Inputs are bounded: text by `serve.max_text_chars`, generation by `serve.max_new_tokens`, steering
values to finite magnitudes; dictionaries are store ids.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field, field_validator, model_validator

from monosemantic.steering.edits import parse_values
from monosemantic.utils.errors import MonosemanticError

from .guard import Body
from .jobs import Closed, Job, QueueFull

MAX_ID = 2**31 - 1
MAX_VALUE = 1e4  # steering beyond this is numerically meaningless (activations are O(1..100))
MAX_MULTIPLE = 1e3  # in units of the feature's max activation

router = APIRouter()


class ChatMessage(Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


Chat = Annotated[
    str | list[ChatMessage] | None,
    Field(
        None,
        description="a chat prompt instead of text: lines 'role: text' or a list of {role, content}, rendered "
        "with the chat template (data.chat_template or the tokenizer's); the result marks its turns",
    ),
]


def _one_of(text: str | None, chat: Any, name: str) -> None:
    if (text is None) == (chat is None):
        raise ValueError(f"give {name} or chat (one of them)")


class ActivationsIn(Body):
    dictionary: int = Field(ge=0, le=MAX_ID, description="store id of the dictionary")
    text: str | None = Field(None, min_length=1)
    chat: Chat = None
    feature: int | None = Field(None, ge=0, le=MAX_ID, description="also this feature's value per token")
    top: int = Field(10, ge=1, le=100, description="strongest features listed per token")

    @model_validator(mode="after")
    def _text_or_chat(self) -> ActivationsIn:
        _one_of(self.text, self.chat, "text")
        return self


MAX_SAMPLES = 64  # generations per value in one steering request
MAX_VALUES = 8


class SteerRequest(Body):
    """A steering evaluation: `samples` generations plain and at each value (a number, or `4x`:
    4 times the feature's max activation in the store); `value` alone is one value."""

    dictionary: int = Field(ge=0, le=MAX_ID)
    feature: int = Field(ge=0, le=MAX_ID)
    prompt: str | None = Field(None, min_length=1)
    chat: Chat = None
    mode: Literal["add", "set", "clamp", "scale", "ablate"] = "add"
    value: float | str | None = Field(None, description="one steering value: 10, -2.5 or 4x")
    values: list[float | str] | None = Field(None, min_length=1, max_length=MAX_VALUES)
    samples: int = Field(1, ge=1, le=MAX_SAMPLES)
    max_new_tokens: int = Field(24, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0, le=MAX_ID)
    words: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=20
    )
    stream: bool = False

    @field_validator("temperature", "top_p")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _one_list(self) -> SteerRequest:
        _one_of(self.prompt, self.chat, "prompt")
        if self.values is None:
            self.values = [10.0 if self.value is None else self.value]
        try:
            parsed = parse_values(self.values)
        except MonosemanticError as e:
            raise ValueError(str(e)) from None
        for v in parsed:
            if v.raw is not None and not (math.isfinite(v.raw) and abs(v.raw) <= MAX_VALUE):
                raise ValueError(f"value {v.text} must be a finite number within ±{MAX_VALUE:g}")
            if v.multiple is not None and not abs(v.multiple) <= MAX_MULTIPLE:
                raise ValueError(f"value {v.text} must be within ±{MAX_MULTIPLE:g}x the max activation")
        if len(parsed) > MAX_VALUES:
            raise ValueError(f"at most {MAX_VALUES} values per request")
        return self


MAX_DIRECTION = 65_536  # entries of a direction target (d_model of the largest models we serve)
MAX_TOKEN_CHARS = 200


class CircuitIn(Body):
    prompt: str | None = Field(None, min_length=1)
    chat: Chat = None
    dictionaries: list[Annotated[int, Field(ge=0, le=MAX_ID)]] | None = Field(
        None, max_length=256, description="store ids of the transcoders (default: every transcoder)"
    )
    target: Literal["top_logits", "token", "logit_diff", "feature", "direction"] = "top_logits"
    target_token: str | None = Field(None, min_length=1, max_length=MAX_TOKEN_CHARS)
    contrast_token: str | None = Field(None, min_length=1, max_length=MAX_TOKEN_CHARS)
    target_feature: str | None = Field(
        None, pattern=r"^\d{1,6}_\d{1,12}_\d{1,9}$", description="node id LAYER_FEATURE_POS"
    )
    direction: list[float] | None = Field(
        None, min_length=1, max_length=MAX_DIRECTION, description="target 'direction': the vector [d_model]"
    )
    target_layer: int | None = Field(None, ge=0, le=10_000, description="the direction's layer (resid_post)")
    target_position: int | None = Field(None, ge=-MAX_ID, le=MAX_ID, description="negative from the end")
    heads: bool = Field(False, description="head loadings on every link and QK terms (circuit.heads)")

    @field_validator("direction")
    @classmethod
    def _finite_vector(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(math.isfinite(x) for x in v):
            raise ValueError("every entry must be a finite number")
        return v

    def options(self) -> dict[str, Any]:
        """The [circuit] settings this request asks for (and the direction's numbers)."""
        keys = ("target", "target_token", "contrast_token", "target_feature", "target_layer", "target_position",
                "heads", "direction")  # fmt: skip
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    @model_validator(mode="after")
    def _prompt_or_chat(self) -> CircuitIn:
        _one_of(self.prompt, self.chat, "prompt")
        return self


def _messages(request: Request, text: str | None, chat: str | list[ChatMessage] | None) -> list | None:
    """The chat prompt as {role, content} dicts (never read from a file), within the text limit."""
    if chat is None:
        _limits(request, str(text))
        return None
    from monosemantic.corpus.chat_prompt import parse_chat
    from monosemantic.utils.errors import MonosemanticError

    raw = chat if isinstance(chat, str) else [m.model_dump() for m in chat]
    try:
        messages = parse_chat(raw, files=False)
    except MonosemanticError as e:
        raise HTTPException(422, str(e)) from None
    _limits(request, "".join(m["content"] for m in messages))
    return messages


class NodeEdit(Body):
    node_id: str = Field(min_length=1, max_length=64, description="a feature node of the graph")
    mode: Literal["ablate", "set", "clamp", "scale", "add"] = "ablate"
    value: float = Field(0.0, ge=-MAX_VALUE, le=MAX_VALUE, allow_inf_nan=False)


class InterveneIn(Body):
    interventions: list[NodeEdit] = Field(min_length=1, max_length=64)
    model: Literal["free", "frozen"] = Field(
        "free", description="free, or attention frozen at the clean prompt's"
    )
    top: int = Field(10, ge=1, le=50, description="top next tokens listed, before and after")


def _limits(request: Request, text: str, new_tokens: int = 0) -> None:
    s = request.app.state.cfg.serve
    if len(text) > s.max_text_chars:
        raise HTTPException(
            422, f"text has {len(text)} characters; at most {s.max_text_chars} (serve.max_text_chars)"
        )
    if new_tokens > s.max_new_tokens:
        raise HTTPException(
            422, f"max_new_tokens={new_tokens}; at most {s.max_new_tokens} (serve.max_new_tokens)"
        )


def _submit(
    request: Request, kind: str, fn: Callable[[Job], Any], listen: bool
) -> tuple[Job, asyncio.Queue | None]:
    try:
        return request.app.state.worker.submit(kind, fn, asyncio.get_running_loop() if listen else None)
    except QueueFull as e:
        raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None
    except Closed as e:
        raise HTTPException(503, str(e)) from None


def _failure(job: Job) -> HTTPException:
    return HTTPException(500 if job.internal else 422, job.error)


async def _result(request: Request, kind: str, fn: Callable[[Job], Any]) -> Any:
    """Run `fn` as a live job and await its result (504 past `serve.job_timeout_s`)."""
    job, events = _submit(request, kind, fn, listen=True)

    async def finished() -> None:
        while await events.get() is not None:
            pass

    try:
        await asyncio.wait_for(finished(), request.app.state.cfg.serve.job_timeout_s)
    except asyncio.TimeoutError:
        raise HTTPException(
            504, f"job {job.id} ({kind}) is still {job.stage}; see /api/jobs/{job.id}"
        ) from None
    if job.status == "failed":
        raise _failure(job)
    return job.result


@router.post("/api/activations")
async def activations(request: Request, body: ActivationsIn) -> dict[str, Any]:
    """Tokens of `text` and, per token, the active features with their values."""
    chat = _messages(request, body.text, body.chat)
    live = request.app.state.live
    return await _result(
        request,
        "activations",
        lambda job: live.activations(job, body.dictionary, body.text, body.feature, body.top, chat),
    )


@router.post("/api/steer", response_model=None)
async def steer(request: Request, body: SteerRequest) -> dict[str, Any] | StreamingResponse:
    """A steering evaluation of `prompt`: plain and steered generations (the first of each as
    `plain` / `steered`), and per arm the concept rate and fluency; `stream: true` sends
    server-sent events (the first plain and steered sample, token by token)."""
    chat = _messages(request, body.prompt, body.chat)
    _limits(request, "", body.max_new_tokens)
    live = request.app.state.live

    def fn(job: Job) -> dict[str, Any]:
        return live.steer(job, body, chat)

    if not body.stream:
        return await _result(request, "steer", fn)
    job, events = _submit(request, "steer", fn, listen=True)

    async def sse() -> AsyncIterator[str]:
        yield f"event: job\ndata: {json.dumps({'job': job.id})}\n\n"
        while (ev := await events.get()) is not None:
            yield f"data: {json.dumps(ev)}\n\n"
        if job.status == "failed":
            yield f"event: error\ndata: {json.dumps({'detail': job.error})}\n\n"
        else:
            yield f"event: done\ndata: {json.dumps(job.result)}\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/api/graphs/{gid}/intervene")
async def graph_intervene(
    request: Request, gid: Annotated[int, Path(ge=0, le=MAX_ID)], body: InterveneIn
) -> dict[str, Any]:
    """Ablate, clamp (set) or scale feature nodes of a stored graph; the top next-token logits at
    its last position, original beside intervened, on the free or the attention-frozen model."""
    try:
        request.app.state.store.get().graph(gid)
    except MonosemanticError as e:
        raise HTTPException(404, str(e)) from None
    live = request.app.state.live
    return await _result(
        request, "intervene", lambda job: live.intervene(job, gid, body.interventions, body.model, body.top)
    )


@router.post("/api/circuits", status_code=202)
async def circuits(request: Request, body: CircuitIn) -> dict[str, Any]:
    """Start tracing `prompt`; poll `/api/jobs/{job}` until done, then open `/graphs/{graph_id}`."""
    chat = _messages(request, body.prompt, body.chat)
    live = request.app.state.live
    job, _ = _submit(
        request,
        "circuit",
        lambda job: live.trace(job, body.prompt, body.dictionaries, body.options(), chat),
        listen=False,
    )
    return {"job": job.id, "status": job.status, "url": f"api/jobs/{job.id}"}


@router.get("/api/graphs/{gid}/qk")
async def graph_qk(
    request: Request,
    gid: Annotated[int, Path(ge=0, le=MAX_ID)],
    layer: Annotated[int, Query(ge=0, le=10_000)],
    head: Annotated[int, Query(ge=0, le=10_000)],
    query: Annotated[int, Query(ge=0, le=MAX_ID)],
    key: Annotated[int, Query(ge=0, le=MAX_ID)],
    top: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    """Why head (layer, head) attends from position `query` to `key` in stored graph `gid`: the
    pre-softmax score split into query x key component terms (the largest `top` pairs and each
    side's totals). Computed once on the live worker, then stored with the graph."""
    live = request.app.state.live
    return await _result(request, "qk", lambda job: live.qk(job, gid, (layer, head, query, key), top))


@router.get("/api/jobs")
def jobs(request: Request) -> list[dict[str, Any]]:
    return [j.summary() for j in request.app.state.worker.jobs()]


@router.get("/api/jobs/{job_id}")
def job(request: Request, job_id: Annotated[int, Path(ge=0, le=MAX_ID)]) -> dict[str, Any]:
    found = request.app.state.worker.job(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id} (finished jobs are kept for a while, then forgotten)")
    return found.summary()
