"""PNG figures for MLflow and the sweep report, drawn with matplotlib's object API (no pyplot
state: safe in the driver's tracking thread)."""

from __future__ import annotations

import io

import torch


def new_figure(width: float = 5.0, height: float = 3.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def sample_figure(fake: torch.Tensor, real: torch.Tensor | None, title: str) -> bytes:
    """A scatter of generated vs held-out real points (2-D) or a grid of images."""
    if fake.dim() == 4:
        from torchvision.utils import make_grid, save_image

        buffer = io.BytesIO()
        grid = make_grid(fake[:64].float().clamp(-1, 1), nrow=8, normalize=True, value_range=(-1, 1), pad_value=1)
        save_image(grid, buffer, format="png")
        return buffer.getvalue()
    fig, ax = new_figure(4, 4)
    if real is not None:
        ax.scatter(real[:2000, 0], real[:2000, 1], s=2, c="0.6", label="held-out real")
    ax.scatter(fake[:2000, 0], fake[:2000, 1], s=2, c="tab:red", label="generated")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    return png(fig)
