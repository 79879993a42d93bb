"""Feature extractors for FID / KID: frozen ``nn.Module``s mapping a batch of samples to (N, d).

Each has a ``name`` (logged as a tag, and part of every cached-statistics key) and
``num_features`` (torchmetrics reads that attribute). Scores computed with different extractors
are NOT comparable; neither are scores from the same architecture with different weights, which is
why the names of user-trained or user-supplied weights carry a hash of the weights file.

* ``IdentityFeatures`` ("identity"): the flattened sample, for vector data.
* ``DigitsFeatures`` ("digits_cnn_<hash>"): a small CNN classifier of 1x8x8 digits, weights committed
  in ``weights/digits_cnn.pt`` (retrain with ``python -m ganlib.metrics.train_features digits``);
  the hash is of the weights' values, so a retrained file renames it and a re-saved one does not.
* ``LeNetFeatures`` ("<dataset>_lenet_<hash>"): LeNet-style classifier of 1x28x28 MNIST /
  Fashion-MNIST, weights trained once per machine into the user cache folder.
* ``InceptionFeatures`` ("inception_v3_pytorch_fid_<hash>"): the standard FID Inception-v3 pool3
  features (2048-d) from a local pytorch-fid weights file.

All take samples in [-1, 1] (float) or uint8 pixels, and are always in eval mode.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlib.data.base import to_unit_range

WEIGHTS_VERSION = 1
DIGITS_WEIGHTS = Path(__file__).parent / "weights" / "digits_cnn.pt"
LENET_DATASETS = ("mnist", "fashion_mnist")


def cache_dir() -> Path:
    """ganlib's user cache: ``$GANLIB_CACHE`` if set, else ``~/.cache/ganlib``."""
    return Path(os.environ.get("GANLIB_CACHE") or "~/.cache/ganlib").expanduser()


def lenet_weights_path(dataset: str, cache: str | Path | None = None) -> Path:
    """``<cache>/features/<dataset>_lenet.pt``, ``cache`` defaulting to ``cache_dir()``."""
    return Path(cache or cache_dir()).expanduser() / "features" / f"{dataset}_lenet.pt"


def state_digest(state: dict[str, Tensor], length: int = 8) -> str:
    """A hash of a state dict's names and values (not of a file's bytes, which the same values
    saved by another torch version change)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]


def file_digest(path: str | Path, length: int = 8) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


# ---------------------------------------------------------------------------------------- base

class FeatureExtractor(nn.Module):
    """Frozen, eval-only feature map. ``train(True)`` is ignored so that a parent module's
    ``.train()`` cannot switch dropout back on and make features random."""

    name = "unnamed"
    num_features = 0

    def __init__(self) -> None:
        super().__init__()

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)

    def freeze(self) -> FeatureExtractor:
        self.requires_grad_(False)
        return self.eval()


class IdentityFeatures(FeatureExtractor):
    """Flattened samples (vector data: the samples are the features)."""

    name = "identity"

    def __init__(self, num_features: int = 0) -> None:
        super().__init__()
        self.num_features = num_features  # 0: unknown until data is seen

    def forward(self, x: Tensor) -> Tensor:
        return to_unit_range(x).reshape(len(x), -1)


# --------------------------------------------------------------------------- small classifiers

class _SmallClassifier(nn.Module):
    """CNN classifier whose penultimate layer is the feature map (``features``)."""

    input_shape: tuple[int, int, int]
    feature_dim: int

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        # Features are taken before the ReLU: no dead (always-zero) dimensions, so the feature
        # covariance of a FID is better conditioned.
        self.body = body
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(self.feature_dim, 10))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.reshape(-1, *self.input_shape))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class DigitsCNN(_SmallClassifier):
    """Classifier of 1x8x8 digits in [-1, 1]; 64-d features."""

    input_shape, feature_dim = (1, 8, 8), 64

    def __init__(self) -> None:
        super().__init__(nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 2x2
            nn.Flatten(), nn.Linear(256, self.feature_dim)))


class LeNet(_SmallClassifier):
    """LeNet-style classifier of 1x28x28 images in [-1, 1]; 128-d features."""

    input_shape, feature_dim = (1, 28, 28), 128

    def __init__(self) -> None:
        super().__init__(nn.Sequential(
            nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # 12x12
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
            nn.Flatten(), nn.Linear(512, self.feature_dim)))


def save_classifier(net: _SmallClassifier, path: str | Path, **info) -> Path:
    """state_dict plus ``info`` (e.g. heldout_accuracy) in one small file, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # two trainings into one shared cache
    torch.save({"state_dict": state, "version": WEIGHTS_VERSION, "arch": type(net).__name__, **info}, tmp)
    os.replace(tmp, path)
    return path


