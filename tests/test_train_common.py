"""Shared pieces of the training tests (tiny recipes, data folders, a spawn target) and unit tests of
the training building blocks: config parsing, schedule, LoRA, quantizer training, losses, checkpoints."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from mimo_audio.data.recipe import load_recipe
from mimo_audio.errors import MimoAudioError
from mimo_audio.tokenizer.quantizer import ResidualVectorQuantizer
from mimo_audio.train import checkpointing
from mimo_audio.train.config import ConfigError, OptimSection, QuantizerSection, config_from_dict, load_config
from mimo_audio.train.discriminators import Discriminators, feature_matching_loss, hinge_d_loss, hinge_g_loss
from mimo_audio.train.distributed import DistEnv
from mimo_audio.train.lm_losses import chunked_cross_entropy
from mimo_audio.train.lora import LoRALinear, apply_lora, merge_lora_state
from mimo_audio.train.mel_loss import MultiScaleMelLoss, scale_sizes
from mimo_audio.train.optim import Schedule
from mimo_audio.train.quantizer_train import QuantizerTrainer, kmeans

from conftest import PARITY_DIR, clip_path

MODEL_DIR = PARITY_DIR / "model"
TOKENIZER_DIR = PARITY_DIR / "tokenizer"
CLIPS = ("speech_a", "speech_b", "speech_c", "speech_b_cut")
TRANSCRIPTS = {
    "speech_a": "hello there",
    "speech_b": "a raging fire was in his eyes",
    "speech_c": "how is the weather today",
    "speech_b_cut": "a raging fire",
}


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def restore_threads():
    """Training tests run on one CPU thread (the test machine is shared); restore the session's setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def lm_records(tensors: dict) -> list[dict]:
    """Four training records over the fixture clips' LM codes (files written next to the manifest)."""
    return [
        {
            "task": "asr",
            "audio": "speech_a.npy",
            "text": "hello world",
            "template": "Transcribe this voice recording",
        },
        {
            "task": "tts",
            "text": "a raging fire was in his eyes",
            "audio": "speech_b.npy",
            "template": "Read this content out loud",
        },
        {"task": "continuation", "audio": "speech_c.npy"},
        {
            "task": "chat",
            "messages": [
                {"role": "user", "content": {"audio": "speech_b_cut.npy"}},
                {"role": "assistant", "content": {"text": "Fine, thanks.", "audio": "speech_a.npy"}},
            ],
        },
    ]


def make_lm_data(folder: Path, tensors: dict, records: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for clip in CLIPS:
        np.save(folder / f"{clip}.npy", tensors[f"{clip}.lm_codes"].numpy())
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in (records or lm_records(tensors))))
    return manifest


def lm_recipe(folder: Path, manifest: Path, **extra) -> Path:
    base = {
        "kind": "lm",
        "model": {"init": str(MODEL_DIR)},
        "data": {
            "train": [str(manifest)],
            "context_length": 128,
            "batch_rows": 4,
            "micro_rows": 2,
            "pack": False,
        },
        "optim": {"lr": 5e-3, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0},
        "loss": {"weights": "100-12-8-6-4-2-2-1-1"},
        "run": {
            "out_dir": str(folder / "run"),
            "max_steps": 4,
            "log_every": 1,
            "save_every": 100,
            "threads": 1,
            "tensorboard": False,
            "deterministic": True,
        },
    }
    return write_yaml(folder / "lm.yaml", merge(base, extra))


