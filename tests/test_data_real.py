"""Real-data loaders on tiny files written here: torchvision layouts and Parquet, no network."""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ganlib.data import load_dataset
from ganlib.data.real import parquet_dataset, torchvision_dataset

# ----------------------------------------------------------------------------------- torchvision


def _write_idx(path, array: np.ndarray) -> None:
    # IDX: 2 zero bytes, dtype code 0x08 (uint8), number of dims, then big-endian int32 sizes.
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _fake_mnist(root, folder: str, n_train: int = 20, n_test: int = 10) -> None:
    raw = root / folder / "raw"  # where torchvision's MNIST / FashionMNIST look (class name)
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 0] = 255  # a known white pixel; everything else black
        images[:, 27, 27] = np.arange(n)  # tells samples apart
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_layout_from_local_folder(tmp_path, name, folder):
    _fake_mnist(tmp_path, folder)
    data = load_dataset(name, root=str(tmp_path))
    assert (data.name, data.kind, data.sample_shape) == (name, "image", (1, 28, 28))
    assert data.train.shape == (20, 1, 28, 28) and data.train.dtype == torch.uint8
    assert data.heldout.shape == (10, 1, 28, 28) and data.heldout.dtype == torch.float32
    assert data.heldout[:, 0, 0, 0].eq(1.0).all()  # 255 -> 1.0
    assert data.heldout[:, 0, 1, 1].eq(-1.0).all()  # 0 -> -1.0
    assert data.train[:, 0, 27, 27].tolist() == list(range(20))  # official order kept
    batch = data.sample(64, torch.Generator().manual_seed(0))
    assert batch.shape == (64, 1, 28, 28) and batch.dtype == torch.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_missing_files_name_the_fix(tmp_path, name):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, root=str(tmp_path / "empty"))
    message = str(err.value)
    assert name in message and str(tmp_path / "empty") in message and "download=True" in message
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*ubyte*"))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_needs_a_root(name):
    with pytest.raises(ValueError, match="data_root"):
        torchvision_dataset(name, None)


def test_cifar10_layout_is_nchw(tmp_path, monkeypatch):
    # torchvision checks CIFAR files by md5, which fake files cannot pass: check existence only.
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    def batch(n, first):
        # rows are 3072 bytes, channel-major (R plane, G plane, B plane), like the real files
        data = np.zeros((n, 3, 32, 32), np.uint8)
        data[:, 0] = 255  # red plane white
        data[:, 2, 5, 7] = first + np.arange(n)  # blue pixel at (5, 7) numbers the sample
        return {"data": data.reshape(n, 3072), "labels": [0] * n}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(2, 10 * i)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(3, 0)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a"] * 10}))

    data = load_dataset("cifar10", root=str(tmp_path))
    assert data.sample_shape == (3, 32, 32) and data.train.shape == (10, 3, 32, 32)
    assert data.heldout.shape == (3, 3, 32, 32)
    assert data.train[:, 0].eq(255).all() and data.train[:, 1].eq(0).all()
    assert data.train[:, 2, 5, 7].tolist() == [10, 11, 20, 21, 30, 31, 40, 41, 50, 51]


# --------------------------------------------------------------------------------------- parquet


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _image_table(n: int, split: list[str] | None = None, hf_struct: bool = False) -> pa.Table:
    # 4x5 greyscale images: pixel (0, 0) = sample index * 10, pixel (1, 2) = 255, rest 0
    blobs = []
    for i in range(n):
        a = np.zeros((4, 5), np.uint8)
        a[0, 0], a[1, 2] = i * 10, 255
        blobs.append(_png(a))
    image = pa.array(blobs, pa.binary())
    if hf_struct:  # Hugging Face datasets' Image feature: struct<bytes, path>
        paths = pa.array([None] * n, pa.string())
        image = pa.StructArray.from_arrays([image, paths], names=["bytes", "path"])
    columns = {"image": image, "label": pa.array(range(n))}
    if split is not None:
        columns["split"] = pa.array(split)
    return pa.table(columns)


