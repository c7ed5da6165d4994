"""Shared test fixtures: the parity folder (``MIMO_PARITY_FIXTURES``), its expected tensors and its
tiny model pair loaded as :class:`mimo_audio.api.MimoAudio`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(
    os.environ.get("MIMO_PARITY_FIXTURES", ROOT.parent / "shared" / "fixtures" / "parity")
).resolve()


def _expected_json() -> dict:
    path = PARITY_DIR / "expected.json"
    if not path.is_file():
        raise RuntimeError(f"parity fixtures not found at {PARITY_DIR} (set MIMO_PARITY_FIXTURES)")
    return json.loads(path.read_text(encoding="utf-8"))


EXPECTED = _expected_json()
CLIPS: dict[str, str] = EXPECTED["clips"]


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY_DIR


@pytest.fixture(scope="session")
def expected_json() -> dict:
    return EXPECTED


@pytest.fixture(scope="session")
def expected_tensors() -> dict:
    return load_file(str(PARITY_DIR / "expected.safetensors"))


def clip_path(name: str) -> Path:
    return PARITY_DIR / CLIPS[name]


def tensor_names(suffix: str) -> list[str]:
    """Names in expected.json's ``tensors`` ending with ``suffix`` (e.g. ``.mel``)."""
    return [k for k in EXPECTED["tensors"] if k.endswith(suffix)]


@pytest.fixture(scope="module")
def model():
    """The parity folder's tiny LM and tokenizer as one :class:`MimoAudio` on CPU (one per module)."""
    from mimo_audio.api import MimoAudio

    return MimoAudio.from_pretrained(
        PARITY_DIR / "model", PARITY_DIR / "tokenizer", device="cpu", progress=False
    )


# one few-shot pair of parity clips, ten steps, sampled speech: for the few-shot options' tests
FEWSHOT = {
    "examples": [(clip_path("speech_a"), clip_path("speech_c"), "text")],
    "max_new_steps": 10,
    "speech_temperature": 1.0,
}
