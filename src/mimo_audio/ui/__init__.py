"""The Gradio web demo (``mimo-audio demo``; needs the ``[ui]`` extra).

>>> from mimo_audio.ui import launch
>>> launch(MimoAudio.from_pretrained(model_dir, tokenizer_dir), port=7860)
"""

from .demo import build_demo, launch

__all__ = ["build_demo", "launch"]
