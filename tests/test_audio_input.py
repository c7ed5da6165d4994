"""Bad input through the API and the CLI: a clear one-line error, non-zero exit, no traceback, no
partial output. Also the accepted variants: stereo (down-mixed), other rates (resampled), arrays."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from safetensors.torch import load_file, save_file

from mimo_audio import AudioTokenizer
from mimo_audio.cli import main
from mimo_audio.errors import AudioInputError, CheckpointError, MimoAudioError

from conftest import CLIPS, PARITY_DIR, clip_path

TOKENIZER = PARITY_DIR / "tokenizer"
CLIP = clip_path(next(iter(CLIPS)))


@pytest.fixture(scope="module")
def tok() -> AudioTokenizer:
    return AudioTokenizer.from_pretrained(TOKENIZER)


@pytest.fixture(scope="module")
def mono() -> np.ndarray:
    wav, rate = sf.read(str(CLIP), dtype="float32")
    assert rate == 24000
    return wav


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


def _assert_one_line(rc: int, err: str, fragment: str) -> None:
    assert rc == 2
    assert err.startswith("mimo-audio: error:") and err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err


# ----------------------------------------------------------------------------- audio files


def _bad_files(tmp_path, mono) -> dict[str, tuple[str, str]]:
    """name → (path, expected message fragment)"""
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 24000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage that is not audio" * 10)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(CLIP.read_bytes()[:30])
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    return {
        "empty": (str(empty), "empty"),
        "corrupt": (str(corrupt), "cannot decode"),
        "truncated": (str(truncated), "cannot decode"),
        "missing": (str(tmp_path / "missing.wav"), "no such file"),
        "directory": (str(folder), "is a directory"),
    }


@pytest.mark.parametrize("case", ["empty", "corrupt", "truncated", "missing", "directory"])
def test_bad_audio_files(case, tmp_path, tok, mono, capsys):
    path, fragment = _bad_files(tmp_path, mono)[case]
    with pytest.raises(AudioInputError, match=fragment) as err:
        tok.encode(path)
    assert "\n" not in str(err.value)
    out = tmp_path / "out"
    rc, msg = _cli(["tokenize", "--tokenizer", str(TOKENIZER), path, "--out", str(out)], capsys)
    _assert_one_line(rc, msg, fragment)
    assert not out.exists()
    rc, msg = _cli(["reconstruct", "--tokenizer", str(TOKENIZER), path, str(tmp_path / "r.wav")], capsys)
    _assert_one_line(rc, msg, fragment)
    assert not (tmp_path / "r.wav").exists()


@pytest.mark.parametrize(
    ("audio", "fragment"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.1, np.nan] * 1000, np.float32), "NaN"),
        (torch.tensor([0.0, float("inf")] * 1000), "NaN or infinite"),
        (np.zeros(100, np.float32), "too short"),
        (np.zeros((3, 4, 5), np.float32), "expected [samples]"),
        ("not a file.wav", "no such file"),
        (12345, "expected a path"),
    ],
)
def test_bad_audio_arrays(audio, fragment, tok):
    for call in (tok.encode, tok.mel, lambda a: tok.encode_batch([a])):
        with pytest.raises(MimoAudioError) as err:
            call(audio)
        assert fragment in str(err.value) and "\n" not in str(err.value)


def test_encode_batch_needs_a_list(tok, mono):
    with pytest.raises(MimoAudioError, match="list of clips"):
        tok.encode_batch(mono)


def test_stereo_file_is_downmixed(tmp_path, tok, mono):
    other = np.roll(mono, 1000) * 0.5
    stereo = tmp_path / "stereo.wav"
    sf.write(str(stereo), np.stack([mono, other], axis=1), 24000, subtype="FLOAT")
    mixed = (mono + other) / 2
    assert torch.equal(tok.encode(stereo), tok.encode(mixed))
    # arrays [channels, samples] are averaged the same way
    assert torch.equal(tok.encode(np.stack([mono, other])), tok.encode(mixed))


@pytest.mark.parametrize("rate", [16000, 44100])
def test_other_sample_rates_are_resampled(rate, tmp_path, tok, mono):
    resampled = soxr.resample(mono, 24000, rate, quality="VHQ").astype(np.float32)
    path = tmp_path / f"r{rate}.wav"
    sf.write(str(path), resampled, rate, subtype="FLOAT")
    from_file = tok.encode(path)
    from_array = tok.encode(resampled, sample_rate=rate)
    assert torch.equal(from_file, from_array)
    assert abs(from_file.shape[1] - tok.encode(mono).shape[1]) <= 1
    assert tok.mel(path).shape[0] == pytest.approx(tok.mel(mono).shape[0], abs=2)


def test_int16_arrays_are_scaled(tok, mono):
    pcm = np.round(mono * 32767).astype(np.int16)
    assert torch.equal(tok.encode(pcm), tok.encode(pcm.astype(np.float32) / 32768))


def test_over_long_audio_with_a_small_limit(tmp_path, mono, capsys):
    limited = AudioTokenizer.from_pretrained(TOKENIZER, max_seconds=1.0)
    with pytest.raises(AudioInputError, match="over the limit"):
        limited.encode(CLIP)
    with pytest.raises(AudioInputError, match="over the limit"):
        limited.encode(mono)
    out = tmp_path / "o.safetensors"
    argv = ["tokenize", "--tokenizer", str(TOKENIZER), str(CLIP), "--out", str(out), "--max-seconds", "1"]
    _assert_one_line(*_cli(argv, capsys), "over the limit")
    assert not out.exists()


# ----------------------------------------------------------------------------- checkpoints


def _checkpoint(tmp_path, edit_state=None, edit_config=None, truncate=False):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    config = json.loads((TOKENIZER / "config.json").read_text())
    if edit_config:
        edit_config(config)
    (folder / "config.json").write_text(json.dumps(config))
    if truncate:
        data = (TOKENIZER / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    else:
        state = load_file(str(TOKENIZER / "model.safetensors"))
        if edit_state:
            edit_state(state)
        save_file(state, str(folder / "model.safetensors"))
    return folder


def _drop_key(state):
    del state["encoder.quantizer.vq.layers.0._codebook.embed_avg"]


def _extra_key(state):
    state["encoder.extra.weight"] = torch.zeros(3)


def _wider(config):
    config["d_model"] = config["d_model"] * 2


CHECKPOINT_CASES = {
    "truncated": (dict(truncate=True), "truncated or not a safetensors file"),
    "missing key": (
        dict(edit_state=_drop_key),
        "missing weights: encoder.quantizer.vq.layers.0._codebook.embed_avg",
    ),
    "unexpected key": (dict(edit_state=_extra_key), "unexpected weights: encoder.extra.weight"),
    "mismatched config": (dict(edit_config=_wider), "do not match config.json"),
    "bad config": (dict(edit_config=lambda c: c.update(codebook_size="x")), "codebook_size"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_bad_checkpoints(case, tmp_path, capsys):
    kwargs, fragment = CHECKPOINT_CASES[case]
    folder = _checkpoint(tmp_path, **kwargs)
    with pytest.raises(CheckpointError, match=fragment) as err:
        AudioTokenizer.from_pretrained(folder)
    assert "\n" not in str(err.value)
    out = tmp_path / "out.wav"
    rc, msg = _cli(["reconstruct", "--tokenizer", str(folder), str(CLIP), str(out)], capsys)
    _assert_one_line(rc, msg, fragment)
    assert not out.exists()


def test_missing_checkpoint_parts(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="not found"):
        AudioTokenizer.from_pretrained(tmp_path / "nowhere")
    folder = tmp_path / "noweights"
    folder.mkdir()
    shutil.copy(TOKENIZER / "config.json", folder / "config.json")
    with pytest.raises(CheckpointError, match="neither model.safetensors"):
        AudioTokenizer.from_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        AudioTokenizer.from_pretrained(folder)


def test_sharded_checkpoint_loads(tmp_path, tok):
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(TOKENIZER / "config.json", folder / "config.json")
    state = load_file(str(TOKENIZER / "model.safetensors"))
    keys = sorted(state)
    half = len(keys) // 2
    shards = {
        "model-00001-of-00002.safetensors": keys[:half],
        "model-00002-of-00002.safetensors": keys[half:],
    }
    weight_map = {}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, str(folder / name))
        weight_map.update(dict.fromkeys(names, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    sharded = AudioTokenizer.from_pretrained(folder)
    assert torch.equal(sharded.encode(CLIP), tok.encode(CLIP))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"dtype": "int8"}, "unsupported dtype"), ({"device": "nonsense"}, "invalid device")],
)
def test_bad_device_or_dtype(kwargs, fragment):
    with pytest.raises(MimoAudioError, match=fragment):
        AudioTokenizer.from_pretrained(TOKENIZER, **kwargs)


def _past_codebook_2(sizes):
    return torch.cat([torch.zeros(2, 5, dtype=torch.long), torch.full((1, 5), sizes[2])])


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda sizes: torch.zeros(8, 5), "must be integers"),
        (lambda sizes: torch.zeros(5, dtype=torch.long), "codebooks, frames"),
        (lambda sizes: torch.zeros(len(sizes) + 1, 5, dtype=torch.long), "codebooks, frames"),
        (lambda sizes: torch.full((8, 5), -1), "codebook 0"),
        (_past_codebook_2, "codebook 2"),
        (lambda sizes: "codes", "tensor or array"),
    ],
)
def test_bad_codes(make, fragment, tok):
    codes = make(tok.config.codebook_sizes)
    for call in (tok.decode, tok.decode_chunked, tok.dequantize):
        with pytest.raises(MimoAudioError, match=fragment):
            call(codes)


def test_zero_frames_decode_to_empty(tok):
    assert tok.decode(torch.zeros(8, 0, dtype=torch.long)).numel() == 0
    assert tok.decode_chunked(torch.zeros(8, 0, dtype=torch.long)).numel() == 0
