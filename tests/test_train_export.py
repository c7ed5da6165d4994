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


def test_lm_average_export(tmp_path, expected_tensors, capsys):
    """`export A --average-with B` writes the element-wise mean of two LM runs' weights (a model
    soup), loadable like any export; tokenizers, other configs and --resumable are one-line errors."""
    manifest = make_lm_data(tmp_path / "data", expected_tensors)
    runs = []
    for seed, lr in ((1, 5e-3), (2, 1e-2)):  # two runs from one start that end in different places
        (tmp_path / f"r{seed}").mkdir()
        recipe = lm_recipe(
            tmp_path / f"r{seed}",
            manifest,
            optim={"lr": {"patch_encoder": lr, "backbone": lr, "patch_decoder": lr}},
            run={"max_steps": 2, "seed": seed},
        )
        trainer = build_trainer(load_config(recipe))
        trainer.train()
        runs.append(trainer.out)
    single = [tmp_path / "a", tmp_path / "b"]
    for run, out in zip(runs, single, strict=True):
        assert cli_main(["export", str(run), "--out", str(out)]) == 0
    a, b = (load_file(str(out / "model.safetensors")) for out in single)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    soup = tmp_path / "soup"
    assert cli_main(["export", str(runs[0]), "--average-with", str(runs[1]), "--out", str(soup)]) == 0
    got = load_file(str(soup / "model.safetensors"))
    assert got.keys() == a.keys()
    for k in a:
        assert got[k].dtype == a[k].dtype
        torch.testing.assert_close(got[k], (a[k].double() + b[k].double()).div(2).to(a[k].dtype))
    MimoAudio.from_pretrained(soup, TOKENIZER_DIR, device="cpu", progress=False)
    # averaging a run with itself changes nothing; the dtype applies once, to the mean
    half = tmp_path / "half"
    args = ["export", str(runs[0]), "--average-with", str(runs[0]), "--dtype", "bfloat16"]
    assert cli_main([*args, "--out", str(half)]) == 0
    for k, v in load_file(str(half / "model.safetensors")).items():
        assert torch.equal(v, a[k].to(torch.bfloat16)), k

    capsys.readouterr()
    (tmp_path / "tok").mkdir()
    tok_recipe_path = tok_recipe(
        tmp_path / "tok", make_clips(tmp_path / "clips"), stage=1, run={"max_steps": 1}
    )
    tok_trainer = build_trainer(load_config(tok_recipe_path))
    tok_trainer.train()
    bad = [
        (["export", str(runs[0]), "--average-with", str(tok_trainer.out)], "cannot be averaged with an LM"),
        (["export", str(tok_trainer.out), "--average-with", str(runs[0])], "only LM checkpoints"),
        (["export", str(runs[0]), "--average-with", str(tmp_path / "missing")], "no training checkpoint"),
        (["export", str(runs[0]), "--average-with", str(runs[1]), "--resumable"], "--resumable"),
    ]
    for argv, message in bad:
        assert cli_main([*argv, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (tmp_path / "bad").exists()
