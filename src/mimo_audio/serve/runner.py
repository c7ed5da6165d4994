"""Running the app with uvicorn: in the foreground (``mimo-audio serve``) or on a background thread
(tests, benchmarks, notebooks)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from .app import create_app
from .config import ServerConfig

log = logging.getLogger("mimo_audio.serve")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def run_server(
    model: Any, config: ServerConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> None:
    """Serve ``model`` (a loaded MimoAudio or a factory of one) until interrupted."""
    if host not in LOOPBACK and not config.api_key:
        log.warning("serving on %s without an API key: anyone who can reach it can use it", host)
    app = create_app(model, config)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """The server on a daemon thread, on loopback: ``with BackgroundServer(model, config) as srv: srv.url``."""

    def __init__(
        self, model: Any, config: ServerConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.host, self.port = host, port or free_port(host)
        self.app = create_app(model, config or ServerConfig())
        cfg = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self._server.run, name="mimo-audio-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
