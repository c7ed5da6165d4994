"""The ``mimo-audio`` command line: a thin layer over the Python API.

Each command group lives in its own module exposing ``register(subparsers)``; commands raise
:class:`~mimo_audio.errors.MimoAudioError` for bad input, which is printed here as one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import MimoAudioError


def build_parser() -> argparse.ArgumentParser:
    from . import tokenizer_cmds

    parser = argparse.ArgumentParser(prog="mimo-audio", description="MiMo-Audio speech language model tools.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tokenizer_cmds.register(sub)
    try:
        from . import task_cmds
    except ImportError:  # pragma: no cover - task commands land with the task API
        task_cmds = None
    if task_cmds is not None:
        task_cmds.register(sub)
    try:
        from . import serve_cmds  # its extras ([server], [ui]) are imported only when serve/demo run
    except ImportError:  # pragma: no cover - serving commands are optional
        serve_cmds = None
    if serve_cmds is not None:
        serve_cmds.register(sub)
    try:
        from . import train_cmds  # the [train] extra is imported only when a training command runs
    except ImportError:  # pragma: no cover - training commands are optional
        train_cmds = None
    if train_cmds is not None:
        train_cmds.register(sub)
    from . import eval_cmds  # the [eval] extra is imported only when an eval command runs

    eval_cmds.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    debug = args.debug or os.environ.get("MIMO_AUDIO_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except MimoAudioError as e:
        if debug:
            raise
        print(f"mimo-audio: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mimo-audio: interrupted", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, MemoryError) as e:
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"mimo-audio: error: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
