"""Feature extractors: committed digits weights, the LeNet cache path, local Inception weights."""

import hashlib
import struct

import pytest
import torch

from ganlib.data.digits import digits_with_labels
from ganlib.metrics import train_features
from ganlib.metrics.features import (
    DIGITS_WEIGHTS,
    IdentityFeatures,
    InceptionFeatures,
    LeNetFeatures,
    feature_extractor_for,
    fid_inception_v3,
    lenet_weights_path,
    load_digits_features,
)


def test_committed_digits_weights_classify_heldout_digits():
    assert DIGITS_WEIGHTS.stat().st_size < 1_000_000
    ext = feature_extractor_for("digits", "image")
    state = torch.load(DIGITS_WEIGHTS, weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode() + state[name].numpy().tobytes())
    assert ext.name == f"digits_cnn_{h.hexdigest()[:8]}"
    _, _, held_x, held_y = digits_with_labels()
    with torch.no_grad():
        acc = (ext.net(held_x).argmax(1) == held_y).double().mean().item()
    assert acc >= 0.97
    assert ext.heldout_accuracy == pytest.approx(acc)
    ext.train()  # ignored: features stay deterministic (no dropout)
    f1, f2 = ext(held_x[:16]), ext(held_x[:16])
    assert f1.shape == (16, 64) and torch.equal(f1, f2) and not f1.requires_grad


def test_retrained_digits_weights_score_under_another_name_and_resaved_ones_under_the_same(tmp_path):
    """Cached real statistics and the runs' ``feature_extractor`` tag are keyed by the name: weights
    with other values must not share it, the same values saved again must."""
    checkpoint = torch.load(DIGITS_WEIGHTS, weights_only=True)
    committed = load_digits_features().name
    torch.save(checkpoint, tmp_path / "resaved.pt")
    assert load_digits_features(tmp_path / "resaved.pt").name == committed
    nudged = dict(checkpoint, state_dict={k: v.clone() for k, v in checkpoint["state_dict"].items()})
    first = sorted(nudged["state_dict"])[0]
    nudged["state_dict"][first].view(-1)[0] += 1e-3
    torch.save(nudged, tmp_path / "retrained.pt")
    assert load_digits_features(tmp_path / "retrained.pt").name not in (committed, "digits_cnn_untrained")


def test_digits_training_cli_checks_accuracy_before_writing(tmp_path):
    out = tmp_path / "d.pt"
    with pytest.raises(SystemExit, match="weights not written"):
        train_features.main(["digits", "--max-steps", "2", "--out", str(out)])
    assert not out.exists()
    train_features.main(["digits", "--max-steps", "2", "--min-accuracy", "0", "--out", str(out)])
    assert load_digits_features(out)(torch.zeros(3, 1, 8, 8)).shape == (3, 64)


def _write_idx(path, array: torch.Tensor):
    # IDX: big-endian magic (0x08 = uint8, then the number of dims), the dims, then raw bytes.
    path.write_bytes(struct.pack(f">I{array.dim()}I", 0x800 + array.dim(), *array.shape)
                     + array.numpy().tobytes())


def _fake_mnist(root, n_train=64, n_test=32):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=g,
                                                                       dtype=torch.uint8))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8))


def test_lenet_trains_into_the_cache_and_loads_from_it(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GANLIB_CACHE", str(cache))
    with pytest.raises(FileNotFoundError, match="python -m ganlib.metrics.train_features mnist --root"):
        feature_extractor_for("mnist", "image")

    _fake_mnist(tmp_path / "data")
    out = train_features.main(["mnist", "--root", str(tmp_path / "data"), "--max-steps", "3", "--batch-size", "16",
                               "--min-accuracy", "0"])
    assert out == lenet_weights_path("mnist") == cache / "features" / "mnist_lenet.pt"
    ext = feature_extractor_for("mnist", "image")
    assert isinstance(ext, LeNetFeatures) and ext.name.startswith("mnist_lenet_")
    assert ext(torch.zeros(5, 1, 28, 28, dtype=torch.uint8)).shape == (5, 128)

    # --cache-dir writes elsewhere; fashion_mnist reads its own file.
    other = tmp_path / "other"
    with pytest.raises(FileNotFoundError, match="FashionMNIST"):
        train_features.main(["fashion_mnist", "--root", str(tmp_path / "data"), "--cache-dir", str(other)])
    train_features.main(["mnist", "--root", str(tmp_path / "data"), "--max-steps", "1", "--min-accuracy", "0",
                         "--cache-dir", str(other)])
    assert (other / "features" / "mnist_lenet.pt").exists()


def test_extractor_choice():
    assert isinstance(feature_extractor_for("ring8", "vector"), IdentityFeatures)
    with pytest.raises(ValueError, match="inception_path"):
        feature_extractor_for("cifar10", "image")


def test_inception_from_a_local_state_dict(tmp_path):
    path = tmp_path / "pt_inception-random.pth"
    torch.save(fid_inception_v3().state_dict(), path)  # same keys as pytorch-fid's file, random values
    ext = InceptionFeatures.from_file(path)
    assert ext.name.startswith("inception_v3_pytorch_fid_")
    features = ext(torch.rand(2, 1, 8, 8) * 2 - 1)  # grey, tiny: repeated to RGB and resized to 299
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    torch.save({"fc.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a pytorch-fid Inception-v3 state dict"):
        InceptionFeatures.from_file(path)
