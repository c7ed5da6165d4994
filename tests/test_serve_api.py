"""The HTTP server with the official ``openai`` client against a live server on loopback (fixture
checkpoints): speech whole and streamed, transcriptions, chat with audio in and out, voices,
models, health, metrics, and cancellation when a client disconnects."""

from __future__ import annotations

import base64
import io
import json
import re
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from openai import OpenAI

from mimo_audio import MimoAudio
from mimo_audio.serve import BackgroundServer, ServerConfig

from conftest import PARITY_DIR, clip_path

STEPS = 10  # generated patches per test request


@pytest.fixture(scope="module")
def server():
    model = MimoAudio.from_pretrained(
        PARITY_DIR / "model",
        PARITY_DIR / "tokenizer",
        device="cpu",
        progress=False,
        max_batch=8,
        max_len=1024,
    )
    config = ServerConfig(model_id="mimo-test", max_new_steps=600, voices={"bob": str(clip_path("speech_b"))})
    with BackgroundServer(model, config) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def wav_b64(name: str = "speech_a") -> str:
    return base64.b64encode(clip_path(name).read_bytes()).decode()


def decode(data: bytes) -> tuple[np.ndarray, int]:
    wav, rate = sf.read(io.BytesIO(data), dtype="float32")
    return wav, rate


def metric(url: str, line: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    m = re.search(rf"^{re.escape(line)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["mimo-test"]
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["max_batch"] == 8


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
def test_speech_whole(client, fmt):
    res = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="Hello there.",
        response_format=fmt,
        extra_body={"max_new_steps": STEPS},
    )
    wav, rate = decode(res.content)
    assert rate in (24000, 48000) and wav.ndim == 1 and wav.size > 0


def test_speech_pcm_streamed_matches_whole_wav(client):
    body = {"max_new_steps": 24, "seed": 7, "temperature": 0}
    whole = client.audio.speech.create(
        model="m", voice="alloy", input="Streaming test.", response_format="wav", extra_body=body
    )
    ref, _ = decode(whole.content)
    chunks = []
    with client.audio.speech.with_streaming_response.create(
        model="m", voice="alloy", input="Streaming test.", response_format="pcm", extra_body=body
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        for chunk in response.iter_bytes():
            chunks.append(chunk)
    pcm = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32) / 32767
    assert pcm.size == ref.size
    assert np.abs(pcm - ref).max() <= 2e-3  # the streaming decoder ≈ the offline one (~4e-4 seen), int16


def test_speech_sse_events(server):
    body = {
        "input": "Hi.",
        "voice": "default",
        "response_format": "pcm",
        "stream_format": "sse",
        "max_new_steps": STEPS,
    }
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] >= 1
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert len(audio) > 0 and len(audio) % 2 == 0


def test_speech_wav_stream_has_open_header(server):
    body = {"input": "Hi.", "response_format": "wav", "stream": True, "max_new_steps": STEPS}
    data = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=60).content
    assert data[:4] == b"RIFF" and data[40:44] == b"\xff\xff\xff\xff" and len(data) > 44


def test_speech_speed_changes_duration(client):
    body = {"max_new_steps": 24, "seed": 3, "temperature": 0}
    lengths = {}
    for speed in (1.0, 2.0):
        res = client.audio.speech.create(
            model="m", voice="alloy", input="Speed.", response_format="wav", speed=speed, extra_body=body
        )
        lengths[speed] = decode(res.content)[0].size
    assert abs(lengths[2.0] / lengths[1.0] - 0.5) < 0.05


def test_named_and_uploaded_voices(client, server):
    res = client.audio.speech.create(
        model="m",
        voice="bob",
        input="Hi.",
        instructions="Cheerful.",
        response_format="wav",
        extra_body={"max_new_steps": STEPS},
    )
    assert decode(res.content)[0].size > 0
    with open(clip_path("speech_c"), "rb") as f:
        voice = client.audio.voices.create(audio_sample=f, consent="cons_test", name="carol")
    assert voice.id.startswith("voice_") and voice.name == "carol"
    res = client.audio.speech.create(
        model="m",
        voice={"id": voice.id},
        input="Hi.",
        response_format="wav",
        extra_body={"max_new_steps": STEPS},
    )
    assert decode(res.content)[0].size > 0
    names = [v["name"] for v in httpx.get(f"{server.url}/v1/audio/voices").json()["data"]]
    assert names == ["bob", "carol"] or sorted(names) == ["bob", "carol"]
    assert httpx.delete(f"{server.url}/v1/audio/voices/{voice.id}").json()["deleted"] is True


