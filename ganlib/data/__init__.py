"""Datasets by name: embedded ones (offline, deterministic) and real ones from local storage."""

from __future__ import annotations

from .base import Dataset, TensorDataset, split_heldout, to_unit_range
from .digits import digits
from .toy import grid25, ring8, swissroll

__all__ = ["Dataset", "TensorDataset", "load_dataset", "split_heldout", "to_unit_range"]

_EMBEDDED = {"ring8": ring8, "grid25": grid25, "swissroll": swissroll, "digits": digits}


def load_dataset(name: str, root: str | None = None, download: bool = False) -> Dataset:
    """``name`` is an embedded dataset, a torchvision one (mnist, fashion_mnist, cifar10) read
    from the local folder ``root`` (downloaded there only when ``download`` is True), or
    ``parquet:<path-or-uri>``. Raises ``FileNotFoundError`` / ``ValueError`` naming what is
    missing; never touches the network unless ``download`` is True."""
    if name in _EMBEDDED:
        return _EMBEDDED[name]()
    from . import real  # torchvision / pyarrow are imported only for real data

    if name in real.TORCHVISION:
        return real.torchvision_dataset(name, root, download)
    if name.startswith("parquet:"):
        return real.parquet_dataset(name[len("parquet:"):])
    raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(_EMBEDDED)}, "
                     f"{', '.join(real.TORCHVISION)} or 'parquet:<path-or-uri>'")
