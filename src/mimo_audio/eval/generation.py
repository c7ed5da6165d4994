"""Model access for the suites: a lazily loaded :class:`~mimo_audio.MimoAudio` and batched
generation with per-item seeds (so batching and resuming leave sampled outputs unchanged)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..tasks import GENERATION_CONFIG


class ModelHandle:
    """A :class:`~mimo_audio.MimoAudio` loaded on first use (a fully cached re-run loads nothing)."""

    def __init__(self, model_dir: str | None, tokenizer_dir: str | None, **load: Any) -> None:
        self.model_dir, self.tokenizer_dir, self.load = model_dir, tokenizer_dir, load
        self._model = None

    def get(self):
        if self._model is None:
            from ..api import MimoAudio
            from ..errors import MimoAudioError

            if not self.model_dir or not self.tokenizer_dir:
                raise MimoAudioError(
                    "this suite needs --model and --tokenizer (or MIMO_AUDIO_MODEL/_TOKENIZER)"
                )
            self._model = MimoAudio.from_pretrained(
                self.model_dir, self.tokenizer_dir, progress=False, **self.load
            )
        return self._model

    def settings(self) -> dict[str, Any]:
        """What identifies the model in a cache key: resolved folders, dtype and quantisation."""
        resolve = lambda p: str(Path(p).resolve()) if p else None  # noqa: E731
        extra = {k: str(self.load[k]) for k in ("dtype", "quantize") if self.load.get(k) is not None}
        if self.model_dir:  # the folder's own samplers and best_of change the outputs too
            gen_cfg = Path(self.model_dir) / GENERATION_CONFIG
            if gen_cfg.is_file():
                extra["generation_config"] = f"{zlib.crc32(gen_cfg.read_bytes()):08x}"
        return {"model": resolve(self.model_dir), "tokenizer": resolve(self.tokenizer_dir), **extra}


def item_seed(base: int | None, item_id: str) -> int:
    """A seed fixed by the item (so batching and resuming do not change sampled outputs)."""
    return ((base or 0) + zlib.crc32(item_id.encode("utf-8"))) % (2**31)


def generate(
    model, task: str, inputs: Sequence[dict[str, Any]], ids: Sequence[str], gen: dict[str, Any]
) -> list:
    """Run ``task`` on a batch of input dicts through the engine, one seed per item → TaskResults."""
    seeds = [item_seed(gen.get("seed"), i) for i in ids]
    options = {k: v for k, v in gen.items() if k != "seed"}
    takes_seed = task in ("asr", "tts")  # their prompts draw an instruction template from the seed
    batch = [{**inp, "seed": s} if takes_seed else inp for inp, s in zip(inputs, seeds, strict=True)]
    return model.run_batch(task, batch, seeds, progress=False, **options)


def load_for(handle: ModelHandle, task: str, hint: str = ""):
    """The handle's model, checked to run ``task`` (Base vs Instruct) before any item is tried.

    Raises :class:`MimoAudioError` (one line, ``hint`` appended) when the variant cannot run it.
    """
    from ..errors import MimoAudioError
    from ..tasks import PRESETS

    model = handle.get()
    need = PRESETS[task].variant
    if model.variant is not None and model.variant != need:
        raise MimoAudioError(
            f"{handle.model_dir}: {task} needs the {need.capitalize()} model, "
            f"this is the {model.variant.capitalize()} model{hint}"
        )
    return model
