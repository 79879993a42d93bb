"""Train the classifiers whose penultimate layers are ganlib's FID / KID features.

    python -m ganlib.metrics.train_features digits             # -> ganlib/metrics/weights/digits_cnn.pt
    python -m ganlib.metrics.train_features mnist --root DIR   # -> $GANLIB_CACHE/features/mnist_lenet.pt
    python -m ganlib.metrics.train_features fashion_mnist --root DIR

Training is seeded, single-threaded and uses deterministic algorithms, so a rerun on the same
stack reproduces the weights. The held-out accuracy is checked against ``--min-accuracy`` before
anything is written, and stored in the weights file. Nothing is downloaded: torchvision datasets
are read from ``--root`` with ``download=False``.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

from ganlib.data.base import to_unit_range

from .features import DIGITS_WEIGHTS, LENET_DATASETS, DigitsCNN, LeNet, lenet_weights_path, save_classifier

DEFAULTS = {  # epochs, batch size, minimum held-out accuracy
    "digits": (40, 64, 0.97),
    "mnist": (3, 128, 0.98),
    "fashion_mnist": (5, 128, 0.85),
}


@contextlib.contextmanager
def deterministic(seed: int):
    """Seeded, single-threaded, deterministic kernels; restores the previous settings after."""
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(strict)
        torch.set_num_threads(threads)


def train_classifier(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
                     lr: float = 1e-3, seed: int = 0, max_steps: int | None = None) -> int:
    """Adam on shuffled minibatches (order drawn from ``seed``); returns the number of steps."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    order_rng = torch.Generator().manual_seed(seed)
    net.train()
    steps = 0
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=order_rng).split(batch_size):
            if max_steps is not None and steps >= max_steps:
                return steps
            loss = F.cross_entropy(net(to_unit_range(x[index])), y[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return steps


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    correct = sum(int((net(to_unit_range(xb)).argmax(1) == yb).sum())
                  for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True))
    return correct / len(x)


def load_labelled(dataset: str, root: str | None):
    """(train_x, train_y, heldout_x, heldout_y); torchvision data read locally, never downloaded."""
    if dataset == "digits":
        from ganlib.data.digits import digits_with_labels

        return digits_with_labels()
    import torchvision.datasets as tvd

    if root is None:
        raise SystemExit(f"{dataset}: pass --root, the local folder holding the torchvision dataset")
    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[dataset]
    try:
        train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except RuntimeError as e:
        raise FileNotFoundError(f"{dataset} not found under {root!r} (expected torchvision's "
                                f"{cls.__name__}/raw/*-idx?-ubyte files): {e}") from e
    return train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m ganlib.metrics.train_features", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=list(DEFAULTS))
    parser.add_argument("--root", help="local torchvision dataset folder (mnist / fashion_mnist)")
    parser.add_argument("--cache-dir", help="cache folder for LeNet weights (default $GANLIB_CACHE or "
                                            "~/.cache/ganlib)")
    parser.add_argument("--out", type=Path, help="write the weights here instead")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--min-accuracy", type=float, help="refuse to write weights below this held-out accuracy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    epochs, batch_size, min_accuracy = DEFAULTS[args.dataset]
    epochs = args.epochs if args.epochs is not None else epochs
    batch_size = args.batch_size or batch_size
    min_accuracy = args.min_accuracy if args.min_accuracy is not None else min_accuracy
    train_x, train_y, held_x, held_y = load_labelled(args.dataset, args.root)
    with deterministic(args.seed):
        net = DigitsCNN() if args.dataset == "digits" else LeNet()  # init drawn from the seed
        steps = train_classifier(net, train_x, train_y, epochs=epochs, batch_size=batch_size,
                                 seed=args.seed, max_steps=args.max_steps)
        acc = accuracy(net, held_x, held_y)
    print(f"{args.dataset}: {steps} steps, held-out accuracy {acc:.4f} on {len(held_x)} samples")
    if acc < min_accuracy:
        raise SystemExit(f"held-out accuracy {acc:.4f} < --min-accuracy {min_accuracy}: weights not written")

    if args.out is not None:
        out = args.out
    elif args.dataset in LENET_DATASETS:
        out = lenet_weights_path(args.dataset, args.cache_dir)
    else:
        out = DIGITS_WEIGHTS
    save_classifier(net, out, heldout_accuracy=acc, dataset=args.dataset, seed=args.seed, steps=steps,
                    torch_version=str(torch.__version__))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