def tiny_tokenizer_config(folder: Path) -> Path:
    """The fixture tokenizer's config, shrunk: 8 quantizers of 64/64/16 codes, 2+2 layers."""
    cfg = json.loads((TOKENIZER_DIR / "config.json").read_text())
    cfg.update(
        num_quantizers=8,
        codebook_size=[64, 64, 16],
        encoder_layers=2,
        decoder_layers=2,
        encoder_skip_layer_id=1,
        vocoder_attn_window_size=[6, 3],
    )
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def make_clips(folder: Path, seconds: float = 1.0) -> Path:
    """The fixture clips cut to ``seconds`` with made-up transcripts, as a tokenizer manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for clip in CLIPS:
        wav, sr = sf.read(clip_path(clip), dtype="float32")
        sf.write(folder / f"{clip}.wav", wav[: int(seconds * sr)], sr)
        lines.append(json.dumps({"audio": f"{clip}.wav", "text": TRANSCRIPTS[clip]}) + "\n")
    manifest = folder / "clips.jsonl"
    manifest.write_text("".join(lines))
    return manifest


def tok_recipe(folder: Path, manifest: Path, stage: int = 1, **extra) -> Path:
    base = {
        "kind": "tokenizer",
        "stage": stage,
        "model": {"config": str(tiny_tokenizer_config(folder))},
        "data": {"train": [str(manifest)], "segment_seconds": 1.0, "batch_size": 4, "micro_batch_size": 4},
        "a2t": {"text_tokenizer": str(MODEL_DIR), "dim": 32, "layers": 1, "heads": 2, "ffn_dim": 64},
        "discriminator": {
            "periods": [2],
            "mpd_channels": 4,
            "mpd_max_channels": 8,
            "stft_ffts": [256],
            "stft_channels": 4,
            "lr": 2e-3,
        },
        "optim": {"lr": 3e-3, "warmup_steps": 0, "schedule": "constant"},
        "run": {
            "out_dir": str(folder / f"run{stage}"),
            "max_steps": 4,
            "log_every": 1,
            "save_every": 100,
            "threads": 1,
            "tensorboard": False,
            "deterministic": True,
        },
    }
    return write_yaml(folder / f"tok{stage}.yaml", merge(base, extra))


def losses_per_step(recipe: Path, out_json: Path, resume: bool | str = False) -> None:
    """Train a recipe step by step and write each step's ``loss*`` metrics (rank 0). Spawn target."""
    from mimo_audio.train import build_trainer

    cfg = load_config(recipe)
    trainer = build_trainer(cfg, resume=resume)
    rows = []
    for step in range(trainer.step, cfg.run.max_steps):
        metrics = trainer.train(stop_at=step + 1)
        rows.append({k: v for k, v in metrics.items() if k.startswith("loss")})
    if trainer.env.is_main:
        out_json.write_text(json.dumps(rows))


def losses_then_resumed(recipe: Path, out_json: Path, resume_step: int) -> None:
    """:func:`losses_per_step`, then a second trainer in the same processes resumes from the
    checkpoint of ``resume_step`` and finishes the run; writes ``{"run": [...], "resumed": [...]}``."""
    from mimo_audio.train import build_trainer
    from mimo_audio.train.checkpointing import checkpoint_dir

    losses_per_step(recipe, out_json)
    cfg = load_config(recipe)
    first = json.loads(out_json.read_text()) if out_json.is_file() else None
    trainer = build_trainer(cfg, resume=str(checkpoint_dir(cfg.run.out_dir, resume_step)))
    resumed = [
        {k: v for k, v in trainer.train(stop_at=s + 1).items() if k.startswith("loss")}
        for s in range(resume_step, cfg.run.max_steps)
    ]
    if trainer.env.is_main:
        out_json.write_text(json.dumps({"run": first, "resumed": resumed}))


# ---------------------------------------------------------------------------- config
def test_recipe_parsing_resolves_paths_and_rejects_typos(tmp_path):
    recipe = write_yaml(
        tmp_path / "r.yaml",
        {
            "kind": "lm",
            "model": {"init": "ckpt"},
            "data": {"train": "data.jsonl"},
            "optim": {"lr": {"backbone": "3e-5", "patch_encoder": 2e-4, "patch_decoder": None}},
        },
    )
    cfg = load_config(recipe)
    assert cfg.model.init == str(tmp_path / "ckpt")
    assert cfg.data.train == [str(tmp_path / "data.jsonl")]
    assert cfg.optim.lr == {"backbone": 3e-5, "patch_encoder": 2e-4, "patch_decoder": None}
    assert cfg.loss.parsed(8) == (100, 12, 8, 6, 4, 2, 2, 1, 1)
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"kind": "lm", "run": {"max_step": 3}})
    with pytest.raises(ConfigError, match="kind"):
        config_from_dict({"kind": "vocoder"})
    with pytest.raises(ConfigError, match="9 values"):
        config_from_dict({"kind": "lm", "loss": {"weights": "1-0"}}).loss.parsed(8)
    with pytest.raises(ConfigError, match="stage"):
        config_from_dict({"kind": "tokenizer", "stage": 3})


