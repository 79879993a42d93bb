"""The validated training configuration and the paper defaults.

One flat dataclass so that a Tune / Optuna config dict maps onto it one key per field.
Fields left as ``None`` take the default of the loss family (``FAMILY_DEFAULTS``), so
``GanConfig(loss="wgan")`` is Algorithm 1 of the WGAN paper and ``GanConfig(loss="wgan_gp")``
that of the WGAN-GP paper.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

LOSSES = ("gan_minimax", "gan_ns", "wgan", "wgan_gp")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
MODELS = ("auto", "mlp", "dcgan")
D_NORMS = ("none", "layer", "batch")
G_NORMS = ("none", "batch")
EMBEDDED_DATASETS = ("ring8", "grid25", "swissroll", "digits")
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")

# Algorithm 1 of each paper. GAN: Goodfellow et al. use k=1 in their experiments; for the
# optimizer we take the DCGAN settings (Adam 2e-4, beta1 0.5), the de facto GAN baseline.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "gan_minimax": dict(n_critic=1, optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999),
    "gan_ns": dict(n_critic=1, optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999),
    "wgan": dict(n_critic=5, optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, clip=0.01),
    "wgan_gp": dict(n_critic=5, optimizer="adam", lr_g=1e-4, lr_d=1e-4, beta1=0.0, beta2=0.9,
                    gp_lambda=10.0),
}
# Defaults of optimizer settings when the optimizer is chosen explicitly.
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "adam": dict(beta1=0.9, beta2=0.999),
    "rmsprop": dict(),
    "sgd": dict(momentum=0.0),
}

# Field groups. STRUCTURAL fields define the networks, data and algorithm: a checkpoint is
# never resumed under different values. HYPERPARAMS may legitimately differ on a restore
# when a population-based scheduler mutates them (the restorer applies its own values).
# RUNTIME fields say how and how long to run, not what is trained.
STRUCTURAL = ("dataset", "data_root", "loss", "model", "width", "depth", "z_dim", "d_norm",
              "g_norm", "batch_size", "optimizer", "seed")
HYPERPARAMS = ("n_critic", "lr_g", "lr_d", "beta1", "beta2", "momentum", "clip", "gp_lambda")
RUNTIME = ("steps", "eval_every", "checkpoint_every", "eval_samples", "inception_weights", "device", "download",
           "collapse", "stop_on_collapse")


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the field."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field = field_name
        self.value = value
        self.allowed = allowed
        super().__init__(f"config field '{field_name}' = {value!r} is invalid: allowed {allowed}")


@dataclass(frozen=True)
class GanConfig:
    # what is trained
    dataset: str = "ring8"
    data_root: str | None = None  # local folder for torchvision datasets
    loss: str = "wgan_gp"
    model: str = "auto"  # mlp for vector data, dcgan for images
    width: int | None = None  # MLP hidden units / DCGAN base channels
    depth: int | None = None  # MLP hidden layers (DCGAN depth follows the image size)
    z_dim: int | None = None
    d_norm: str | None = None  # normalisation in D / critic
    g_norm: str | None = None
    batch_size: int = 64
    seed: int = 0
    # how it is trained
    n_critic: int | None = None  # k in the GAN paper
    optimizer: str | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    beta1: float | None = None  # adam only
    beta2: float | None = None  # adam only
    momentum: float | None = None  # sgd only
    clip: float | None = None  # wgan only
    gp_lambda: float | None = None  # wgan_gp only
    # how long and where
    steps: int = 1000  # generator iterations
    eval_every: int = 100
    checkpoint_every: int | None = None  # defaults to eval_every
    eval_samples: int = 1024  # generated samples per evaluation, fixed for a sweep
    inception_weights: str | None = None  # local pytorch-fid Inception file: FID features for other images
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    download: bool = False  # torchvision datasets: only download when explicitly asked
    collapse: dict = field(default_factory=dict)  # CollapseRules thresholds, e.g. {"warmup_steps": 200}
    stop_on_collapse: bool = True  # end the run at the first collapsed / diverged verdict
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_choice("loss", self.loss, LOSSES)
        family = FAMILY_DEFAULTS[self.loss]
        explicit_optimizer = self.optimizer is not None
        optimizer = self.optimizer if explicit_optimizer else family["optimizer"]
        _check_choice("optimizer", optimizer, OPTIMIZERS)
        # Optimizer settings come from the family only when the family's optimizer is used.
        opt_defaults = dict(OPTIMIZER_DEFAULTS[optimizer])
        if optimizer == family["optimizer"]:
            opt_defaults.update({k: v for k, v in family.items() if k in ("beta1", "beta2")})
        resolved = {"optimizer": optimizer,
                    **{k: v for k, v in family.items() if k not in ("optimizer", "beta1", "beta2")},
                    **opt_defaults}
        for name, default in resolved.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.checkpoint_every is None:
            object.__setattr__(self, "checkpoint_every", self.eval_every)
        self._validate()

    # -- validation -------------------------------------------------------------------
    def _validate(self) -> None:
        _check_dataset(self.dataset)
        _check_choice("model", self.model, MODELS)
        if self.d_norm is not None:
            _check_choice("d_norm", self.d_norm, D_NORMS)
            if self.loss == "wgan_gp" and self.d_norm == "batch":
                # The penalty is per sample; batch norm couples samples (WGAN-GP paper, 4).
                raise ConfigError("d_norm", self.d_norm, "'none' or 'layer' for loss 'wgan_gp'")
        if self.g_norm is not None:
            _check_choice("g_norm", self.g_norm, G_NORMS)
        for name in ("width", "depth", "z_dim"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, low=1)
        _check_int("batch_size", self.batch_size, low=1)
        _check_int("seed", self.seed, low=0)
        _check_int("n_critic", self.n_critic, low=1)
        _check_positive("lr_g", self.lr_g)
        _check_positive("lr_d", self.lr_d)
        _check_int("steps", self.steps, low=1)
        _check_int("eval_every", self.eval_every, low=1)
        _check_int("checkpoint_every", self.checkpoint_every, low=1)
        _check_int("eval_samples", self.eval_samples, low=2)
        _check_device(self.device)
        from .collapse import CollapseRules  # validates each threshold, naming collapse.<key>

        CollapseRules.from_dict(self.collapse)
        self._check_conditional("beta1", self.optimizer == "adam", "optimizer 'adam'")
        self._check_conditional("beta2", self.optimizer == "adam", "optimizer 'adam'")
        self._check_conditional("momentum", self.optimizer == "sgd", "optimizer 'sgd'")
        self._check_conditional("clip", self.loss == "wgan", "loss 'wgan'")
        self._check_conditional("gp_lambda", self.loss == "wgan_gp", "loss 'wgan_gp'")
        if self.optimizer == "adam":
            for name in ("beta1", "beta2"):
                value = getattr(self, name)
                if not _is_real(value) or not 0.0 <= value < 1.0:
                    raise ConfigError(name, value, "a number in [0, 1)")
        if self.optimizer == "sgd" and (not _is_real(self.momentum) or not 0.0 <= self.momentum < 1.0):
            raise ConfigError("momentum", self.momentum, "a number in [0, 1)")
        if self.loss == "wgan":
            _check_positive("clip", self.clip)
        if self.loss == "wgan_gp" and (not _is_real(self.gp_lambda) or self.gp_lambda < 0
                                       or not math.isfinite(self.gp_lambda)):
            raise ConfigError("gp_lambda", self.gp_lambda, "a finite number >= 0")

    def _check_conditional(self, name: str, active: bool, condition: str) -> None:
        # A setting that the chosen algorithm ignores would be logged as if it mattered.
        if not active and getattr(self, name) is not None:
            raise ConfigError(name, getattr(self, name), f"only with {condition} (leave it unset)")

    # -- conversion -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> GanConfig:
        """Build from a flat dict (a Tune config); unknown keys are an error, keys starting
        with an underscore or listed under ``extra`` are carried along untouched."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values, extra = {}, dict(config.get("extra", {}))
        for key, value in config.items():
            if key == "extra":
                continue
            if key in known:
                values[key] = value
            elif key.startswith("_"):
                extra[key] = value
            else:
                raise ConfigError(key, value, f"a known field: {', '.join(sorted(known))}")
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The resolved values (family defaults filled in), without ``extra``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}

    def replace(self, **changes: Any) -> GanConfig:
        return dataclasses.replace(self, **changes)

    @property
    def is_wasserstein(self) -> bool:
        return self.loss in ("wgan", "wgan_gp")

    def differences(self, other: dict[str, Any], names: tuple[str, ...]) -> dict[str, tuple]:
        """Fields among ``names`` whose value differs from ``other`` (a ``to_dict()``)."""
        mine = self.to_dict()
        return {n: (other.get(n), mine[n]) for n in names if other.get(n) != mine[n]}


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(name, value, "one of " + ", ".join(repr(c) for c in choices))


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(name, value, f"an integer >= {low}")


def _check_positive(name: str, value: Any) -> None:
    if not _is_real(value) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(name, value, "a finite number > 0")


def _check_dataset(name: Any) -> None:
    if isinstance(name, str) and (name in EMBEDDED_DATASETS or name in TORCHVISION_DATASETS
                                  or (name.startswith("parquet:") and len(name) > len("parquet:"))):
        return
    raise ConfigError("dataset", name, "one of " + ", ".join(EMBEDDED_DATASETS + TORCHVISION_DATASETS)
                      + ", or 'parquet:<path-or-uri>'")


def _check_device(device: Any) -> None:
    if isinstance(device, str):
        if device in ("auto", "cpu", "cuda"):
            return
        if device.startswith("cuda:") and device[5:].isdigit():
            return
    raise ConfigError("device", device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
