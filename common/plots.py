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


def discrete_scatter(ax: plt.Axes, xy: np.ndarray, labels: np.ndarray, n_classes: int = 10,
                     cbar_label: str = "digit", s: float = 2.0) -> None:
    """Scatter ``xy [N, 2]`` coloured by integer ``labels`` with a discrete ``n_classes``-colour
    map (``tab10`` for ≤ 10 classes) and a colour bar with one tick centred on each band."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    base = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    cmap = ListedColormap([base(i) for i in range(n_classes)])
    norm = BoundaryNorm(np.arange(-0.5, n_classes + 0.5, 1.0), cmap.N)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=cmap, norm=norm, s=s, linewidths=0)
    cb = ax.figure.colorbar(sc, ax=ax, ticks=range(n_classes), fraction=0.046, pad=0.04)
    cb.set_label(cbar_label)


def uniform_grid_2d(n: int, lim: float) -> torch.Tensor:
    """``[n*n, 2]`` points of an ``n x n`` uniform grid on ``[-lim, lim]^2``, rows from high
    to low z2 and columns from low to high z1 (the order :func:`tile_images` lays out)."""
    if n < 2 or not lim > 0:
        raise ValueError(f"need n >= 2 and lim > 0, got n={n}, lim={lim}")
    g = torch.linspace(-lim, lim, n)
    z2, z1 = torch.meshgrid(g.flip(0), g, indexing="ij")
    return torch.stack([z1, z2], -1).reshape(-1, 2)


def latent_manifold(ax: plt.Axes, images: torch.Tensor | np.ndarray, n: int, lim: float,
                    title: str | None = None, xlabel: str = "z1", ylabel: str = "z2") -> None:
    """Decoded images ``[n*n, H, W]`` of :func:`uniform_grid_2d` ``(n, lim)`` drawn on z axes:
    each tile centred on its grid point, so the panel shares its axes with a latent scatter."""
    half = lim / (n - 1)
    ax.imshow(tile_images(images, (n, n), scale_each=False, spacing=0), cmap="gray", vmin=0.0,
              vmax=1.0, extent=(-lim - half, lim + half, -lim - half, lim + half),
              interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)


def line_styles(i: int) -> dict[str, object]:
    """Distinct line style and marker for the ``i``-th of several curves that may overlap."""
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1)), "v"), ((0, (1, 1)), "P")]
    ls, marker = styles[i % len(styles)]
    return {"linestyle": ls, "marker": marker, "markersize": 5, "markerfacecolor": "none"}
