"""Real datasets read from storage: torchvision's MNIST / Fashion-MNIST / CIFAR-10 from a local
folder, and Parquet files from a local path or an object-store URI.

Nothing here touches the network unless the caller passes ``download=True`` for a torchvision
dataset; Parquet data is only ever read where it already is.

Parquet layouts (``parquet:<path-or-uri>``; a file, or a folder read as one dataset; files whose
names start with ``_`` or ``.`` such as ``_SUCCESS`` are skipped):

* ``image`` column of encoded image bytes (PNG, JPEG, anything PIL opens), either ``binary`` or a
  struct with a ``bytes`` field as Hugging Face ``datasets`` writes it. Decoded to uint8
  (C, H, W): a set of greyscale images (8 or 16 bits, with or without alpha) stays 1 channel,
  a set with any colour image becomes RGB. All images must share one size. kind "image".
* ``x`` column of numeric vectors (fixed-size or variable lists, all the same length) ->
  float32, kind "vector". If the schema metadata has ``ganlib.shape`` (channels first, e.g.
  ``b"1,8,8"``, C 1 or 3) the vectors are reshaped to that image shape, kind "image": integers
  are pixels in [0, 255] (checked), floats must already be in [-1, 1] (checked).
* ``image`` wins when both columns are present.
* optional ``split`` string column (or hive folders ``split=train/``, ``split=test/``): "train"
  rows are trained on, "test" or "heldout" rows are the held-out set, in a fixed random order
  (metrics take its first ``eval_samples``: a file grouped by class would give a few classes).
  Without it a fixed 10% is held out (``split_heldout(x, 0.1, seed=0)``) so every trial sees
  the same split.

URIs: ``s3://``, ``gs://``, ``hdfs://``, ``file://`` ... go through
``pyarrow.fs.FileSystem.from_uri`` (credentials come from the environment as pyarrow reads
them); anything without ``://`` is a local path.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from .base import TensorDataset, split_heldout

TORCHVISION = ("mnist", "fashion_mnist", "cifar10")
HELDOUT_FRACTION = 0.1
SPLIT_SEED = 0  # fixed: every trial and the feature extractor see the same split
SHAPE_KEY = b"ganlib.shape"
TRAIN_SPLITS = ("train",)
HELDOUT_SPLITS = ("test", "heldout")


# ---------------------------------------------------------------------------------- torchvision

def torchvision_dataset(name: str, root: str | None, download: bool = False) -> TensorDataset:
    """Official train split for training, official test split held out, kept as uint8 NCHW."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    if root is None:
        # torchvision would otherwise write into (or search) the working directory.
        raise ValueError(f"dataset {name!r} is read from a local folder: set data_root to one "
                         f"(and download=True to fetch it there once)")
    root = os.path.expanduser(str(root))
    try:
        # download is passed through only as given: False never reaches the network.
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except RuntimeError as e:
        # torchvision says "Dataset not found ... use download=True"; say where and how in our terms.
        if download or "not found" not in str(e):
            raise
        raise FileNotFoundError(f"dataset {name!r} not found under data_root {root!r} (torchvision "
                                f"{cls.__name__} layout); pass download=True (config field "
                                f"`download`) to fetch it there explicitly") from e
    x_train, x_test = _nchw(train.data), _nchw(test.data)
    return TensorDataset(name, "image", tuple(x_train.shape[1:]), x_test, train=x_train)


def _nchw(data) -> torch.Tensor:
    # MNIST-style .data is a (N, H, W) uint8 tensor; CIFAR's is a (N, H, W, C) uint8 numpy array.
    x = torch.as_tensor(data)
    if x.dim() == 3:
        return x.unsqueeze(1).contiguous()
    return x.permute(0, 3, 1, 2).contiguous()


# -------------------------------------------------------------------------------------- parquet

def parquet_dataset(uri: str) -> TensorDataset:
    import pyarrow.dataset as pds

    filesystem, path = _resolve(uri)
    # hive partitioning: a folder written with partition_cols=["split"] (split=train/, split=test/)
    # has its split in the folder names, not in the files
    data = pds.dataset(path, filesystem=filesystem, format="parquet", partitioning="hive")
    schema, names = data.schema, data.schema.names
    column = "image" if "image" in names else "x" if "x" in names else None
    if column is None:
        raise ValueError(f"parquet data {uri!r} has columns {names}; expected an 'image' column of "
                         f"encoded image bytes or an 'x' column of numeric vectors (optionally with "
                         f"a 'split' column)")
    columns = [column] + (["split"] if "split" in names else [])
    # Read only the columns we use: other columns (labels, captions) may be large.
    table = data.to_table(columns=columns)
    if table.num_rows == 0:
        raise ValueError(f"parquet data {uri!r} has no rows")

    if column == "image":
        x, kind = _decode_images(table.column("image"), uri), "image"
    else:
        x = _vectors(table.column("x"), uri)
        shape = (schema.metadata or {}).get(SHAPE_KEY)
        if shape is None:
            x, kind = x.float(), "vector"
        else:
            dims = tuple(int(d) for d in shape.decode().split(","))
            if len(dims) != 3 or dims[0] not in (1, 3):
                raise ValueError(f"parquet data {uri!r}: ganlib.shape {dims} must be channels first, C,H,W with "
                                 "C 1 or 3 (an H,W,C image is stored transposed)")
            if int(np.prod(dims)) != x.shape[1]:
                raise ValueError(f"parquet data {uri!r}: ganlib.shape {dims} does not match vector "
                                 f"length {x.shape[1]}")
            x, kind = _pixels(x, uri).reshape(len(x), *dims), "image"

    if "split" in columns:
        train, heldout = _by_split(x, table.column("split").to_pylist(), uri)
    else:
        train, heldout = split_heldout(x, HELDOUT_FRACTION, SPLIT_SEED)
    return TensorDataset(f"parquet:{uri}", kind, tuple(x.shape[1:]), heldout, train=train)


