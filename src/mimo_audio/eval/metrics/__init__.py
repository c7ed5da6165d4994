"""Evaluation metrics, usable on their own (numpy in, floats out).

Text: :func:`normalize_text`, :func:`wer`, :func:`cer`, :func:`edit_counts`. Signal quality:
:func:`stoi`, :func:`pesq_nb`, :func:`pesq_wb`. Acoustic matching: :func:`mfcc`,
:func:`dtw_distance`, :func:`dtw_identify`. Speakers: :func:`speaker_similarity`.
Audio arguments are mono float ``[samples]`` with their rate ``sr`` in Hz.
"""

from .acoustic import cmvn, dtw_distance, dtw_distances, dtw_identify, mfcc
from .quality import pesq_nb, pesq_wb, stoi
from .speaker import speaker_embedding, speaker_similarity
from .text import LANGUAGES, EditCounts, cer, edit_counts, normalize_text, wer

__all__ = [
    "LANGUAGES",
    "EditCounts",
    "cer",
    "cmvn",
    "dtw_distance",
    "dtw_distances",
    "dtw_identify",
    "edit_counts",
    "mfcc",
    "normalize_text",
    "pesq_nb",
    "pesq_wb",
    "speaker_embedding",
    "speaker_similarity",
    "stoi",
    "wer",
]
