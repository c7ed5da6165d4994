"""Shared test fixtures: the parity folder (``MIMO_PARITY_FIXTURES``) and its expected tensors."""

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
