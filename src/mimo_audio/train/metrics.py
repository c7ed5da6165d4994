"""Metrics: CSV files (always), TensorBoard (when installed), and a progress line on stderr.

``metrics.csv`` gets a row per logged training step, ``eval.csv`` a row per evaluation. On resume,
rows past the checkpoint's step are dropped so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

log = logging.getLogger("mimo_audio.train")


class CSVLog:
    """Append-only CSV with a header fixed by the first row (later unknown keys are dropped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.is_file():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header or None

    def truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        keep = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and _step(r[0]) <= step]
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerows(keep)

    def write(self, row: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = ["step"] + sorted(k for k in row if k != "step")
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c)) for c in self.columns])


def _step(cell: str) -> float:
    """The step of a row; a row torn by a killed process counts as past every checkpoint."""
    try:
        return float(cell)
    except ValueError:
        return math.inf


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as floats (blank cells left out)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


class MetricsLogger:
    """Writes training and evaluation metrics of rank 0."""

    def __init__(self, out_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.train = CSVLog(out_dir / "metrics.csv")
        self.eval = CSVLog(out_dir / "eval.csv")
        for f in (self.train, self.eval):
            f.truncate_after(resume_step or 0)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: metrics go to CSV only")
            else:
                self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=(resume_step or 0) + 1)

    def log_train(self, step: int, metrics: dict[str, float]) -> None:
        if self.enabled:
            self.train.write({"step": step, **metrics})
            self._tb("train", step, metrics)

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        if self.enabled:
            self.eval.write({"step": step, **metrics})
            self._tb("eval", step, metrics)

    def _tb(self, prefix: str, step: int, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def progress_line(step: int, total: int, metrics: dict[str, float], unit: str) -> str:
    """``step 10/100 | loss 3.2100 (text 2.1000, cb0 4.0000) | lr 1.0e-04 | 1234 tok/s | 0.12 s/step``."""
    parts = [k for k in metrics if k.startswith("loss/")]
    detail = ", ".join(f"{k[5:]} {metrics[k]:.4f}" for k in parts)
    line = f"step {step}/{total} | loss {metrics.get('loss', float('nan')):.4f}"
    if detail:
        line += f" ({detail})"
    if "lr" in metrics:
        line += f" | lr {metrics['lr']:.2e}"
    if "throughput" in metrics:
        line += f" | {metrics['throughput']:.1f} {unit}/s"
    if "step_time" in metrics:
        line += f" | {metrics['step_time']:.3f} s/step"
    return line