@pytest.mark.parametrize("hf_struct", [False, True])
def test_parquet_png_images_with_split(tmp_path, hf_struct):
    split = ["train"] * 6 + ["test"] * 3 + ["heldout"]
    pq.write_table(_image_table(10, split, hf_struct), tmp_path / "d.parquet")
    data = load_dataset(f"parquet:{tmp_path / 'd.parquet'}")
    assert (data.kind, data.sample_shape) == ("image", (1, 4, 5))
    assert data.train.shape == (6, 1, 4, 5) and data.train.dtype == torch.uint8
    assert data.heldout.shape == (4, 1, 4, 5)
    assert data.train[:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40, 50]
    assert data.train[:, 0, 1, 2].eq(255).all() and data.heldout[:, 0, 1, 2].eq(1.0).all()
    assert data.heldout[:, 0, 3, 4].eq(-1.0).all()
    # the held-out rows in a fixed random order, not the file's (metrics take its first n)
    assert sorted(data.heldout[:, 0, 0, 0].tolist()) == pytest.approx([v / 127.5 - 1 for v in (60, 70, 80, 90)])
    a = data.sample(32, torch.Generator().manual_seed(0))
    b = data.sample(32, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.min() >= -1 and a.max() <= 1


def test_parquet_rgb_images_are_chw(tmp_path):
    a = np.zeros((4, 5, 3), np.uint8)
    a[..., 1] = 200  # green channel
    table = pa.table({"image": [_png(a)] * 5, "split": ["train"] * 4 + ["test"]})
    pq.write_table(table, tmp_path / "c.parquet")
    data = parquet_dataset(str(tmp_path / "c.parquet"))
    assert data.sample_shape == (3, 4, 5)
    assert data.train[:, 1].eq(200).all() and data.train[:, 0].eq(0).all()


def test_parquet_vectors_hold_out_ten_percent(tmp_path):
    x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    pq.write_table(pa.table({"x": pa.array(list(x), pa.list_(pa.float32(), 3))}), tmp_path / "v.parquet")
    data = parquet_dataset(str(tmp_path / "v.parquet"))
    assert (data.kind, data.sample_shape) == ("vector", (3,))
    assert len(data.train) == 36 and len(data.heldout) == 4
    assert data.train.dtype == torch.float32
    rows = sorted(map(tuple, torch.cat([data.train, data.heldout]).tolist()))
    assert rows == sorted(map(tuple, x.tolist()))  # a split, nothing lost or rescaled
    again = parquet_dataset(str(tmp_path / "v.parquet"))
    assert torch.equal(again.heldout, data.heldout)  # fixed split
    s = data.sample(8, torch.Generator().manual_seed(1))
    assert torch.equal(s, data.sample(8, torch.Generator().manual_seed(1)))


def test_parquet_shape_metadata_makes_images(tmp_path):
    x = np.linspace(-1, 1, 10 * 4, dtype=np.float32).reshape(10, 4)
    table = pa.table({"x": pa.array(list(x), pa.list_(pa.float64()))})  # variable-size lists
    pq.write_table(table.replace_schema_metadata({"ganlib.shape": "1,2,2"}), tmp_path / "f.parquet")
    data = parquet_dataset(str(tmp_path / "f.parquet"))
    assert (data.kind, data.sample_shape) == ("image", (1, 2, 2)) and data.train.dtype == torch.float32

    pixels = pa.array([[0, 255, 0, 255]] * 10, pa.list_(pa.uint8()))
    table = pa.table({"x": pixels}).replace_schema_metadata({"ganlib.shape": "1,2,2"})
    pq.write_table(table, tmp_path / "u.parquet")
    data = parquet_dataset(str(tmp_path / "u.parquet"))
    assert data.train.dtype == torch.uint8  # pixels, mapped to [-1, 1] when sampled
    assert data.heldout[0, 0].tolist() == [[-1.0, 1.0], [-1.0, 1.0]]

    pq.write_table(table.replace_schema_metadata({"ganlib.shape": "1,3,3"}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="does not match"):
        parquet_dataset(str(tmp_path / "bad.parquet"))


def test_parquet_folder_and_file_uri(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(_image_table(4, ["train"] * 3 + ["test"]), folder / "part-0.parquet")
    pq.write_table(_image_table(5, ["train"] * 4 + ["test"]), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_bytes(b"")  # marker files written by Spark and friends are skipped
    data = load_dataset(f"parquet:{folder}")
    assert len(data.train) == 7 and len(data.heldout) == 2
    via_uri = load_dataset(f"parquet:file://{folder}")
    assert torch.equal(via_uri.train, data.train) and torch.equal(via_uri.heldout, data.heldout)


def test_parquet_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        parquet_dataset(str(tmp_path / "nope.parquet"))
    with pytest.raises(FileNotFoundError, match="nope"):
        parquet_dataset(f"file://{tmp_path}/nope")

    pq.write_table(pa.table({"label": [1, 2], "caption": ["a", "b"]}), tmp_path / "cols.parquet")
    with pytest.raises(ValueError, match=r"columns \['label', 'caption'\].*'image'.*'x'"):
        parquet_dataset(str(tmp_path / "cols.parquet"))

    mixed = pa.table({"image": [_png(np.zeros((4, 4), np.uint8)), _png(np.zeros((4, 5), np.uint8))]})
    pq.write_table(mixed, tmp_path / "mixed.parquet")
    with pytest.raises(ValueError, match="one shape"):
        parquet_dataset(str(tmp_path / "mixed.parquet"))

    ragged = pa.table({"x": pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32()))})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match="one non-zero length"):
        parquet_dataset(str(tmp_path / "ragged.parquet"))

    pq.write_table(_image_table(3, ["train", "train", "valid"]), tmp_path / "split.parquet")
    with pytest.raises(ValueError, match="valid"):
        parquet_dataset(str(tmp_path / "split.parquet"))
    pq.write_table(_image_table(3, ["train"] * 3), tmp_path / "notest.parquet")
    with pytest.raises(ValueError, match="no 'test'"):
        parquet_dataset(str(tmp_path / "notest.parquet"))


def test_a_held_out_split_written_grouped_by_class_is_scored_on_every_class(tmp_path):
    # test rows stored mode by mode: the first 64 held-out rows in file order are one mode
    modes = np.repeat(np.arange(8), 64)
    x = np.stack([np.cos(modes * np.pi / 4), np.sin(modes * np.pi / 4)], 1).astype(np.float32)
    table = pa.table({"x": pa.array(list(x), pa.list_(pa.float32(), 2)), "split": ["test"] * len(x)})
    pq.write_table(pa.concat_tables([pa.table({"x": pa.array(list(x), pa.list_(pa.float32(), 2)),
                                               "split": ["train"] * len(x)}), table]), tmp_path / "g.parquet")
    first = parquet_dataset(str(tmp_path / "g.parquet")).heldout[:64]
    assert len({tuple(np.round(p, 3)) for p in first.tolist()}) == 8
    assert torch.equal(first, parquet_dataset(str(tmp_path / "g.parquet")).heldout[:64])  # fixed order


def test_a_hive_partitioned_split_is_read_from_the_folder_names(tmp_path):
    import pyarrow.dataset as pds

    x = np.arange(20 * 2, dtype=np.float32).reshape(20, 2)
    table = pa.table({"x": pa.array(list(x), pa.list_(pa.float32(), 2)), "split": ["train"] * 16 + ["test"] * 4})
    pds.write_dataset(table, tmp_path / "parts", format="parquet", partitioning=["split"],
                      partitioning_flavor="hive")
    data = parquet_dataset(str(tmp_path / "parts"))
    assert len(data.train) == 16 and sorted(data.heldout[:, 0].tolist()) == [32.0, 34.0, 36.0, 38.0]


def _pixel_table(values, dtype, shape="1,2,2"):
    schema = pa.schema([("x", pa.list_(dtype))], metadata={b"ganlib.shape": shape.encode()})
    return pa.table({"x": pa.array([list(v) for v in values], pa.list_(dtype))}, schema=schema)


@pytest.mark.parametrize("values, dtype, shape, error", [
    ([[0, 128, 255, 7]] * 10, pa.int64(), "1,2,2", None),  # Python ints: int64 pixels 0..255
    ([[0, 300, 255, 7]] * 10, pa.int64(), "1,2,2", "integer pixels must be 0..255"),
    ([[0.0, 0.5, 1.0, 200.0]] * 10, pa.float32(), "1,2,2", "float pixels must be finite and in"),
    ([[0.0, float("nan"), 1.0, 0.0]] * 10, pa.float32(), "1,2,2", "float pixels must be finite and in"),
    ([[0] * 12] * 10, pa.uint8(), "2,2,3", "must be channels first"),
])
def test_image_vectors_are_pixels_checked_against_their_range_and_shape(tmp_path, values, dtype, shape, error):
    pq.write_table(_pixel_table(values, dtype, shape), tmp_path / "p.parquet")
    if error is None:
        data = parquet_dataset(str(tmp_path / "p.parquet"))
        assert data.train.dtype == torch.uint8 and data.train[0].flatten().tolist() == [0, 128, 255, 7]
    else:
        with pytest.raises(ValueError, match=error):
            parquet_dataset(str(tmp_path / "p.parquet"))


def test_image_bytes_greyscale_16_bit_and_mixed_modes(tmp_path):
    ramp = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4096 + 4095)
    sixteen = io.BytesIO()
    Image.fromarray(ramp).save(sixteen, format="PNG")  # uint16: mode I;16
    grey_alpha = io.BytesIO()
    Image.new("LA", (4, 4), (100, 255)).save(grey_alpha, format="PNG")
    grey = _png(np.full((4, 4), 50, np.uint8))
    table = pa.table({"image": [sixteen.getvalue(), grey_alpha.getvalue()] + [grey] * 8})
    pq.write_table(table, tmp_path / "m.parquet")
    data = parquet_dataset(str(tmp_path / "m.parquet"))
    assert data.sample_shape == (1, 4, 4)  # greyscale with alpha stays greyscale
    everything = torch.cat([data.train.float(), (data.heldout + 1) * 127.5])  # held out: in [-1, 1]
    # 16 bits scaled to 8 (Pillow's convert("L") clips them: nearly all white)
    assert (ramp >> 8).astype(np.uint8).tolist() in [img[0].round().int().tolist() for img in everything]
    colour = _png(np.full((4, 4, 3), 9, np.uint8))  # one colour image: every image is RGB
    pq.write_table(pa.table({"image": [colour, grey] * 5}), tmp_path / "c.parquet")
    assert parquet_dataset(str(tmp_path / "c.parquet")).sample_shape == (3, 4, 4)
    pq.write_table(pa.table({"image": [[1, 2]] * 4}), tmp_path / "a.parquet")  # arrays, not encoded bytes
    with pytest.raises(ValueError, match="must hold encoded image bytes"):
        parquet_dataset(str(tmp_path / "a.parquet"))


def test_vectors_and_images_are_read_chunk_by_chunk_in_order(tmp_path):
    # several row groups: pyarrow hands the columns over in chunks, which are never combined into
    # one array (a column over 2 GiB cannot be); the rows keep their order
    x = np.arange(30 * 2, dtype=np.float32).reshape(30, 2)
    table = pa.table({"x": pa.array(list(x), pa.list_(pa.float32())), "split": ["train"] * 24 + ["test"] * 6})
    pq.write_table(table, tmp_path / "v.parquet", row_group_size=7)
    assert pq.read_table(tmp_path / "v.parquet").column("x").num_chunks > 1
    assert parquet_dataset(str(tmp_path / "v.parquet")).train.tolist() == x[:24].tolist()
    images = pa.table({"image": [_png(np.full((2, 2), i, np.uint8)) for i in range(12)],
                       "split": ["train"] * 10 + ["test"] * 2})
    pq.write_table(images, tmp_path / "i.parquet", row_group_size=5)
    assert parquet_dataset(str(tmp_path / "i.parquet")).train[:, 0, 0, 0].tolist() == list(range(10))