def test_repository_recipes_parse():
    """Every recipe in recipes/ parses: training recipes (they name a ``kind``) and data-prepare recipes."""
    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
    training = [r for r in recipes if "kind" in yaml.safe_load(r.read_text())]
    assert len(training) >= 6
    kinds = {load_config(r).kind for r in training}
    assert kinds == {"lm", "tokenizer"}
    for r in set(recipes) - set(training):
        load_recipe(r)


def test_schedule_warmup_then_cosine():
    s = Schedule(OptimSection(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1), max_steps=110)
    assert s.factor(0) == pytest.approx(0.1)
    assert s.factor(9) == pytest.approx(1.0)
    assert s.factor(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s.factor(110) == pytest.approx(0.1)
    c = Schedule(OptimSection(lr=1.0, warmup_ratio=0.01, schedule="constant"), max_steps=1000)
    assert c.warmup == 10 and c.factor(500) == 1.0


def test_schedule_rewarm_ramps_from_the_resume_step_and_survives_state_dict():
    cfg = OptimSection(lr=1.0, warmup_steps=10, schedule="constant")
    s = Schedule(cfg, max_steps=100)
    s.rewarm(50)
    assert s.factor(49) == 1.0 and s.factor(50) == pytest.approx(0.1) and s.factor(59) == 1.0
    t = Schedule(cfg, max_steps=100)
    t.load_state_dict(s.state_dict())
    assert [t.factor(i) for i in range(48, 62)] == [s.factor(i) for i in range(48, 62)]


# ---------------------------------------------------------------------------- LoRA
def test_lora_starts_as_identity_and_merges_exactly():
    torch.manual_seed(0)
    block = torch.nn.Sequential()
    block.add_module("q_proj", torch.nn.Linear(8, 6))
    block.add_module("other", torch.nn.Linear(6, 6))
    x = torch.randn(3, 8)
    before = block(x)
    assert apply_lora(block, ["q_proj"], rank=2, alpha=4.0, dropout=0.0) == 1
    assert isinstance(block.q_proj, LoRALinear) and not block.q_proj.weight.requires_grad
    assert torch.allclose(block(x), before)
    with torch.no_grad():
        block.q_proj.lora_B.normal_()
    trained = block(x)
    merged = merge_lora_state(block.state_dict(), block.q_proj.scaling)
    assert not any("lora" in k for k in merged)
    plain = torch.nn.Sequential()
    plain.add_module("q_proj", torch.nn.Linear(8, 6))
    plain.add_module("other", torch.nn.Linear(6, 6))
    plain.load_state_dict(merged)
    assert torch.allclose(plain(x), trained, atol=1e-6)


# ---------------------------------------------------------------------------- quantizer training
def _rvq(sizes=(16, 8), dim=4) -> ResidualVectorQuantizer:
    rvq = ResidualVectorQuantizer(dim, sizes)
    for layer in rvq.vq.layers:
        layer._codebook.embed.normal_()
    return rvq


def test_kmeans_recovers_clusters():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    data = torch.cat([c + 0.1 * torch.randn(50, 2, generator=gen) for c in centers])
    means, bins = kmeans(data, 16, 20, torch.Generator().manual_seed(1))
    assert bins.sum() == 150
    used = means[bins > 0]
    assert torch.cdist(centers, used).min(dim=1).values.max() < 0.3  # every cluster has a mean
    assert torch.cdist(used, centers).min(dim=1).values.max() < 0.5  # every used mean sits in a cluster


def test_ema_update_kmeans_init_and_dead_codes_write_the_inference_buffers():
    torch.manual_seed(0)
    rvq = _rvq()
    qt = QuantizerTrainer(
        rvq, QuantizerSection(decay=0.9, kmeans_iters=5), threshold=2.0, env=DistEnv(), seed=0
    )
    qt.reset_for_kmeans()
    x = torch.randn(64, 4, requires_grad=True)
    _, codes, _, count = qt(x, update=True, key=(0,))
    cb0 = rvq.vq.layers[0]._codebook
    assert float(cb0.inited) == 1.0 and codes.shape == (2, 64) and count == 2 * 64 * 4
    # EMA: cluster_size / embed_avg moved towards this batch's statistics, embed = smoothed average
    n = cb0.cluster_size.sum()
    smoothed = (cb0.cluster_size + 1e-5) / (n + 16 * 1e-5) * n
    assert torch.allclose(cb0.embed, cb0.embed_avg / smoothed[:, None], atol=1e-5)
    # straight-through: forward value is the quantised sum (codebooks as they were), gradient the identity
    out, codes, _, _ = qt(x, update=False)
    assert torch.allclose(out, rvq.decode(codes), atol=1e-5)
    out.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))
    # a code nobody uses decays below the threshold and is replaced by a batch vector
    cb0.cluster_size[3] = 0.0
    qt(x.detach(), update=True, key=(1,))
    assert float(cb0.cluster_size[3]) >= 1.0
    assert torch.cdist(cb0.embed[3:4], x.detach()).min() < 1.0
    # no update in evaluation: buffers unchanged
    before = cb0.embed.clone()
    qt(x.detach(), update=False)
    assert torch.equal(before, cb0.embed)


