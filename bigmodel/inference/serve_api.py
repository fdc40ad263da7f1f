"""The server's HTTP side (FastAPI): the request schema and its checks, the endpoints, the body
limit and the request log.

POST /generate  {"prompt": "..."} or {"prompts": [...]}, and generate's settings (max_tokens,
                temperature, top_k, top_p, seed, stop) → {"completions": [{prompt, text, tokens,
                finish_reason}], the batch's prefill/decode tokens/s (null when it compiled new
                programs: "compiled"), batch_prompts, batch_requests, queue_s, compute_s}
GET  /health    → {"status": "ok", "waiting": n, "running": n}
GET  /info      → the model config, parameter counts, checkpoint step, tokenizer and limits

Every error is JSON, {"error": "<field>: <what is wrong>", "errors": [{"field", "message"}]}:
422 for a bad field (pydantic checks types and fixed ranges, strictly: "5" is not an integer;
`check_request` the server's caps, which need the tokenizer), 413 for a body over the limit,
503 with Retry-After when the queue is full, 500 if generation fails. (A connection that sends no
whole request in time gets no answer: `bigmodel.inference.serve_http`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from bigmodel.arguments import MAX_SEED  # the one seed rule: generate --seed and config.seed share it
from bigmodel.inference.sampling import Sampling
from bigmodel.inference.serve_engine import Limits
from bigmodel.inference.serve_queue import Job, QueueFull, Worker

LOG_NOTE = "bigmodel.log_note"  # a request's scope key: what the endpoint adds to its log line
RETRY_AFTER_S = 1


class GenerateRequest(BaseModel):
    """The body of POST /generate: `generate`'s flags as JSON fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: Annotated[str, Field(min_length=1)] | None = None
    prompts: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None  # None: the server's default
    temperature: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    stop: Annotated[str, Field(min_length=1)] | None = None


