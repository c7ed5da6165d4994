"""Training for MiMo-Audio: the audio tokenizer (stages 1 and 2) and the LM (pre-training, SFT, LoRA).

Never imported by inference code; its extra dependencies sit behind the ``[train]`` install extra
(``pip install mimo-audio[train]``). Entry points:

>>> from mimo_audio.train import load_config, build_trainer
>>> trainer = build_trainer(load_config("recipes/lm_stage2.yaml"))
>>> trainer.train()

or ``mimo-audio train tokenizer|lm --config FILE.yaml`` (under ``torchrun`` for several processes),
``mimo-audio data encode`` (audio → code shards) and ``mimo-audio export`` (checkpoint → the official
``config.json`` + safetensors folders). See docs/TRAINING.md.
"""

from __future__ import annotations

from .config import LMTrainConfig, TokenizerTrainConfig, load_config


def build_trainer(config: LMTrainConfig | TokenizerTrainConfig, *, resume: bool | str = False):
    """The trainer for a recipe: :class:`~.lm_trainer.LMTrainer` or :class:`~.tokenizer_trainer.TokenizerTrainer`.

    ``resume``: False (fresh run; refuses an output folder that already holds checkpoints), True
    (continue from the latest checkpoint there, if any) or a checkpoint folder.
    """
    if isinstance(config, LMTrainConfig):
        from .lm_trainer import LMTrainer

        return LMTrainer(config, resume=resume)
    from .tokenizer_trainer import TokenizerTrainer

    return TokenizerTrainer(config, resume=resume)


__all__ = ["LMTrainConfig", "TokenizerTrainConfig", "build_trainer", "load_config"]
