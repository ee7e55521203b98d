"""Draw the performance summary plot (docs/img/performance.png) from benchmarks/figures.json.

Usage: ``.venv/bin/python benchmarks/plot.py [--data benchmarks/figures.json] [--out docs/img/performance.png]``.
The figures are transcribed from the benchmark docs (each section names its ``source``); after
rerunning a benchmark and updating its doc, update ``figures.json`` and rerun this script.
Needs matplotlib (in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "figures.json"
OUT = ROOT / "docs" / "img" / "performance.png"
COLORS = ["#3949ab", "#8e24aa", "#9e9e9e", "#616161"]
SECTIONS = ("engine", "parser", "grammar_compile", "grammar_decode")
OPTIONAL_SECTIONS = ("real_sizes", "streaming")  # drawn when present


def load_figures(path: Path) -> dict[str, Any]:
    """Read the figures file and check it has the sections the plot needs."""
    figures = json.loads(path.read_text(encoding="utf-8"))
    for section in SECTIONS:
        if section not in figures:
            raise SystemExit(f"plot.py: {path} has no {section!r} section; see the file's 'about' entry.")
    series = figures["parser"]["series"]
    for shape, values in figures["parser"]["shapes"].items():
        if len(values) != len(series):
            raise SystemExit(
                f"plot.py: parser shape {shape!r} has {len(values)} values for {len(series)} series."
            )
    return figures


def _parser_panel(ax: Any, parser: dict[str, Any]) -> None:
    """Grouped bars: parser throughput per output shape, ours (whole, stream) against the references."""
    shapes = list(parser["shapes"])
    series = parser["series"]
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(shapes))]
        ax.bar(xs, [parser["shapes"][s][i] for s in shapes], width, label=name, color=COLORS[i % len(COLORS)])
    ax.set_yscale("log")
    ax.set_xticks(range(len(shapes)), [s.replace("_", "\n") for s in shapes], fontsize=8)
    ax.set_ylabel(f"throughput ({parser['unit']}, log)")
    ax.set_title("Tool-call parser throughput (higher is better)", fontsize=10)
    ax.legend(fontsize=8, ncol=2)


def _compile_panel(ax: Any, compile_: dict[str, Any]) -> None:
    """Horizontal range bars: grammar compile times (min-max across runs)."""
    rows = list(compile_["rows"].items())
    for y, (_label, (low, high)) in enumerate(rows):
        ax.barh(y, high - low if high > low else low * 0.08, left=low, height=0.5, color=COLORS[0])
        ax.text(high * 1.15, y, f"{low:g}-{high:g}" if high > low else f"{low:g}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(0.03, 3000)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"compile time ({compile_['unit']}, log; cached after the first use)")
    ax.set_title("Grammar compile cost (xgrammar)", fontsize=10)


def _decode_panel(ax: Any, decode: dict[str, Any]) -> None:
    """Per-token cost of the grammar processor against a decode step of the embedded model."""
    rows = list(decode["rows"].items())
    step = decode["uncontended_step_ms"]
    for y, (_label, row) in enumerate(rows):
        high = max(row["processor"])
        ax.barh(y, high, height=0.5, color=COLORS[1])
        share = 100 * high / step
        shown = f"{share:.1f}%" if share >= 0.1 else "<0.1%"
        ax.text(high * 1.15, y, f"{high:g} ms ({shown} of a step)", va="center", fontsize=8)
    ax.axvline(step, color="#c62828", linestyle="--")
    label = f"one decode step, ~{step} ms (135M, 1 thread)"
    ax.text(step * 1.2, (len(rows) - 1) / 2, label, rotation=90, va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(0.005, 300)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"processor cost ({decode['unit']}, worst measured, log)")
    ax.set_title("Constrained decoding: cost per token", fontsize=10)


def _load_bars(
    ax: Any,
    engine: dict[str, Any],
    speeds_by_load: dict[str, list[float]],
    contexts: list[str],
    notes: tuple[dict[str, list[float]], str],
) -> None:
    """Horizontal bars per load and context (llama.cpp red, defaults blue), each labelled ``speed (note)``.

    ``notes`` is a load's per-context figures and the format of one, e.g. ``({"int4": [1.5, 4.2]}, "x{:g}")``.
    """
    figures, note_format = notes
    rows = list(speeds_by_load.items())
    height = 0.38
    for i, (context, alpha) in enumerate(zip(contexts, (1.0, 0.55), strict=True)):
        for y, (label, speeds) in enumerate(rows):
            base = COLORS[0] if label in engine["defaults"] else COLORS[2]
            color = "#c62828" if label.startswith("llama.cpp") else base
            position = y + (i - 0.5) * height
            ax.barh(
                position,
                speeds[i],
                height=height,
                color=color,
                alpha=alpha,
                label=context if y == 0 else None,
            )
            note = f" ({note_format.format(figures[label][i])})" if label in figures else ""
            ax.text(speeds[i] * 1.01, position, f"{speeds[i]:g}{note}", va="center", fontsize=7)
    ax.set_xlim(0, max(max(speeds) for _, speeds in rows) * 1.45)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)


def _engine_decode_panel(ax: Any, engine: dict[str, Any]) -> None:
    """Decode speed per load, short and long context, each bar labelled with its share of llama.cpp's."""
    _load_bars(
        ax, engine, engine["decode"], engine["contexts"], (engine["share_of_llama_cpp_percent"], "{}%")
    )
    ax.set_xlabel("greedy decode tok/s (% of llama.cpp, per-round ratios); blue = default", fontsize=8)
    threads = engine.get("threads")
    cores = f"{threads} thread{'s' if threads != 1 else ''} each" if threads else "2 cores"
    ax.set_title(f"Decode speed: engine vs llama.cpp, same 135M model, {cores}", fontsize=10, pad=16)


