"""The study's report: study.csv (one line per row), study.md (the same as a table, then the
failures with their messages) and plots (PNG): seconds per row and, for chained series, each
metric against the fraction (position in its chain), one line per series."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..io.atomic import atomic_write_text
from ..report import pyplot, save_figure

COLUMNS = ("id", "status", "method", "after", "seconds", "device", "iterations", "psnr", "ssim", "roi_psnr",
           "roi_ssim", "change_auc", "attempts", "kind", "message", "output")
METRICS = ("psnr", "ssim", "roi_psnr", "roi_ssim", "change_auc")


def flat(summary: dict) -> dict:
    """One CSV line: the summary's fields and its metrics side by side."""
    metrics = summary.get("metrics") or {}
    line = {k: summary.get(k) for k in COLUMNS}
    line.update({k: metrics.get(k) for k in METRICS})
    return line


def write_report(study, summaries: list, out_dir) -> dict:
    """Writes the report into out_dir; returns {"csv", "md", "plots": [...]} paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [flat(s) for s in summaries]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in line.items()} for line in lines)
    paths = {"csv": atomic_write_text(out_dir / "study.csv", buf.getvalue()),
             "md": atomic_write_text(out_dir / "study.md", _markdown(study, lines)), "plots": []}
    paths["plots"].append(_seconds_plot(lines, out_dir / "study_seconds.png"))
    fractions = _fractions_plot(study, {line["id"]: line for line in lines}, out_dir / "study_fractions.png")
    if fractions is not None:
        paths["plots"].append(fractions)
    return paths


_FORMATS = {"seconds": "{:.1f}", "psnr": "{:.2f}", "roi_psnr": "{:.2f}", "ssim": "{:.4f}", "roi_ssim": "{:.4f}",
            "change_auc": "{:.3f}"}


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and key in _FORMATS:
        return _FORMATS[key].format(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown(study, lines: list) -> str:
    shown = ("id", "status", "method", "after", "seconds", "device", "iterations", "psnr", "ssim", "roi_psnr")
    count = {s: sum(line["status"] == s for line in lines) for s in ("done", "skipped", "failed")}
    out = [f"# Study {study.path.name}", "",
           f"{len(lines)} rows: {count['done']} run, {count['skipped']} already finished (skipped), "
           f"{count['failed']} failed.", "", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    out += ["| " + " | ".join(_cell(k, line[k]) for k in shown) + " |" for line in lines]
    failed = [line for line in lines if line["status"] == "failed"]
    if failed:
        out += ["", "## Failed rows", ""]
        out += [f"- **{line['id']}** ({line['kind']}): {line['message']}" for line in failed]
    return "\n".join(out) + "\n"


def _seconds_plot(lines: list, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(lines) + 1.5), 3.2))
    colours = {"done": "tab:blue", "skipped": "tab:gray", "failed": "tab:red"}
    ax.bar(range(len(lines)), [line["seconds"] or 0.0 for line in lines],
           color=[colours.get(line["status"], "k") for line in lines])
    ax.set_xticks(range(len(lines)), [line["id"] for line in lines], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("seconds (grey: from the earlier run)")
    ax.set_title("Time per row (red: failed)", fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
    return path


def _fractions_plot(study, lines: dict, path: Path):
    """Each metric against the fraction number for every chain longer than one row; None when
    the study has no such series with metrics."""
    chains = [c for c in study.chains() if len(c) > 1]
    metrics = [m for m in ("psnr", "ssim", "roi_psnr") if any(lines[r.id][m] is not None for c in chains for r in c)]
    if not metrics:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for chain in chains:
            values = [lines[r.id][metric] for r in chain]
            ax.plot(range(1, len(chain) + 1), [float("nan") if v is None else v for v in values], marker="o",
                    label=f"{chain[0].id} … {chain[-1].id}")
        ax.set_xlabel("fraction (position in the series)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)
    return path
