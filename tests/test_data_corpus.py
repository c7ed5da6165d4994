"""Synthetic recordings for the data-pipeline tests (espeak-ng speech, sox/ffmpeg noise and codecs).

``dialogue`` writes a 16 kHz wav of two espeak voices taking turns, separated by silence and
low-level noise, with its truth (turn times in seconds, speaker, text) and a
``<stem>.transcript.json`` sidecar holding that truth (what the ``sidecar`` backends read).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

RATE = 16000
VOICES = {"A": ("en-us", "20"), "B": ("en-gb+f2", "90")}  # low male / high female: separable
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "She sells sea shells by the sea shore every single summer morning.",
    "A journey of a thousand miles begins with a single careful step forward.",
    "Peter Piper picked a peck of pickled peppers from the garden today.",
    "Every morning the baker opens his small shop before the sun comes up.",
    "The children played football in the park until it started to rain.",
]

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("espeak-ng", "sox", "ffmpeg")), reason="needs espeak-ng, sox and ffmpeg"
)


def speak(text: str, speaker: str, tmp: Path) -> np.ndarray:
    """espeak-ng speech, float32 ``[samples]`` at 16 kHz, leading/trailing silence trimmed."""
    voice, pitch = VOICES[speaker]
    path = tmp / "_speak.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-p", pitch, "-w", str(path), text], check=True)
    wav, rate = sf.read(path, dtype="float32")
    wav = soxr.resample(wav, rate, RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(wav) > 0.01)
    return wav[loud[0] : loud[-1] + 1] * 0.5


def dialogue(
    folder: Path,
    name: str,
    turns: list[tuple[str, str]],
    gap: float = 1.2,
    noise: float = 0.003,
    seed: int = 0,
) -> list[dict]:
    """Write ``folder/name.wav`` (+ sidecar) of ``turns`` ``[(speaker, text)]``; returns the truth."""
    rng = np.random.default_rng(seed)
    parts, truth, t = [], [], 0.0

    def pause(seconds: float) -> None:
        nonlocal t
        n = int(seconds * RATE)
        quiet = np.zeros(n, np.float32)
        burst = slice(n // 3, 2 * n // 3)  # the middle third of a pause holds noise
        quiet[burst] = rng.normal(0, noise, burst.stop - burst.start)
        parts.append(quiet)
        t += seconds

    pause(0.6)
    for speaker, text in turns:
        wav = speak(text, speaker, folder)
        truth.append(
            {"start": round(t, 3), "end": round(t + len(wav) / RATE, 3), "speaker": speaker, "text": text}
        )
        parts.append(wav + rng.normal(0, noise, len(wav)).astype(np.float32))
        t += len(wav) / RATE
        pause(gap)
    sf.write(folder / f"{name}.wav", np.concatenate(parts), RATE, subtype="PCM_16")
    (folder / f"{name}.transcript.json").write_text(json.dumps(truth))
    (folder / "_speak.wav").unlink()
    return truth


def monologue(folder: Path, name: str, sentences: int = 8) -> float:
    """One speaker reading ``sentences`` sentences with 0.15 s pauses (one long VAD region); returns seconds."""
    parts = []
    for i in range(sentences):
        parts += [speak(SENTENCES[i % len(SENTENCES)], "A", folder), np.zeros(int(0.15 * RATE), np.float32)]
    wav = np.concatenate(parts)
    sf.write(folder / f"{name}.wav", wav, RATE, subtype="PCM_16")
    (folder / f"{name}.txt").write_text(" ".join(SENTENCES[i % len(SENTENCES)] for i in range(sentences)))
    (folder / "_speak.wav").unlink()
    return len(wav) / RATE


def noise_only(folder: Path, name: str) -> None:
    """Three seconds of pink noise and a hum: no speech."""
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            str(RATE),
            "-b",
            "16",
            str(folder / f"{name}.wav"),
            *"synth 3 pinknoise vol 0.2".split(),
        ],
        check=True,
    )


def encode(src: Path, dst: Path, *codec: str) -> None:
    """Re-encode with ffmpeg (e.g. ``-c:a libmp3lame -b:a 8k``)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *codec, str(dst)], check=True)


def corpus(folder: Path) -> dict[str, list[dict]]:
    """A small mixed input folder; returns the dialogue truths by file stem."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {
        "talk": dialogue(folder, "talk", [("A", SENTENCES[0]), ("B", SENTENCES[1]), ("A", SENTENCES[2])]),
    }
    noise_only(folder, "hiss")
    encode(folder / "talk.wav", folder / "talk_low.c2", *"-ar 8000 -ac 1 -c:a libcodec2 -mode 1200".split())
    encode(folder / "talk.wav", folder / "talk_8k.mp3", "-c:a", "libmp3lame", "-b:a", "8k")
    (folder / "talk_8k.transcript.json").write_text((folder / "talk.transcript.json").read_text())
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    return truth


@needs_tools
def test_dialogue_truth_matches_audio(tmp_path):
    truth = dialogue(tmp_path, "d", [("A", SENTENCES[0]), ("B", SENTENCES[1])], gap=1.0)
    info = sf.info(tmp_path / "d.wav")
    assert info.samplerate == RATE
    assert truth[0]["start"] == pytest.approx(0.6) and truth[1]["start"] > truth[0]["end"] + 0.99
    assert info.duration == pytest.approx(truth[-1]["end"] + 1.0, abs=0.01)
    assert json.loads((tmp_path / "d.transcript.json").read_text()) == truth
