"""``mimo-audio train tokenizer|lm``, ``mimo-audio data encode`` and ``mimo-audio export``.

Thin wrappers over :mod:`mimo_audio.train` (needs the ``[train]`` extra). Training runs under
``torchrun`` unchanged: every process executes the same command.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from ..errors import MimoAudioError
from . import prepare_cmds, synth_cmds

EXIT_STOPPED = 75  # `train` saved a checkpoint and stopped early (time limit or signal): resume later
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _override(text: str) -> dict:
    """``a.b.c=VALUE`` → ``{"a": {"b": {"c": VALUE}}}`` (VALUE parsed as YAML)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise MimoAudioError(f"--set expects KEY=VALUE, got {text!r}")
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = yaml.safe_load(value)
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training, data and export commands to the ``mimo-audio`` parser."""
    p = subparsers.add_parser(
        "train",
        help="train the audio tokenizer or the LM from a YAML recipe",
        description="Train from a recipe (see recipes/ and docs/TRAINING.md). Run under torchrun for "
        "several processes; metrics go to <run.out_dir>/metrics.csv.",
    )
    p.add_argument("target", choices=("tokenizer", "lm"), help="what to train")
    p.add_argument("--config", required=True, metavar="FILE.yaml", help="training recipe")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT",
        help="continue from the latest checkpoint of run.out_dir (or from CKPT)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set run.max_steps=100 (repeatable)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after SECONDS, save a checkpoint after the step in progress and exit with code "
        f"{EXIT_STOPPED} (SIGTERM/SIGINT do the same); rerun with --resume to continue",
    )
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("data", help="training data tools")
    data_sub = p.add_subparsers(dest="data_command", metavar="COMMAND")
    e = data_sub.add_parser(
        "encode",
        help="tokenize the audio of a manifest once into code shards",
        description="Encode every audio field of a JSONL manifest with the audio tokenizer into "
        "webdataset-style tar shards of LM codes (resumable).",
    )
    e.add_argument("manifest", metavar="MANIFEST", help="JSONL manifest")
    e.add_argument("--tokenizer", required=True, metavar="DIR", help="audio tokenizer folder")
    e.add_argument("--out", required=True, metavar="DIR", help="output folder for shard-*.tar + index.json")
    e.add_argument("--codebooks", type=int, default=8, help="codebooks kept per frame (default 8)")
    e.add_argument("--group-size", type=int, default=4, help="frames per LM patch (default 4)")
    e.add_argument("--shard-size", type=int, default=1000, help="records per shard (default 1000)")
    e.add_argument("--batch-size", type=int, default=8, help="clips encoded together (default 8)")
    e.add_argument(
        "--codes",
        default=None,
        metavar="FILE.npz",
        help="code store: reuse the codes it holds for this tokenizer instead of encoding again, "
        "and add the newly encoded ones (e.g. to rebuild shards on another machine)",
    )
    e.add_argument(
        "--codes-from",
        action="append",
        default=[],
        metavar="FILE.npz",
        help="a further code store whose codes are reused but which is not written (repeatable), "
        "e.g. an earlier corpus's store, so --codes receives only this corpus's new codes",
    )
    e.add_argument("--device", default="cpu", help="torch device (default cpu)")
    e.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    e.set_defaults(func=cmd_encode)
    synth_cmds.register(data_sub)
    prepare_cmds.register(data_sub)
    p.set_defaults(func=lambda args: _need_sub(p))

    p = subparsers.add_parser(
        "export",
        help="training checkpoint → official config.json + safetensors folder",
        description="Write the official on-disk format (LoRA merged, training-only modules dropped) "
        "that MimoAudio / AudioTokenizer load unchanged.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint folder, or a run folder (its latest)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"), help="cast weights")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument(
        "--average-with",
        action="append",
        default=[],
        metavar="CKPT",
        help="another LM checkpoint of the same config (repeatable): export the mean of all their "
        "weights (checkpoint averaging / model soup)",
    )
    p.add_argument(
        "--resumable",
        action="store_true",
        help="write a packed training checkpoint instead (float16 weights, no optimizer moments) "
        "that `train --resume DIR` continues from: small enough to keep in git between machines",
    )
    p.set_defaults(func=cmd_export)


def _need_sub(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _import_train():
    try:
        import yaml  # noqa: F401

        from .. import train
    except ImportError as e:
        raise MimoAudioError(
            f"training needs the [train] extra: pip install 'mimo-audio[train]' ({e})"
        ) from None
    return train


def cmd_train(args: argparse.Namespace) -> int:
    train = _import_train()
    from ..train.config import merge
    from ..train.distributed import shutdown_distributed

    overrides: dict = {}
    for text in args.set:
        overrides = merge(overrides, _override(text))
    config = train.load_config(args.config, overrides)
    if config.kind != args.target:
        raise MimoAudioError(
            f"{args.config} is a {config.kind!r} recipe; use `mimo-audio train {config.kind}`"
        )
    if args.time_limit is not None and not args.time_limit > 0:
        raise MimoAudioError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    try:
        trainer = train.build_trainer(config, resume=args.resume)
        previous = {sig: signal.signal(sig, lambda *_: trainer.request_stop()) for sig in STOP_SIGNALS}
        try:
            metrics = trainer.train(time_limit=args.time_limit)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if trainer.env.is_main:
            summary = {k: v for k, v in metrics.items() if "/" not in k}
            print(json.dumps({"step": trainer.step, "stopped_early": trainer.stopped_early, **summary}))
    finally:
        shutdown_distributed()
    return EXIT_STOPPED if trainer.stopped_early else 0


def cmd_encode(args: argparse.Namespace) -> int:
    _import_train()
    from ..tokenizer import AudioTokenizer
    from ..train.encode import encode_manifest

    tok = AudioTokenizer.from_pretrained(
        args.tokenizer, device=args.device, dtype=args.dtype, max_seconds=None
    )
    index = encode_manifest(
        args.manifest,
        tok,
        args.out,
        channels=args.codebooks,
        group_size=args.group_size,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        codes=args.codes,
        codes_from=args.codes_from,
    )
    print(json.dumps({"out": args.out, "shards": len(index["shards"]), "samples": index["num_samples"]}))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _import_train()
    from ..train.export import export_checkpoint

    if args.resumable:
        if args.average_with:
            raise MimoAudioError("--average-with writes an exported model, not a --resumable checkpoint")
        import torch

        from ..train.checkpointing import pack_checkpoint

        dtype = getattr(torch, args.dtype or "float16")
        print(str(pack_checkpoint(args.checkpoint, args.out, dtype=dtype, overwrite=args.overwrite)))
        return 0
    out = export_checkpoint(
        args.checkpoint, args.out, dtype=args.dtype, overwrite=args.overwrite, average_with=args.average_with
    )
    print(str(out))
    return 0
