"""Plot helpers: image tiling (as in the DeepLearning tutorials' ``tile_raster_images``),
image grids and learning curves. Figures use matplotlib's object API, never global state."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def tile_images(images: torch.Tensor | np.ndarray, grid: tuple[int, int],
                scale_each: bool = True, spacing: int = 1) -> np.ndarray:
    """Arrange ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (colour) images on a ``rows x cols`` grid.

    ``scale_each`` rescales every image to [0, 1] on its own (how the tutorials show filters);
    otherwise values are clipped to [0, 1]. Gaps of ``spacing`` pixels are drawn black.
    Returns a float array ``[rows*(H+s)-s, cols*(W+s)-s(, 3)]``.
    """
    a = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.float32)
    rows, cols = grid
    if len(a) > rows * cols:
        raise ValueError(f"{len(a)} images do not fit a {rows}x{cols} grid")
    if scale_each:
        flat = a.reshape(len(a), -1)
        lo, hi = flat.min(1), flat.max(1)
        a = (a - lo.reshape((-1,) + (1,) * (a.ndim - 1))) / (
            (hi - lo).reshape((-1,) + (1,) * (a.ndim - 1)) + 1e-8)
    a = np.clip(a, 0.0, 1.0)
    h, w = a.shape[1:3]
    out = np.zeros((rows * (h + spacing) - spacing, cols * (w + spacing) - spacing) + a.shape[3:],
                   dtype=np.float32)
    for i, img in enumerate(a):
        r, c = divmod(i, cols)
        out[r * (h + spacing): r * (h + spacing) + h, c * (w + spacing): c * (w + spacing) + w] = img
    return out


def show_tiles(ax: plt.Axes, tiles: np.ndarray, title: str | None = None) -> None:
    ax.imshow(tiles, cmap="gray" if tiles.ndim == 2 else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def image_grid(images: torch.Tensor | np.ndarray, grid: tuple[int, int], title: str | None = None,
               scale_each: bool = False, size: float = 0.6) -> plt.Figure:
    """A figure showing ``images`` tiled on ``grid`` (``size`` inches per tile)."""
    rows, cols = grid
    fig, ax = plt.subplots(figsize=(max(2.0, cols * size), max(2.0, rows * size)))
    show_tiles(ax, tile_images(images, grid, scale_each=scale_each), title)
    return fig


def curves(ax: plt.Axes, series: dict[str, Sequence[float]], xlabel: str, ylabel: str,
           x: Sequence[float] | None = None, title: str | None = None) -> None:
    """Several named curves on one axis."""
    for name, ys in series.items():
        xs = x if x is not None else range(1, len(ys) + 1)
        ax.plot(list(xs)[: len(ys)], list(ys), label=name, marker="o" if len(ys) < 30 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
