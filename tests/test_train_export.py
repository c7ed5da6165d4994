"""Export round trip: a trained checkpoint, exported with ``mimo-audio export``, loads unchanged in
``AudioTokenizer`` / ``MimoAudio`` and produces the same outputs as the training model."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mimo_audio.api import MimoAudio
from mimo_audio.cli import main as cli_main
from mimo_audio.errors import CheckpointError
from mimo_audio.lm import GREEDY, GenerationOptions, Generator
from mimo_audio.tokenizer import AudioTokenizer
from mimo_audio.train import build_trainer, load_config
from mimo_audio.train.export import export_checkpoint
from test_train_common import (  # noqa: F401
    TOKENIZER_DIR,
    lm_recipe,
    make_clips,
    make_lm_data,
    restore_threads,
    tok_recipe,
)

from conftest import clip_path


def test_tokenizer_export_round_trip(tmp_path):
    recipe = tok_recipe(tmp_path, make_clips(tmp_path / "clips"), stage=1, run={"max_steps": 3})
    trainer = build_trainer(load_config(recipe))
    trainer.train()
    out = tmp_path / "export"
    assert cli_main(["export", str(trainer.out), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    # readable by everyone like the JSON next to it (safetensors alone creates files 0600)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == (out / "config.json").stat().st_mode & 0o777
    keys = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith(("a2t", "tokenizer.")) for k in keys)
    loaded = AudioTokenizer.from_pretrained(out)
    trained = trainer.tokenizer.eval()
    for name, buf in trained.named_buffers():
        if name.endswith(("embed", "embed_avg", "cluster_size", "inited")):
            assert torch.equal(dict(loaded.named_buffers())[name], buf), name  # the EMA training state
    clip = clip_path("speech_a")
    codes = trained.encode(clip)
    assert torch.equal(loaded.encode(clip), codes)
    assert torch.equal(loaded.decode(codes[:8]), trained.decode(codes[:8]))
    with pytest.raises(CheckpointError, match="not empty"):
        export_checkpoint(trainer.out, out)


def test_lm_lora_export_round_trip(tmp_path, expected_tensors):
    manifest = make_lm_data(tmp_path / "data", expected_tensors)
    recipe = lm_recipe(
        tmp_path,
        manifest,
        lora={"rank": 4, "alpha": 8.0},
        optim={"lr": {"patch_encoder": 5e-3, "backbone": 5e-3, "patch_decoder": 5e-3}},
        run={"max_steps": 3},
    )
    trainer = build_trainer(load_config(recipe))
    trainer.train()
    lora_b = [p for n, p in trainer.lm.named_parameters() if n.endswith("lora_B")]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the adapters trained
    out = tmp_path / "export"
    assert cli_main(["export", str(trainer.out / "checkpoints"), "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not any("lora" in k for k in load_file(str(out / "model.safetensors")))
    model = MimoAudio.from_pretrained(out, TOKENIZER_DIR, device="cpu", progress=False)
    ids = expected_tensors["generate.tts.ids"].long()[None]
    lm = trainer.lm.eval()
    with torch.no_grad():
        want = lm(ids)
        got = model.lm(ids)
    assert (got.text_logits - want.text_logits).abs().max() <= 1e-4
    for a, b in zip(got.local_logits, want.local_logits, strict=True):
        assert (a - b).abs().max() <= 1e-4
    prompt = expected_tensors["prompt.tts"].long()
    options = GenerationOptions(
        text_sampler=GREEDY, speech_sampler=GREEDY, max_new_steps=8, stop_ids=(0, 9, 2)
    )
    with torch.no_grad():
        ref = Generator(lm, max_batch=1, max_len=64).generate([prompt], options)[0]
    assert torch.equal(model.engine.generate([prompt], options)[0].ids, ref.ids)
