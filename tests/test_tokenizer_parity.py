"""Tokenizer parity with the reference tensors (float32 CPU) and config parsing.

Data-driven: every ``<clip>.codes20`` / ``.lm_codes`` / ``.decoded_wav`` listed in expected.json is
checked, so other fixture sets (sizes, windows, clips) run unchanged.
"""

from __future__ import annotations

import pytest
import torch

from mimo_audio import AudioTokenizer
from mimo_audio.audio import load_audio
from mimo_audio.checkpoint import read_config
from mimo_audio.errors import CheckpointError
from mimo_audio.tokenizer import TokenizerConfig
from mimo_audio.tokenizer.mel import MelFrontEnd

from conftest import PARITY_DIR, clip_path, tensor_names

TOKENIZER_DIR = PARITY_DIR / "tokenizer"


@pytest.fixture(scope="module")
def tok() -> AudioTokenizer:
    return AudioTokenizer.from_pretrained(TOKENIZER_DIR)


def _clip(name: str) -> str:
    return name.rsplit(".", 1)[0]


def test_fixture_set_has_tokenizer_tensors():
    assert tensor_names(".codes20") and tensor_names(".lm_codes") and tensor_names(".decoded_wav")


def test_properties(tok):
    cfg = tok.config
    assert tok.sample_rate == cfg.sampling_rate
    assert tok.samples_per_frame == cfg.avg_pooler * cfg.stride_size * cfg.hop_length
    assert tok.frame_rate == pytest.approx(cfg.sampling_rate / tok.samples_per_frame)
    assert tok.dtype == torch.float32 and tok.device.type == "cpu"


@pytest.mark.parametrize("name", tensor_names(".codes20"))
def test_codes_match_reference(name, tok, expected_tensors):
    codes = tok.encode(clip_path(_clip(name)))
    expected = expected_tensors[name]
    assert codes.dtype == torch.int64
    assert codes.shape == expected.shape
    assert torch.equal(codes, expected)


@pytest.mark.parametrize("name", tensor_names(".lm_codes"))
def test_lm_codes_match_reference(name, tok, expected_tensors):
    expected = expected_tensors[name]
    lm = tok.encode_for_lm(clip_path(_clip(name)), channels=expected.shape[1])
    assert lm.shape == expected.shape and lm.shape[0] % 4 == 0
    assert torch.equal(lm, expected)


@pytest.mark.parametrize("name", tensor_names(".decoded_wav"))
def test_decode_matches_reference(name, tok, expected_tensors):
    expected = expected_tensors[name]
    codes = expected_tensors[f"{_clip(name)}.codes20"]
    n_frames = expected.numel() // tok.samples_per_frame
    lm_channels = expected_tensors[f"{_clip(name)}.lm_codes"].shape[1]
    wav = tok.decode(codes[:lm_channels, :n_frames])
    assert wav.dtype == torch.float32 and wav.shape == expected.shape
    assert (wav - expected).abs().max().item() <= 1e-4
    # The pipeline's chunked decode is the same thing below the chunk size.
    assert torch.equal(tok.decode_chunked(codes[:lm_channels, :n_frames]), wav)


def test_mel_api_matches_front_end(tok, expected_tensors):
    # The front end's own parity (and its MKL branches) is tests/test_mel.py's.
    name = tensor_names(".mel")[0]
    path = clip_path(_clip(name))
    mel = tok.mel(path)
    assert mel.shape == expected_tensors[name].shape
    assert torch.equal(mel, MelFrontEnd(tok.config)(load_audio(path, target_rate=tok.sample_rate)))
    assert torch.equal(tok.encode_mel(mel), tok.encode(path))