class Invalid(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def check_request(body: GenerateRequest, tokenizer, limits: Limits, max_seq_len: int) -> Job:
    """The request as a Job, or Invalid naming the first field over the server's limits."""
    if (body.prompt is None) == (body.prompts is None):
        raise Invalid("prompt", "give either prompt (a string) or prompts (a list of strings)"
                      + (", not both" if body.prompt is not None else ""))
    prompts, field_of = ([body.prompt], lambda i: "prompt") if body.prompt is not None else (body.prompts, lambda i: f"prompts.{i}")
    if len(prompts) > limits.max_prompts:
        raise Invalid("prompts", f"{len(prompts)} prompts; at most {limits.max_prompts} per request")
    max_tokens = limits.default_max_tokens if body.max_tokens is None else body.max_tokens
    if max_tokens > limits.max_tokens:
        raise Invalid("max_tokens", f"{max_tokens} is over this server's limit of {limits.max_tokens}")
    if body.top_k > tokenizer.vocab_size:
        raise Invalid("top_k", f"{body.top_k} is over the vocabulary size {tokenizer.vocab_size} (0 keeps every token)")
    if body.stop is not None and len(body.stop.encode()) > limits.max_prompt_bytes:
        raise Invalid("stop", f"over {limits.max_prompt_bytes} bytes")
    encoded = []
    for index, prompt in enumerate(prompts):
        if len(prompt.encode()) > limits.max_prompt_bytes:
            raise Invalid(field_of(index), f"{len(prompt.encode())} bytes; at most {limits.max_prompt_bytes}")
        ids = tokenizer.encode(prompt)
        if not ids:
            raise Invalid(field_of(index), "encodes to no tokens")
        if len(ids) > limits.max_prompt_tokens:
            raise Invalid(field_of(index), f"{len(ids)} tokens; at most {limits.max_prompt_tokens}")
        if len(ids) + max_tokens > max_seq_len:
            raise Invalid("max_tokens", f"{field_of(index)} is {len(ids)} tokens, and with max_tokens {max_tokens} it would pass "
                          f"the model's max_seq_len of {max_seq_len}: at most {max_seq_len - len(ids)}")
        encoded.append(ids)
    return Job(prompts, encoded, max_tokens, Sampling(body.temperature, body.top_k, body.top_p), body.seed, body.stop)


def error_response(status: int, errors: list[tuple[str, str]], headers: dict | None = None) -> JSONResponse:
    first_field, first_message = errors[0]
    return JSONResponse({"error": f"{first_field}: {first_message}" if first_field else first_message,
                         "errors": [{"field": field, "message": message} for field, message in errors]}, status, headers)


def field_name(location: tuple) -> str:
    """pydantic's location of a body error as a field path: ("body", "prompts", 2) → "prompts.2"."""
    inside = location[1:] if location and location[0] == "body" else location
    return ".".join(map(str, inside)) or "body"


# ----------------------------------------------------------------------------- ASGI middleware


class BodyLimit:
    """413 for a request body over `max_bytes`: at once from Content-Length, or while reading
    one sent without it (chunked). The body is read here (it is small) and handed on whole."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def too_large(self, scope, receive, send) -> None:
        await error_response(413, [("body", f"over this server's limit of {self.max_bytes} bytes")])(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self.too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self.too_large(scope, receive, send)
            more = message.get("more_body", False)
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay():
            nonlocal whole
            if whole is None:
                return await receive()  # after the body: wait for the disconnect, as the server would
            message, whole = whole, None
            return message

        await self.app(scope, replay, send)


class RequestLog:
    """One line per request: client, method, path, status, milliseconds, and the endpoint's note."""

    def __init__(self, app, log):
        self.app, self.log = app, log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        begin, status = time.perf_counter(), [0]

        async def send_noting_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            client = "{}:{}".format(*scope["client"]) if scope.get("client") else "-"
            self.log(f"{client} {scope['method']} {scope['path']} {status[0] or '-'} {(time.perf_counter() - begin) * 1e3:.0f} ms"
                     f" {scope.get(LOG_NOTE, '')}".rstrip())


# ----------------------------------------------------------------------------- the app


def make_app(worker: Worker, tokenizer, limits: Limits, max_seq_len: int, info: dict, log) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(worker.serve_forever())
        yield
        task.cancel()  # uvicorn has waited for the open requests: nothing is left to answer
        worker.close()

    app = FastAPI(title="bigmodel", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid_fields(request: Request, error: RequestValidationError):
        return error_response(422, [("body" if item["type"] == "json_invalid" else field_name(tuple(item["loc"])), item["msg"])
                                    for item in error.errors()])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return error_response(error.status_code, [("", str(error.detail))], getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):  # a bug: JSON all the same (uvicorn logs the traceback)
        return error_response(500, [("", f"internal error: {type(error).__name__}")])

    @app.get("/health")
    async def health():
        return {"status": "ok", "waiting": len(worker.waiting), "running": worker.running}

    @app.get("/info")
    async def model_info():
        return info

    @app.post("/generate")
    async def generate(body: GenerateRequest, request: Request):
        try:
            job = check_request(body, tokenizer, limits, max_seq_len)
        except Invalid as error:
            return error_response(422, [(error.field, error.message)])
        try:
            future = worker.submit(job)
        except QueueFull as error:
            return error_response(503, [("", f"busy: {error}; retry later")], {"Retry-After": str(RETRY_AFTER_S)})
        try:
            result = await future
        except Exception as error:  # noqa: BLE001 — one failed batch is a 500, not a dead server
            log(f"generation failed: {type(error).__name__}: {error}")
            return error_response(500, [("", f"generation failed: {type(error).__name__}")])
        new_tokens = sum(len(item["tokens"]) for item in result["completions"])
        request.scope[LOG_NOTE] = (f"prompts={len(job.prompts)} new_tokens={new_tokens} batch={result['batch_requests']} "
                                   f"queue_ms={result['queue_s'] * 1e3:.0f} compute_ms={result['compute_s'] * 1e3:.0f}")
        return result

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(RequestLog, log=log)  # added last: outermost, so it also logs the 413s
    return app
