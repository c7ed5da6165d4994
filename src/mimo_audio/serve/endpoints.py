"""The OpenAI audio endpoints: speech, transcriptions, chat completions with audio, custom voices.

Each handler validates its request, decodes uploads off the event loop, submits a
:class:`~mimo_audio.serve.scheduler.Job` and answers whole or streamed (raw audio chunks, or SSE).
A client that disconnects cancels its request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from .app import APIError, ClientGone, ServerState, error_body, scheduler_error, server_state
from .audio_io import (
    MEDIA_TYPES,
    STREAMABLE,
    AudioDecodeError,
    AudioTooLong,
    StreamEncoder,
    TimeStretcher,
    decode_base64_audio,
    decode_upload,
    encode_audio,
    stretch,
)
from .openai_schemas import ChatMessage, ChatRequest, Sampling, SpeechRequest
from .scheduler import Job, SchedulerError, Ticket
from .voices import UnknownVoice, new_audio_id

log = logging.getLogger("mimo_audio.serve")
router = APIRouter()

# A voice prompt only shapes the timbre through the instruct-TTS prompt (SPEC §9.3), which needs an
# instruction; this neutral one is used when a voice is chosen without ``instructions``.
VOICE_INSTRUCTION = "Speak naturally, in the voice of the prompt."
TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")


# ---------------------------------------------------------------------------- shared helpers
def _gen(body: Sampling, max_new_steps: int | None = None) -> dict[str, Any]:
    g = {
        "seed": body.seed,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "max_new_steps": max_new_steps or body.max_new_steps,
        "min_new_steps": body.min_new_steps,
    }
    if body.temperature == 0:
        g["greedy"] = True
    elif body.temperature is not None:
        g["temperature"] = body.temperature
    return {k: v for k, v in g.items() if v is not None}


async def _decode(data: bytes | str, state: ServerState, name: str, b64: bool = False) -> torch.Tensor:
    limit = state.config.max_audio_seconds
    try:
        if b64:
            wav = await run_in_threadpool(decode_base64_audio, data, limit, name)
        else:
            wav = await run_in_threadpool(decode_upload, data, limit, name)
    except AudioTooLong as e:
        raise APIError(413, str(e), param=name, code="audio_too_long") from None
    except AudioDecodeError as e:
        raise APIError(400, str(e), param=name, code="invalid_audio") from None
    return torch.from_numpy(wav)


def _voice(state: ServerState, voice: Any, param: str) -> torch.Tensor | None:
    try:
        return state.voices.resolve(voice)
    except UnknownVoice as e:
        raise APIError(400, f"Unknown voice {e.args[0]!r}.", param=param, code="invalid_voice") from None


async def _until_disconnect(request: Request, ticket: Ticket, awaitable):
    """Await ``awaitable`` unless the client goes away first (then cancel the request)."""
    task = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        ticket.cancel()
        task.cancel()
        raise ClientGone
    try:
        return task.result()
    except SchedulerError as e:
        raise scheduler_error(e) from None


async def _start(request: Request, state: ServerState, job: Job) -> Ticket:
    """Submit and wait until the request joined the batch (errors before that become HTTP errors)."""
    try:
        ticket = state.scheduler.submit(job)
    except SchedulerError as e:
        raise scheduler_error(e) from None
    await _until_disconnect(request, ticket, ticket.started())
    return ticket


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)


async def _result(request: Request, ticket: Ticket):
    """The ticket's TaskResult (raises :class:`ClientGone` if the client leaves first)."""
    return await _until_disconnect(request, ticket, ticket.result())


class Meta(bytes):
    """A streamed piece that carries no content (a role header): not a first chunk for the metrics."""


def _streaming(
    request: Request,
    state: ServerState,
    ticket: Ticket,
    endpoint: str,
    body: Callable[[Ticket], AsyncIterator[bytes]],
    media: str,
) -> StreamingResponse:
    """Stream ``body(ticket)``; records time to first chunk and cancels the request if the client leaves.

    Servers speaking ASGI 2.3 (uvicorn) have Starlette watch for the disconnect; under ASGI 2.4 the
    watch is ours, so that a stream with nothing to send for a while is still cancelled.
    """
    spec = tuple(int(x) for x in request.scope.get("asgi", {}).get("spec_version", "2.0").split("."))

    async def run() -> AsyncIterator[bytes]:
        watch = asyncio.ensure_future(_watch(request, ticket)) if spec >= (2, 4) else None
        first = True
        try:
            async for piece in body(ticket):
                if first and piece and not isinstance(piece, Meta):
                    state.metrics.first_chunk.observe(time.monotonic() - ticket.created, endpoint=endpoint)
                    first = False
                yield piece
        finally:
            ticket.cancel()
            if watch is not None:
                watch.cancel()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(run(), media_type=media, headers=headers)


