"""Training options: gradient checkpointing, mixed precision, stage-1 and LoRA freezing, evaluation
hooks, the CLI (overrides, recipe kind, fresh-run guard)."""

from __future__ import annotations

import math

import pytest
import torch

from mimo_audio.cli import main as cli_main
from mimo_audio.errors import MimoAudioError
from mimo_audio.train import build_trainer, load_config
from mimo_audio.train.config import ConfigError
from mimo_audio.train.lm_trainer import lm_group
from mimo_audio.train.metrics import read_csv
from test_train_common import lm_recipe, lm_records, make_lm_data, restore_threads  # noqa: F401


@pytest.fixture
def manifest(tmp_path, expected_tensors):
    return make_lm_data(tmp_path / "data", expected_tensors)


def losses(recipe, overrides=None, steps=2):
    trainer = build_trainer(load_config(recipe, overrides))
    return [trainer.train(stop_at=s + 1)["loss"] for s in range(steps)], trainer


def test_gradient_checkpointing_changes_nothing(tmp_path, manifest):
    recipe = lm_recipe(tmp_path, manifest)
    plain, _ = losses(recipe, {"run": {"out_dir": str(tmp_path / "a")}})
    ckpt, _ = losses(
        recipe, {"run": {"out_dir": str(tmp_path / "b")}, "distributed": {"grad_checkpointing": True}}
    )
    assert ckpt == pytest.approx(plain, rel=1e-6)


def test_bf16_autocast_trains(tmp_path, manifest):
    recipe = lm_recipe(tmp_path, manifest)
    plain, _ = losses(recipe, {"run": {"out_dir": str(tmp_path / "a")}})
    bf16, _ = losses(
        recipe, {"run": {"out_dir": str(tmp_path / "b")}, "distributed": {"mixed_precision": "bf16"}}
    )
    assert all(math.isfinite(x) for x in bf16)
    assert bf16 == pytest.approx(plain, rel=0.05)


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch, caplog):
    from mimo_audio.train import distributed
    from mimo_audio.train.config import DistributedSection

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not distributed.cpu_has_bf16()
    with caplog.at_level("WARNING", logger="mimo_audio"):
        distributed.init_distributed(
            DistributedSection(strategy="none", device="cpu", mixed_precision="none")
        )
        assert "no bf16 instructions" not in caplog.text
        env = distributed.init_distributed(
            DistributedSection(strategy="none", device="cpu", mixed_precision="bf16")
        )
    assert env.mixed_precision is torch.bfloat16 and "no bf16 instructions" in caplog.text
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert distributed.cpu_has_bf16()


def test_stage1_text_only_freezes_the_patch_decoder(tmp_path, manifest):
    recipe = lm_recipe(
        tmp_path,
        manifest,
        loss={"weights": "1-0-0-0-0-0-0-0-0"},
        optim={
            "lr": {"patch_encoder": 2e-4, "backbone": 3e-5, "patch_decoder": None},
            "schedule": "constant",
        },
    )
    (loss, _), trainer = losses(recipe)
    groups = {lm_group(n) for n, p in trainer.lm.named_parameters() if p.requires_grad}
    assert groups == {"patch_encoder", "backbone"}
    assert not trainer.module.speech_loss
    assert trainer.last_metrics["loss"] == pytest.approx(trainer.last_metrics["loss/text"])


def test_lora_trains_only_adapters_in_the_backbone(tmp_path, manifest):
    recipe = lm_recipe(tmp_path, manifest, lora={"rank": 2, "alpha": 4.0})
    _, trainer = losses(recipe, steps=1)
    backbone = [n for n, p in trainer.lm.named_parameters() if p.requires_grad and lm_group(n) == "backbone"]
    assert backbone and all("lora_" in n for n in backbone)


