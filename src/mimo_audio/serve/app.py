"""The FastAPI application: OpenAI-style errors, API key and body-size gate, health, metrics, models.

>>> from mimo_audio import MimoAudio
>>> from mimo_audio.serve import ServerConfig, create_app
>>> app = create_app(MimoAudio.from_pretrained(model_dir, tokenizer_dir), ServerConfig())
>>> uvicorn.run(app, host="127.0.0.1", port=8000)

The model is owned by a :class:`~mimo_audio.serve.scheduler.Scheduler` thread started with the app's
lifespan; the audio endpoints live in :mod:`mimo_audio.serve.endpoints`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .audio_io import available_formats
from .config import ServerConfig
from .metrics import Metrics
from .scheduler import QueueFull, Scheduler, SchedulerError
from .voices import ReplyStore, VoiceStore

log = logging.getLogger("mimo_audio.serve")

OPEN_PATHS = frozenset({"/health"})  # reachable without the API key
ENDPOINTS = {
    "/v1/audio/speech": "speech",
    "/v1/audio/transcriptions": "transcriptions",
    "/v1/chat/completions": "chat",
    "/v1/audio/voices": "voices",
    "/v1/models": "models",
    "/health": "health",
    "/metrics": "metrics",
}


class APIError(Exception):
    """An error answered with OpenAI's body: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers


class ClientGone(Exception):
    """The client disconnected before its answer was ready: nothing is sent (recorded as status 499)."""


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(err.message, err.type, err.param, err.code), status_code=err.status, headers=err.headers
    )


def scheduler_error(e: SchedulerError) -> APIError:
    headers = {"Retry-After": str(e.retry_after)} if isinstance(e, QueueFull) else None
    return APIError(e.status, str(e), type=e.type, code=e.code, headers=headers)


@dataclass
class ServerState:
    """What the endpoints share: settings, the scheduler, metrics, voices, recent audio replies."""

    config: ServerConfig
    scheduler: Scheduler
    metrics: Metrics
    voices: VoiceStore
    replies: ReplyStore
    formats: tuple[str, ...]
    sample_rate: int


def server_state(request: Request) -> ServerState:
    state = getattr(request.app.state, "server", None)
    if state is None:
        raise APIError(503, "the model is still loading", type="server_error", code="unavailable")
    return state


class _Gate:
    """Pure-ASGI middleware: API key, request-body size limit (413), per-endpoint metrics.

    The body is read here (at most ``max_upload_bytes``) and replayed to the app; later ``receive``
    calls reach the server again, so handlers still see ``http.disconnect``.
    """

    def __init__(self, app, config: ServerConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        path = scope["path"]
        endpoint = ENDPOINTS.get(
            path.rstrip("/"), "voices" if path.startswith("/v1/audio/voices/") else "other"
        )
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            key = self.config.api_key
            if key and path not in OPEN_PATHS and not _key_ok(headers.get("authorization", ""), key):
                await _send(send_status, APIError(401, "Incorrect API key provided.", code="invalid_api_key"))
                return
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body = await self._read_body(headers, receive)
                if body is None:
                    limit = self.config.max_upload_bytes
                    err = APIError(
                        413, f"the request body is larger than {limit} bytes", code="payload_too_large"
                    )
                    await _send(send_status, err)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.inc(endpoint=endpoint, status=str(status))
            if endpoint not in ("metrics", "health"):
                self.metrics.latency.observe(time.monotonic() - start, endpoint=endpoint)

    async def _read_body(self, headers: dict[str, str], receive) -> bytes | None:
        limit = self.config.max_upload_bytes
        try:
            if int(headers.get("content-length", "0")) > limit:
                return None
        except ValueError:
            return None
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)


def _key_ok(authorization: str, key: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), key.encode())


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send(send, err: APIError) -> None:
    payload = json.dumps(error_body(err.message, err.type, err.param, err.code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if err.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    # A union field reports one error per member; the deepest one names the real problem.
    first = max(errors, key=lambda e: len(e.get("loc", ())), default={})
    param = ".".join(_field_path(first.get("loc", ()))) or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'." if param else "Missing request body."
        return APIError(400, message, param=param, code="missing_required_parameter")
    if first.get("type") in ("json_invalid", "model_attributes_type") and not param:
        return APIError(
            400, f"We could not parse the JSON body of your request ({msg}).", code="invalid_json"
        )
    return APIError(
        400, f"Invalid value for '{param}': {msg}." if param else msg, param=param, code="invalid_value"
    )


def _field_path(loc) -> list[str]:
    """A pydantic error location without its source (body, form) and union-member tags (str, VoiceRef)."""
    out = []
    for part in loc:
        if isinstance(part, int):
            out.append(str(part))
        elif part not in ("body", "query", "path", "form") and "[" not in part and part[:1].islower():
            if part not in ("str", "int", "float", "bool", "dict", "list", "none"):
                out.append(part)
    return out


def create_app(
    model: Any | Callable[[], Any],
    config: ServerConfig | None = None,
    *,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The server app for a loaded :class:`~mimo_audio.MimoAudio` (or a zero-argument factory of one,
    called at start-up). The scheduler thread and named voices start with the app's lifespan."""
    from .endpoints import router

    config = config or ServerConfig()
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = model if hasattr(model, "engine") else await asyncio.to_thread(model)
        scheduler = Scheduler(
            loaded,
            max_queue=config.max_queue,
            request_timeout=config.request_timeout,
            max_new_steps=config.max_new_steps,
            metrics=metrics,
        ).start()
        voices = VoiceStore(config.max_uploaded_voices)
        try:
            for name, path in config.voices.items():
                codes = await asyncio.wrap_future(scheduler.call(lambda m, p=path: m.audio_codes(p)))
                voices.add(name, codes, uploaded=False)
                log.info("voice %r registered from %s", name, path)
            app.state.server = ServerState(
                config,
                scheduler,
                metrics,
                voices,
                ReplyStore(config.max_reply_audio_seconds, config.reply_audio_ttl, loaded.sample_rate),
                available_formats(),
                loaded.sample_rate,
            )
            yield
        finally:
            app.state.server = None
            await asyncio.to_thread(scheduler.stop)

    app = FastAPI(title="mimo-audio", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = None
    app.include_router(router)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(SchedulerError)
    async def _sched_error(request: Request, exc: SchedulerError):
        return error_response(scheduler_error(exc))

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone):
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = {
            404: f"Unknown route {request.method} {request.url.path}.",
            405: "Method not allowed.",
        }.get(exc.status_code, str(exc.detail))
        return error_response(APIError(exc.status_code, message, type=kind))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            APIError(500, "The server had an error processing your request.", type="server_error")
        )

    @app.get("/health")
    async def health(request: Request):
        state = request.app.state.server
        if state is None or not state.scheduler.alive:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return {"status": "ok", "model": config.model_id, **state.scheduler.state()}

    @app.get("/metrics")
    async def prometheus(request: Request):
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request):
        return {"object": "list", "data": [_model_card(config)]}

    @app.get("/v1/models/{model_id}")
    async def model_card(model_id: str, request: Request):
        if model_id != config.model_id:
            raise APIError(
                404, f"The model '{model_id}' does not exist.", type="not_found_error", param="model"
            )
        return _model_card(config)

    app.add_middleware(_Gate, config=config, metrics=metrics)
    return app


def _model_card(config: ServerConfig) -> dict:
    return {"id": config.model_id, "object": "model", "created": 0, "owned_by": "mimo-audio"}
