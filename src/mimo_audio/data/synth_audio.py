"""Audio side of the synthetic corpus: espeak-ng speakers and styles, rendering, and augmentation
(coloured noise at a chosen SNR, synthetic room reverberation), all in numpy at 24 kHz mono.

A *speaker* is an espeak-ng voice variant (``+f2``, ``+m3``, ``+klatt``, named variants …) with a
base pitch and an English accent; its Mandarin voice is ``cmn-latn-pinyin`` with the same variant.
(espeak-ng 1.51's ``cmn`` voice reads Han text as pinyin with English digits; ``cmn-latn-pinyin``
reads Han characters correctly.) A *style* sets rate, pitch offset, amplitude and whisper. Extra
speakers can be *blends* of two same-gender variants (:mod:`.synth_voices`, :func:`blend_speakers`).
"""

from __future__ import annotations

import ctypes
import io
import random
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from ..audio import resample
from ..errors import MimoAudioError
from . import synth_voices as sv

SAMPLE_RATE = 24000
ESPEAK = "espeak-ng"

# variant → gender (from `espeak-ng --voices=variant`); robotic/effect variants are left out
VARIANTS = {
    "m1": "M", "m2": "M", "m3": "M", "m4": "M", "m5": "M", "m6": "M", "m7": "M", "m8": "M",
    "f1": "F", "f2": "F", "f3": "F", "f4": "F", "f5": "F", "klatt": "M", "klatt2": "M", "klatt3": "M",
    "adam": "M", "Alex": "M", "Alicia": "F", "Andrea": "F", "Andy": "M", "Annie": "F", "antonio": "M",
    "aunty": "F", "belinda": "F", "benjamin": "M", "boris": "M", "caleb": "M", "david": "M", "Denis": "M",
    "ed": "M", "edward": "M", "Gene": "M", "gustave": "M", "Hugo": "M", "iven": "M", "Jacky": "M",
    "john": "M", "Lee": "M", "linda": "F", "Marco": "M", "max": "M", "Michael": "M", "michel": "M",
    "Mike": "M", "norbert": "M", "paul": "M", "quincy": "M", "rob": "M", "robert": "M", "steph": "F",
    "steph2": "F", "steph3": "F", "travis": "M", "victor": "M", "zac": "M", "anika": "F", "grandma": "F",
    "grandpa": "M", "shelby": "M",
}  # fmt: skip
EN_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
ZH_VOICE = "cmn-latn-pinyin"
RATES = {"slow": (110, 135), "normal": (150, 185), "fast": (215, 260)}  # words per minute
PITCH_OFFSETS = {"low": -22, "normal": 0, "high": 22}  # added to the speaker's base pitch (0–99)
AMPLITUDES = {"quiet": 0.25, "normal": 0.7, "loud": 1.0}  # peak level after normalisation


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: espeak variant, base pitch (espeak ``-p``) and English accent voice."""

    variant: str
    pitch: int
    accent: str

    @property
    def id(self) -> str:
        return f"{self.accent}+{self.variant}@p{self.pitch}"

    @property
    def gender(self) -> str:
        return gender_of(self.variant)

    @property
    def blended(self) -> bool:
        """Whether the variant is a blend of two espeak-ng variants (:mod:`.synth_voices`)."""
        return sv.is_blend(self.variant)

    def voice(self, lang: str, whisper: bool = False) -> str:
        """espeak ``-v`` argument for ``lang``; whispering swaps in espeak's whisper variant."""
        base = self.accent if lang == "en" else ZH_VOICE
        if whisper:
            return f"{base}+{'whisperf' if self.gender == 'F' else 'whisper'}"
        if self.blended:  # `en-gb+variant` drops the variant (synth_voices); `en` is the same voice
            return f"{'en' if base == 'en-gb' else base}+{sv.blend_file(self.variant)}"
        return f"{base}+{self.variant}"

    def data_path(self, whisper: bool = False) -> str | None:
        """espeak ``--path`` folder holding the blend's variant file (None: the system's data)."""
        return str(sv.voice_data_dir(self.variant)) if self.blended and not whisper else None