def test_eval_hooks_and_csv(tmp_path, manifest):
    recipe = lm_recipe(
        tmp_path, manifest, data={"eval": [str(manifest)]}, run={"max_steps": 4, "eval_every": 2}
    )
    trainer = build_trainer(load_config(recipe))
    calls = []
    trainer.add_eval_hook(lambda t, step: calls.append(step) or {"custom": float(step)})
    trainer.train()
    assert calls == [2, 4]
    rows = read_csv(trainer.out / "eval.csv")
    assert [r["step"] for r in rows] == [2, 4] and [r["custom"] for r in rows] == [2, 4]
    assert all(math.isfinite(r["eval/loss"]) for r in rows)
    train_rows = read_csv(trainer.out / "metrics.csv")
    assert len(train_rows) == 4 and all(r["throughput"] > 0 for r in train_rows)


def test_cli_train_overrides_and_guards(tmp_path, manifest, capsys):
    recipe = lm_recipe(tmp_path, manifest)
    args = ["train", "lm", "--config", str(recipe), "--set", "run.max_steps=1", "--set", "data.micro_rows=4"]
    assert cli_main(args) == 0
    assert '"step": 1' in capsys.readouterr().out
    assert cli_main(args) == 2  # a run folder with checkpoints needs --resume
    assert "--resume" in capsys.readouterr().err
    assert cli_main([*args[:-4], "--set", "run.max_steps=2", "--resume"]) == 0
    assert cli_main(["train", "tokenizer", "--config", str(recipe)]) == 2
    bad = load_config(recipe, {"optim": {"lr": {"encoder": 1.0}}, "run": {"out_dir": str(tmp_path / "x")}})
    with pytest.raises(MimoAudioError, match="unknown group"):
        build_trainer(bad)


def test_packed_checkpoint_is_small_and_resumes(tmp_path, manifest, capsys):
    """`export --resumable`: float16 weights, no optimizer moments; `--resume PACKED` continues at its
    step with the rate warmed up again, and the run's own later checkpoints are full ones."""
    from mimo_audio.train import checkpointing

    recipe = lm_recipe(tmp_path, manifest, optim={"warmup_steps": 2}, run={"save_every": 2})
    run = tmp_path / "run"
    assert cli_main(["train", "lm", "--config", str(recipe), "--set", "run.max_steps=2"]) == 0
    full = checkpointing.checkpoint_dir(run, 2)
    packed = tmp_path / "packed"
    assert cli_main(["export", str(run), "--out", str(packed), "--resumable"]) == 0
    assert not (packed / "optim.pt").exists() and (packed / "rng.pt").is_file()
    big, small = checkpointing.read_weights(full, "lm"), checkpointing.read_weights(packed, "lm")
    assert big.keys() == small.keys()
    floats = [k for k, v in big.items() if v.is_floating_point()]
    assert floats and all(small[k].dtype == torch.float16 for k in floats)
    assert all(torch.allclose(small[k].float(), big[k], rtol=1e-3, atol=1e-4) for k in floats)
    assert checkpointing.read_meta(packed)["packed"]["optimizer"] is False
    assert cli_main(["export", str(run), "--out", str(packed), "--resumable"]) == 2  # no silent overwrite
    capsys.readouterr()

    cfg = load_config(recipe, {"run": {"out_dir": str(tmp_path / "cont"), "max_steps": 4}})
    trainer = build_trainer(cfg, resume=str(packed))
    assert trainer.step == 2
    unit = trainer.units["lm"]
    assert unit.schedule.factor(2) == pytest.approx(0.5) and unit.schedule.factor(3) == 1.0
    assert not unit.optimizer.state  # fresh moments
    assert math.isfinite(trainer.train()["loss"]) and trainer.step == 4
    last = checkpointing.checkpoint_dir(tmp_path / "cont", 4)
    assert checkpointing.has_optim(last)
    assert checkpointing.read_meta(last)["schedules"]["lm"]["rewarm_start"] == 2


