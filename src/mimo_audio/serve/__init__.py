"""The OpenAI-compatible HTTP server (``mimo-audio serve``; needs the ``[server]`` extra).

>>> from mimo_audio import MimoAudio
>>> from mimo_audio.serve import ServerConfig, create_app, run_server
>>> run_server(MimoAudio.from_pretrained(model_dir, tokenizer_dir), ServerConfig(), port=8000)

:func:`create_app` builds the FastAPI app around a loaded model; a :class:`Scheduler` thread owns
the model and batches requests continuously. ``mimo_audio.serve.ray_app`` runs the same app on
Ray Serve.
"""

from __future__ import annotations

from .app import APIError, create_app
from .config import ServerConfig, parse_voice_args
from .metrics import Metrics
from .runner import BackgroundServer, free_port, run_server
from .scheduler import Job, QueueFull, Scheduler, SchedulerError, Ticket

__all__ = [
    "APIError",
    "BackgroundServer",
    "Job",
    "Metrics",
    "QueueFull",
    "Scheduler",
    "SchedulerError",
    "ServerConfig",
    "Ticket",
    "create_app",
    "free_port",
    "parse_voice_args",
    "run_server",
]
