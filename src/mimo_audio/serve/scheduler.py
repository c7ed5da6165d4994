"""Continuous batching for the HTTP server: one thread owns the engine, one the audio codec.

Request handlers (on the asyncio event loop) :meth:`Scheduler.submit` a :class:`Job` and get a
:class:`Ticket`. The *scheduler thread* builds each prompt, adds it to the engine as soon as a batch
slot is free and runs ``engine.step()`` while anything is active, so requests join and leave the
running batch between steps. Each step's events go to the *post-processing thread*, which turns them
into text and audio (the tokenizer's streaming decoder, or the whole clip when a request finishes)
and hands each request its stream chunks and final :class:`~mimo_audio.api.TaskResult` through its
ticket. Audio decoding thus overlaps the next generation steps. The audio tokenizer is used by both
threads (encoding uploads while preparing, decoding), so every use of it holds ``codec_lock``.

Limits: at most ``max_batch + max_queue`` requests in flight (:class:`QueueFull` beyond, with a
Retry-After estimate); a per-request deadline (:class:`RequestTimeout`); ``ticket.cancel()`` (client
disconnect) frees the slot at the next step. A request that fails (bad input, an error while
post-processing) fails alone; an engine error fails the running batch and the loop goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import MimoAudioError
from .metrics import Metrics

log = logging.getLogger("mimo_audio.serve")


class SchedulerError(Exception):
    """A request that could not be served; ``status``/``type``/``code`` map it to an HTTP error."""

    status = 500
    type = "server_error"
    code: str | None = None


class BadRequest(SchedulerError):
    status, type, code = 400, "invalid_request_error", None


class QueueFull(SchedulerError):
    status, type, code = 429, "rate_limit_error", "queue_full"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is at capacity; retry in {retry_after} s")
        self.retry_after = retry_after


class RequestTimeout(SchedulerError):
    status, type, code = 504, "server_error", "timeout"


class Cancelled(SchedulerError):
    status, type, code = 499, "server_error", "cancelled"


class ShuttingDown(SchedulerError):
    status, type, code = 503, "server_error", "unavailable"


@dataclass
class Job:
    """One generation request: a task, its input fields (``MimoAudio.build_prompt``) and options."""

    task: str
    inputs: dict[str, Any]
    gen: dict[str, Any] = field(default_factory=dict)
    stream: bool = False  # deliver StreamChunks as they are produced
    timeout: float | None = None  # seconds; None → the scheduler's default


class Ticket:
    """The asyncio side of a submitted job: ``await started()``, then ``result()`` or ``stream()``.

    The scheduler thread posts items in order: ``started``, ``chunk``… (streaming only), then one of
    ``done`` (with the TaskResult) or ``error`` (a :class:`SchedulerError`).
    """

    _ids = itertools.count(1)

    def __init__(
        self, scheduler: Scheduler, job: Job, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> None:
        self.id = next(self._ids)
        self.job, self.deadline = job, deadline
        self.created = time.monotonic()
        self.admitted: float | None = None
        self.prompt_patches = 0
        self.cancelled = False
        self._scheduler, self._loop = scheduler, loop
        self._items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._closed = False  # set once done/error was posted
        self._lock = threading.Lock()
        self._engine_id: int | None = None
        self._state = None  # StreamState while streaming
        self._voice_pool = None  # the prepared request's voice matching (few-shot voice conversion)

    # consumer (event loop) ---------------------------------------------------------------
    async def started(self) -> None:
        """Wait until the request joined the batch; raises its error if it failed before that."""
        kind, value = await self._items.get()
        if kind == "error":
            raise value
        if kind != "started":
            raise RuntimeError(f"unexpected ticket item {kind!r}")

    async def result(self):
        """The final :class:`~mimo_audio.api.TaskResult` (call after :meth:`started`)."""
        while True:
            kind, value = await self._items.get()
            if kind == "done":
                return value
            if kind == "error":
                raise value

    async def stream(self) -> AsyncIterator:
        """Yield :class:`~mimo_audio.api.StreamChunk` objects; the last one carries ``result``."""
        while True:
            kind, value = await self._items.get()
            if kind == "chunk":
                yield value
            elif kind == "done":
                return
            elif kind == "error":
                raise value

    def cancel(self) -> None:
        """Stop the request (client gone); a no-op once it finished."""
        if not self.cancelled:
            self.cancelled = True
            self._scheduler._request_cancel(self)

    # producer (scheduler and post-processing threads) ------------------------------------------------------------
    def _post(self, kind: str, value: Any = None) -> bool:
        """Queue an item for the consumer; False (and nothing queued) once the ticket is closed."""
        with self._lock:
            if self._closed:
                return False
            if kind in ("done", "error"):
                self._closed = True
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass
        return True


class Scheduler:
    """Owns ``model`` (a :class:`~mimo_audio.api.MimoAudio`) and batches requests into its engine."""

    def __init__(
        self,
        model,
        *,
        max_queue: int = 64,
        request_timeout: float = 300.0,
        max_new_steps: int | None = None,
        stream_chunk_frames: int = 20,
        metrics: Metrics | None = None,
    ) -> None:
        if max_queue < 0:
            raise MimoAudioError("max_queue must be >= 0")
        if not request_timeout > 0:
            raise MimoAudioError("request_timeout must be > 0")
        self.model, self.engine = model, model.engine
        self.max_batch = self.engine.max_batch
        self.max_queue, self.request_timeout, self.max_new_steps = max_queue, request_timeout, max_new_steps
        self.stream_chunk_frames = stream_chunk_frames
        self.metrics = metrics or Metrics()
        self.metrics.bind(self.state)
        self._frame_rate = float(model.audio_tokenizer.frame_rate)
        self._pending: deque[Ticket] = deque()
        self._running: dict[int, Ticket] = {}  # engine request id → ticket
        self._cancels: deque[Ticket] = deque()
        self._calls: deque[tuple[Callable[[Any], Any], Future]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._post_thread: threading.Thread | None = None
        self._events: queue.SimpleQueue = queue.SimpleQueue()  # (ticket, StepEvent) | None to stop
        self._finishing = 0  # finished in the engine, not yet post-processed (counts for capacity)
        self.codec_lock = threading.Lock()  # every use of the audio tokenizer
        self._avg_seconds = 1.0  # moving average of admitted → finished, for Retry-After
        self.alive = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Scheduler:
        if self._thread is None:
            self.alive = True
            self._thread = threading.Thread(target=self._main, name="mimo-audio-scheduler", daemon=True)
            self._post_thread = threading.Thread(
                target=self._post_main, name="mimo-audio-postprocess", daemon=True
            )
            self._post_thread.start()
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread; requests still queued or running fail with :class:`ShuttingDown`."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._post_thread is not None:
            self._post_thread.join(timeout)

    def state(self) -> dict[str, float]:
        """Queue depth, active batch size and limits (read by /health and /metrics)."""
        return {
            "queue_depth": len(self._pending),
            "active": len(self._running),
            "finishing": self._finishing,
            "max_batch": self.max_batch,
            "max_queue": self.max_queue,
            "up": 1.0 if self.alive else 0.0,
        }

    # ------------------------------------------------------------------ event-loop side
    def _in_flight(self) -> int:
        return len(self._pending) + len(self._running) + self._finishing

    def retry_after(self) -> int:
        backlog = self._in_flight()
        return int(min(60, max(1, math.ceil(self._avg_seconds * backlog / max(1, self.max_batch)))))

    def check_capacity(self) -> None:
        """Raise :class:`QueueFull` now if a new request would be refused (before reading its upload)."""
        if not self.alive:
            raise ShuttingDown("the server is shutting down")
        if self._in_flight() >= self.max_batch + self.max_queue:
            self.metrics.rejected.inc(reason="queue_full")
            raise QueueFull(self.retry_after())

    def submit(self, job: Job) -> Ticket:
        """Queue ``job`` (call from the event loop); raises :class:`QueueFull` when at capacity."""
        loop = asyncio.get_running_loop()
        timeout = self.request_timeout if job.timeout is None else min(job.timeout, self.request_timeout)
        if self.max_new_steps is not None:
            for key in ("max_new_steps", "min_new_steps"):
                asked = job.gen.get(key)
                if asked is not None or key == "max_new_steps":
                    job.gen[key] = self.max_new_steps if asked is None else min(asked, self.max_new_steps)
        with self._cond:
            self.check_capacity()
            ticket = Ticket(self, job, loop, time.monotonic() + timeout)
            self._pending.append(ticket)
            self._cond.notify()
        return ticket

    def call(self, fn: Callable[[Any], Any]) -> Future:
        """Run ``fn(model)`` on the scheduler thread holding ``codec_lock`` (e.g. encode a voice prompt)."""
        fut: Future = Future()
        with self._cond:
            if not self.alive:
                fut.set_exception(ShuttingDown("the server is shutting down"))
                return fut
            self._calls.append((fn, fut))
            self._cond.notify()
        return fut

    def _request_cancel(self, ticket: Ticket) -> None:
        with self._cond:
            self._cancels.append(ticket)
            self._cond.notify()

    # ------------------------------------------------------------------ scheduler thread
    def _main(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._cond:
                        while not (
                            self._stop or self._pending or self._calls or self._cancels or self._running
                        ):
                            self._cond.wait(0.5)
                        if self._stop:
                            break
                    self._run_calls()
                    self._reap()
                    self._admit()
                    if self._running:
                        self._step()
        except BaseException:
            log.exception("the scheduler thread died")
        finally:
            self.alive = False
            self._fail_everything(ShuttingDown("the server is shutting down"))
            self._events.put(None)

    def _run_calls(self) -> None:
        while self._calls:
            with self._cond:
                fn, fut = self._calls.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                with self.codec_lock:
                    fut.set_result(fn(self.model))
            except Exception as e:
                fut.set_exception(e)

    def _reap(self) -> None:
        """Drop cancelled requests and fail those past their deadline."""
        while self._cancels:
            with self._cond:
                ticket = self._cancels.popleft()
            self._drop(ticket, Cancelled("the client went away"), "cancelled")
        now = time.monotonic()
        expired = [t for t in (*self._pending, *self._running.values()) if now > t.deadline]
        for ticket in expired:
            self._drop(
                ticket, RequestTimeout(f"the request took longer than {self.request_timeout:g} s"), "timeout"
            )

    def _drop(self, ticket: Ticket, error: SchedulerError, reason: str) -> None:
        with self._cond:
            if ticket in self._pending:
                self._pending.remove(ticket)
        if ticket._engine_id is not None and self._running.pop(ticket._engine_id, None) is not None:
            self.engine.cancel(ticket._engine_id)
        if ticket._post("error", error):
            self.metrics.rejected.inc(reason=reason)

    def _admit(self) -> None:
        """Prepare queued requests and add them to the engine while batch slots are free."""
        while len(self._running) < self.max_batch:
            with self._cond:
                if not self._pending:
                    return
                ticket = self._pending.popleft()
            if ticket.cancelled or ticket._closed:
                continue
            job = ticket.job
            try:
                with self.codec_lock if _has_waveform(job.inputs) else nullcontext():
                    req = self.model.prepare(job.task, job.inputs, **job.gen)
                rid = self.engine.add(req.prompt, req.options)
            except MimoAudioError as e:
                self.metrics.rejected.inc(reason="bad_request")
                ticket._post("error", BadRequest(str(e)))
                continue
            except Exception:
                log.exception("preparing request %d (%s) failed", ticket.id, job.task)
                self.metrics.rejected.inc(reason="error")
                ticket._post("error", SchedulerError("the server could not prepare this request"))
                continue
            ticket._engine_id = rid
            ticket.prompt_patches = req.prompt.shape[1] // self.model.config.group_size
            ticket._voice_pool = req.voice_pool
            ticket._state = self._stream_state(job.task, ticket._voice_pool) if job.stream else None
            ticket.admitted = time.monotonic()
            self.metrics.queue_wait.observe(ticket.admitted - ticket.created)
            self._running[rid] = ticket
            ticket._post("started")

    def _stream_state(self, task: str, voice_pool=None):
        return self.model.stream_state(task, chunk_frames=self.stream_chunk_frames, voice_pool=voice_pool)

    def _step(self) -> None:
        t0 = time.perf_counter()
        try:
            events = self.engine.step()
        except Exception:
            log.exception("engine step failed; failing the %d running requests", len(self._running))
            for rid, ticket in list(self._running.items()):
                self._running.pop(rid, None)
                try:
                    self.engine.cancel(rid)
                except Exception:
                    log.exception("cancelling request %d failed", rid)
                self.metrics.rejected.inc(reason="error")
                ticket._post("error", SchedulerError("generation failed"))
            return
        frames = sum(ev.speech.shape[0] for ev in events if ev.speech is not None)
        self.metrics.record_step(
            time.perf_counter() - t0, len(events), len(events), frames / self._frame_rate
        )
        for ev in events:
            ticket = self._running.get(ev.request_id)
            if ticket is None:
                continue
            if ev.finished:
                self._running.pop(ev.request_id)
                with self._cond:
                    self._finishing += 1
                self._events.put((ticket, ev))
            elif ticket._state is not None:
                self._events.put((ticket, ev))

    # ------------------------------------------------------------------ post-processing thread
    def _post_main(self) -> None:
        with torch.inference_mode():
            while (item := self._events.get()) is not None:
                ticket, ev = item
                try:
                    if not ticket._closed:
                        with self.codec_lock:
                            self._deliver(ticket, ev)
                except Exception:
                    log.exception("post-processing request %d failed", ticket.id)
                    if ticket._post(
                        "error", SchedulerError("the server could not post-process this request")
                    ):
                        self.metrics.rejected.inc(reason="error")
                    if not ev.finished:
                        self._request_cancel(ticket)  # the scheduler thread frees its engine slot
                finally:
                    if ev.finished:
                        with self._cond:
                            self._finishing -= 1
                        self._avg_seconds = 0.9 * self._avg_seconds + 0.1 * (
                            time.monotonic() - ticket.admitted
                        )

    def _deliver(self, ticket: Ticket, ev) -> None:
        if ticket._state is not None:
            chunk = ticket._state.feed(ev)
            if chunk is not None:
                ticket._post("chunk", chunk)
            if ev.finished:
                ticket._post("done", chunk.result)
        elif ev.finished:
            ticket._post("done", self.model.finish(ev.result, ticket.job.task, ticket._voice_pool))

    def _fail_everything(self, error: SchedulerError) -> None:
        with self._cond:
            tickets = [*self._pending, *self._running.values()]
            self._pending.clear()
            calls = list(self._calls)
            self._calls.clear()
        for rid in list(self._running):
            try:
                self.engine.cancel(rid)
            except Exception:
                log.exception("cancelling request %d failed", rid)
        self._running.clear()
        for ticket in tickets:
            ticket._post("error", error)
        for _, fut in calls:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(error)


def _has_waveform(value: Any) -> bool:
    """Whether job inputs hold audio to encode (a float waveform), anywhere in nested messages."""
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    if isinstance(value, dict):
        return any(_has_waveform(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_waveform(v) for v in value)
    return False