def test_packed_tokenizer_checkpoint_keeps_codebooks_and_step(tmp_path):
    """A packed stage-1 tokenizer resumes with its trained codebooks (no second k-means), the A2T
    decoder and the step; its losses stay close to the full checkpoint's continuation."""
    from mimo_audio.train import checkpointing
    from test_train_common import make_clips, tok_recipe

    recipe = tok_recipe(
        tmp_path, make_clips(tmp_path / "clips"), optim={"warmup_steps": 1}, run={"save_every": 2}
    )
    first = build_trainer(load_config(recipe))
    first.train(stop_at=2)
    first.save()
    packed = checkpointing.pack_checkpoint(tmp_path / "run1", tmp_path / "packed")
    assert {p.name for p in packed.glob("*.safetensors")} == {"tokenizer.safetensors", "a2t.safetensors"}
    full = build_trainer(load_config(recipe), resume=True)
    cont = build_trainer(
        load_config(recipe, {"run": {"out_dir": str(tmp_path / "cont")}}), resume=str(packed)
    )
    assert cont.step == full.step == 2
    ref = full.roots["train"].state_dict()
    state = cont.roots["train"].state_dict()
    assert sum(name.endswith("inited") for name in state) == 8  # one per quantizer
    for name, value in state.items():
        if name.endswith("inited"):
            assert float(value.min()) == 1.0  # codebooks stay initialised: no k-means on resume
        if value.is_floating_point():
            assert torch.allclose(value, ref[name], rtol=1e-3, atol=1e-3), name
    a, b = full.train(stop_at=3)["loss"], cont.train(stop_at=3)["loss"]
    assert math.isfinite(b) and b == pytest.approx(a, rel=0.05)


def test_tokenizer_warm_start_into_bigger_codebooks(tmp_path):
    """`model.warm_start`: a stage-1 run with other codebook sizes starts from a (packed) checkpoint:
    matching tensors are copied, the resized codebooks are re-initialised by k-means, step 0."""
    import json

    from mimo_audio.train import checkpointing
    from test_train_common import make_clips, tok_recipe

    clips = make_clips(tmp_path / "clips")
    old = build_trainer(load_config(tok_recipe(tmp_path, clips)))
    old.train(stop_at=2)
    old.save()
    packed = checkpointing.pack_checkpoint(old.out, tmp_path / "packed")
    cfg_path = tmp_path / "tokenizer_config.json"  # written by tok_recipe: 64-64-16…
    bigger = json.loads(cfg_path.read_text())
    bigger["codebook_size"] = [64, 64, 32]
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "config.json").write_text(json.dumps(bigger))
    recipe = tok_recipe(
        tmp_path / "big",
        clips,
        model={"config": str(tmp_path / "big" / "config.json"), "warm_start": str(packed)},
        run={"out_dir": str(tmp_path / "run_big")},
    )
    new = build_trainer(load_config(recipe))
    assert new.step == 0
    mine, theirs = new.roots["train"].state_dict(), old.roots["train"].state_dict()
    layers = [f"tokenizer.encoder.quantizer.vq.layers.{i}._codebook." for i in range(8)]
    for name in mine:
        if name.startswith(("tokenizer.encoder.layers", "tokenizer.decoder", "a2t.")) or any(
            name.startswith(p) for p in layers[:2]
        ):
            assert torch.allclose(mine[name].float(), theirs[name].float(), rtol=2e-3, atol=1e-3), name
    assert all(float(mine[p + "inited"]) == 1.0 for p in layers[:2])
    assert all(float(mine[p + "inited"]) == 0.0 for p in layers[2:])
    assert mine[layers[2] + "embed"].shape[0] == 32
    assert math.isfinite(new.train(stop_at=1)["loss"])
    assert all(float(new.roots["train"].state_dict()[p + "inited"]) == 1.0 for p in layers)  # k-means ran