def test_commitment_gradient_reaches_the_input():
    rvq = _rvq()
    qt = QuantizerTrainer(rvq, QuantizerSection(), threshold=0.0, env=DistEnv(), seed=0)
    x = torch.randn(10, 4, requires_grad=True)
    _, _, commit, _ = qt(x, update=False)
    commit.backward()
    assert x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- losses
def test_mel_scales_follow_the_report():
    assert [scale_sizes(i) for i in (5, 6, 7)] == [(32, 240, 120), (64, 480, 240), (128, 960, 480)]
    loss = MultiScaleMelLoss(24000)
    y = torch.randn(2, 4800)
    sums, counts = loss(y, y, torch.tensor([4800, 2400]))
    assert torch.equal(sums, torch.zeros(3))
    assert counts.tolist() == [(41 + 21) * 32, (21 + 11) * 64, (11 + 6) * 128]
    sums, _ = loss(y + 0.1 * torch.randn_like(y), y, torch.tensor([4800, 2400]))
    assert (sums > 0).all()


def test_chunked_cross_entropy_equals_plain():
    torch.manual_seed(0)
    h, w = torch.randn(50, 8, requires_grad=True), torch.randn(30, 8)
    t = torch.randint(0, 30, (50,))
    t[::7] = -100
    want = torch.nn.functional.cross_entropy(h @ w.t(), t, ignore_index=-100, reduction="sum")
    got = chunked_cross_entropy(h, w, t, chunk=16)
    assert torch.allclose(got, want, atol=1e-4)
    got.backward()
    assert h.grad is not None


def test_discriminator_losses():
    torch.manual_seed(0)
    d = Discriminators(periods=(2, 3), mpd_channels=4, mpd_max_channels=8, stft_ffts=(256,), stft_channels=4)
    real, fake = torch.randn(2, 4000), torch.randn(2, 4000)
    r, f = d(real), d(fake)
    assert len(r) == 3
    assert hinge_d_loss(r, f) >= 0 and hinge_g_loss(f) >= 0
    assert feature_matching_loss(r, r).item() == 0.0


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_write_is_atomic_and_rotates(tmp_path):
    weights = {"lm": {"w": torch.ones(2)}}
    for step in (1, 2, 3):
        checkpointing.write_checkpoint(
            tmp_path, step, weights=weights, optim={}, rng=[checkpointing.rng_state()],
            meta={"kind": "lm", "step": step}, model_files={"config.json": {"a": 1}}, keep_last=2,
        )  # fmt: skip
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path)] == [2, 3]
    # a save killed half-way leaves a temporary folder, never a checkpoint
    (tmp_path / "checkpoints" / ".tmp-step-00000004-dead").mkdir()
    (tmp_path / "checkpoints" / "step-00000005").mkdir()  # no trainer.json: incomplete, ignored
    assert checkpointing.latest_checkpoint(tmp_path).name == "step-00000003"
    checkpointing.clean_partial(tmp_path)
    assert not (tmp_path / "checkpoints" / ".tmp-step-00000004-dead").exists()
    state = checkpointing.read_rng(checkpointing.latest_checkpoint(tmp_path))[0]
    random.random()
    checkpointing.set_rng_state(state)
    assert math.isfinite(random.random())
    with pytest.raises(MimoAudioError):
        checkpointing.resolve_checkpoint(tmp_path / "nothing")
