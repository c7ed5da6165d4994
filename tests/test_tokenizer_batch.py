"""Batches and segmentation: padded batches equal one-by-one results, clips over 60 s are encoded as
the reference's packed passes (padding artefacts included), local attention equals masked attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mimo_audio import AudioTokenizer
from mimo_audio.tokenizer.encoder import conv_stem_lengths
from mimo_audio.tokenizer.model import MAX_PASS_FRAMES, SEGMENT_FRAMES, Segment, plan_segments
from mimo_audio.tokenizer.transformer import (
    AttentionPlan,
    activation,
    local_attention,
    plan_attention,
    run_layers,
)

from conftest import CLIPS, PARITY_DIR, clip_path


@pytest.fixture(scope="module")
def tok() -> AudioTokenizer:
    return AudioTokenizer.from_pretrained(PARITY_DIR / "tokenizer")


@pytest.fixture(scope="module")
def solo_codes(tok) -> dict[str, torch.Tensor]:
    return {name: tok.encode(clip_path(name)) for name in CLIPS}


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_encode_batch_equals_one_by_one(batch_size, tok, solo_codes):
    names = list(CLIPS)
    batched = tok.encode_batch([clip_path(n) for n in names], batch_size=batch_size)
    for name, codes in zip(names, batched, strict=True):
        assert torch.equal(codes, solo_codes[name]), name


def test_decode_batch_equals_one_by_one(tok, solo_codes):
    codes = [c[:8] for c in solo_codes.values()]
    codes.append(codes[0])  # equal lengths too (no padding at all for those rows)
    full = tok.decode_batch([codes[0], codes[0]])
    assert torch.equal(full[0], full[1]) and (full[0] - tok.decode(codes[0])).abs().max() <= 1e-5
    for batched, c in zip(tok.decode_batch(codes), codes, strict=True):
        solo = tok.decode(c)
        assert batched.shape == solo.shape
        assert (batched - solo).abs().max().item() <= 1e-5


def _mels(tok, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mels = [torch.randn(tok.config.n_mels, t, generator=g) for t in lengths]
    width = max(lengths)
    return torch.stack([F.pad(m, (0, width - m.shape[1])) for m in mels]), torch.tensor(lengths)


def _has_artefacts(cfg, length: int, context: int) -> bool:
    """Whether a segment of ``length`` mel frames in a pass whose longest is ``context`` sees padding."""
    if length >= context:
        return False
    k, s = cfg.kernel_size, cfg.stride_size
    stem = int(conv_stem_lengths(torch.tensor(length), k, s))
    reads_padded_step = (stem - 1) * s + (k - 1) - 1 >= length  # conv2's last tap (padding 1)
    pooled_with_copy = cfg.avg_pooler > 1 and stem % cfg.avg_pooler != 0
    return reads_padded_step or pooled_with_copy


@torch.inference_mode()
def test_reference_pass_padding_artefacts(tok):
    """A shorter segment of a reference pass sees padding (odd mel or stem length in the official sizes)."""
    lengths_list = [41, 40, 42, 44, 45, 38]
    mel, lengths = _mels(tok, lengths_list)
    context = max(lengths_list)
    solo, n = tok.encoder(mel, lengths)
    packed, n2 = tok.encoder(mel, lengths, torch.full_like(lengths, context))
    assert torch.equal(n, n2)
    expected = [_has_artefacts(tok.config, t, context) for t in lengths_list]
    assert any(expected) and not all(expected)
    for i, t in enumerate(lengths_list):
        diff = (solo[i, : n[i]] - packed[i, : n[i]]).abs().max().item()
        assert (diff > 1e-3) if expected[i] else (diff < 1e-5), (t, diff)
        alone, _ = tok.encoder(mel[i : i + 1, :, :t], lengths[i : i + 1])  # solo rows = a batch of one
        assert (alone[0] - solo[i, : n[i]]).abs().max().item() < 1e-5


def test_plan_segments():
    assert plan_segments(100) == [Segment(0, 100, 100)]
    assert plan_segments(6201) == [Segment(0, 6000, 6000), Segment(6000, 201, 6000)]
    assert plan_segments(12000) == [Segment(0, 6000, 6000), Segment(6000, 6000, 6000)]
    assert plan_segments(25, segment_frames=10, max_pass_frames=20) == [
        Segment(0, 10, 10),
        Segment(10, 10, 10),
        Segment(20, 5, 5),  # alone in its pass: no padding artefacts
    ]
    per_pass = MAX_PASS_FRAMES // SEGMENT_FRAMES
    segs = plan_segments(SEGMENT_FRAMES * per_pass + 5000)
    assert len(segs) == per_pass + 1 and segs[-1] == Segment(SEGMENT_FRAMES * per_pass, 5000, 5000)
    segs = plan_segments(SEGMENT_FRAMES * (per_pass + 1) + 10)
    assert segs[-1].context == SEGMENT_FRAMES and segs[-2].context == SEGMENT_FRAMES


def _reference_pass(tok, mels: list[torch.Tensor]) -> list[torch.Tensor]:
    """One reference forward pass written out step by step (SPEC §3 + §4) on a zero-padded batch."""
    enc, cfg = tok.encoder, tok.config
    act = lambda x: activation(cfg.activation_function, x)  # noqa: E731
    lengths = torch.tensor([m.shape[0] for m in mels])
    width = int(lengths.max())
    batch = torch.stack([F.pad(m.t(), (0, width - m.shape[0])) for m in mels])
    h = act(enc.conv2(act(enc.conv1(batch))))  # the padded batch, no masking
    stems = conv_stem_lengths(lengths, cfg.kernel_size, cfg.stride_size).tolist()
    rows = []
    for i, n in enumerate(stems):  # varlen attention = each sequence on its own
        x = h[i : i + 1, :, :n].transpose(1, 2)
        x, kept = run_layers(
            enc.layers,
            x,
            None,
            causal=False,
            window=(-1, -1),
            theta=cfg.rope_theta,
            keep=cfg.encoder_skip_layer_id,
        )
        rows.append(enc.layer_norm(x + kept if kept is not None else x)[0])
    pool, l_max = cfg.avg_pooler, max(stems)
    if pool == 1:
        return [enc.quantizer.encode(r) for r in rows]
    padded = torch.zeros(len(rows), -(-l_max // pool) * pool, cfg.d_model)
    for i, (r, n) in enumerate(zip(rows, stems, strict=True)):
        padded[i, :n] = r
        padded[i, n:l_max] = r[n - 1]  # the gather repeats the last valid vector
    pooled = enc.down_sample_norm(act(enc.down_sample_layer(padded.transpose(1, 2))).transpose(1, 2))
    return [enc.quantizer.encode(pooled[i, : -(-n // pool)]) for i, n in enumerate(stems)]


@torch.inference_mode()
def test_long_clip_is_encoded_as_reference_passes(tok):
    """> 60 s: 6000-frame segments + remainder in one packed pass, remainder with padding artefacts."""
    remainder = 201  # odd mel length and odd stem length: both artefacts apply
    frames = SEGMENT_FRAMES + remainder
    g = torch.Generator().manual_seed(1)
    wav = 0.1 * torch.randn((frames - 1) * tok.config.hop_length, generator=g)
    mel = tok.mel(wav)
    assert mel.shape[0] == frames
    codes = tok.encode(wav)
    first = tok.output_frames(SEGMENT_FRAMES)
    assert codes.shape == (tok.num_quantizers, tok.output_frames(frames))
    assert codes.shape[1] == first + tok.output_frames(remainder)
    # The first segment is the longest of its pass: exactly its solo encoding.
    assert torch.equal(codes[:, :first], tok.encode_mel(mel[:SEGMENT_FRAMES]))
    # Both segments equal a step-by-step reference pass over the padded batch.
    ref = _reference_pass(tok, [mel[:SEGMENT_FRAMES], mel[SEGMENT_FRAMES:]])
    assert torch.equal(codes[:, :first], ref[0])
    assert torch.equal(codes[:, first:], ref[1])
    # ... which is not the remainder encoded alone (the artefacts are really applied).
    features = tok.encode_features(wav)[first:]
    solo, _ = tok.encoder(mel[SEGMENT_FRAMES:].t()[None], torch.tensor([remainder]))
    gap = (features - solo[0].float()).abs().max().item()
    assert gap > 1e-3 if _has_artefacts(tok.config, remainder, SEGMENT_FRAMES) else gap < 1e-5
    # Batched with a short clip, each still gets its own result.
    short = clip_path(next(iter(CLIPS)))
    batched = tok.encode_batch([wav, short], batch_size=3)
    assert torch.equal(batched[0], codes) and torch.equal(batched[1], tok.encode(short))


@pytest.mark.parametrize(("left", "right"), [(40, 10), (6, 3), (0, 0), (5, 0)])
def test_local_attention_equals_masked_attention(left, right):
    g = torch.Generator().manual_seed(0)
    B, H, T, D = 3, 2, 300, 8
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    lengths = torch.tensor([300, 257, 120])
    plan = plan_attention(T, lengths, causal=False, window=(left, right), device=q.device)
    assert plan.local is not None
    out = local_attention(q, k, v, plan)
    pos = torch.arange(T)
    band = (pos[None] >= pos[:, None] - left) & (pos[None] <= pos[:, None] + right)
    for b, n in enumerate(lengths.tolist()):
        dense = F.scaled_dot_product_attention(
            q[b : b + 1, :, :n], k[b : b + 1, :, :n], v[b : b + 1, :, :n], attn_mask=band[:n, :n]
        )
        dense = dense.transpose(1, 2).reshape(1, n, H * D)
        assert torch.allclose(out[b : b + 1, :n], dense, atol=1e-5)
    assert torch.isfinite(out).all()


def test_attention_plans():
    lengths = torch.tensor([10, 7])
    assert plan_attention(10, None, causal=False, window=(-1, -1), device="cpu") == AttentionPlan(10)
    assert plan_attention(10, lengths, causal=True, window=(-1, -1), device="cpu").is_causal
    masked = plan_attention(10, lengths, causal=False, window=(-1, -1), device="cpu").mask
    assert masked.shape == (2, 1, 1, 10) and masked[1, 0, 0].sum() == 7
    small = plan_attention(10, lengths, causal=False, window=(2, 1), device="cpu")
    assert small.local is None and small.mask.shape == (2, 1, 10, 10)
