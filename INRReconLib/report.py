"""Figures and tables that go next to results: comparison panels and convergence plots (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display anywhere we run (worker, CI)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path):
    from .io.atomic import atomic_target

    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def _middle_slice(img):
    img = np.asarray(img)
    while img.ndim > 2:
        img = img[img.shape[0] // 2]
    return img


def comparison_panel(images: dict, path, *, window=None, reference=None, title=""):
    """Side-by-side middle slices; `window` = (low, high) display range; a difference image
    against `reference` is added for the last entry."""
    plt = pyplot()
    names = list(images)
    cols = len(names) + (1 if reference is not None else 0)
    fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3.4))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names):
        ax.imshow(_middle_slice(images[name]), cmap="gray", vmin=window[0] if window else None,
                  vmax=window[1] if window else None)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if reference is not None:
        diff = _middle_slice(images[names[-1]]) - _middle_slice(reference)
        lim = np.percentile(np.abs(diff), 99.5) or 1.0
        axes[-1].imshow(diff, cmap="coolwarm", vmin=-lim, vmax=lim)
        axes[-1].set_title(f"{names[-1]} − truth", fontsize=9)
        axes[-1].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, Path(path))
    plt.close(fig)


def change_panel(image, change, roi, path, *, threshold, window=None, title=""):
    """The reconstruction's middle slice, then the same with the change map in colour from
    `threshold` up (what the Slicer module overlays) and the lesion ROI's outline."""
    plt = pyplot()
    img, chg = _middle_slice(image), _middle_slice(change)
    fig, axes = plt.subplots(1, 2, figsize=(6.6, 3.6))
    for ax in axes:
        ax.imshow(img, cmap="gray", vmin=window[0] if window else None, vmax=window[1] if window else None)
        ax.axis("off")
    shown = axes[1].imshow(np.ma.masked_less(chg, threshold), cmap="jet", vmin=threshold, vmax=max(10.0, threshold + 1))
    if roi is not None and np.any(roi):
        axes[1].contour(_middle_slice(roi).astype(float), levels=[0.5], colors="white", linewidths=0.8)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, Path(path))
    plt.close(fig)


def convergence_plot(curves: dict, path, *, ylabel="PSNR (dB)", title=""):
    """curves: label -> (iterations, values)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, Path(path))
    plt.close(fig)
