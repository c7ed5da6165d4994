"""Blended espeak-ng voice variants: new synthetic speakers made by mixing two of espeak-ng's variants.

espeak-ng ships about 60 usable variants, so a corpus built from them alone has about 60 voices, too few
for a few-shot voice-conversion model to learn to copy a voice it has never heard. A *blend* mixes the
voice parameters of two same-gender variants (``pitch``, ``formant`` 0–8, ``voicing``, ``consonants``,
``breathw``) with a weight, then jitters the formant frequencies and the pitch, and takes every other
line (tone, intonation, gender, …) from the heavier parent.

A blend is named ``mix-<a>-<b>-<weight of a in %>-<index>``; everything about it (the jitter included)
is a pure function of that name. espeak-ng reads it from a variant file ``mx<sha1(name)[:8]>`` (espeak-ng
1.51 aborts on long variant names) in a private data folder per blend: a copy of the system's
``espeak-ng-data`` made of symbolic links plus the one new file (espeak-ng lists at most about 350
voices, so 300 blends cannot share one folder). The folders live under ``$MIMO_ESPEAK_DATA`` or
``~/.cache/mimo-audio/espeak/<tag>/`` (``tag``: a hash of the system data path), are written
atomically and reused.

espeak-ng 1.51 ignores a variant given with ``-v en-gb+<variant>`` (``en-gb`` matches a language, and
the variant is dropped: every ``en-gb+…`` voice is the plain British voice), while ``en+<variant>``
selects the same British voice with the variant. Blends therefore speak British English as
``en+<blend>`` (:meth:`synth_audio.Speaker.voice`).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from ..errors import MimoAudioError

PREFIX = "mix-"
BLENDED = ("pitch", "formant", "voicing", "consonants", "breathw")
# espeak-ng's values for a key a variant file leaves out (voices.c: VoiceReset)
DEFAULTS = {"pitch": [82, 118], "voicing": [100], "consonants": [100, 100], "formant": [100, 100, 100]}
WEIGHTS = (20, 80)  # weight of the first parent, percent
FORMANT_JITTER = 0.06  # sd of the log formant-frequency factor
PITCH_JITTER = 0.08  # sd of the pitch shift, as a share of the base pitch
_DATA_RE = re.compile(r"Data at:\s*(\S+)")


def is_blend(variant: str) -> bool:
    """Whether ``variant`` names a blend (``mix-a-b-w-i``) rather than one of espeak-ng's variants."""
    return variant.startswith(PREFIX)


def blend_name(a: str, b: str, weight: int, index: int) -> str:
    """The name of the blend of variants ``a`` and ``b`` with ``weight`` % of ``a``."""
    return f"{PREFIX}{a}-{b}-{weight}-{index}"


def parse_blend(name: str) -> tuple[str, str, int]:
    """``mix-a-b-w-i`` → ``(a, b, w)``; a one-line error for anything else."""
    parts = name[len(PREFIX) :].split("-")
    if not is_blend(name) or len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
        raise MimoAudioError(f"not a blended voice name: {name!r} (want mix-<a>-<b>-<weight>-<index>)")
    weight = int(parts[2])
    if not 0 <= weight <= 100:
        raise MimoAudioError(f"blended voice {name!r}: weight {weight} is not in 0-100")
    return parts[0], parts[1], weight


def blend_file(name: str) -> str:
    """The blend's espeak-ng variant file name: ``mx`` + 8 hex digits of the name's SHA-1."""
    return "mx" + hashlib.sha1(name.encode()).hexdigest()[:8]


@cache
def system_data_dir() -> Path:
    """The system's ``espeak-ng-data`` folder (as ``espeak-ng --version`` reports it)."""
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        raise MimoAudioError("blended voices need espeak-ng (apt-get install espeak-ng)") from None
    m = _DATA_RE.search(out)
    if m is None or not (Path(m.group(1)) / "voices" / "!v").is_dir():
        raise MimoAudioError(f"cannot find espeak-ng's voice data (espeak-ng --version says {out.strip()!r})")
    return Path(m.group(1))


