"""Streaming decode (SPEC §6): reference parity, the emission schedule, flush/last equivalence, reset,
and the chunked pipeline decode."""

from __future__ import annotations

import pytest
import torch

from mimo_audio import AudioTokenizer
from mimo_audio.errors import MimoAudioError
from mimo_audio.tokenizer import ChunkedDecoder

from conftest import PARITY_DIR, tensor_names

# The reference run behind ``<clip>.streamed_wav`` (fixture README): 10-frame chunks, the final one
# flagged last, left overlap 250, right overlap 40.
CHUNK, LEFT, RIGHT = 10, 250, 40
FIRST_CLIP = tensor_names(".codes20")[0].rsplit(".", 1)[0]


@pytest.fixture(scope="module")
def tok() -> AudioTokenizer:
    return AudioTokenizer.from_pretrained(PARITY_DIR / "tokenizer")


def _lm_codes(expected_tensors, clip: str) -> torch.Tensor:
    """The codes the LM pipeline decodes: the first ``audio_channels`` codebooks, unpadded."""
    channels = expected_tensors[f"{clip}.lm_codes"].shape[1]
    return expected_tensors[f"{clip}.codes20"][:channels]


def _stream(tok, codes, chunk, left=LEFT, right=RIGHT, flush=False) -> list[torch.Tensor]:
    dec = tok.stream_decoder(left_overlap=left, right_overlap=right)
    chunks = list(codes.split(chunk, dim=1))
    if flush:
        return [dec.push(c) for c in chunks] + [dec.flush()]
    return [dec.push(c, last=i == len(chunks) - 1) for i, c in enumerate(chunks)]


def _reference_schedule(tok, codes, chunk, left, right) -> list[torch.Tensor]:
    """SPEC §6 in absolute frame indices, each call decoded with the offline ``decode``."""
    spf, total = tok.samples_per_frame, codes.shape[1]
    pieces, cache_start, emitted, received = [], 0, 0, 0
    while received < total:
        received = min(total, received + chunk)
        wav = tok.decode(codes[:, cache_start:received])
        length = received - cache_start
        if received == total:
            pieces.append(wav[(emitted - cache_start) * spf :])
        elif length <= right:
            pieces.append(torch.zeros(0))
        else:
            end = received - right
            pieces.append(wav[(emitted - cache_start) * spf : (end - cache_start) * spf])
            emitted = end
            if length > left:
                cache_start = received - left
    return pieces


def test_fixture_set_has_streamed_wav():
    assert tensor_names(".streamed_wav")


