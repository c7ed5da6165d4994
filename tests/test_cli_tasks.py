"""End-to-end CLI tests for every task subcommand and the seed-style commands, on the parity checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mimo_audio.cli import main

from conftest import PARITY_DIR, clip_path

MODEL = ["--model", str(PARITY_DIR / "model"), "--tokenizer", str(PARITY_DIR / "tokenizer"), "--quiet"]
SHORT = ["--max-new-steps", "8", "--seed", "0"]
CLIPS = [clip_path(c) for c in ("speech_a", "speech_b", "speech_c")]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([*argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_wav(path: Path, max_seconds: float) -> None:
    info = sf.info(str(path))
    assert info.samplerate == 24000 and info.channels == 1
    assert 0 < info.duration <= max_seconds
    data, _ = sf.read(str(path))
    assert np.isfinite(data).all()


@pytest.fixture()
def examples_dir(tmp_path: Path) -> Path:
    d = tmp_path / "examples"
    d.mkdir()
    shutil.copy(CLIPS[0], d / "one_input.wav")
    shutil.copy(CLIPS[1], d / "one_output.wav")
    (d / "one_output.txt").write_text("A raging fire was in his eyes.", encoding="utf-8")
    shutil.copy(CLIPS[1], d / "two_input.wav")
    shutil.copy(CLIPS[2], d / "two_output.wav")
    return d


def test_asr_json(capsys):
    rc, out, _ = run(capsys, "asr", str(CLIPS[0]), str(CLIPS[1]), *MODEL, *SHORT, "--json")
    assert rc == 0
    records = json.loads(out)
    assert [r["input"] for r in records] == [str(CLIPS[0]), str(CLIPS[1])]
    assert all(isinstance(r["text"], str) and r["steps"] <= 8 for r in records)


def test_tts_and_instruct_tts(capsys, tmp_path):
    out = tmp_path / "a.wav"
    rc, stdout, _ = run(capsys, "tts", "Hello world.", "--out", str(out), *MODEL, *SHORT, "--json")
    assert rc == 0 and json.loads(stdout)["audio"] == str(out)
    assert_wav(out, max_seconds=8 * 0.16 + 1.0)
    out2 = tmp_path / "b.wav"
    rc, _, _ = run(
        capsys,
        "tts",
        "Hello.",
        "--instruction",
        "calm",
        "--voice",
        str(CLIPS[1]),
        "--out",
        str(out2),
        *MODEL,
        *SHORT,
    )
    assert rc == 0
    assert_wav(out2, max_seconds=2.3)


def test_continue(capsys, tmp_path):
    out = tmp_path / "c.wav"
    rc, _, _ = run(
        capsys, "continue", str(CLIPS[0]), "--seconds", "0.5", "--out", str(out), *MODEL, "--seed", "1"
    )
    assert rc == 0
    assert_wav(out, max_seconds=1.0)


def test_fewshot(capsys, tmp_path, examples_dir):
    out = tmp_path / "f.wav"
    rc, stdout, _ = run(
        capsys, "fewshot", str(CLIPS[2]), "--examples-dir", str(examples_dir), "--preset", "emotion",
        "--out", str(out), *MODEL, *SHORT, "--json",
    )  # fmt: skip
    assert rc == 0 and Path(json.loads(stdout)["audio"]) == out
    assert_wav(out, max_seconds=8 * 0.16 + 1.0)


def test_understand_and_chat(capsys, tmp_path):
    rc, out, _ = run(
        capsys, "understand", str(CLIPS[0]), "-q", "What is said?", "--thinking", *MODEL, *SHORT, "--json"
    )
    assert rc == 0 and "text" in json.loads(out)
    rc, out, _ = run(capsys, "chat", "--text", "Hi!", *MODEL, *SHORT, "--json")
    assert rc == 0 and json.loads(out)["audio_seconds"] == 0.0
    reply = tmp_path / "reply.wav"
    rc, out, _ = run(capsys, "chat", "--audio", str(CLIPS[1]), "--out", str(reply), *MODEL, *SHORT, "--json")
    assert rc == 0
    assert_wav(reply, max_seconds=8 * 0.16 + 1.0)


def test_seed_commands(capsys, tmp_path, examples_dir):
    vc = tmp_path / "vc.wav"
    rc, _, _ = run(
        capsys, "run", "--task", "fewshot_vc", "--examples_dir", str(examples_dir), "--target_wav", str(CLIPS[0]),
        "--output", str(vc), *MODEL, *SHORT,
    )  # fmt: skip
    assert rc == 0
    assert_wav(vc, 3.0)
    itts = tmp_path / "itts.wav"
    rc, _, _ = run(
        capsys,
        "run",
        "--task",
        "instruct_tts",
        "--text",
        "Hi there",
        "--instruction",
        "whisper",
        "--out",
        str(itts),
        *MODEL,
        *SHORT,
    )
    assert rc == 0
    assert_wav(itts, 3.0)
    cont = tmp_path / "cont.wav"
    rc, _, _ = run(
        capsys,
        "run",
        "--task",
        "continuation",
        "--prompt",
        str(CLIPS[1]),
        "--length",
        "0.4",
        "--out",
        str(cont),
        *MODEL,
    )
    assert rc == 0
    assert_wav(cont, 1.0)


def _unpaired(d: Path) -> Path:
    (d / "two_output.wav").unlink()
    return d


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["asr", "/no/such.wav"], "no such file"),
        (["tts", "Hi", "--out", "x.txt"], "use a .wav"),
        (["tts", "Hi", "--temperature", "-1", "--out", "{tmp}/t.wav"], "temperature"),
        (["tts", "Hi", "--top-p", "1.5", "--out", "{tmp}/t.wav"], "top_p"),
        (["tts", "Hi", "--max-seconds", "0", "--out", "{tmp}/t.wav"], "--max-seconds must be > 0"),
        (["tts", "word " * 400, "--max-len", "64", "--out", "{tmp}/t.wav"], "patches"),
        (
            ["fewshot", str(CLIPS[0]), "--examples-dir", "{tmp}/empty", "--out", "{tmp}/f.wav"],
            "no <name>_input",
        ),
        (["fewshot", str(CLIPS[0]), "--examples-dir", "{unpaired}", "--out", "{tmp}/f.wav"], "unpaired"),
        (
            [
                "fewshot",
                str(CLIPS[0]),
                "--examples-dir",
                "{examples}",
                "--max-len",
                "64",
                "--out",
                "{tmp}/f.wav",
            ],
            "patches",
        ),
        (["asr", "{tmp}/empty.wav"], "empty"),
        (["asr", "{tmp}/corrupt.wav"], "cannot decode"),
        (["run", "--task", "instruct_tts", "--text", "Hi", "--out", "{tmp}/i.wav"], "needs --instruction"),
        (["asr", str(CLIPS[0]), "--variant", "base"], "Instruct model"),
        (["continue", str(CLIPS[0]), "--variant", "instruct", "--out", "{tmp}/c.wav"], "Base model"),
    ],
)
def test_bad_input(capsys, tmp_path, examples_dir, argv, match):
    (tmp_path / "empty").mkdir()
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), 24000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00not a wav at all")
    subs = {"{tmp}": str(tmp_path), "{examples}": str(examples_dir)}
    if any("{unpaired}" in a for a in argv):
        subs["{unpaired}"] = str(_unpaired(examples_dir))
    args = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        args.append(a)
    rc, out, err = run(capsys, *args, *MODEL)
    assert rc != 0
    lines = [line for line in err.strip().splitlines() if line]
    assert lines and lines[-1].startswith("mimo-audio: error:") and match in lines[-1], err
    assert "Traceback" not in err
    assert not [
        p for p in tmp_path.iterdir() if p.suffix == ".wav" and p.name not in ("empty.wav", "corrupt.wav")
    ]


def test_unknown_task_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "mimo_audio", "run", "--task", "sing", *MODEL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


def test_interactive_chat_in_a_terminal(tmp_path):
    """`mimo-audio chat` with no turns on a terminal: a REPL that keeps the conversation."""
    import os
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a pseudo-terminal
        os.chdir(tmp_path)
        os.execv(sys.executable, [sys.executable, "-m", "mimo_audio", "chat", *MODEL, *SHORT])
    out = b""

    def read_until(marker: bytes, timeout: float = 120.0) -> bytes:
        nonlocal out
        end = time.time() + timeout
        while marker not in out and time.time() < end:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return out

    try:
        assert b"you> " in read_until(b"you> ")
        os.write(fd, b"Hello there\n")
        assert read_until(b"mimo> ").count(b"mimo> ") == 1
        read_until(b"you> ", 60)
        os.write(fd, f"/audio {clip_path('speech_b')}\n".encode())
        assert b"[audio: " in read_until(b"[audio: ")
        os.write(fd, b"/quit\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    assert (tmp_path / "chat_reply_2.wav").is_file()
