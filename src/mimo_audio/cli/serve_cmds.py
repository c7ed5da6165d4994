"""``mimo-audio serve`` (OpenAI-compatible HTTP server, optionally on Ray Serve) and ``mimo-audio demo``
(Gradio web UI). Both need install extras (``[server]``, ``[ui]``); without them the command fails
with a one-line hint, and the rest of the CLI works."""

from __future__ import annotations

import argparse
import logging
import os

from ..errors import MimoAudioError
from .task_cmds import add_model_options

log = logging.getLogger("mimo_audio")


def _model_args(p: argparse.ArgumentParser, max_batch: int) -> None:
    g = add_model_options(p)
    g.add_argument(
        "--max-batch", type=int, default=max_batch, help="requests generated together (batch slots)"
    )
    g.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    g.add_argument(
        "--max-new-steps",
        type=int,
        default=2048,
        help="cap on generated patches per request (6.25 per second of speech; default 2048)",
    )


def _load_kwargs(args: argparse.Namespace) -> dict:
    """Loading options; ``args.model`` / ``args.tokenizer`` become the default pair when neither is given."""
    from ..defaults import resolve_model_pair

    args.model, args.tokenizer = resolve_model_pair(args.model, args.tokenizer)
    if args.threads is not None:
        if args.threads < 1:
            raise MimoAudioError("--threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    return {
        "device": args.device,
        "dtype": args.dtype,
        "variant": args.variant,
        "quantize": args.quantize,
        "max_batch": args.max_batch,
        "max_len": args.max_len,
        "progress": False,
    }


def _need(package: str, *modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MimoAudioError(f"this command needs {', '.join(missing)}: pip install '{package}'")


def cmd_serve(args: argparse.Namespace) -> int:
    _need("mimo-audio[server]", "fastapi", "uvicorn", "python_multipart")
    from ..serve import ServerConfig, parse_voice_args

    config = ServerConfig(
        model_id=args.served_model_name or os.path.basename(os.path.normpath(args.model or "mimo-audio")),
        api_key=args.api_key,
        max_queue=args.max_queue,
        request_timeout=args.request_timeout,
        max_new_steps=args.max_new_steps,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_audio_seconds=args.max_audio_seconds,
        voices=parse_voice_args(args.voice),
    )
    load = _load_kwargs(args)
    if args.ray:
        _need("ray[serve]", "ray")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not args.ray_address and args.host in ("127.0.0.1", "localhost", "::1"):
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback only
        from ..serve.ray_app import run_ray

        run_ray(
            args.model,
            args.tokenizer,
            load,
            config,
            replicas=args.replicas,
            address=args.ray_address,
            host=args.host,
            port=args.port,
        )
        return 0
    from .. import MimoAudio
    from ..serve import run_server

    log.info("loading %s and %s", args.model, args.tokenizer)
    model = MimoAudio.from_pretrained(args.model, args.tokenizer, **load)
    log.info("serving %s on http://%s:%d", config.model_id, args.host, args.port)
    run_server(model, config, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _need("mimo-audio[ui]", "gradio")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests
    from .. import MimoAudio
    from ..ui import launch

    load = _load_kwargs(args)
    log.info("loading %s and %s", args.model, args.tokenizer)
    model = MimoAudio.from_pretrained(args.model, args.tokenizer, **load)
    launch(model, host=args.host, port=args.port, max_new_steps=args.max_new_steps)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server (speech, transcriptions, chat with audio)",
        description="Serve the model over the OpenAI audio API (POST /v1/audio/speech, /v1/audio/transcriptions, "
        "/v1/chat/completions; GET /v1/models, /health, /metrics). Needs mimo-audio[server].",
    )
    _model_args(p, max_batch=8)
    s = p.add_argument_group("server")
    s.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (default: env MIMO_AUDIO_API_KEY; none: open)",
    )
    s.add_argument(
        "--voice",
        action="append",
        metavar="NAME=PATH",
        help="register a voice prompt clip under NAME (repeatable; 'default' replaces the model's own voice)",
    )
    s.add_argument(
        "--served-model-name", default=None, help="id listed by /v1/models (default: model folder name)"
    )
    s.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond the batch before 429")
    s.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request (504 past it)")
    s.add_argument(
        "--max-upload-mb", type=float, default=25.0, help="request body limit in MiB (413 past it)"
    )
    s.add_argument("--max-audio-seconds", type=float, default=600.0, help="uploaded clip length limit (413)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    r = p.add_argument_group("ray serve")
    r.add_argument("--ray", action="store_true", help="run on Ray Serve (needs ray[serve])")
    r.add_argument("--replicas", type=int, default=1, help="replicas (one per GPU, or per CPU slot)")
    r.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: start a local instance)"
    )
    p.set_defaults(func=cmd_serve)

    d = sub.add_parser(
        "demo",
        help="Gradio web demo with a tab per task",
        description="A Gradio app on 127.0.0.1:7860: TTS, voice conversion, continuation, ASR, audio "
        "understanding and spoken chat. Needs mimo-audio[ui].",
    )
    _model_args(d, max_batch=1)
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=7860)
    d.set_defaults(func=cmd_demo)
