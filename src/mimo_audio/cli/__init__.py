"""The ``mimo-audio`` command line: a thin layer over the Python API.

Each command group lives in its own module exposing ``register(subparsers)``; commands raise
:class:`~mimo_audio.errors.MimoAudioError` for bad input, which is printed here as one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
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


EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


_handler_pid: int | None = None  # the process that installed _terminate (forked workers inherit it)


def _terminate(signum, frame) -> None:
    if os.getpid() == _handler_pid:  # one line, from the command's own process
        print("mimo-audio: terminated", file=sys.stderr)
    raise SystemExit(EXIT_TERMINATED)


def terminate_as_exit():
    """Make SIGTERM unwind like an error (``SystemExit(143)``) instead of killing the process on the
    spot, so ``atomic_write`` removes its temp file and no half-written output is left. Only where
    SIGTERM still has its default action and only in the main thread; commands that handle SIGTERM
    themselves (training, serving) install their own handler over this one while they run.
    Returns the previous handler (for :func:`signal.signal`), or None when nothing was installed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    global _handler_pid
    _handler_pid = os.getpid()
    return signal.signal(signal.SIGTERM, _terminate)


def main(argv: Sequence[str] | None = None) -> int:
    previous = terminate_as_exit()
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
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