async def _watch(request: Request, ticket: Ticket) -> None:
    await _wait_disconnect(request)
    ticket.cancel()


def _sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _sse_error(e: SchedulerError) -> bytes:
    return _sse({"type": "error", **error_body(str(e), e.type, None, e.code)})


def _audio(chunk) -> np.ndarray | None:
    return None if chunk.audio is None else chunk.audio.reshape(-1).numpy()


# ---------------------------------------------------------------------------- /v1/audio/speech
@router.post("/v1/audio/speech")
async def speech(body: SpeechRequest, request: Request):
    state = server_state(request)
    state.scheduler.check_capacity()
    fmt = body.response_format
    if fmt not in state.formats:
        raise APIError(
            400,
            f"response_format {fmt!r} is not available on this server (use {', '.join(state.formats)}).",
            param="response_format",
        )
    if len(body.input) > state.config.max_input_chars:
        raise APIError(400, f"input is longer than {state.config.max_input_chars} characters.", param="input")
    if body.instructions is not None and len(body.instructions) > state.config.max_input_chars:
        raise APIError(
            400,
            f"instructions is longer than {state.config.max_input_chars} characters.",
            param="instructions",
        )
    sse = body.stream_format == "sse"
    stream = sse or body.stream or body.stream_format == "audio" or fmt == "pcm"
    if stream and fmt not in STREAMABLE:
        raise APIError(400, "streamed speech needs response_format 'pcm' or 'wav'.", param="response_format")
    codes = _voice(state, body.voice, "voice")
    instruction = body.instructions or (VOICE_INSTRUCTION if codes is not None else None)
    inputs = {
        "text": body.input,
        "instruction": instruction,
        "prompt_speech": codes if instruction else None,
        "read_text_only": True,
        "seed": body.seed,
    }
    ticket = await _start(request, state, Job("tts", inputs, _gen(body), stream=stream))
    if not stream:
        result = await _result(request, ticket)
        wav = result.audio.numpy() if result.audio is not None else np.zeros(0, np.float32)
        data = await run_in_threadpool(
            lambda: encode_audio(stretch(wav, body.speed, state.sample_rate), fmt, state.sample_rate)
        )
        return Response(data, media_type=MEDIA_TYPES[fmt])

    async def audio_stream(t: Ticket) -> AsyncIterator[bytes]:
        encoder, stretcher = (
            StreamEncoder(fmt, state.sample_rate),
            TimeStretcher(body.speed, state.sample_rate),
        )
        try:
            async for chunk in t.stream():
                wav = _audio(chunk)
                data = encoder.encode(stretcher.push(wav) if wav is not None else None)
                if chunk.result is not None:
                    data += encoder.encode(stretcher.flush())
                if data:
                    yield (
                        _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                        if sse
                        else data
                    )
                if chunk.result is not None and sse:
                    steps = chunk.result.steps
                    usage = {
                        "input_tokens": t.prompt_patches,
                        "output_tokens": steps,
                        "total_tokens": t.prompt_patches + steps,
                    }
                    yield _sse({"type": "speech.audio.done", "usage": usage})
        except SchedulerError as e:
            log.warning("speech stream %d ended early: %s", t.id, e)
            if sse:
                yield _sse_error(e)

    return _streaming(
        request, state, ticket, "speech", audio_stream, "text/event-stream" if sse else MEDIA_TYPES[fmt]
    )


