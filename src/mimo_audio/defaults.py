"""Where the default model pair lives when no ``--model`` / ``--tokenizer`` is given.

The default pair is a folder holding ``model/`` (LM, official format with its ``tokenizer.json``)
and ``tokenizer/`` (audio tokenizer). It is looked up in this order:

1. the folder named by the environment variable ``MIMO_AUDIO_DEFAULT_DIR``;
2. the package data folder ``mimo_audio/default_model/`` (filled by ``scripts/train_default.sh``).

Explicit folders (arguments, ``MIMO_AUDIO_MODEL`` / ``MIMO_AUDIO_TOKENIZER``) always win; the CLI
task commands, ``serve`` / ``demo`` and :meth:`MimoAudio.from_pretrained` call
:func:`resolve_model_pair`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MimoAudioError

ENV_DEFAULT_DIR = "MIMO_AUDIO_DEFAULT_DIR"
PACKAGE_DEFAULT_DIR = Path(__file__).resolve().parent / "default_model"
HOW_TO = "pass --model DIR --tokenizer DIR (or set MIMO_AUDIO_MODEL and MIMO_AUDIO_TOKENIZER)"


def _holds_pair(folder: Path) -> bool:
    return (folder / "model" / "config.json").is_file() and (folder / "tokenizer" / "config.json").is_file()


def default_model_dirs() -> tuple[Path, Path]:
    """``(model_dir, tokenizer_dir)`` of the installed default pair.

    Raises :class:`MimoAudioError` (one line) when ``MIMO_AUDIO_DEFAULT_DIR`` names a folder without
    the pair, or when it is unset and the package ships no trained default.
    """
    env = os.environ.get(ENV_DEFAULT_DIR)
    if env:
        folder = Path(env).expanduser()
        if not _holds_pair(folder):
            raise MimoAudioError(
                f"{ENV_DEFAULT_DIR}={env} does not hold model/config.json and tokenizer/config.json"
            )
        return folder / "model", folder / "tokenizer"
    if _holds_pair(PACKAGE_DEFAULT_DIR):
        return PACKAGE_DEFAULT_DIR / "model", PACKAGE_DEFAULT_DIR / "tokenizer"
    raise MimoAudioError(f"no default model is installed; {HOW_TO}")


def resolve_model_pair(
    model: str | os.PathLike | None, tokenizer: str | os.PathLike | None
) -> tuple[str | os.PathLike, str | os.PathLike]:
    """Explicit ``(model, tokenizer)`` when both are given, the default pair when neither is.

    Giving only one of the two is an error: a default LM never pairs with a foreign tokenizer.
    """
    if model and tokenizer:
        return model, tokenizer
    if model or tokenizer:
        raise MimoAudioError(f"give both the model and the audio tokenizer folders: {HOW_TO}")
    return default_model_dirs()
