"""Writing a run's outputs: ``results.json``, ``report.md`` and matplotlib plots, all atomically.

Plots (PNG, Agg backend): ``per_category.png`` — the suite's primary metric per category (bar
chart); ``histogram.png`` — the distribution of the primary metric over items.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..audio import atomic_write
from .runner import EvalResults
from .suites.base import Suite

PERCENT_KEYS = {"wer", "cer", "error_rate", "accuracy", "dtw_identification", "closer_to_target"}
WORST_ITEMS = 10


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    if key in PERCENT_KEYS:
        return f"{100 * value:.2f} %"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(text: Any, limit: int = 120) -> str:
    s = " ".join(str(text).split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _value(record: dict[str, Any], key: str) -> float | None:
    v = record.get(key)
    if isinstance(v, bool):
        return float(v)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def worst_items(results: EvalResults, suite: Suite, n: int = WORST_ITEMS) -> list[dict[str, Any]]:
    """The ``n`` items scoring worst on the suite's primary metric."""
    m = suite.primary
    scored = [r for r in results.items if _value(r, m.key) is not None]
    return sorted(scored, key=lambda r: _value(r, m.key), reverse=not m.higher_is_better)[:n]


def markdown(results: EvalResults, suite: Suite) -> str:
    """The human-readable report."""
    m = suite.primary
    state = "complete" if results.complete else "**partial** (stopped at an error; re-run to resume)"
    lines = [
        f"# mimo-audio eval: {results.suite}",
        "",
        f"Manifest `{results.manifest}` — {len(results.items)} item(s) scored "
        f"({results.computed} computed in this run, the rest from the cache), "
        f"{len(results.errors)} error(s); {state}.",
        "",
        "## Settings",
        "",
        *_table(
            ["setting", "value"],
            [[k, json.dumps(v, ensure_ascii=False)] for k, v in results.settings.items()],
        ),
        "",
        "## Metrics",
        "",
        *_table(["metric", "value"], [[k, _fmt(k, v)] for k, v in results.aggregate.items()]),
    ]
    if results.per_category:
        keys = sorted({k for agg in results.per_category.values() for k in agg if k != "n"})
        rows = [
            [c, str(agg["n"]), *(_fmt(k, agg.get(k)) for k in keys)]
            for c, agg in results.per_category.items()
        ]
        lines += ["", "## Per category", "", *_table(["category", "n", *keys], rows)]
    worst = worst_items(results, suite)
    if worst:
        rows = [[r["id"], str(r["line"]), _fmt(m.key, _value(r, m.key)), suite.describe(r)] for r in worst]
        lines += ["", f"## Worst items by {m.label}", "", *_table(["id", "line", m.label, "detail"], rows)]
    if results.errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in results.errors]
    lines += ["", "## Plots", "", "![per category](per_category.png)", "", "![histogram](histogram.png)", ""]
    return "\n".join(lines)


def _plot(path: Path, draw) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        draw(ax)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    finally:
        plt.close(fig)


def write_plots(results: EvalResults, suite: Suite, out_dir: Path) -> None:
    m = suite.primary
    cats = [(c, agg.get(m.aggregate)) for c, agg in results.per_category.items()]
    cats = [(c, float(v)) for c, v in cats if isinstance(v, (int, float)) and math.isfinite(v)]
    scale = 100.0 if m.aggregate in PERCENT_KEYS else 1.0
    unit = " (%)" if scale == 100.0 else ""

    def bars(ax) -> None:
        ax.bar([c for c, _ in cats], [v * scale for _, v in cats], color="#4c72b0")
        ax.set_ylabel(f"{m.aggregate}{unit}")
        ax.set_title(f"{results.suite}: {m.aggregate} per category")
        if not cats:
            ax.text(0.5, 0.5, "no scored items", ha="center", transform=ax.transAxes)

    values = [
        v * (100.0 if m.key in PERCENT_KEYS else 1.0)
        for r in results.items
        if (v := _value(r, m.key)) is not None
    ]

    def hist(ax) -> None:
        ax.hist(values, bins=min(30, max(5, len(values))), color="#dd8452")
        ax.set_xlabel(f"{m.label}{' (%)' if m.key in PERCENT_KEYS else ''}")
        ax.set_ylabel("items")
        ax.set_title(f"{results.suite}: distribution of {m.label}")

    _plot(out_dir / "per_category.png", bars)
    _plot(out_dir / "histogram.png", hist)


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats (a PESQ that found no speech) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_outputs(results: EvalResults, suite: Suite, out_dir: Path) -> None:
    """``results.json``, ``report.md``, ``per_category.png`` and ``histogram.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(results.to_dict()), ensure_ascii=False, indent=1, allow_nan=False)
    atomic_write(out_dir / "results.json", lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    report = markdown(results, suite)
    atomic_write(out_dir / "report.md", lambda tmp: Path(tmp).write_text(report, encoding="utf-8"))
    write_plots(results, suite, out_dir)