def _variant_lines(variant: str) -> list[str]:
    path = system_data_dir() / "voices" / "!v" / variant
    if not path.is_file():
        raise MimoAudioError(f"espeak-ng has no voice variant {variant!r} (looked for {path})")
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def _values(lines: list[str]) -> dict[str, list[int]]:
    """Numeric settings of a variant file: ``{"pitch": [lo, hi], "formant 1": [f, strength, width], …}``."""
    out: dict[str, list[int]] = {}
    for line in lines:
        words = line.split("//")[0].split()
        if not words or words[0] not in BLENDED:
            continue
        key, nums = words[0], words[1:]
        if key == "formant" and nums:
            key, nums = f"formant {nums[0]}", nums[1:]
        try:
            out[key] = [int(x) for x in nums]
        except ValueError:
            continue
    return out


def _default(key: str) -> list[int] | None:
    return DEFAULTS["formant" if key.startswith("formant") else key] if key.split()[0] in DEFAULTS else None


def blend_variant_text(name: str) -> str:
    """The espeak-ng variant file of blend ``name`` (deterministic: the jitter is seeded by the name)."""
    a, b, weight = parse_blend(name)
    lines = {v: _variant_lines(v) for v in (a, b)}
    va, vb = _values(lines[a]), _values(lines[b])
    rng = random.Random(f"blend:{name}")
    w = weight / 100
    keys = sorted(set(va) | set(vb) | {f"formant {i}" for i in range(9)} | {"pitch"})
    out = ["language variant", f"name {blend_file(name)}", ""]
    for key in keys:
        xa, xb = va.get(key, _default(key)), vb.get(key, _default(key))
        if xa is None or xb is None:  # a key with no espeak default that one parent leaves out
            xa = xb = xa if xa is not None else xb
        if key.startswith("formant"):  # pad "formant N f" to frequency, strength, width
            xa, xb = (x + DEFAULTS["formant"][len(x) :] for x in (xa, xb))
        n = min(len(xa), len(xb))
        tail = (xa if w >= 0.5 else xb)[n:]
        mixed = [w * p + (1 - w) * q for p, q in zip(xa[:n], xb[:n], strict=True)] + tail
        if key.startswith("formant"):
            mixed[0] *= math.exp(rng.gauss(0.0, FORMANT_JITTER))
        elif key == "pitch":
            shift = mixed[0] * rng.gauss(0.0, PITCH_JITTER)
            mixed = [x + shift for x in mixed]
        values = " ".join(str(max(0, round(x))) for x in mixed)
        out.append(f"{key} {values}")
    heavier = a if w >= 0.5 else b
    for line in lines[heavier]:
        words = line.split()
        if words and words[0] not in (*BLENDED, "language", "name"):
            out.append(line.rstrip())
    return "\n".join(out) + "\n"


def _data_root() -> Path:
    root = os.environ.get("MIMO_ESPEAK_DATA")
    if root:
        return Path(root)
    tag = hashlib.sha1(str(system_data_dir()).encode()).hexdigest()[:8]
    return Path.home() / ".cache" / "mimo-audio" / "espeak" / tag


def _link_tree(src: Path, dst: Path, keep: str) -> None:
    """``dst`` mirrors ``src`` with symbolic links, except ``keep``'s folders, which are real."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name == keep.split("/")[0] and entry.is_dir():
            rest = keep.split("/", 1)
            if len(rest) == 2:
                _link_tree(entry, dst / entry.name, rest[1])
            else:
                _link_tree(entry, dst / entry.name, "\0")
        else:
            (dst / entry.name).symlink_to(entry)


def voice_data_dir(name: str) -> Path:
    """The folder to pass as ``espeak-ng --path`` for blend ``name`` (built on first use).

    The folder is named by the blend's file and a hash of its text, so a folder, once there, is never
    changed: processes rendering the same blend side by side race only to create it."""
    file, text = blend_file(name), blend_variant_text(name)
    folder = _data_root() / f"{file}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    variant = folder / "espeak-ng-data" / "voices" / "!v" / file
    if variant.is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{file}.", dir=folder.parent))
    try:
        _link_tree(system_data_dir(), tmp / "espeak-ng-data", "voices/!v")
        (tmp / "espeak-ng-data" / "voices" / "!v" / file).write_text(text, encoding="utf-8")
        try:
            tmp.rename(folder)
        except OSError:  # another process built it meanwhile
            if not variant.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