@pytest.mark.parametrize("name", tensor_names(".streamed_wav"))
def test_streamed_wav_matches_reference(name, tok, expected_tensors):
    expected = expected_tensors[name]
    frames = expected.numel() // tok.samples_per_frame
    codes = _lm_codes(expected_tensors, name.rsplit(".", 1)[0])[:, :frames]
    pieces = _stream(tok, codes, CHUNK)
    wav = torch.cat(pieces)
    assert wav.shape == expected.shape
    assert (wav - expected).abs().max().item() <= 1e-4
    # Spec example: nothing until more than `right` frames are held, then `chunk` frames per call.
    sizes = [p.numel() // tok.samples_per_frame for p in pieces]
    first = next(i for i, s in enumerate(sizes) if s)
    assert (first + 1) * CHUNK > RIGHT >= first * CHUNK
    assert sum(sizes) == codes.shape[1]


@pytest.mark.parametrize(("chunk", "left", "right"), [(7, 30, 5), (6, 15, 8), (25, 25, 0)])
def test_stream_follows_spec_schedule_and_trims_cache(chunk, left, right, tok, expected_tensors):
    clip = tensor_names(".streamed_wav")[0].rsplit(".", 1)[0]
    codes = _lm_codes(expected_tensors, clip)
    pieces = _stream(tok, codes, chunk, left, right)
    reference = _reference_schedule(tok, codes, chunk, left, right)
    assert [p.numel() for p in pieces] == [r.numel() for r in reference]
    assert torch.cat(pieces).numel() == codes.shape[1] * tok.samples_per_frame
    for p, r in zip(pieces, reference, strict=True):
        assert torch.allclose(p, r, atol=1e-6)


@pytest.mark.parametrize(("chunk", "left", "right"), [(10, 250, 40), (9, 20, 20)])
def test_flush_equals_last_flag(chunk, left, right, tok, expected_tensors):
    codes = _lm_codes(expected_tensors, FIRST_CLIP)
    flagged = torch.cat(_stream(tok, codes, chunk, left, right))
    flushed = torch.cat(_stream(tok, codes, chunk, left, right, flush=True))
    assert torch.equal(flagged, flushed)


def test_single_call_stream_equals_offline_decode(tok, expected_tensors):
    codes = _lm_codes(expected_tensors, FIRST_CLIP)
    dec = tok.stream_decoder()
    assert torch.equal(dec.push(codes, last=True), tok.decode(codes))
    # push everything, end later: the held-back audio completes the same waveform
    assert torch.equal(torch.cat([dec.push(codes), dec.flush()]), tok.decode(codes))


def test_reset_and_reuse(tok, expected_tensors):
    codes = _lm_codes(expected_tensors, FIRST_CLIP)[:, :50]
    fresh = torch.cat(_stream(tok, codes, CHUNK))
    dec = tok.stream_decoder()
    dec.push(codes[:, :30])
    dec.reset()
    assert dec.flush().numel() == 0
    chunks = list(codes.split(CHUNK, dim=1))
    again = torch.cat([dec.push(c, last=i == len(chunks) - 1) for i, c in enumerate(chunks)])
    assert torch.equal(again, fresh)
    # after a last chunk the decoder starts a new sequence by itself
    again2 = torch.cat([dec.push(c, last=i == len(chunks) - 1) for i, c in enumerate(chunks)])
    assert torch.equal(again2, fresh)


def test_empty_pushes(tok, expected_tensors):
    codes = _lm_codes(expected_tensors, FIRST_CLIP)
    dec = tok.stream_decoder()
    assert dec.push(codes[:, :0]).numel() == 0
    assert dec.flush().numel() == 0
    held = dec.push(codes[:, :20])
    assert held.numel() == 0
    assert torch.equal(dec.push(codes[:, :0], last=True), tok.decode(codes[:, :20]))


def test_stream_rejects_bad_settings_and_codes(tok, expected_tensors):
    with pytest.raises(MimoAudioError):
        tok.stream_decoder(left_overlap=10, right_overlap=40)
    dec = tok.stream_decoder()
    with pytest.raises(MimoAudioError, match="codebook 0"):
        dec.push(torch.full((8, 4), 10**6))
    with pytest.raises(MimoAudioError, match="codebooks, frames"):
        dec.push(torch.zeros(4, dtype=torch.long))


def test_decode_chunked_is_independent_chunks(tok, expected_tensors):
    codes = _lm_codes(expected_tensors, FIRST_CLIP)
    chunk = max(1, codes.shape[1] // 3)
    wav = tok.decode_chunked(codes, chunk_frames=chunk)
    manual = torch.cat([tok.decode(part) for part in codes.split(chunk, dim=1)])
    assert torch.equal(wav, manual)
    assert wav.numel() == codes.shape[1] * tok.samples_per_frame
    assert torch.equal(tok.decode_chunked(codes), tok.decode(codes))  # below the 1500-frame default


def test_chunked_decoder_batches_pushes(tok, expected_tensors):
    """Patch-sized pushes through ``chunk_frames=20`` decode as the plain decoder fed [first, 20, 20, …, rest]."""
    codes = _lm_codes(expected_tensors, FIRST_CLIP)
    patches = list(codes.split(4, dim=1))
    dec = tok.stream_decoder(chunk_frames=20)
    pieces = [dec.push(p) for p in patches] + [dec.flush()]
    plain, sizes, buffered, pushed = tok.stream_decoder(), [], 0, False
    for p in patches:
        buffered += p.shape[1]
        if buffered >= (20 if pushed else max(RIGHT + 1, 20)):
            sizes.append(buffered)
            buffered, pushed = 0, True
    assert buffered > 0 and sum(sizes) + buffered == codes.shape[1]
    starts = torch.tensor([0, *sizes]).cumsum(0).tolist()
    want = [plain.push(codes[:, a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    want.append(plain.push(codes[:, starts[-1] :], last=True))
    assert torch.equal(torch.cat(pieces), torch.cat(want))
    assert sum(p.numel() > 0 for p in pieces) == len(want) < len(patches)
    # last=True on the chunked decoder ends the sequence the same way, and it is reusable afterwards
    again = [dec.push(p, last=i == len(patches) - 1) for i, p in enumerate(patches)]
    assert torch.equal(torch.cat(again), torch.cat(want))
    with pytest.raises(MimoAudioError, match="chunk_frames"):
        ChunkedDecoder(plain, every=0)