def _pixels(x: torch.Tensor, uri: str) -> torch.Tensor:
    """Image values as the models take them: integers are 0..255 pixels (uint8, which
    to_unit_range maps to [-1, 1]), floats must already be in [-1, 1]."""
    if not x.is_floating_point():
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            raise ValueError(f"parquet data {uri!r}: integer pixels must be 0..255, found {low}..{high}")
        return x.to(torch.uint8)
    x = x.float()
    if not torch.isfinite(x).all() or x.min() < -1 or x.max() > 1:
        raise ValueError(f"parquet data {uri!r}: float pixels must be finite and in [-1, 1] (the generator's "
                         f"tanh range), found {x.min().item():.4g}..{x.max().item():.4g}; store 0..255 integers "
                         "or rescale")
    return x


def _resolve(uri: str):
    """(filesystem, path) for a URI or a local path; FileNotFoundError if nothing is there."""
    import pyarrow.fs as pafs

    if "://" in uri:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    else:
        # from_uri rejects relative paths, so local paths go straight to the local filesystem.
        filesystem, path = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"parquet data not found: {uri!r}")
    return filesystem, path


def _decode_images(column, uri: str) -> torch.Tensor:
    import pyarrow as pa
    from PIL import Image

    struct = pa.types.is_struct(column.type)  # Hugging Face Image feature: struct<bytes, path>
    if struct:
        if column.type.get_field_index("bytes") < 0:
            raise ValueError(f"parquet data {uri!r}: struct column 'image' has no 'bytes' field")
    elif not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise ValueError(f"parquet data {uri!r}: column 'image' must hold encoded image bytes (PNG, JPEG...), got "
                         f"{column.type}; store arrays as an 'x' column of numbers with ganlib.shape")
    # chunk by chunk: one column of over 2 GiB of bytes cannot be combined into one array
    blobs = [blob for chunk in column.chunks
             for blob in (chunk.field("bytes") if struct else chunk).to_pylist()]
    opened = []
    for i, blob in enumerate(blobs):
        if blob is None:
            raise ValueError(f"parquet data {uri!r}: image {i} has no bytes")
        opened.append(Image.open(io.BytesIO(blob)))
    # One mode for the whole set: greyscale (with or without alpha, 8 or 16 bits) stays 1 channel
    # unless any image has colour, then all are RGB (palette, RGBA, CMYK...; alpha is dropped).
    grey = all(img.mode in GREY_MODES for img in opened)
    images = []
    for img in opened:
        a = _grey(img) if grey else np.asarray(img.convert("RGB"), dtype=np.uint8)
        images.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise ValueError(f"parquet data {uri!r}: images must share one shape, found "
                         f"{sorted(shapes)[:5]}; resize them when writing the dataset")
    return torch.from_numpy(np.stack(images))


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _grey(img) -> np.ndarray:
    """8-bit greyscale: 16-bit values scaled (Pillow's convert("L") clips them at 255)."""
    if img.mode.startswith("I;16") or (img.mode == "I" and np.asarray(img).max() > 255):
        return (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _vectors(column, uri: str) -> torch.Tensor:
    """(N, D) tensor from a list / fixed-size-list column; uint8 kept, other integers int64,
    floats float32."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # chunk by chunk (no combine_chunks: one list column over 2 GiB cannot be one array)
    t = column.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise ValueError(f"parquet data {uri!r}: column 'x' must be a list of numbers, got {t}")
    if column.null_count:
        raise ValueError(f"parquet data {uri!r}: column 'x' has {column.null_count} null rows")
    lengths = set(pc.list_value_length(column).to_pylist())
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"parquet data {uri!r}: vectors in 'x' must share one non-zero length, "
                         f"found lengths {sorted(lengths)[:5]}")
    values = pc.list_flatten(column)  # respects offsets, so sliced / chunked lists are safe
    if values.null_count or not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise ValueError(f"parquet data {uri!r}: column 'x' must hold non-null numbers, got {t}")
    # integers kept as integers (image pixels are checked and cast by _pixels), floats float32
    dtype = np.uint8 if pa.types.is_uint8(values.type) else np.int64 if pa.types.is_integer(values.type) \
        else np.float32
    array = values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return torch.from_numpy(array.reshape(len(column), lengths.pop()).copy())


def _by_split(x: torch.Tensor, split: list, uri: str) -> tuple[torch.Tensor, torch.Tensor]:
    unknown = set(split) - set(TRAIN_SPLITS) - set(HELDOUT_SPLITS)
    if unknown:
        raise ValueError(f"parquet data {uri!r}: split values must be 'train', 'test' or 'heldout', "
                         f"found {sorted(map(str, unknown))}")
    held = torch.tensor([s in HELDOUT_SPLITS for s in split])
    if not held.any():
        # An empty held-out set would make every metric meaningless; say so now, not mid-sweep.
        raise ValueError(f"parquet data {uri!r}: the 'split' column has no 'test'/'heldout' rows")
    # In a fixed random order: metrics take its first n (eval_samples), and files are often
    # written grouped by class, where the first n would be a few classes only
    heldout = x[held]
    return x[~held], heldout[torch.randperm(len(heldout), generator=torch.Generator().manual_seed(SPLIT_SEED))]
