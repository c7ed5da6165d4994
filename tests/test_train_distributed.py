"""Distributed test: 2 CPU processes (gloo, 127.0.0.1) give the same losses as 1 process on the same
global batch — LM with DDP and with FSDP2, tokenizer stage 1 with DDP (EMA statistics, k-means init
and dead-code draws shared across processes). The single process also accumulates gradients over
two micro-batches, so accumulation is checked against data parallelism at the same time."""

from __future__ import annotations

import json

import pytest

from mimo_audio.train import build_trainer, load_config
from mimo_audio.train.checkpointing import list_checkpoints
from mimo_audio.train.distributed import spawn_local
from test_train_common import (  # noqa: F401
    lm_recipe,
    losses_per_step,
    losses_then_resumed,
    make_clips,
    make_lm_data,
    restore_threads,
    tok_recipe,
)

RTOL = 1e-5


def compare(single: list[dict], multi: list[dict]) -> None:
    assert len(single) == len(multi)
    for a, b in zip(single, multi, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=RTOL, abs=1e-7), k


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lm_two_processes_match_one(strategy, tmp_path, expected_tensors):
    manifest = make_lm_data(tmp_path / "data", expected_tensors)
    steps = 3
    single = lm_recipe(tmp_path, manifest, data={"micro_rows": 2}, run={"max_steps": steps, "save_every": 2})
    losses_per_step(single, tmp_path / "single.json")
    multi_dir = tmp_path / "multi"
    multi_dir.mkdir()
    multi = lm_recipe(
        multi_dir,
        manifest,
        data={"micro_rows": 1},
        distributed={"strategy": strategy},
        run={"max_steps": steps, "save_every": 2, "out_dir": str(multi_dir / "run")},
    )
    # the two processes also resume their gathered step-2 checkpoint (FSDP: rank 0 reads, broadcasts)
    spawn_local(2, losses_then_resumed, multi, multi_dir / "multi.json", 2, timeout=240)
    one = json.loads((tmp_path / "single.json").read_text())
    two = json.loads((multi_dir / "multi.json").read_text())
    compare(one, two["run"])
    compare(one[2:], two["resumed"])
    # ... and the same checkpoint resumes in one process without a wrapper
    assert [s for s, _ in list_checkpoints(multi_dir / "run")] == [2, 3]
    step2 = str(list_checkpoints(multi_dir / "run")[0][1])
    trainer = build_trainer(load_config(multi, {"distributed": {"strategy": "none"}}), resume=step2)
    assert trainer.step == 2
    assert trainer.train(stop_at=3)["loss"] == pytest.approx(one[-1]["loss"], rel=RTOL)


def test_tokenizer_two_processes_match_one(tmp_path):
    manifest = make_clips(tmp_path / "clips")
    single = tok_recipe(tmp_path, manifest, stage=1, data={"micro_batch_size": 4}, run={"max_steps": 3})
    losses_per_step(single, tmp_path / "single.json")
    multi_dir = tmp_path / "multi"
    multi_dir.mkdir()
    multi = tok_recipe(
        multi_dir,
        manifest,
        stage=1,
        data={"micro_batch_size": 2},
        distributed={"strategy": "ddp"},
        run={"max_steps": 3, "out_dir": str(multi_dir / "run")},
    )
    spawn_local(2, losses_per_step, multi, multi_dir / "multi.json", timeout=240)
    compare(
        json.loads((tmp_path / "single.json").read_text()), json.loads((multi_dir / "multi.json").read_text())
    )
