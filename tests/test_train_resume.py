"""Resume test: a training process killed with SIGKILL mid-run, resumed from its last checkpoint,
continues the loss curve of an uninterrupted run exactly (deterministic settings, one CPU thread).

Covered: the LM (AdamW state, data position), tokenizer stage 1 (EMA codebooks with k-means init and
dead-code replacement, the A2T decoder) and stage 2 (generator and discriminator optimizers).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from mimo_audio.train import build_trainer, load_config
from mimo_audio.train.checkpointing import latest_checkpoint, read_meta
from mimo_audio.train.metrics import read_csv
from test_train_common import lm_recipe, make_clips, make_lm_data, restore_threads, tok_recipe  # noqa: F401

COMPARED = ("loss", "grad_norm", "lr")


def last_logged_step(path) -> int:
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f)][1:]
    steps = [int(r[0]) for r in rows if r and r[0].isdigit()]
    return max(steps, default=0)


def kill_mid_run(target: str, recipe, out_dir, kill_at: int, timeout: float = 180.0) -> None:
    """Start ``mimo-audio train`` and SIGKILL it as soon as step ``kill_at`` has been logged."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mimo_audio", "train", target, "--config", str(recipe)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + timeout
    try:
        while last_logged_step(out_dir / "metrics.csv") < kill_at:
            if proc.poll() is not None:
                pytest.fail(
                    f"training exited ({proc.returncode}) before the kill: {proc.stderr.read().decode()[-2000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail("training did not reach the kill step in time")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def curve(out_dir) -> list[dict[str, float]]:
    return [
        {k: r[k] for k in r if k == "step" or k.startswith(COMPARED)}
        for r in read_csv(out_dir / "metrics.csv")
    ]


CASES = {
    # target, total steps, save every, kill once this step is logged
    "lm": ("lm", 16, 4, 9),
    "tokenizer_stage1": ("tokenizer", 12, 4, 6),
    "tokenizer_stage2": ("tokenizer", 8, 3, 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigkill_and_resume_continues_the_curve(case, tmp_path, expected_tensors):
    target, steps, save_every, kill_at = CASES[case]
    run = {"max_steps": steps, "save_every": save_every, "keep_last": 2}

    def recipe(name):
        folder = tmp_path / name
        folder.mkdir()
        out = {"run": {**run, "out_dir": str(folder / "run")}}
        if target == "lm":
            return lm_recipe(folder, make_lm_data(tmp_path / "data", expected_tensors), **out), folder / "run"
        stage = 1 if case.endswith("1") else 2
        return tok_recipe(folder, make_clips(tmp_path / "clips"), stage=stage, **out), folder / "run"

    killed_recipe, killed_out = recipe("killed")
    kill_mid_run(target, killed_recipe, killed_out, kill_at)
    ckpt = latest_checkpoint(killed_out)
    assert ckpt is not None and 0 < read_meta(ckpt)["step"] < steps
    resumed = build_trainer(load_config(killed_recipe), resume=True)
    assert resumed.step == read_meta(ckpt)["step"]
    resumed.train()

    ref_recipe, ref_out = recipe("reference")
    build_trainer(load_config(ref_recipe)).train()

    got, want = curve(killed_out), curve(ref_out)
    assert [r["step"] for r in got] == list(range(1, steps + 1))
    assert got == want


def test_sigterm_saves_the_step_in_progress_and_resume_continues(tmp_path, expected_tensors):
    """SIGTERM (as `timeout` or a scheduler sends it): checkpoint at the current step, exit 75, exact resume."""
    steps, save_every = 12, 4
    data = make_lm_data(tmp_path / "data", expected_tensors)

    def recipe(name):
        folder = tmp_path / name
        folder.mkdir()
        run = {"max_steps": steps, "save_every": save_every, "keep_last": 2, "out_dir": str(folder / "run")}
        return lm_recipe(folder, data, run=run), folder / "run"

    stopped_recipe, stopped_out = recipe("stopped")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mimo_audio", "train", "lm", "--config", str(stopped_recipe)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 180
    while last_logged_step(stopped_out / "metrics.csv") < 5:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "training did not reach step 5 in time"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err.decode()[-2000:]
    stopped_at = read_meta(latest_checkpoint(stopped_out))["step"]
    # the checkpoint is of the step in progress (the last one logged), not of the last multiple of 4
    assert 5 <= stopped_at < steps and stopped_at == last_logged_step(stopped_out / "metrics.csv")
    assert f'"step": {stopped_at}, "stopped_early": true' in out.decode()

    resumed = build_trainer(load_config(stopped_recipe), resume=True)
    assert resumed.step == stopped_at
    resumed.train()
    ref_recipe, ref_out = recipe("reference")
    build_trainer(load_config(ref_recipe)).train()
    assert curve(stopped_out) == curve(ref_out)
