"""The same server on Ray Serve: one replica per GPU (or CPU slot), each with its own model and scheduler.

A local Ray instance binds to this machine's network address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
is set before ``ray`` is imported (then every Ray process listens on 127.0.0.1 only);
``mimo-audio serve --ray`` sets it when it starts a local instance for a loopback host.

>>> from ray import serve
>>> serve.run(bind(model_dir, tokenizer_dir, {"device": "cuda"}, ServerConfig(), replicas=2), route_prefix="/")

Ray's HTTP proxy spreads requests over the replicas; each replica batches its share continuously and
answers 429 when its own queue is full.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

from ray import serve

from .config import ServerConfig

log = logging.getLogger("mimo_audio.serve")


@serve.deployment(name="mimo-audio")
@serve.ingress()
class MimoAudioReplica:
    """Loads the model on its replica; the FastAPI app is built after, on the replica too."""

    def __init__(
        self, model_dir: str, tokenizer_dir: str, load: dict[str, Any], config: ServerConfig
    ) -> None:
        from mimo_audio import MimoAudio

        self.model = MimoAudio.from_pretrained(model_dir, tokenizer_dir, **load)
        self.config = config

    def __serve_build_asgi_app__(self):
        from .app import create_app

        return create_app(self.model, self.config)


def deployment_options(load: dict[str, Any], config: ServerConfig, replicas: int = 1) -> dict[str, Any]:
    """Serve options: ``replicas`` copies, one GPU each when the model runs on CUDA, else one CPU; Ray
    lets through every request the replica may hold (batch + queue), so 429s come from the replica."""
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    device = str(load.get("device") or "")
    gpu = device.startswith("cuda") or (not device and _has_cuda())
    in_flight = config.max_queue + int(load.get("max_batch", 8)) + 8
    return {
        "num_replicas": replicas,
        "ray_actor_options": {"num_gpus": 1} if gpu else {"num_cpus": 1},
        "max_ongoing_requests": in_flight,
        "max_queued_requests": in_flight,
    }


def bind(model_dir: str, tokenizer_dir: str, load: dict[str, Any], config: ServerConfig, replicas: int = 1):
    """The Serve application for ``serve.run``."""
    deployment = MimoAudioReplica.options(**deployment_options(load, config, replicas))
    return deployment.bind(str(Path(model_dir).resolve()), str(Path(tokenizer_dir).resolve()), load, config)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_ray(
    model_dir: str,
    tokenizer_dir: str,
    load: dict[str, Any],
    config: ServerConfig,
    *,
    replicas: int = 1,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Start (or join, with ``address``) a Ray cluster and serve until interrupted (Ctrl-C or SIGTERM)."""
    import ray

    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: shut Serve and Ray down
    try:
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False)
        signal.signal(signal.SIGTERM, _interrupt)  # again: Ray may have installed its own
        serve.start(http_options={"host": host, "port": port})
        serve.run(bind(model_dir, tokenizer_dir, load, config, replicas), name="mimo-audio", route_prefix="/")
        log.info("Ray Serve: %d replica(s) on http://%s:%d", replicas, host, port)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
