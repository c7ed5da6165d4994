"""``data prepare`` on Ray Data: list the inputs, skip the done ones, map batches over actors.

Without ``ray_address`` a local Ray instance is started on 127.0.0.1 only (no dashboard, usage
stats off, ``run.num_cpus`` CPUs, a ``run.object_store_mb`` object store) and shut down at the end;
with one, the cluster at that address is joined. When Ray is already initialised in the process
(tests, notebooks) that instance is used as it is. Each of ``run.workers`` actors builds one
:class:`~.pipeline.Preparer` and processes batches of ``run.batch_files`` inputs; a batch's shards
and done markers are written before the next batch starts, so a killed run loses at most the
batches in flight. Finished inputs are skipped (see :mod:`.shards`), and the report is rebuilt from
every done marker at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import MimoAudioError
from .ingest import list_inputs
from .recipe import Recipe
from .report import write_report
from .shards import OutputDir, write_json

log = logging.getLogger("mimo_audio.data")


class PrepareActor:
    """Ray Data callable class: ``{"path": [...]}`` batch → ``{"path", "reason", "samples"}``."""

    def __init__(self, raw_recipe: dict, input_root: str, out_dir: str, threads: int) -> None:
        import torch

        from .pipeline import Preparer
        from .recipe import build

        torch.set_num_threads(threads)
        self.preparer = Preparer(build(raw_recipe), Path(input_root), Path(out_dir))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        markers = self.preparer.process([Path(p) for p in batch["path"]])
        return {
            "path": [m["source"] for m in markers],
            "reason": [m["reason"] or "" for m in markers],
            "samples": [m["samples"] for m in markers],
        }


@contextmanager
def ray_session(run: dict[str, Any], address: str | None):
    """Initialise Ray (local loopback instance, or join ``address``) unless it already is."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every local Ray process on 127.0.0.1
    import ray

    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        ray.init(
            address="local",
            num_cpus=int(run["num_cpus"]),
            object_store_memory=int(run["object_store_mb"]) * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        yield ray
    finally:
        ray.shutdown()


def _user_error(exc: BaseException) -> MimoAudioError | None:
    """The :class:`MimoAudioError` a Ray task raised, found through Ray's wrappers."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MimoAudioError):
            return MimoAudioError(str(e))
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def prepare(
    input_dir: str | Path,
    out_dir: str | Path,
    recipe: Recipe,
    ray_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Process every unfinished input of ``input_dir`` into ``out_dir``; returns the summary
    (plus ``run``: inputs processed and skipped this time, wall seconds). ``progress`` shows a bar
    of finished inputs on stderr."""
    root, out = Path(input_dir), Path(out_dir)
    if not root.is_dir():
        raise MimoAudioError(f"input folder not found: {root}")
    files = list_inputs(root)
    if not files:
        raise MimoAudioError(f"no input files in {root}")
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise MimoAudioError("--out must not be inside the input folder (inputs are never modified)")
    recipe.check_resources()
    output = OutputDir(out, recipe)
    output.clean_partial()
    todo = [f for f in files if not output.is_done(f, f.relative_to(root).as_posix())]
    start = time.time()
    if todo:
        write_json(out / "recipe.json", recipe.raw)
        _run_ray(todo, root, out, recipe, ray_address, progress)
    markers = output.markers()
    output.write_index(markers)
    run = {
        "processed": len(todo),
        "skipped": len(files) - len(todo),
        "seconds": round(time.time() - start, 3),
    }
    return write_report(out, markers, run)


def _run_ray(
    todo: list[Path], root: Path, out: Path, recipe: Recipe, address: str | None, progress: bool
) -> None:
    cfg = recipe.run
    with ray_session(cfg, address) as ray:
        ctx = ray.data.DataContext.get_current()
        # Ray Data's execution chatter (set up when ray.data is imported) stays off our stderr: we
        # show our own progress bar
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        batch = max(1, int(cfg["batch_files"]))
        ds = ray.data.from_items([{"path": str(p)} for p in todo], override_num_blocks=-(-len(todo) // batch))
        ds = ds.map_batches(
            PrepareActor,
            fn_constructor_args=(recipe.raw, str(root), str(out), int(cfg["threads"])),
            batch_size=batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=max(1, int(cfg["workers"])), max_tasks_in_flight_per_actor=1
            ),
            num_cpus=1,
            num_gpus=float(cfg["gpus_per_worker"]),
        )
        bar = tqdm(total=len(todo), desc="data prepare", unit="file", file=sys.stderr, disable=not progress)
        try:
            for rows in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for path, reason, samples in zip(rows["path"], rows["reason"], rows["samples"], strict=True):
                    log.debug(f"{path}: {reason or f'{samples} samples'}")
                    bar.update()
        except Exception as e:  # Ray wraps worker errors; surface ours as one line
            err = _user_error(e)
            if err is not None:
                raise err from None
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise MimoAudioError(f"data prepare failed on Ray: {first}") from None
        finally:
            bar.close()