def _load_classifier(net: _SmallClassifier, path: Path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("version") != WEIGHTS_VERSION or checkpoint.get("arch") != type(net).__name__:
        raise ValueError(f"{path}: expected {type(net).__name__} weights version {WEIGHTS_VERSION}, got "
                         f"{checkpoint.get('arch')} version {checkpoint.get('version')}; retrain them")
    net.load_state_dict(checkpoint["state_dict"])
    return checkpoint


class _ClassifierFeatures(FeatureExtractor):
    def __init__(self, net: _SmallClassifier, name: str, heldout_accuracy: float = float("nan")) -> None:
        super().__init__()
        # Channels-last weights: these small convolutions and pools run 1.5-2.3x faster so on the CPU
        # (digits, 1,024 samples: 39-62 ms against 89-106; max-pooling a channels-first 8x8 map is slow),
        # the features equal to float rounding (6e-6). The format follows the input from the first
        # convolution on, and survives .to(device).
        self.net, self.name = net.to(memory_format=torch.channels_last), name
        self.num_features = net.feature_dim
        self.heldout_accuracy = heldout_accuracy
        self.freeze()

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(to_unit_range(x))


class DigitsFeatures(_ClassifierFeatures):
    """64-d features of the committed digits CNN; the name carries a hash of its weights (cached
    real statistics and the runs' ``feature_extractor`` tag are keyed by it), so retrained
    weights never score under the committed ones' name."""

    def __init__(self, net: DigitsCNN | None = None, heldout_accuracy: float = float("nan"),
                 digest: str = "untrained") -> None:
        super().__init__(net if net is not None else DigitsCNN(), f"digits_cnn_{digest}", heldout_accuracy)


class LeNetFeatures(_ClassifierFeatures):
    """128-d features of a LeNet trained on ``dataset`` by ``train_features``; the name carries a
    hash of the weights file, since every machine trains its own."""

    def __init__(self, dataset: str, net: LeNet | None = None, digest: str = "untrained",
                 heldout_accuracy: float = float("nan")) -> None:
        super().__init__(net if net is not None else LeNet(), f"{dataset}_lenet_{digest}", heldout_accuracy)


def load_digits_features(path: str | Path = DIGITS_WEIGHTS) -> DigitsFeatures:
    net = DigitsCNN()
    checkpoint = _load_classifier(net, Path(path))
    return DigitsFeatures(net, float(checkpoint["heldout_accuracy"]), state_digest(net.state_dict()))


def load_lenet_features(dataset: str, cache: str | Path | None = None) -> LeNetFeatures:
    if dataset not in LENET_DATASETS:
        raise ValueError(f"no LeNet features for {dataset!r}; known: {LENET_DATASETS}")
    path = lenet_weights_path(dataset, cache)
    if not path.exists():
        raise FileNotFoundError(
            f"no {dataset} LeNet feature weights at {path}. Train them once (a few minutes on CPU, "
            f"from the dataset in a local folder):\n"
            f"    python -m ganlib.metrics.train_features {dataset} --root <folder>"
            + (f" --cache-dir {cache}" if cache else "")
            + "\n(the cache folder is $GANLIB_CACHE, default ~/.cache/ganlib)")
    net = LeNet()
    checkpoint = _load_classifier(net, path)
    return LeNetFeatures(dataset, net, file_digest(path), float(checkpoint["heldout_accuracy"]))


# ----------------------------------------------------------------------------------- inception

def _pool_without_padding(x: Tensor) -> Tensor:
    # TensorFlow's average pool, which the FID weights were trained with, ignores padded zeros.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _fid_inception_blocks():
    """torchvision's InceptionA/C/E patched the way pytorch-fid's FIDInceptionA/C/E_1/E_2 are:
    same layers (so the same state-dict keys), different pooling in the pool branch."""
    from torchvision.models import inception as tv

    class FIDInceptionA(tv.InceptionA):
        def _forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return [self.branch1x1(x), b5, b3, self.branch_pool(_pool_without_padding(x))]

    class FIDInceptionC(tv.InceptionC):
        def _forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                          self.branch7x7dbl_4, self.branch7x7dbl_5):
                d = layer(d)
            return [self.branch1x1(x), b7, d, self.branch_pool(_pool_without_padding(x))]

    class FIDInceptionE(tv.InceptionE):
        def __init__(self, in_channels: int, max_pool: bool) -> None:
            super().__init__(in_channels)
            self.max_pool = max_pool  # the last FID block max-pools (a quirk of the TF graph)

        def _forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
            pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _pool_without_padding(x)
            return [self.branch1x1(x), b3, d, self.branch_pool(pool)]

    return FIDInceptionA, FIDInceptionC, FIDInceptionE


