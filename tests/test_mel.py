"""Log-mel front end: parity with the reference tensors and the filterbank's defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mimo_audio.audio import load_audio
from mimo_audio.checkpoint import read_config
from mimo_audio.errors import AudioInputError
from mimo_audio.tokenizer import TokenizerConfig
from mimo_audio.tokenizer.mel import MelFrontEnd, hz_to_mel, mel_filterbank, num_mel_frames

from conftest import PARITY_DIR, clip_path, tensor_names

MEL_NAMES = tensor_names(".mel")


@pytest.fixture(scope="module")
def config() -> TokenizerConfig:
    return TokenizerConfig.from_dict(read_config(PARITY_DIR / "tokenizer"))


@pytest.fixture(scope="module")
def front_end(config) -> MelFrontEnd:
    return MelFrontEnd(config)


def test_fixture_set_has_mels():
    assert MEL_NAMES


@pytest.mark.parametrize("name", MEL_NAMES)
def test_mel_matches_reference(name, front_end, expected_tensors, config):
    wav = load_audio(clip_path(name.removesuffix(".mel")), target_rate=config.sampling_rate)
    mel = front_end(wav)
    expected = expected_tensors[name]
    assert mel.dtype == torch.float32
    assert mel.shape == expected.shape == (num_mel_frames(wav.numel(), config.hop_length), config.n_mels)
    assert (mel - expected).abs().max().item() <= 1e-4


def test_filterbank_properties(config):
    fb = mel_filterbank(config.n_freqs, config.fmin, config.mel_fmax, config.n_mels, config.sampling_rate)
    assert fb.shape == (config.n_freqs, config.n_mels)
    assert fb.min() >= 0
    assert fb.max() <= 1 + 1e-6  # triangles peak at 1: no area normalisation
    # Every filter is non-empty and the centre frequencies rise monotonically on the HTK scale.
    centres = fb.argmax(dim=0)
    assert (fb.sum(dim=0) > 0).all()
    assert (centres[1:] >= centres[:-1]).all()
    assert hz_to_mel(700.0) == pytest.approx(2595.0 * np.log10(2.0))


def test_batch_and_dtype_inputs(front_end, config):
    torch.manual_seed(0)
    wav = torch.randn(2, 4000) * 0.1
    batched = front_end(wav)
    assert batched.shape == (2, num_mel_frames(4000, config.hop_length), config.n_mels)
    assert torch.allclose(batched[1], front_end(wav[1]), atol=1e-5)
    assert front_end(wav[0].double()).dtype == torch.float32


def test_silence_hits_the_log_floor(front_end):
    mel = front_end(torch.zeros(2400))
    assert torch.allclose(mel, torch.full_like(mel, float(np.log(1e-7))))


def test_too_short_audio_is_a_clear_error(front_end):
    with pytest.raises(AudioInputError, match="too short"):
        front_end(torch.zeros(10))
