"""``mimo-audio data prepare``: registered into the ``data`` command group by train_cmds.

The pipeline (:mod:`mimo_audio.data`, needs the ``[data]`` extra with Ray) is imported only when the
command runs, so ``mimo-audio --help`` works without it.
"""

from __future__ import annotations

import argparse
import json
import os

from ..errors import MimoAudioError


def register(data_sub: argparse._SubParsersAction) -> None:
    """Add ``data prepare`` to the ``data`` sub-parsers."""
    p = data_sub.add_parser(
        "prepare",
        help="raw audio folder → filtered, transcribed, captioned code shards (Ray Data)",
        description="Ingest, VAD, speaker segmentation, transcription, language ID, quality scores, "
        "captions, filters and quality-weighted sampling into webdataset code shards plus report.md / "
        "summary.json. Resumable: finished inputs are skipped. See docs/DATA.md.",
    )
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder of audio files (never modified)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (shards/, done/, report)")
    p.add_argument("--recipe", metavar="FILE.yaml", help="recipe merged over recipes/data_prepare.yaml")
    p.add_argument(
        "--ray-address", metavar="ADDR", help="join this Ray cluster (default: a local loopback instance)"
    )
    p.add_argument(
        "--model",
        default=os.environ.get("MIMO_AUDIO_MODEL"),
        metavar="DIR",
        help="MiMo-Audio Instruct folder for the mimo backends (or MIMO_AUDIO_MODEL)",
    )
    p.add_argument(
        "--tokenizer",
        default=os.environ.get("MIMO_AUDIO_TOKENIZER"),
        metavar="DIR",
        help="audio tokenizer folder (or MIMO_AUDIO_TOKENIZER)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set language.min_confidence=0.9 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    try:
        import ray  # noqa: F401
        import yaml  # noqa: F401

        from ..data.recipe import load_recipe, merge
        from ..data.runner import prepare
    except ImportError as e:
        raise MimoAudioError(
            f"data prepare needs the [data] extra: pip install 'mimo-audio[data]' ({e})"
        ) from None
    from .train_cmds import _override

    overrides: dict = {}
    for text in args.set:
        overrides = merge(overrides, _override(text))
    models = {k: v for k, v in (("model", args.model), ("tokenizer", args.tokenizer)) if v}
    if models:
        overrides = merge({"models": models}, overrides)
    recipe = load_recipe(args.recipe, overrides)
    summary = prepare(args.input_dir, args.out, recipe, ray_address=args.ray_address, progress=not args.quiet)
    keys = ("inputs", "segments_kept", "samples_written", "shards", "hours_kept", "run")
    print(json.dumps({"out": args.out, **{k: summary[k] for k in keys}}))
    return 0