def fid_inception_v3() -> nn.Module:
    """Untrained pytorch-fid Inception-v3 (``pytorch_fid.inception.fid_inception_v3`` without the
    download): torchvision's Inception3 with 1008 classes, no aux head, FID-patched mixed blocks."""
    from torchvision.models import inception_v3

    A, C, E = _fid_inception_blocks()
    net = inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
    net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e = C(768, 128), C(768, 160), C(768, 160), C(768, 192)
    net.Mixed_7b, net.Mixed_7c = E(1280, max_pool=False), E(2048, max_pool=True)
    return net


class InceptionFeatures(FeatureExtractor):
    """2048-d pool3 features of the FID Inception-v3, as pytorch-fid computes them.

    Weights come from a LOCAL file only (nothing is downloaded): pytorch-fid's
    ``pt_inception-2015-12-05-6726825d.pth``, a plain state dict of ``fid_inception_v3()``.
    Images are repeated to 3 channels if grey and resized to 299x299 with PyTorch's bilinear
    interpolation, as pytorch-fid does. Limits: pytorch-fid's scores are close to, but not exactly,
    those of the TensorFlow reference or torch-fidelity (which resize differently), and our inputs
    are unquantised floats rather than 8-bit images; compare scores only within this extractor.
    CPU cost is ~0.3 s per image: keep evaluation sets small or use a GPU.
    """

    num_features = 2048

    def __init__(self, net: nn.Module | None = None, name: str = "inception_v3_pytorch_fid_untrained") -> None:
        super().__init__()
        net = net if net is not None else fid_inception_v3()
        self.name = name
        # pytorch-fid's blocks 0-3: everything up to the final average pool, no dropout / fc.
        self.blocks = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(3, stride=2),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(3, stride=2),
            net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c,
            net.Mixed_6d, net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c,
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.freeze()

    @classmethod
    def from_file(cls, path: str | Path) -> InceptionFeatures:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights file not found: {path} (pytorch-fid's "
                                    f"pt_inception-2015-12-05-6726825d.pth, downloaded by you)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = fid_inception_v3()
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path} is not a pytorch-fid Inception-v3 state dict "
                             f"(pt_inception-2015-12-05-*.pth): {e}") from None
        return cls(net, f"inception_v3_pytorch_fid_{file_digest(path)}")

    def forward(self, x: Tensor) -> Tensor:
        x = to_unit_range(x)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need (N, 1 or 3, H, W) images, got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1)
        # Resizing [-1, 1] images equals pytorch-fid's resize-then-(2x - 1) of [0, 1] images: both linear.
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.blocks(x)


# ------------------------------------------------------------------------------------- choice

def feature_extractor_for(dataset_name: str, kind: str, *, inception_path: str | Path | None = None,
                          cache: str | Path | None = None) -> FeatureExtractor:
    """The extractor for a dataset: vector -> identity, digits -> committed digits CNN,
    mnist / fashion_mnist -> cached LeNet (``cache`` folder, default ``cache_dir()``), any other
    image data -> Inception from ``inception_path``."""
    if kind == "vector":
        return IdentityFeatures()
    if dataset_name == "digits":
        return load_digits_features()
    if dataset_name in LENET_DATASETS:
        return load_lenet_features(dataset_name, cache)
    if inception_path is not None:
        return InceptionFeatures.from_file(inception_path)
    raise ValueError(f"no feature extractor for image dataset {dataset_name!r}: pass inception_path, a "
                     f"local copy of pytorch-fid's pt_inception-2015-12-05-6726825d.pth (never downloaded "
                     f"at run time)")
