"""The MiMo-Audio language model and its generation engine.

>>> from mimo_audio.lm import load_lm, Generator, GenerationOptions
>>> lm = load_lm("MiMo-Audio-7B-Instruct", device="cuda")
>>> engine = Generator(lm, max_batch=4, max_len=8192)
>>> [result] = engine.generate([prompt_ids], GenerationOptions(stop_ids=(eos, im_end)))
"""

from .config import LMConfig, StackConfig
from .generator import GenerationOptions, GenerationResult, Generator, StepEvent, StopReason
from .model import LMOutput, MimoAudioLM, load_lm
from .sampler import DEFAULT_SPEECH_SAMPLER, DEFAULT_TEXT_SAMPLER, GREEDY, SamplerConfig

__all__ = [
    "DEFAULT_SPEECH_SAMPLER",
    "DEFAULT_TEXT_SAMPLER",
    "GREEDY",
    "GenerationOptions",
    "GenerationResult",
    "Generator",
    "LMConfig",
    "LMOutput",
    "MimoAudioLM",
    "SamplerConfig",
    "StackConfig",
    "StepEvent",
    "StopReason",
    "load_lm",
]
