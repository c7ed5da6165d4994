"""Server metrics in the Prometheus text format (version 0.0.4), written without a client library.

Counters, gauges and histograms are updated from the request handlers and the scheduler thread (all
methods take a lock); :meth:`Metrics.render` produces the ``GET /metrics`` body. Names are listed in
docs/SERVING.md.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_INF = 'le="+Inf"'


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    x = float(x)
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[tuple[str, ...], float] = {} if self.labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.labelnames, k)} {_num(v)}" for k, v in items]


class Gauge(_Metric):
    """A gauge read from a callback at render time."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], float]) -> None:
        super().__init__(name, help)
        self.read = read

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_num(self.read())}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, buckets: Iterable[float], labelnames: Iterable[str] = ()
    ) -> None:
        super().__init__(name, help, labelnames)
        self.buckets = tuple(sorted(buckets))
        self._data: dict[tuple[str, ...], list] = {}  # key → [bucket counts, sum, count]
        if not self.labelnames:
            self._data[()] = [[0] * len(self.buckets), 0.0, 0]

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            entry = self._data.setdefault(key, [[0] * len(self.buckets), 0.0, 0])
            if i < len(self.buckets):
                entry[0][i] += 1
            entry[1] += value
            entry[2] += 1

    def count(self, **labels: str) -> int:
        with self._lock:
            entry = self._data.get(self._key(labels))
            return entry[2] if entry else 0

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, (list(v[0]), v[1], v[2])) for k, v in self._data.items())
        for key, (counts, total, n) in items:
            cumulative = 0
            for upper, c in zip(self.buckets, counts, strict=True):
                cumulative += c
                le = f'le="{_num(upper)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {cumulative}")
            lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, _INF)} {n}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_num(total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {n}")
        return lines


class RateMeter:
    """Amount per second over a sliding window (tokens/s, audio seconds/s)."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._events: deque[tuple[float, float]] = deque()
        self._total = 0.0
        self._lock = threading.Lock()

    def add(self, amount: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._events.append((now, amount))
            self._total += amount
            self._trim(now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            return self._total / self.window

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window:
            self._total -= self._events.popleft()[1]


class Metrics:
    """Every metric the server exports. Gauges of queue state read ``state()`` at scrape time."""

    def __init__(self, state: Callable[[], dict[str, float]] | None = None) -> None:
        self._state = state or (lambda: {})
        self.tokens_rate = RateMeter()
        self.audio_rate = RateMeter()
        self.requests = Counter(
            "mimo_audio_requests_total", "HTTP requests by endpoint and status code", ("endpoint", "status")
        )
        self.rejected = Counter(
            "mimo_audio_rejected_total", "requests refused or ended early, by reason", ("reason",)
        )
        self.tokens = Counter(
            "mimo_audio_generated_tokens_total", "generated patches (one text token, maybe one speech patch)"
        )
        self.audio_seconds = Counter(
            "mimo_audio_generated_audio_seconds_total", "seconds of speech generated (25 Hz frames / 25)"
        )
        self.steps = Counter("mimo_audio_engine_steps_total", "engine steps run")
        self.latency = Histogram(
            "mimo_audio_request_duration_seconds",
            "time from request arrival to the last byte of the response",
            LATENCY_BUCKETS,
            ("endpoint",),
        )
        self.first_chunk = Histogram(
            "mimo_audio_time_to_first_chunk_seconds",
            "time from request arrival to the first streamed text or audio chunk",
            LATENCY_BUCKETS,
            ("endpoint",),
        )
        self.queue_wait = Histogram(
            "mimo_audio_queue_wait_seconds", "time a request waited before joining the batch", LATENCY_BUCKETS
        )
        self.step_time = Histogram(
            "mimo_audio_step_duration_seconds", "duration of one engine step", STEP_BUCKETS
        )
        self.batch_size = Histogram(
            "mimo_audio_step_batch_size", "active requests per engine step", BATCH_BUCKETS
        )
        self.gauges = [
            Gauge(
                "mimo_audio_queue_depth",
                "requests waiting for a batch slot",
                lambda: self._read("queue_depth"),
            ),
            Gauge(
                "mimo_audio_active_batch_size", "requests in the running batch", lambda: self._read("active")
            ),
            Gauge("mimo_audio_max_batch_size", "batch slots of the engine", lambda: self._read("max_batch")),
            Gauge("mimo_audio_max_queue_depth", "queue bound (429 beyond)", lambda: self._read("max_queue")),
            Gauge(
                "mimo_audio_tokens_per_second",
                "generated patches per second (10 s window)",
                self.tokens_rate.rate,
            ),
            Gauge(
                "mimo_audio_audio_seconds_per_second",
                "seconds of speech generated per second (10 s window)",
                self.audio_rate.rate,
            ),
            Gauge("mimo_audio_scheduler_up", "1 while the scheduler thread runs", lambda: self._read("up")),
        ]

    def _read(self, key: str) -> float:
        return float(self._state().get(key, 0.0))

    def bind(self, state: Callable[[], dict[str, float]]) -> None:
        self._state = state

    def record_step(self, seconds: float, batch: int, tokens: int, audio_seconds: float) -> None:
        now = time.monotonic()
        self.steps.inc()
        self.step_time.observe(seconds)
        self.batch_size.observe(batch)
        self.tokens.inc(tokens)
        self.tokens_rate.add(tokens, now)
        if audio_seconds:
            self.audio_seconds.inc(audio_seconds)
            self.audio_rate.add(audio_seconds, now)

    def render(self) -> str:
        lines: list[str] = []
        for m in (
            *self.gauges,
            self.requests,
            self.rejected,
            self.tokens,
            self.audio_seconds,
            self.steps,
            self.latency,
            self.first_chunk,
            self.queue_wait,
            self.step_time,
            self.batch_size,
        ):
            lines += m.render()
        return "\n".join(lines) + "\n"