def test_kmeans_init_on_several_batches(tmp_path, caplog):
    """`quantizer.kmeans_init_batches`: before step 1, the uninitialised codebooks are fitted on the
    encoder features of the batches steps 1…n train on (a fresh model: all of them)."""
    import logging

    from mimo_audio.tokenizer.encoder import encoder_output_lengths
    from test_train_common import make_clips, tok_recipe

    recipe = tok_recipe(tmp_path, make_clips(tmp_path / "clips"), quantizer={"kmeans_init_batches": 3})
    with caplog.at_level(logging.INFO, logger="mimo_audio.train"):
        trainer = build_trainer(load_config(recipe))
    state = trainer.roots["train"].state_dict()
    assert all(float(v) == 1.0 for k, v in state.items() if k.endswith("inited"))  # before any step
    cfg = trainer.tokenizer.config
    frames = sum(
        int(encoder_output_lengths(b["lengths"] // cfg.hop_length + 1, cfg).sum())
        for step in (1, 2, 3)
        for b in trainer.load_step(step)[1]
    )
    assert (
        f"k-means: {cfg.num_quantizers} codebook(s) initialised on {frames:,} frames of 3 batches"
        in caplog.text
    )
    assert math.isfinite(trainer.train(stop_at=1)["loss"])
    with pytest.raises(ConfigError, match="kmeans_init_batches"):
        load_config(recipe, {"quantizer": {"kmeans_init_batches": 0}})


def test_warm_start_can_refit_every_codebook(tmp_path):
    """`quantizer.reinit_codebooks`: a warm start keeps the encoder and decoder but fits every
    codebook again by k-means, the ones of matching size included."""
    from mimo_audio.train import checkpointing
    from test_train_common import make_clips, tok_recipe

    clips = make_clips(tmp_path / "clips")
    old = build_trainer(load_config(tok_recipe(tmp_path, clips)))
    old.train(stop_at=2)
    old.save()
    packed = checkpointing.pack_checkpoint(old.out, tmp_path / "packed")
    (tmp_path / "new").mkdir()
    recipe = tok_recipe(
        tmp_path / "new",
        clips,
        model={"warm_start": str(packed)},
        quantizer={"reinit_codebooks": True, "kmeans_init_batches": 2},
        run={"out_dir": str(tmp_path / "run_new")},
    )
    new = build_trainer(load_config(recipe))
    mine, theirs = new.roots["train"].state_dict(), old.roots["train"].state_dict()
    kept = [name for name in mine if name.startswith(("tokenizer.encoder.layers", "tokenizer.decoder"))]
    assert kept
    for name in kept:
        assert torch.allclose(mine[name].float(), theirs[name].float(), rtol=2e-3, atol=1e-3), name
    for i in range(8):
        prefix = f"tokenizer.encoder.quantizer.vq.layers.{i}._codebook."
        assert float(mine[prefix + "inited"]) == 1.0
        assert not torch.allclose(mine[prefix + "embed"], theirs[prefix + "embed"], atol=1e-3), i


def test_dead_code_threshold_too_high_for_the_batch_is_warned(tmp_path, caplog):
    import logging

    from test_train_common import make_clips, tok_recipe

    clips = make_clips(tmp_path / "clips")
    for threshold, warned in ((2.0, True), (0.001, False)):
        recipe = tok_recipe(tmp_path, clips, quantizer={"threshold_ema_dead_code": threshold})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mimo_audio.train"):
            build_trainer(load_config(recipe))
        assert ("most codes will be replaced every step" in caplog.text) is warned


def test_eval_batches_sample_the_whole_eval_set(tmp_path, expected_tensors):
    """An eval manifest grouped by task (ASR first, as `data synth` writes them): the few eval
    batches still see speech targets, and every evaluation scores the same batches."""
    recs = lm_records(expected_tensors)
    grouped = [recs[0]] * 4 + [recs[1]] * 8  # 4 ASR records (2 eval batches in order), then 8 TTS
    eval_manifest = make_lm_data(tmp_path / "eval", expected_tensors, grouped)
    train = make_lm_data(tmp_path / "data", expected_tensors)
    recipe = lm_recipe(
        tmp_path, train, data={"eval": [str(eval_manifest)]}, run={"max_steps": 1, "eval_batches": 2}
    )
    trainer = build_trainer(load_config(recipe))
    first, again = trainer.evaluate(), trainer.evaluate()
    assert math.isfinite(first["eval/loss/cb0"]) and math.isfinite(first["eval/loss/text"])
    assert again == first
