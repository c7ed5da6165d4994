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
from mkl_branch import max_abs_diff, mels_on_reproducible_branch

MEL_NAMES = tensor_names(".mel")


@pytest.fixture(scope="module")
def config() -> TokenizerConfig:
    return TokenizerConfig.from_dict(read_config(PARITY_DIR / "tokenizer"))


@pytest.fixture(scope="module")
def front_end(config) -> MelFrontEnd:
    return MelFrontEnd(config)


def test_fixture_set_has_mels():
    assert MEL_NAMES


@pytest.fixture(scope="module")
def reproducible_branch_mels() -> dict[str, torch.Tensor]:
    clips = {name: clip_path(name.removesuffix(".mel")) for name in MEL_NAMES}
    return mels_on_reproducible_branch(PARITY_DIR / "tokenizer", clips)


def _in_process_mel(name: str, front_end: MelFrontEnd, config: TokenizerConfig) -> torch.Tensor:
    wav = load_audio(clip_path(name.removesuffix(".mel")), target_rate=config.sampling_rate)
    mel = front_end(wav)
    assert mel.dtype == torch.float32
    assert mel.shape == (num_mel_frames(wav.numel(), config.hop_length), config.n_mels)
    return mel


@pytest.mark.parametrize("name", MEL_NAMES)
def test_mel_matches_reference(name, front_end, expected_tensors, config, reproducible_branch_mels):
    """The fixture's mel is ours, on the MKL code path of the machine that made it (see mkl_branch)."""
    expected = expected_tensors[name]
    diffs = {
        "automatic": max_abs_diff(_in_process_mel(name, front_end, config), expected),
        "reproducible": max_abs_diff(reproducible_branch_mels[name], expected),
    }
    assert min(diffs.values()) <= 1e-4, f"max abs diff per MKL branch: {diffs}"


@pytest.mark.parametrize("name", MEL_NAMES)
def test_mel_matches_reference_on_any_branch_above_the_rounding_floor(
    name, front_end, expected_tensors, config
):
    """On whatever FFT path this machine takes, every bin within 5 nepers (43 dB) of its frame's
    loudest matches at the fixture tolerance, and the rest stay within FFT rounding of it."""
    mel = _in_process_mel(name, front_end, config)
    expected = expected_tensors[name]
    assert mel.shape == expected.shape
    diff = (mel - expected).abs()
    loud = expected >= expected.max(dim=1, keepdim=True).values - 5.0
    assert loud.float().mean() > 0.5
    assert diff[loud].max().item() <= 1e-4
    assert diff.max().item() <= 1e-2


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