def test_decode_accepts_any_leading_subset(tok, expected_tensors):
    codes = expected_tensors[tensor_names(".codes20")[0]]
    for k in (1, 3, codes.shape[0]):
        assert tok.decode(codes[:k]).numel() == codes.shape[1] * tok.samples_per_frame
    features = tok.dequantize(codes[:2])
    manual = sum(
        layer._codebook.embed[codes[i]] for i, layer in enumerate(tok.encoder.quantizer.vq.layers[:2])
    )
    assert torch.allclose(features, manual)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_float32(dtype, tok, expected_tensors):
    half = AudioTokenizer.from_pretrained(TOKENIZER_DIR, dtype=dtype)
    assert half.dtype == dtype
    name = tensor_names(".codes20")[0]
    codes = half.encode(clip_path(_clip(name)))
    expected = expected_tensors[name]
    assert codes.shape == expected.shape
    # Low precision flips some codes (mostly in the fine codebooks) but the coarse ones largely agree.
    assert (codes[0] == expected[0]).float().mean() > 0.7
    wav32 = tok.decode(expected[:8])
    wav = half.decode(expected[:8])
    assert wav.dtype == torch.float32 and torch.isfinite(wav).all()
    rel = (wav - wav32).norm() / wav32.norm()
    assert rel < 0.1


def test_checkpoint_loads_strictly_with_training_buffers(tok):
    keys = tok.state_dict().keys()
    for name in ("embed", "embed_avg", "cluster_size", "inited"):
        assert f"encoder.quantizer.vq.layers.0._codebook.{name}" in keys
    assert "decoder.vocoder.head.istft.window" in keys


# ----------------------------------------------------------------------------- config


def test_config_from_fixture_and_class_defaults():
    cfg = TokenizerConfig.from_dict(read_config(TOKENIZER_DIR))
    assert len(cfg.codebook_sizes) == cfg.num_quantizers
    default = TokenizerConfig()
    assert (default.d_model, default.encoder_layers, default.encoder_attention_heads) == (768, 8, 12)
    assert (default.nfft, default.window_size, default.n_mels) == (1024, 1024, 80)
    assert (default.vocoder_dim, default.vocoder_num_layers, default.vocoder_attention_heads) == (512, 30, 4)
    assert default.codebook_sizes == (1024,) * 12 and default.avg_pooler == 1
    assert default.encoder_skip_layer_id is None and default.scale_embedding is True
    assert default.vocoder_attn_window_size == (40, 10) and default.encoder_attn_window_size == (-1, -1)
    assert default.mel_fmax == default.sampling_rate / 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (512, (512,) * 4),
        ([1024, 128], (1024, 128, 128, 128)),
        ([1, 2, 3, 4, 5, 6], (1, 2, 3, 4)),
    ],
)
def test_codebook_size_forms(value, expected):
    cfg = TokenizerConfig.from_dict({"num_quantizers": 4, "codebook_size": value, "unused_key": 1})
    assert cfg.codebook_sizes == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"codebook_size": "many"},
        {"d_model": 100, "encoder_attention_heads": 12},
        {"vocoder_attn_window_size": [40]},
        {"ln_type": "BatchNorm"},
        {"num_quantizers": 0},
    ],
)
def test_bad_config_is_a_one_line_error(bad):
    with pytest.raises(CheckpointError) as err:
        TokenizerConfig.from_dict(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_from_config_builds_random_weights_in_dtype(dtype, tok):
    small = {**tok.config.to_dict(), "num_quantizers": 4, "ln_type": "RMSNorm", "avg_pooler": 1}
    model = AudioTokenizer.from_config(small, dtype=dtype, seed=3)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert type(model.encoder.layers[0].final_layer_norm).__name__ == "RMSNorm"
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2 * model.sample_rate, generator=g)
    codes = model.encode(wav)
    assert codes.shape == (4, model.output_frames(model.mel(wav).shape[0]))
    assert model.samples_per_frame == model.config.stride_size * model.config.hop_length
    out = model.decode(codes)
    assert out.numel() == codes.shape[1] * model.samples_per_frame and torch.isfinite(out).all()
    again = AudioTokenizer.from_config(small, dtype=dtype, seed=3)
    assert torch.equal(again.encode(wav), codes)