# ---------------------------------------------------------------------------- /v1/audio/transcriptions
@router.post("/v1/audio/transcriptions")
async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()] = "mimo-audio",
    language: Annotated[str | None, Form(max_length=32)] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=2.0)] = 0.0,
    stream: Annotated[bool, Form()] = False,
    seed: Annotated[int | None, Form(ge=0, le=2**62)] = None,
    max_new_steps: Annotated[int | None, Form(ge=1)] = None,
):
    """OpenAI's transcription form; ``model``, ``language`` and ``prompt`` are accepted, not used."""
    state = server_state(request)
    state.scheduler.check_capacity()
    if response_format not in TRANSCRIPTION_FORMATS:
        raise APIError(
            400,
            f"response_format {response_format!r} is not supported (use {', '.join(TRANSCRIPTION_FORMATS)}).",
            param="response_format",
        )
    wav = await _decode(await file.read(), state, "file")
    gen = _gen(Sampling(seed=seed, temperature=temperature or None, max_new_steps=max_new_steps))
    ticket = await _start(request, state, Job("asr", {"audio": wav, "seed": seed}, gen, stream=stream))
    duration = round(wav.numel() / state.sample_rate, 3)
    usage = {"type": "duration", "seconds": duration}
    if stream:

        async def events(t: Ticket) -> AsyncIterator[bytes]:
            try:
                async for chunk in t.stream():
                    if chunk.text:
                        yield _sse({"type": "transcript.text.delta", "delta": chunk.text})
                    if chunk.result is not None:
                        yield _sse(
                            {"type": "transcript.text.done", "text": chunk.result.text, "usage": usage}
                        )
            except SchedulerError as e:
                yield _sse_error(e)

        return _streaming(request, state, ticket, "transcriptions", events, "text/event-stream")
    result = await _result(request, ticket)
    if response_format == "text":
        return PlainTextResponse(result.text)
    if response_format == "json":
        return {"text": result.text, "usage": usage}
    lang = language or ("chinese" if any("\u4e00" <= c <= "\u9fff" for c in result.text) else "english")
    segment = {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": duration,
        "text": result.text,
        "tokens": [],
        "temperature": temperature,
        "avg_logprob": 0.0,
        "compression_ratio": 0.0,
        "no_speech_prob": 0.0,
    }
    return {
        "task": "transcribe",
        "language": lang,
        "duration": duration,
        "text": result.text,
        "segments": [segment],
        "usage": usage,
    }