def test_transcription_formats(client):
    with open(clip_path("speech_a"), "rb") as f:
        res = client.audio.transcriptions.create(
            model="whisper-1", file=f, extra_body={"max_new_steps": STEPS}
        )
    assert isinstance(res.text, str) and res.usage.seconds == pytest.approx(3.458, abs=0.01)
    with open(clip_path("speech_a"), "rb") as f:
        text = client.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="text", extra_body={"max_new_steps": STEPS}
        )
    assert isinstance(text, str)
    with open(clip_path("speech_a"), "rb") as f:
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            language="en",
            extra_body={"max_new_steps": STEPS},
        )
    assert verbose.language == "en" and verbose.duration == pytest.approx(3.458, abs=0.01)
    assert verbose.segments[0].end == verbose.duration


def test_transcription_stream(client):
    with open(clip_path("speech_a"), "rb") as f:
        events = list(
            client.audio.transcriptions.create(
                model="gpt-4o-transcribe", file=f, stream=True, extra_body={"max_new_steps": STEPS}
            )
        )
    assert events[-1].type == "transcript.text.done"
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert deltas.strip() == events[-1].text.strip()


def test_chat_audio_in_text_out(client):
    res = client.chat.completions.create(
        model="m",
        max_completion_tokens=STEPS,
        messages=[
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}}],
            }
        ],
    )
    msg = res.choices[0].message
    assert isinstance(msg.content, str) and msg.audio is None
    assert res.usage.completion_tokens <= STEPS and res.choices[0].finish_reason in ("stop", "length")


def test_chat_audio_in_audio_out_and_follow_up(client):
    user = {
        "role": "user",
        "content": [{"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}}],
    }
    res = client.chat.completions.create(
        model="m",
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
        max_tokens=STEPS,
        messages=[{"role": "system", "content": "Be brief."}, user],
    )
    audio = res.choices[0].message.audio
    wav, rate = decode(base64.b64decode(audio.data))
    assert (
        rate == 24000
        and wav.size > 0
        and isinstance(audio.transcript, str)
        and audio.expires_at > time.time()
    )
    follow = client.chat.completions.create(
        model="m",
        modalities=["text", "audio"],
        audio={"voice": "bob", "format": "mp3"},
        max_tokens=STEPS,
        messages=[
            user,
            {"role": "assistant", "audio": {"id": audio.id}},
            {"role": "user", "content": "And then?"},
        ],
    )
    assert decode(base64.b64decode(follow.choices[0].message.audio.data))[0].size > 0


def test_chat_streamed_audio(client):
    stream = client.chat.completions.create(
        model="m",
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "pcm16"},
        max_tokens=STEPS,
        stream=True,
        stream_options={"include_usage": True},
        messages=[
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}}],
            }
        ],
    )
    pcm, transcript, finish, usage = b"", "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            audio = choice.delta.audio
            if audio is not None:
                pcm += base64.b64decode(audio.data) if audio.data else b""
                transcript += audio.transcript or ""
            finish = choice.finish_reason or finish
    assert len(pcm) > 0 and len(pcm) % 2 == 0
    assert finish in ("stop", "length") and usage.completion_tokens <= STEPS
    assert isinstance(transcript, str)


def test_chat_text_stream(client):
    stream = client.chat.completions.create(
        model="m", max_tokens=STEPS, stream=True, messages=[{"role": "user", "content": "Hello?"}]
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_metrics_after_requests(server, client):
    client.audio.speech.create(
        model="m", voice="alloy", input="Hi.", response_format="pcm", extra_body={"max_new_steps": 4}
    )
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "mimo_audio_queue_depth",
        "mimo_audio_active_batch_size",
        "mimo_audio_tokens_per_second",
        "mimo_audio_audio_seconds_per_second",
        "mimo_audio_request_duration_seconds_bucket",
        "mimo_audio_time_to_first_chunk_seconds_bucket",
        "mimo_audio_step_duration_seconds_count",
    ):
        assert name in text, name
    assert metric(server.url, 'mimo_audio_requests_total{endpoint="speech",status="200"}') >= 1
    assert metric(server.url, "mimo_audio_generated_tokens_total") > 0


def _wait_idle(url: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/health").json()
        if health["active"] == 0 and health["queue_depth"] == 0:
            return health
        time.sleep(0.05)
    raise AssertionError(f"requests still running: {health}")


def test_disconnect_cancels_streamed_request(server):
    cancelled = metric(server.url, 'mimo_audio_rejected_total{reason="cancelled"}')
    body = {"input": "A long one.", "response_format": "pcm", "max_new_steps": 600, "min_new_steps": 600}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert httpx.get(f"{server.url}/health").json()["active"] == 1
    _wait_idle(server.url)
    assert metric(server.url, 'mimo_audio_rejected_total{reason="cancelled"}') == cancelled + 1


def test_disconnect_cancels_whole_request(server):
    cancelled = metric(server.url, 'mimo_audio_rejected_total{reason="cancelled"}')
    body = {"input": "A long one.", "response_format": "wav", "max_new_steps": 600, "min_new_steps": 600}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=httpx.Timeout(10, read=0.3))
    _wait_idle(server.url)
    assert metric(server.url, 'mimo_audio_rejected_total{reason="cancelled"}') == cancelled + 1