def gender_of(variant: str) -> str:
    """``"M"`` or ``"F"`` for an espeak variant or a blend (the gender its parents share)."""
    name = sv.parse_blend(variant)[0] if sv.is_blend(variant) else variant
    if name not in VARIANTS:
        raise MimoAudioError(f"unknown espeak voice variant {variant!r}")
    return VARIANTS[name]


@dataclass(frozen=True)
class Style:
    """Speaking style: ``rate``/``pitch``/``volume`` class names and whisper; ``wpm`` the drawn rate."""

    rate: str = "normal"
    pitch: str = "normal"
    volume: str = "normal"
    whisper: bool = False
    wpm: int = 170

    def as_dict(self) -> dict[str, str]:
        return {
            "rate": self.rate,
            "pitch": self.pitch,
            "volume": self.volume,
            "whisper": "yes" if self.whisper else "no",
        }


def speakers(seed: int) -> list[Speaker]:
    """Every synthetic speaker (one per variant, base pitch and accent drawn from ``seed``), shuffled."""
    rng = random.Random(f"{seed}:speakers")
    out = [Speaker(v, rng.randrange(30, 71), rng.choice(EN_ACCENTS)) for v in sorted(VARIANTS)]
    rng.shuffle(out)
    return out


def blend_speakers(base: list[Speaker], n: int, seed: int) -> list[Speaker]:
    """``n`` new speakers, each a blend of two same-gender variants of ``base`` (weight of the first
    parent 20–80 %) with its own base pitch and accent; a pure function of the arguments."""
    rng = random.Random(f"{seed}:blends")
    pools: dict[str, list[str]] = {}
    for variant in sorted({s.variant for s in base if not s.blended}):
        pools.setdefault(VARIANTS[variant], []).append(variant)
    pools = {g: vs for g, vs in pools.items() if len(vs) >= 2}
    if n > 0 and not pools:
        raise MimoAudioError("blended voices need two speakers of the same gender")
    parents = [v for vs in pools.values() for v in vs]
    out = []
    for i in range(n):
        a = rng.choice(parents)
        b = rng.choice([v for v in pools[VARIANTS[a]] if v != a])
        name = sv.blend_name(a, b, rng.randint(*sv.WEIGHTS), i)
        out.append(Speaker(name, rng.randrange(30, 71), rng.choice(EN_ACCENTS)))
    return out


def draw_style(rng: random.Random, *, rate: str | None = None, plain: bool = False) -> Style:
    """A random style; ``plain`` keeps every class at normal (only the rate within its class varies)."""
    if plain:
        r, p, v, w = rate or "normal", "normal", "normal", False
    else:
        r = rate or rng.choice(("slow", "normal", "normal", "fast"))
        p = rng.choice(("low", "normal", "normal", "high"))
        v = rng.choice(("quiet", "normal", "normal", "loud"))
        w = rng.random() < 0.12
    return Style(r, p, v, w, rng.randint(*RATES[r]))


def check_espeak() -> None:
    """Fail with one line when espeak-ng is not installed."""
    if shutil.which(ESPEAK) is None:
        raise MimoAudioError("data synth needs espeak-ng (apt-get install espeak-ng)")


