"""PNG figures of a training run: the loss curves, and embeddings projected to 2-D by condition.

The projection is how one watches training separate the classes: the held-out windows
of the evaluation network, as normalised raw windows and as the model's embeddings,
each projected on its own two principal components and coloured by condition, with
the one-shot references drawn as stars. Needs matplotlib (``pip install
'faultprint[trainer]'``); without it the trainer writes the figures' numbers only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed: no PNG plots (pip install 'faultprint[trainer]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: dict[str, list[float]], title: str, path: Path) -> Path | None:
    """Training and validation loss per epoch."""
    plt = _pyplot()
    if plt is None or not history:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted(history):
        ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("semi-hard triplet loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def principal_components(vectors: np.ndarray, dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (dims, d)) of the vectors; project with (x - mean) @ components.T."""
    mean = vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(vectors - mean, full_matrices=False)
    return mean, vt[:dims]


def embedding_projection(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    labels: np.ndarray,
    reference_labels: np.ndarray,
    title: str,
    path: Path,
) -> Path | None:
    """One scatter per (name, test vectors, reference vectors), coloured by condition."""
    plt = _pyplot()
    if plt is None:
        return None
    conditions = list(dict.fromkeys(map(str, reference_labels)))
    colours = plt.get_cmap("tab10" if len(conditions) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for ax, (name, test, refs) in zip(axes[0], panels, strict=True):
        mean, components = principal_components(np.concatenate([test, refs]))
        test_2d, refs_2d = (test - mean) @ components.T, (refs - mean) @ components.T
        for i, c in enumerate(conditions):
            colour = colours(i)
            ax.scatter(*test_2d[labels == c].T, s=10, alpha=0.6, color=colour, label=c)
            ax.scatter(*refs_2d[reference_labels == c].T, s=160, marker="*", color=colour,
                       edgecolors="black", linewidths=0.8)  # fmt: skip
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=1.5)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