def _engine_prefill_panel(ax: Any, engine: dict[str, Any]) -> None:
    """Prefill speed per load, short prompt and tools prompt, each bar labelled with its ratio to llama.cpp's."""
    _load_bars(
        ax, engine, engine["prefill"], engine["prefill_contexts"], (engine["prefill_x_llama"], "x{:g}")
    )
    ax.set_xlabel("prompt tok/s (x llama.cpp, per-round ratios); blue = default", fontsize=8)
    ax.set_title("Prefill vs llama.cpp, same model, no prompt cache", fontsize=10, pad=16)


def _real_sizes_panel(ax: Any, real: dict[str, Any]) -> None:
    """Decode tok/s per model shape and row, each bar labelled with its ratio to llama.cpp (same weights, Q4_1)."""
    shapes = list(real["rows"])
    names = list(dict.fromkeys(name for shape in shapes for name in real["rows"][shape]))
    height = 0.8 / len(names)
    for i, name in enumerate(names):
        color = "#c62828" if name.startswith("llama.cpp") else COLORS[i % len(COLORS)]
        for y, shape in enumerate(shapes):
            if name not in real["rows"][shape]:
                continue
            speed, ratio = real["rows"][shape][name]
            position = y + (i - (len(names) - 1) / 2) * height
            ax.barh(position, speed, height=height, color=color, label=name if y == 0 else None)
            ax.text(speed * 1.03, position, f"{speed:g} (x{ratio:g})", va="center", fontsize=7)
    top = max(speed for shape in shapes for speed, _ in real["rows"][shape].values())
    ax.set_xlim(0, top * 2.3)
    ax.set_yticks(range(len(shapes)), shapes, fontsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="center right")
    ax.set_xlabel(f"greedy decode {real['unit']} (x = per-round ratio to llama.cpp)")
    ax.set_title("Decode at real shapes, random weights, vs llama.cpp", fontsize=10)


def _streaming_panel(ax: Any, streaming: dict[str, Any]) -> None:
    """Stream / whole-reply ratios of wall-clock and CPU time per API, against the 10% goal."""
    rows = list(streaming["rows"].items())
    width = 0.38
    for i, (name, color) in enumerate([("wall clock", COLORS[0]), ("CPU time", COLORS[2])]):
        xs = [j + (i - 0.5) * width for j in range(len(rows))]
        values = [row[i] for _, row in rows]
        ax.bar(xs, values, width, label=name, color=color)
        for x, value in zip(xs, values, strict=True):
            ax.text(x, value + 0.02, f"{value:g}", ha="center", fontsize=7)
    goal = streaming.get("goal_wall_ratio", 1.1)
    ax.axhline(goal, color="#c62828", linestyle="--", label=f"goal: stream <= {goal:g}x whole")
    ax.axhline(1.0, color="#616161", linewidth=0.8)
    ax.set_ylim(0, max(goal, *(max(row) for _, row in rows)) * 1.5)
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.set_ylabel("stream / whole (median of per-round ratios)")
    ax.set_title("Streaming against a whole reply", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=2)


def plot(figures: dict[str, Any], out: Path) -> Path:
    """Draw the panels into ``out`` (PNG) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra = [name for name in OPTIONAL_SECTIONS if name in figures]
    rows = 4 if extra else 3
    fig = plt.figure(figsize=(11, 16 if extra else 12), dpi=100)
    grid = fig.add_gridspec(rows, 2, height_ratios=[1, 1, 1.1, 1] if extra else [1, 1.1, 1])
    _engine_decode_panel(fig.add_subplot(grid[0, 0]), figures["engine"])
    _engine_prefill_panel(fig.add_subplot(grid[0, 1]), figures["engine"])
    drawers = {"real_sizes": _real_sizes_panel, "streaming": _streaming_panel}
    for column, name in enumerate(extra):
        drawers[name](fig.add_subplot(grid[1, column]), figures[name])
    first = rows - 2
    _parser_panel(fig.add_subplot(grid[first, :]), figures["parser"])
    _compile_panel(fig.add_subplot(grid[first + 1, 0]), figures["grammar_compile"])
    _decode_panel(fig.add_subplot(grid[first + 1, 1]), figures["grammar_decode"])
    sources = sorted({figures[s]["source"] for s in (*SECTIONS, *extra)})
    fig.text(
        0.01,
        0.005,
        f"Data: benchmarks/figures.json, from {', '.join(sources)}. Shared 2-core CPU VM.",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main() -> None:
    """Command-line entry: read the figures, write the PNG, say where."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DATA, help=f"figures file (default {DATA.relative_to(ROOT)})"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"PNG to write (default {OUT.relative_to(ROOT)})"
    )
    args = parser.parse_args()
    print(f"wrote {plot(load_figures(args.data), args.out)}")


if __name__ == "__main__":
    main()