# ---------------------------------------------------------------------------- /v1/audio/voices
@router.post("/v1/audio/voices")
async def create_voice(
    request: Request,
    audio_sample: Annotated[UploadFile, File()],
    name: Annotated[str, Form(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")],
    consent: Annotated[str | None, Form()] = None,
):
    """Register a custom voice from an audio sample (``consent`` is accepted, not checked)."""
    state = server_state(request)
    wav = await _decode(await audio_sample.read(), state, "audio_sample")
    try:
        codes = await asyncio.wrap_future(state.scheduler.call(lambda m: m.audio_codes(wav)))
        voice = state.voices.add(name, codes, uploaded=True)
    except SchedulerError as e:
        raise scheduler_error(e) from None
    except ValueError as e:
        raise APIError(400, str(e), param="name") from None
    return voice.to_dict()


@router.get("/v1/audio/voices")
async def list_voices(request: Request):
    return {"object": "list", "data": [v.to_dict() for v in server_state(request).voices.list()]}


@router.delete("/v1/audio/voices/{voice_id}")
async def delete_voice(voice_id: str, request: Request):
    try:
        server_state(request).voices.delete(voice_id)
    except UnknownVoice:
        raise APIError(
            404, f"No voice with id {voice_id!r}.", type="not_found_error", param="voice_id"
        ) from None
    except ValueError as e:
        raise APIError(400, str(e), param="voice_id") from None
    return {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}


# ---------------------------------------------------------------------------- /v1/chat/completions
async def _messages(state: ServerState, messages: list[ChatMessage]) -> tuple[list[dict], list[str], bool]:
    """OpenAI messages → API messages (text / decoded audio), system texts, and whether audio is present."""
    out, system, any_audio = [], [], False
    for i, m in enumerate(messages):
        parts = [m.content] if isinstance(m.content, str) else (m.content or [])
        texts, clips = [], []
        for j, p in enumerate(parts):
            if isinstance(p, str):
                texts.append(p)
            elif p.type == "text":
                texts.append(p.text or "")
            elif p.input_audio is None:
                raise APIError(
                    400, "an input_audio part needs 'input_audio'.", param=f"messages.{i}.content.{j}"
                )
            else:
                clips.append(
                    await _decode(
                        p.input_audio.data, state, f"messages.{i}.content.{j}.input_audio", b64=True
                    )
                )
        if m.role in ("system", "developer"):
            if clips:
                raise APIError(400, "system messages take text only.", param=f"messages.{i}.content")
            system.append("\n".join(texts))
            continue
        if m.role == "assistant" and m.audio is not None:
            reply = state.replies.get(m.audio.id)
            if reply is None:
                raise APIError(
                    400, f"Unknown or expired audio id {m.audio.id!r}.", param=f"messages.{i}.audio.id"
                )
            clips.append(torch.from_numpy(reply))
        text = "\n".join(t for t in texts if t) or None
        if m.role == "user" and len(clips) > 1:
            clips = [torch.cat(clips)]
        if not clips:
            if text is None:
                raise APIError(400, f"message {i} has no content.", param=f"messages.{i}.content")
            out.append({"role": m.role, "content": text})
        else:
            any_audio = True
            out.append({"role": m.role, "content": {"text": text, "audio": clips[0]}})
    return out, system, any_audio


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    state = server_state(request)
    state.scheduler.check_capacity()
    if body.n != 1:
        raise APIError(400, "only n=1 is supported.", param="n")
    speak = "audio" in (body.modalities or ["text"])
    params = body.audio
    fmt = "pcm" if params is None or params.format == "pcm16" else params.format
    if speak:
        if params is None:
            raise APIError(400, "modalities ['text', 'audio'] need the 'audio' parameter.", param="audio")
        if fmt not in state.formats:
            raise APIError(
                400, f"audio format {params.format!r} is not available on this server.", param="audio.format"
            )
        if body.stream and fmt not in STREAMABLE:
            raise APIError(400, "streamed audio needs audio.format 'pcm16' or 'wav'.", param="audio.format")
    messages, system, any_audio = await _messages(state, body.messages)
    if not messages or messages[-1]["role"] != "user":
        raise APIError(400, "the last message must come from the user.", param="messages")
    if speak:
        task = "spoken_dialogue"
        inputs = {
            "messages": messages,
            "system_prompt": "\n".join(system) or None,
            "prompt_speech": _voice(state, params.voice, "audio.voice"),
        }
    else:
        task = "s2t_dialogue" if any_audio else "text_dialogue"
        inputs = {"messages": messages, "thinking": body.thinking}
    gen = _gen(body, body.max_completion_tokens or body.max_tokens)
    ticket = await _start(request, state, Job(task, inputs, gen, stream=body.stream))
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    base = {"id": cid, "created": created, "model": body.model}

    def usage(result) -> dict:
        return {
            "prompt_tokens": ticket.prompt_patches,
            "completion_tokens": result.steps,
            "total_tokens": ticket.prompt_patches + result.steps,
        }

    if not body.stream:
        result = await _result(request, ticket)
        message: dict[str, Any] = {"role": "assistant", "content": None if speak else result.text}
        if speak:
            wav = result.audio.numpy()
            audio_id, expires = state.replies.add(wav)
            data = await run_in_threadpool(encode_audio, wav, fmt, state.sample_rate)
            message["audio"] = {
                "id": audio_id,
                "data": base64.b64encode(data).decode(),
                "expires_at": expires,
                "transcript": result.text,
            }
        choice = {"index": 0, "message": message, "finish_reason": _finish_reason(result)}
        return JSONResponse(
            {**base, "object": "chat.completion", "choices": [choice], "usage": usage(result)}
        )

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({**base, "object": "chat.completion.chunk", "choices": [choice]})

    async def events(t: Ticket) -> AsyncIterator[bytes]:
        yield Meta(chunk({"role": "assistant", "content": None if speak else ""}))
        encoder = StreamEncoder(fmt, state.sample_rate) if speak else None
        audio_id = new_audio_id()
        try:
            async for c in t.stream():
                if not speak:
                    if c.text:
                        yield chunk({"content": c.text})
                else:
                    if c.text:
                        yield chunk({"audio": {"id": audio_id, "transcript": c.text}})
                    wav = _audio(c)
                    if wav is not None and wav.size:
                        data = base64.b64encode(encoder.encode(wav)).decode()
                        yield chunk({"audio": {"id": audio_id, "data": data}})
                if c.result is not None:
                    if speak and c.result.audio is not None:
                        _, expires = state.replies.add(c.result.audio.numpy(), audio_id)
                        yield chunk({"audio": {"id": audio_id, "expires_at": expires}})
                    yield chunk({}, _finish_reason(c.result))
                    if body.stream_options is not None and body.stream_options.include_usage:
                        yield _sse(
                            {
                                **base,
                                "object": "chat.completion.chunk",
                                "choices": [],
                                "usage": usage(c.result),
                            }
                        )
            yield _sse("[DONE]")
        except SchedulerError as e:
            yield _sse_error(e)

    return _streaming(request, state, ticket, "chat", events, "text/event-stream")


def _finish_reason(result) -> str:
    return "stop" if result.stop_reason == "stop_token" else "length"