def render(text: str, lang: str, speaker: Speaker, style: Style) -> np.ndarray:
    """espeak-ng rendering of ``text`` → ``[samples]`` float32 at 24 kHz, peak at the style's level."""
    pitch = int(np.clip(speaker.pitch + PITCH_OFFSETS[style.pitch], 0, 99))
    cmd = [ESPEAK, "-v", speaker.voice(lang, style.whisper), "-s", str(style.wpm), "-p", str(pitch)]
    path = speaker.data_path(style.whisper)
    cmd += [f"--path={path}"] if path else []
    cmd += ["-a", "100", "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MimoAudioError(f"espeak-ng failed on {text!r}: {err[0] if err else 'no audio'}")
    wav, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    wav = resample(wav.reshape(-1), sr, SAMPLE_RATE)
    return normalize(wav, AMPLITUDES[style.volume])


# ---------------------------------------------------------------------------- word timings
class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` of espeak-ng's ``speak_lib.h`` (1.51)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters of the UTF-8 text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of the output
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


class _EspeakVoice(ctypes.Structure):
    """``espeak_VOICE`` of ``speak_lib.h``."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)
_EVENT_WORD, _EVENT_END_OF_LIST = 1, 0
# the library, the list its callback fills, the callback (kept alive while the library may call it)
# and the data path it was initialised with
_espeak: tuple[ctypes.CDLL, list, object, str | None] | None = None


def _library(path: str | None = None) -> tuple[ctypes.CDLL, list, object, str | None]:
    """libespeak-ng initialised for synchronous synthesis with word events, on the data folder
    ``path`` (None: the system's); initialised again when a call needs another folder."""
    global _espeak
    if _espeak is not None and _espeak[3] != path:
        # initialise again in place (espeak_Terminate then espeak_Initialize hangs espeak-ng 1.51)
        lib, words, callback, _ = _espeak
        if lib.espeak_Initialize(2, 0, path.encode() if path else None, 0x8000) <= 0:
            raise MimoAudioError(f"libespeak-ng failed to initialise on {path}")
        lib.espeak_SetSynthCallback(callback)
        _espeak = (lib, words, callback, path)
    if _espeak is None:
        try:
            lib = ctypes.CDLL("libespeak-ng.so.1")
        except OSError:
            raise MimoAudioError("word timings need libespeak-ng (apt-get install espeak-ng)") from None
        # AUDIO_OUTPUT_SYNCHRONOUS, DONT_EXIT
        if lib.espeak_Initialize(2, 0, path.encode() if path else None, 0x8000) <= 0:
            raise MimoAudioError("libespeak-ng failed to initialise")
        words: list = []

        def on_audio(wav, n, events) -> int:
            i = 0
            while events[i].type != _EVENT_END_OF_LIST:
                if events[i].type == _EVENT_WORD:
                    words.append((events[i].text_position - 1, events[i].audio_position / 1000))
                i += 1
            return 0

        callback = _SYNTH_CALLBACK(on_audio)
        lib.espeak_SetSynthCallback(callback)
        _espeak = (lib, words, callback, path)
    return _espeak


def word_starts(text: str, lang: str, speaker: Speaker, style: Style) -> list[tuple[int, float]]:
    """When each word of :func:`render`'s clip of ``text`` starts: ``[(character offset, seconds)]``.

    espeak-ng's own word events for the same voice, rate and pitch (the library synthesises the same
    samples as the ``espeak-ng`` program, which only adds trailing silence). espeak groups some
    unstressed words with their neighbour ("There are" is one event), so there may be fewer entries
    than words; offsets index ``text``.
    """
    lib, words, _, _ = _library(speaker.data_path(style.whisper))
    pitch = int(np.clip(speaker.pitch + PITCH_OFFSETS[style.pitch], 0, 99))
    voice = speaker.voice(lang, style.whisper).encode()
    # as the espeak-ng program does with -v: a voice name, else a language (with +variant)
    if (
        lib.espeak_SetVoiceByName(voice) != 0
        and lib.espeak_SetVoiceByProperties(ctypes.byref(_EspeakVoice(languages=voice))) != 0
    ):
        raise MimoAudioError(f"espeak-ng has no voice {voice.decode()!r}")
    lib.espeak_SetParameter(1, style.wpm, 0)  # espeakRATE
    lib.espeak_SetParameter(2, 100, 0)  # espeakVOLUME (-a 100)
    lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
    data = text.encode()
    words.clear()
    # position 0, POS_CHARACTER, no end, espeakCHARS_UTF8
    if lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None) != 0:
        raise MimoAudioError(f"espeak-ng failed on {text!r}")
    lib.espeak_Synchronize()
    first: dict[int, float] = {}
    for pos, sec in words:
        if pos >= 0:  # espeak-ng 1.51 may end Mandarin text with a word event at position 0
            first[pos] = min(sec, first.get(pos, sec))
    words.clear()
    return sorted(first.items())


def normalize(wav: np.ndarray, peak: float) -> np.ndarray:
    """Scale ``wav [samples]`` so that its absolute peak is ``peak`` (silence stays silent)."""
    top = float(np.max(np.abs(wav))) if wav.size else 0.0
    return (wav * (peak / top)).astype(np.float32) if top > 0 else wav.astype(np.float32)


# ---------------------------------------------------------------------------- augmentation
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0}  # power ∝ f^(−exponent)


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` float32 noise with power spectrum ∝ f^(−exponent) (see :data:`NOISE_COLOURS`), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    noise = np.fft.irfft(spec * f ** (-NOISE_COLOURS[colour] / 2), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Signal-to-noise ratio in dB of ``noisy`` against its ``clean`` source (same length)."""
    noise = noisy.astype(np.float64) - clean
    return float(10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / max(np.sum(noise**2), 1e-20)))


def add_noise(wav: np.ndarray, snr: float, colour: str, rng: np.random.Generator) -> np.ndarray:
    """``wav`` plus coloured noise scaled so that the result has ``snr`` dB SNR (before clipping)."""
    power = float(np.mean(wav.astype(np.float64) ** 2))
    noise = coloured_noise(wav.shape[0], colour, rng) * np.sqrt(power / 10 ** (snr / 10))
    return (wav + noise).astype(np.float32)


def impulse_response(rt60: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Synthetic room impulse response ``[samples]``: a direct path then exponentially decaying noise.

    ``rt60`` seconds is the time the tail takes to fall by 60 dB; the tail starts after a 1–5 ms
    pre-delay and carries about as much energy as the direct path.
    """
    n = max(int(rt60 * sr), 2)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # 60 dB = e^-6.9078 in amplitude
    delay = int(rng.uniform(0.001, 0.005) * sr)
    tail[:delay] = 0.0
    tail /= np.sqrt(np.sum(tail**2)) + 1e-12
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(wav: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """``wav`` convolved (FFT) with :func:`impulse_response`, cut to its length, peak level kept."""
    ir = impulse_response(rt60, rng)
    n = wav.shape[0] + ir.shape[0] - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(wav, size) * np.fft.rfft(ir, size), size)[: wav.shape[0]]
    return normalize(out, float(np.max(np.abs(wav))) if wav.size else 0.0)


@dataclass(frozen=True)
class Augment:
    """Noise and/or reverberation to apply: ``snr`` dB and ``colour`` (None: no noise), ``rt60`` s."""

    snr: float | None = None
    colour: str = "white"
    rt60: float | None = None

    def apply(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Reverberation first, then noise at ``snr`` relative to the reverberant signal; clipped to ±1."""
        if self.rt60:
            wav = reverberate(wav, self.rt60, rng)
        if self.snr is not None:
            wav = add_noise(wav, self.snr, self.colour, rng)
        return np.clip(wav, -1.0, 1.0).astype(np.float32)

    def as_dict(self) -> dict:
        return {"snr": self.snr, "colour": self.colour if self.snr is not None else None, "rt60": self.rt60}


def draw_augment(rng: random.Random, noise: bool = True) -> Augment:
    """A random augmentation: SNR 0–25 dB (``noise``), and reverberation with RT60 0.2–0.9 s half the time."""
    snr = round(rng.uniform(0.0, 25.0), 1) if noise else None
    rt60 = round(rng.uniform(0.2, 0.9), 2) if rng.random() < 0.5 else None
    return Augment(snr, rng.choice(sorted(NOISE_COLOURS)), rt60)
