"""Bad requests and limits: OpenAI-style error bodies (400/401/404/405/413/429/504), the API key,
upload and duration limits, paths never read, and failures that stay inside one request."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import torch

from mimo_audio import MimoAudio
from mimo_audio.serve import BackgroundServer, Job, Scheduler, SchedulerError, ServerConfig

from conftest import PARITY_DIR, clip_path

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def load(max_batch: int = 4) -> MimoAudio:
    return MimoAudio.from_pretrained(
        PARITY_DIR / "model",
        PARITY_DIR / "tokenizer",
        device="cpu",
        progress=False,
        max_batch=max_batch,
        max_len=2048,
    )


@pytest.fixture(scope="module")
def model() -> MimoAudio:
    return load()


@pytest.fixture(scope="module")
def spare() -> MimoAudio:
    """A second model for tests that run their own scheduler while ``server`` owns ``model``."""
    return load()


@pytest.fixture(scope="module")
def server(model):
    config = ServerConfig(api_key=KEY, max_new_steps=16, max_upload_bytes=120_000, max_audio_seconds=2.0)
    with BackgroundServer(model, config) as srv:
        yield srv


def tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def check_error(r: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def post(server, path: str, **kw) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", headers={**AUTH, **kw.pop("headers", {})}, timeout=60, **kw)


# ---------------------------------------------------------------------------- API key
def test_api_key_required(server):
    body = {"input": "Hi.", "voice": "alloy", "response_format": "wav"}
    check_error(httpx.post(f"{server.url}/v1/audio/speech", json=body), 401, code="invalid_api_key")
    r = httpx.post(f"{server.url}/v1/audio/speech", json=body, headers={"Authorization": "Bearer wrong"})
    assert (
        check_error(r, 401)["type"] == "invalid_request_error" and r.headers["www-authenticate"] == "Bearer"
    )
    check_error(httpx.get(f"{server.url}/metrics"), 401)
    check_error(httpx.get(f"{server.url}/v1/models"), 401)
    assert httpx.get(f"{server.url}/health").status_code == 200  # open, for load balancers
    assert post(server, "/v1/audio/speech", json=body).status_code == 200


def test_openai_client_raises_authentication_error(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        client.models.list()
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"


def test_api_key_from_environment(monkeypatch):
    monkeypatch.setenv("MIMO_AUDIO_API_KEY", "from-env")
    assert ServerConfig().api_key == "from-env"
    assert ServerConfig(api_key="flag").api_key == "flag"


# ---------------------------------------------------------------------------- validation → 400
@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"voice": "alloy"}, "input", "missing_required_parameter"),
        ({"input": ""}, "input", "invalid_value"),
        ({"input": "x", "speed": 9}, "speed", "invalid_value"),
        ({"input": "x", "response_format": "ogg"}, "response_format", "invalid_value"),
        ({"input": "x", "response_format": "aac"}, "response_format", None),
        ({"input": "x", "response_format": "mp3", "stream_format": "sse"}, "response_format", None),
        ({"input": "x", "voice": "nobody"}, "voice", "invalid_voice"),
        ({"input": "x", "voice": {"id": "voice_missing"}}, "voice", "invalid_voice"),
        ({"input": "x", "voice": str(clip_path("speech_a"))}, "voice", "invalid_voice"),  # never a path
        ({"input": "x" * 5000}, "input", None),
        ({"input": "x", "seed": -1}, "seed", "invalid_value"),
    ],
)
def test_speech_bad_requests(server, body, param, code):
    check_error(post(server, "/v1/audio/speech", json=body), 400, param, code)


def test_invalid_json(server):
    r = post(server, "/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"})
    check_error(r, 400)


def test_transcription_bad_requests(server):
    files = {"file": ("a.wav", tone(0.5), "audio/wav")}
    check_error(post(server, "/v1/audio/transcriptions", data={"model": "whisper-1"}), 400, "file")
    r = post(server, "/v1/audio/transcriptions", files=files, data={"response_format": "srt"})
    check_error(r, 400, "response_format")
    garbage = {"file": ("../../etc/passwd", b"RIFF\x00\x00\x00\x00WAVEjunk" * 10, "audio/wav")}
    check_error(post(server, "/v1/audio/transcriptions", files=garbage), 400, "file", "invalid_audio")
    empty = {"file": ("a.wav", b"", "audio/wav")}
    check_error(post(server, "/v1/audio/transcriptions", files=empty), 400, "file", "invalid_audio")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"]}, "audio"),
        ({"messages": [{"role": "tool", "content": "hi"}]}, "messages.0.role"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "/etc/passwd"}}],
                    }
                ]
            },
            "messages.0.content.0.input_audio",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "modalities": ["text", "audio"],
                "audio": {"voice": "alloy", "format": "mp3"},
                "stream": True,
            },
            "audio.format",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "audio": {"id": "audio_nope"}},
                    {"role": "user", "content": "x"},
                ]
            },
            None,
        ),
    ],
)
def test_chat_bad_requests(server, body, param):
    err = check_error(post(server, "/v1/chat/completions", json={"model": "m", **body}), 400)
    if param is not None:
        assert err["param"] == param


def test_unknown_route_and_method(server):
    assert check_error(httpx.get(f"{server.url}/v1/nothing", headers=AUTH), 404)["type"] == "not_found_error"
    check_error(httpx.get(f"{server.url}/v1/audio/speech", headers=AUTH), 405)
    check_error(httpx.get(f"{server.url}/v1/models/other", headers=AUTH), 404, "model")


# ---------------------------------------------------------------------------- limits → 413
def test_upload_too_large(server):
    files = {"file": ("a.wav", tone(1.9, rate=48000), "audio/wav")}  # ~182 kB > 120 kB
    check_error(post(server, "/v1/audio/transcriptions", files=files), 413, code="payload_too_large")
    b64 = base64.b64encode(tone(1.9, rate=48000)).decode()
    body = {
        "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": b64}}]}]
    }
    check_error(post(server, "/v1/chat/completions", json=body), 413)


def test_audio_too_long(server):
    files = {"file": ("a.wav", tone(3.0, rate=8000), "audio/wav")}  # 48 kB, but 3 s > 2 s
    check_error(post(server, "/v1/audio/transcriptions", files=files), 413, "file", "audio_too_long")


# ---------------------------------------------------------------------------- the server stays up
def test_bad_requests_leave_the_server_serving(server):
    for _ in range(3):
        post(server, "/v1/audio/transcriptions", files={"file": ("x", b"\x00" * 100, "audio/wav")})
        post(server, "/v1/chat/completions", content=b"[")
    r = post(server, "/v1/audio/transcriptions", files={"file": ("a.wav", tone(1.0), "audio/wav")})
    assert r.status_code == 200 and "text" in r.json()
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_queue_full_gives_429_with_retry_after():
    model = load(max_batch=1)
    config = ServerConfig(max_queue=0, max_new_steps=2000)
    with BackgroundServer(model, config) as srv:
        long = {"input": "Long.", "response_format": "pcm", "max_new_steps": 2000, "min_new_steps": 2000}
        with httpx.stream("POST", f"{srv.url}/v1/audio/speech", json=long, timeout=60) as first:
            assert first.status_code == 200
            client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0)
            with pytest.raises(openai.RateLimitError) as e:
                client.audio.speech.create(model="m", voice="alloy", input="Hi.", response_format="wav")
            assert e.value.status_code == 429 and int(e.value.response.headers["retry-after"]) >= 1
            assert e.value.body["code"] == "queue_full" and e.value.body["type"] == "rate_limit_error"
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert 'mimo_audio_rejected_total{reason="queue_full"} 1' in metrics


def test_request_timeout_gives_504(spare):
    config = ServerConfig(request_timeout=0.5, max_new_steps=5000)
    with BackgroundServer(spare, config) as srv:
        long = {"input": "Long.", "response_format": "wav", "max_new_steps": 5000, "min_new_steps": 5000}
        r = httpx.post(f"{srv.url}/v1/audio/speech", json=long, timeout=60)
        check_error(r, 504, code="timeout")
        sse = {**long, "response_format": "pcm", "stream_format": "sse"}
        with httpx.stream("POST", f"{srv.url}/v1/audio/speech", json=sse, timeout=60) as s:
            last = [line for line in s.iter_lines() if line.startswith("data: ")][-1]
        assert '"code": "timeout"' in last
        assert httpx.get(f"{srv.url}/health").json()["active"] == 0


# ---------------------------------------------------------------------------- scheduler isolation
def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_engine_failure_fails_only_the_running_batch(spare, monkeypatch):
    scheduler = Scheduler(spare, max_new_steps=8).start()
    real_step = spare.engine.step
    calls = {"n": 0}

    def flaky_step():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated device error")
        return real_step()

    monkeypatch.setattr(spare.engine, "step", flaky_step)

    async def scenario():
        tickets = [scheduler.submit(Job("tts", {"text": f"Hi {i}."}, {"min_new_steps": 8})) for i in range(2)]
        outcomes = []
        for t in tickets:
            try:
                await t.started()
                outcomes.append(await t.result())
            except SchedulerError as e:
                outcomes.append(e)
        after = scheduler.submit(Job("tts", {"text": "After."}, {}))
        await after.started()
        return outcomes, await after.result()

    try:
        outcomes, after = run(scenario())
    finally:
        scheduler.stop()
    assert all(isinstance(o, SchedulerError) and o.status == 500 for o in outcomes)
    assert after.audio is not None and scheduler.engine.num_active == 0


def test_bad_job_fails_alone(spare):
    scheduler = Scheduler(spare, max_new_steps=4).start()

    async def scenario():
        bad = scheduler.submit(Job("tts", {"text": "   "}, {}))
        worse = scheduler.submit(Job("asr", {"audio": torch.full((100,), float("nan"))}, {}))
        good = scheduler.submit(Job("tts", {"text": "Fine."}, {}))
        errors = []
        for t in (bad, worse):
            with pytest.raises(SchedulerError) as e:
                await t.started()
            errors.append(e.value.status)
        await good.started()
        return errors, await good.result()

    try:
        errors, good = run(scenario())
    finally:
        scheduler.stop()
    assert errors == [400, 400] and good.audio is not None


def test_shutdown_fails_queued_requests(spare):
    scheduler = Scheduler(spare, max_new_steps=2000).start()

    async def scenario():
        t = scheduler.submit(Job("tts", {"text": "Long."}, {"max_new_steps": 2000, "min_new_steps": 2000}))
        await t.started()
        await asyncio.to_thread(scheduler.stop)
        with pytest.raises(SchedulerError) as e:
            await t.result()
        return e.value.status

    assert run(scenario()) == 503
    assert not scheduler.alive and spare.engine.num_active == 0


# ---------------------------------------------------------------------------- the serve/demo commands
def test_commands_without_their_extras_fail_in_one_line(monkeypatch, capsys):
    import importlib.util

    from mimo_audio.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("fastapi", "gradio") else real(name, *a),
    )
    model, tok = str(PARITY_DIR / "model"), str(PARITY_DIR / "tokenizer")
    assert main(["serve", "--model", model, "--tokenizer", tok]) == 2
    assert main(["demo", "--model", model, "--tokenizer", tok]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "mimo-audio: error: this command needs fastapi: pip install 'mimo-audio[server]'",
        "mimo-audio: error: this command needs gradio: pip install 'mimo-audio[ui]'",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--voice", "novoice"], "use NAME=PATH"),
        (["--voice", "x=/nonexistent.wav"], "no such file"),
        (["--voice", "bad name=x.wav"], "letters, digits"),
        (["--max-queue", "-1"], "max_queue"),
    ],
)
def test_serve_command_checks_options_before_loading(capsys, args, message):
    from mimo_audio.cli import main

    assert main(["serve", "--model", "m", "--tokenizer", "t", *args]) == 2
    assert message in capsys.readouterr().err
