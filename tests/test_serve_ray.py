"""The server on Ray Serve: a local Ray instance bound to 127.0.0.1, one replica of the app, answering
a transcription request from the ``openai`` client through Ray's HTTP proxy."""

from __future__ import annotations

import os
import warnings

import pytest
from openai import OpenAI

from mimo_audio.serve import ServerConfig, free_port

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports (no network here)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every Ray process on 127.0.0.1 only
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # Ray's own pydantic-v1-style fields
    import ray
    from ray import serve

    from mimo_audio.serve.ray_app import bind, deployment_options

from conftest import PARITY_DIR, clip_path


@pytest.fixture(scope="module")
def ray_url():
    port = free_port()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        load = {"device": "cpu", "max_batch": 4, "max_len": 512, "progress": False}
        app = bind(
            PARITY_DIR / "model", PARITY_DIR / "tokenizer", load, ServerConfig(max_new_steps=8), replicas=1
        )
        serve.run(app, name="mimo-audio", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_ray_runs_on_loopback_only(ray_url):
    assert ray.util.get_node_ip_address() == "127.0.0.1"


def test_transcription_through_ray_serve(ray_url):
    client = OpenAI(base_url=f"{ray_url}/v1", api_key="unused", max_retries=0, timeout=120)
    with open(clip_path("speech_a"), "rb") as f:
        res = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert isinstance(res.text, str) and res.usage.seconds == pytest.approx(3.458, abs=0.01)
    assert [m.id for m in client.models.list().data] == ["mimo-audio"]


def test_deployment_options():
    cpu = deployment_options({"device": "cpu", "max_batch": 8}, ServerConfig(max_queue=10), replicas=3)
    assert cpu["num_replicas"] == 3 and cpu["ray_actor_options"] == {"num_cpus": 1}
    assert cpu["max_ongoing_requests"] == 26  # batch + queue + slack: the replica answers 429, not Ray
    gpu = deployment_options({"device": "cuda"}, ServerConfig(), replicas=2)
    assert gpu["ray_actor_options"] == {"num_gpus": 1}
    with pytest.raises(ValueError):
        deployment_options({}, ServerConfig(), replicas=0)
