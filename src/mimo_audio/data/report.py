"""Summary report of a ``data prepare`` output folder, built from its done markers.

``summary.json``: input and segment counts, drops per reason (inputs and segments separately),
hours kept per language (each segment once) and hours written (repeats included), samples and
shards, and per score ``count / mean / min / max`` over every scored segment. ``report.md`` is the
same in tables; ``plots/<score>.png`` are histograms (matplotlib, Agg backend) of each score over
the kept segments and over all scored segments.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import atomic_write
from .shards import PARTIAL, write_json

SCORES = ("snr_db", "clipping", "asr_confidence", "lang_confidence", "agreement", "transcript_quality")


def summarize(markers: list[dict], run: dict[str, Any] | None = None) -> dict:
    """The ``summary.json`` mapping of a list of done markers (see the module docstring)."""
    input_drops = Counter(m["reason"] for m in markers if m["reason"])
    segs = [s for m in markers for s in m["segments"]]
    kept = [s for s in segs if s["dropped"] is None]
    per_lang: Counter[str] = Counter()
    written = 0.0
    for s in kept:
        per_lang[s["language"] or "unknown"] += s["duration"] / 3600
        written += s["duration"] * s.get("repeats", 1) / 3600
    scores = {}
    for name in (*SCORES, "duration"):
        vals = [
            v
            for s in segs
            if (v := (s["duration"] if name == "duration" else s["scores"].get(name))) is not None
        ]
        if vals:
            scores[name] = {
                "count": len(vals),
                "mean": round(float(np.mean(vals)), 4),
                "min": round(float(np.min(vals)), 4),
                "max": round(float(np.max(vals)), 4),
            }
    return {
        "inputs": len(markers),
        "inputs_with_shards": sum(1 for m in markers if m["shard"]),
        "inputs_dropped": dict(sorted(input_drops.items())),
        "input_hours": round(sum(m["duration"] for m in markers) / 3600, 6),
        "segments": len(segs),
        "segments_kept": len(kept),
        "segments_dropped": dict(sorted(Counter(s["dropped"] for s in segs if s["dropped"]).items())),
        "hours_kept": round(sum(per_lang.values()), 6),
        "hours_written": round(written, 6),
        "hours_per_language": {k: round(v, 6) for k, v in sorted(per_lang.items())},
        "samples_written": sum(m["samples"] for m in markers),
        "shards": sum(1 for m in markers if m["shard"]),
        "scores": scores,
        **({"run": run} if run else {}),
    }


def plot_histograms(markers: list[dict], folder: Path) -> list[str]:
    """One PNG per score present; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segs = [s for m in markers for s in m["segments"]]
    names = []
    for name in SCORES:
        every = [s["scores"][name] for s in segs if s["scores"].get(name) is not None]
        if not every:
            continue
        kept = [s["scores"][name] for s in segs if s["dropped"] is None and s["scores"].get(name) is not None]
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        bins = np.histogram_bin_edges(every, bins=20)
        ax.hist(every, bins=bins, color="#bbbbbb", label="all scored")
        if kept:
            ax.hist(kept, bins=bins, color="#3477b5", label="kept")
        ax.set_xlabel(name)
        ax.set_ylabel("segments")
        ax.legend()
        fig.tight_layout()
        path = folder / f"{name}.png"
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png"), suffix=PARTIAL)
        plt.close(fig)
        names.append(path.name)
    return names


def _table(rows: dict[str, Any], head: tuple[str, str]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    return [f"| {head[0]} | {head[1]} |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows.items()), ""]


def write_report(out: Path, markers: list[dict], run: dict[str, Any] | None = None) -> dict:
    """Write ``summary.json``, ``report.md`` and ``plots/`` under ``out``; returns the summary."""
    summary = summarize(markers, run)
    plots = plot_histograms(markers, out / "plots")
    lines = [
        "# Data preparation report",
        "",
        f"{summary['inputs']} inputs ({summary['input_hours']:.4f} h), {summary['segments']} segments, "
        f"{summary['segments_kept']} kept ({summary['hours_kept']:.4f} h; {summary['hours_written']:.4f} h "
        f"written with repeats) in {summary['samples_written']} samples over {summary['shards']} shards.",
        "",
        "## Inputs dropped",
        "",
        *_table(summary["inputs_dropped"], ("reason", "inputs")),
        "## Segments dropped",
        "",
        *_table(summary["segments_dropped"], ("reason", "segments")),
        "## Hours per language (kept)",
        "",
        *_table(summary["hours_per_language"], ("language", "hours")),
        "## Scores (all scored segments)",
        "",
        "| score | count | mean | min | max |",
        "|---|---|---|---|---|",
        *(
            f"| {k} | {v['count']} | {v['mean']} | {v['min']} | {v['max']} |"
            for k, v in summary["scores"].items()
        ),
        "",
        *(f"![{p}](plots/{p})" for p in plots),
        "",
    ]
    write_json(out / "summary.json", summary)
    atomic_write(
        out / "report.md",
        lambda tmp: Path(tmp).write_text("\n".join(lines), encoding="utf-8"),
        suffix=PARTIAL,
    )
    return summary
