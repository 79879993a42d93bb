"""The validated training configuration, the papers' defaults, and the collapse thresholds.

A run is described by three independent axes (the loss / penalty split of compare_gan):

* ``loss``: the adversarial loss: ``minimax``, ``non_saturating`` (Goodfellow et al. 2014),
  ``wasserstein`` (Arjovsky et al. 2017), ``least_squares`` (Mao et al. 2017);
* ``constraint``: how the critic is kept Lipschitz or bounded: ``none``, ``clip`` (weight
  clipping to [-clip, clip]) or ``gp`` (the gradient penalty with weight ``gp_lambda``);
* ``d_norm``: the critic's normalisation: ``none``, ``batch``, ``layer`` or ``spectral``.

The papers' algorithms keep their names as shorthands: ``loss: wgan`` is the Wasserstein loss
with clipping, ``loss: wgan_gp`` the Wasserstein loss with the penalty, ``gan_minimax`` /
``gan_ns`` the two GAN losses without a constraint. Training defaults (optimizer, learning
rates, n_critic, clip, lambda) come from the constraint, whose paper they belong to, so
``GanConfig.create(loss="wgan")`` is Algorithm 1 of the WGAN paper.

Build configs with ``GanConfig.create(**values)`` or ``GanConfig.from_dict(values)``: defaults
are resolved first (a pure function, ``resolve_defaults``), then the frozen dataclass is made
once and validated.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

LOSSES = ("minimax", "non_saturating", "wasserstein", "least_squares")
CONSTRAINTS = ("none", "clip", "gp")
# The papers' combinations, by their names: loss -> (loss, constraint).
SHORTHANDS: dict[str, tuple[str, str]] = {
    "gan_minimax": ("minimax", "none"),
    "gan_ns": ("non_saturating", "none"),
    "wgan": ("wasserstein", "clip"),
    "wgan_gp": ("wasserstein", "gp"),
}
OPTIMIZERS = ("adam", "rmsprop", "sgd")
MODELS = ("auto", "mlp", "dcgan")
D_NORMS = ("none", "batch", "layer", "spectral")
G_NORMS = ("none", "batch")
EMBEDDED_DATASETS = ("ring8", "grid25", "swissroll", "digits")
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")

# Algorithm 1 of each paper, by the constraint it introduced. No constraint: the GAN paper uses
# k = 1; for the optimizer we take DCGAN's Adam 2e-4, beta1 0.5, the de facto GAN baseline.
CONSTRAINT_DEFAULTS: dict[str, dict[str, Any]] = {
    "none": dict(n_critic=1, optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999),
    "clip": dict(n_critic=5, optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, clip=0.01),
    "gp": dict(n_critic=5, optimizer="adam", lr_g=1e-4, lr_d=1e-4, beta1=0.0, beta2=0.9, gp_lambda=10.0),
}
# A bare loss name takes the constraint of its paper.
LOSS_CONSTRAINT = {"minimax": "none", "non_saturating": "none", "least_squares": "none", "wasserstein": "clip"}
# Optimizer settings when the optimizer is chosen explicitly.
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "adam": dict(beta1=0.9, beta2=0.999),
    "rmsprop": dict(),
    "sgd": dict(momentum=0.0),
}

# Field groups. STRUCTURAL fields define the networks, data and algorithm: a checkpoint is
# never resumed under different values. HYPERPARAMS may legitimately differ on a restore
# when a population-based scheduler mutates them (the restorer applies its own values).
# RUNTIME fields say how and how long to run, not what is trained.
STRUCTURAL = ("dataset", "data_root", "loss", "constraint", "model", "width", "depth", "z_dim", "d_norm",
              "g_norm", "batch_size", "optimizer", "seed")
HYPERPARAMS = ("n_critic", "lr_g", "lr_d", "beta1", "beta2", "momentum", "clip", "gp_lambda")
RUNTIME = ("steps", "eval_every", "score_every", "checkpoint_every", "checkpoint_steps", "eval_samples", "score_window",
           "final_eval_samples", "eval_overlap",
           "inception_weights", "device", "download", "collapse", "stop_on_collapse")

EVAL_OVERLAP = ("auto", "on", "off")
SEED_MAX = 2**62  # a run seeds generators with seed + 1 and more (each must fit torch's 64 bits)
# The seed of the toy datasets' held-out draw (data/toy.py). A run's data stream is seeded with its
# own seed: a run seeded with this one would train on exactly the points it is scored on.
HELDOUT_SEED = 1_000_003


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the field."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field = field_name
        self.value = value
        self.allowed = allowed
        super().__init__(f"config field '{field_name}' = {value!r} is invalid: allowed {allowed}")

    def __reduce__(self):  # copy and pickle it (Ray copies a trial's exception to report it)
        return type(self), (self.field, self.value, self.allowed)


@dataclass(frozen=True)
class CollapseRules:
    """Thresholds of the collapse detector (``ganlib.collapse``); the config field ``collapse``
    holds overrides of these, validated with the config. Measured error rates of the defaults
    on labelled runs: docs/metrics.md (``bench/collapse_rules.py``)."""

    # critic estimate / gradient norm blowing up relative to its own recent history
    blowup_factor: float = 50.0  # value > factor * median of the last `blowup_window`
    blowup_window: int = 5  # evaluations; 0 disables the rule
    blowup_floor: float = 1e-3  # medians below this are taken as this (avoid 0 * factor)
    # the primary metric beyond this many times the score of the best constant generator (every
    # sample at the data mean) is divergence; it also bounds every healthy objective, so the
    # penalty of a failed run (10x this ceiling) is worse than any healthy score
    ceiling_factor: float = 1000.0
    # minimax GAN only: D wins outright and the generator's gradient vanishes (GAN paper, 3)
    saturation_loss_d: float = 0.05  # loss_d below this (a perfect D has loss 0)
    saturation_d_fake: float = 0.02  # mean D(G(z)) below this
    saturation_patience: int = 3  # consecutive evaluations
    # mixtures: at most this fraction of the modes covered while at least `mode_collapse_hq` of the
    # samples are high quality: precise samples on few modes.
    min_mode_fraction: float = 0.25
    mode_collapse_hq: float = 0.1
    # ...for this many evaluations in a row. Modes covered by ~100 precise samples is a noisy count:
    # a healthy WGAN-GP run on ring8 (w1 0.2) read 8, 5, 6, 6, 2 modes at consecutive evaluations
    # (docs/studies/wgan_gp_lambda.md); a real mode collapse holds for the rest of the run.
    mode_patience: int = 3  # 1: the first evaluation that reads few modes
    # all data: mean pairwise (feature) distance of fakes below this fraction of the real one (one
    # point). Measured: healthy late starters dip to 0.15 in their blob phase, points sit below 0.06
    min_diversity: float = 0.1
    # all data: the primary metric no better than `far_factor` x the best constant generator's
    # score for `far_patience` evaluations in a row (a streak of (far_patience - 1) x eval_every
    # steps, however often the metric is computed): the samples sit away from the data. Measured
    # at eval_every 100: healthy late starters stay that far for up to 6 evaluations (to step 1,000)
    far_factor: float = 1.0
    far_patience: int = 8  # 0 disables
    warmup_steps: int = 500  # mode, diversity and far rules only apply after this many steps
    # the run's score (see Evaluator) not improved by `stall_min_delta` (relative) for this many
    # evaluations: it has converged; a normal early stop, not a failure
    stall_patience: int = 20  # 0 disables
    stall_min_delta: float = 0.01

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CollapseRules:
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"collapse.{key}", value, f"one of {', '.join(known)}")
            kind = int if known[key].type == "int" else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                    kind is int and not isinstance(value, int)) or not math.isfinite(value):
                raise ConfigError(f"collapse.{key}", value, f"a finite {kind.__name__} >= 0")
        for key in ("min_mode_fraction", "mode_collapse_hq", "min_diversity", "saturation_d_fake"):
            if values.get(key, 0) > 1:
                raise ConfigError(f"collapse.{key}", values[key], "a number in [0, 1]")
        if values.get("ceiling_factor", 10) < 10:
            raise ConfigError("collapse.ceiling_factor", values["ceiling_factor"],
                              "a number >= 10 (it bounds every healthy score)")
        return cls(**values)


@dataclass(frozen=True)
class GanConfig:
    # what is trained
    dataset: str = "ring8"
    data_root: str | None = None  # local folder for torchvision datasets
    loss: str = "wasserstein"
    constraint: str = "gp"
    model: str = "auto"  # mlp for vector data, dcgan for images
    width: int | None = None  # MLP hidden units / DCGAN base channels
    depth: int | None = None  # MLP hidden layers (DCGAN depth follows the image size)
    z_dim: int | None = None
    d_norm: str | None = None  # normalisation in D / critic
    g_norm: str | None = None
    batch_size: int = 64
    seed: int = 0
    # how it is trained (None: not used by this optimizer / constraint)
    n_critic: int = 5  # k in the GAN paper
    optimizer: str = "adam"
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float | None = None  # adam only
    beta2: float | None = None  # adam only
    momentum: float | None = None  # sgd only
    clip: float | None = None  # constraint 'clip' only
    gp_lambda: float | None = None  # constraint 'gp' only
    # how long and where
    steps: int = 1000  # generator iterations
    eval_every: int = 100
    score_every: int = 100  # scored evaluations (exact W1, KID, the run's score); a multiple of eval_every
    checkpoint_every: int = 100
    checkpoint_steps: tuple[int, ...] = ()  # extra steps that always checkpoint (scheduler rungs)
    eval_samples: int = 1024  # generated samples per evaluation, fixed for a sweep
    score_window: int = 3  # evaluations averaged into the run's score (see Evaluator)
    final_eval_samples: int | None = None  # a last evaluation on this many fresh samples (final_* metrics)
    # evaluations on a thread, on copies of the networks, beside the next training steps: auto = on
    # CUDA (the CPU is free while the GPU trains); on = wherever a trial owns a core it does not train on
    eval_overlap: str = "auto"
    inception_weights: str | None = None  # local pytorch-fid Inception file: FID features for other images
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    download: bool = False  # torchvision datasets: only download when explicitly asked
    collapse: dict = field(default_factory=dict)  # CollapseRules thresholds, e.g. {"warmup_steps": 200}
    stop_on_collapse: bool = True  # end the run at the first collapsed / diverged / stalled verdict
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._validate()

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, **values: Any) -> GanConfig:
        """A config from the fields given; the rest take the defaults of the loss, the
        constraint and the optimizer (``resolve_defaults``)."""
        return cls(**resolve_defaults(values))

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
        return cls.create(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The resolved values, without ``extra``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}

    def replace(self, **changes: Any) -> GanConfig:
        return dataclasses.replace(self, **changes)

    def differences(self, other: dict[str, Any], names: tuple[str, ...]) -> dict[str, tuple]:
        """Fields among ``names`` whose value differs from ``other`` (a ``to_dict()``)."""
        mine = self.to_dict()
        return {n: (other.get(n), mine[n]) for n in names if other.get(n) != mine[n]}

    @property
    def rules(self) -> CollapseRules:
        return CollapseRules.from_dict(self.collapse)

    # -- validation -------------------------------------------------------------------------
    def _validate(self) -> None:
        _check_dataset(self.dataset)
        _check_choice("loss", self.loss, LOSSES, hint=f"; or a shorthand: {', '.join(SHORTHANDS)}")
        _check_choice("constraint", self.constraint, CONSTRAINTS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("model", self.model, MODELS)
        if self.d_norm is not None:
            _check_choice("d_norm", self.d_norm, D_NORMS)
        if self.g_norm is not None:
            _check_choice("g_norm", self.g_norm, G_NORMS)
        self._check_combination()
        for name in ("width", "depth", "z_dim"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low=1)
        _check_int("batch_size", self.batch_size, low=1)
        _check_int("seed", self.seed, low=0)
        if self.seed > SEED_MAX:
            raise ConfigError("seed", self.seed, f"an integer in [0, {SEED_MAX}] (torch's generators take 64-bit "
                              "seeds, and a run seeds several from it)")
        if self.seed == HELDOUT_SEED:
            raise ConfigError("seed", self.seed, f"any integer in [0, {SEED_MAX}] but {HELDOUT_SEED}: it draws the toy "
                              "data's held-out set, and a run's data stream is seeded with its seed")
        _check_int("n_critic", self.n_critic, low=1)
        _check_positive("lr_g", self.lr_g)
        _check_positive("lr_d", self.lr_d)
        _check_int("steps", self.steps, low=1)
        _check_int("eval_every", self.eval_every, low=1)
        _check_int("checkpoint_every", self.checkpoint_every, low=1)
        _check_int("score_every", self.score_every, low=1)
        if self.score_every % self.eval_every:
            raise ConfigError("score_every", self.score_every, f"a multiple of eval_every ({self.eval_every})")
        if not isinstance(self.checkpoint_steps, (tuple, list)) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in self.checkpoint_steps):
            raise ConfigError("checkpoint_steps", self.checkpoint_steps, "a list of integers >= 1")
        _check_int("eval_samples", self.eval_samples, low=2)
        _check_int("score_window", self.score_window, low=1)
        if self.final_eval_samples is not None:
            _check_int("final_eval_samples", self.final_eval_samples, low=2)
        _check_choice("eval_overlap", self.eval_overlap, EVAL_OVERLAP)
        _check_device(self.device)
        CollapseRules.from_dict(self.collapse)  # each threshold, naming collapse.<key>
        self._check_conditional("beta1", self.optimizer == "adam", "optimizer 'adam'")
        self._check_conditional("beta2", self.optimizer == "adam", "optimizer 'adam'")
        self._check_conditional("momentum", self.optimizer == "sgd", "optimizer 'sgd'")
        self._check_conditional("clip", self.constraint == "clip", "constraint 'clip' (loss 'wgan')")
        self._check_conditional("gp_lambda", self.constraint == "gp", "constraint 'gp' (loss 'wgan_gp')")
        if self.optimizer == "adam":
            for name in ("beta1", "beta2"):
                value = getattr(self, name)
                if not _is_real(value) or not 0.0 <= value < 1.0:
                    raise ConfigError(name, value, "a number in [0, 1)")
        if self.optimizer == "sgd" and (not _is_real(self.momentum) or not 0.0 <= self.momentum < 1.0):
            raise ConfigError("momentum", self.momentum, "a number in [0, 1)")
        if self.constraint == "clip":
            _check_positive("clip", self.clip)
        if self.constraint == "gp" and (not _is_real(self.gp_lambda) or self.gp_lambda < 0
                                        or not math.isfinite(self.gp_lambda)):
            raise ConfigError("gp_lambda", self.gp_lambda, "a finite number >= 0")
        if self.constraint == "gp" and self.gp_lambda == 0 and self.loss == "wasserstein" and self.d_norm != "spectral":
            raise ConfigError("gp_lambda", self.gp_lambda, "> 0 with loss 'wasserstein' (or d_norm 'spectral'): "
                              "without the penalty the critic is unconstrained and the Wasserstein loss unbounded")

    def _check_combination(self) -> None:
        """Combinations of the three axes that make no sense, refused with the reason."""
        if self.constraint == "gp" and self.d_norm == "batch":
            # The penalty is per sample; batch norm couples the samples (WGAN-GP paper, section 4).
            raise ConfigError("d_norm", self.d_norm, "'none', 'layer' or 'spectral' with constraint 'gp': batch "
                              "norm couples the samples that the gradient penalty treats one by one")
        if self.constraint == "clip" and self.d_norm == "spectral":
            raise ConfigError("d_norm", self.d_norm, "'none', 'batch' or 'layer' with constraint 'clip': clipping "
                              "and spectral normalisation both bound the critic's weights; choose one")
        if self.loss == "wasserstein" and self.constraint == "none" and self.d_norm != "spectral":
            raise ConfigError("constraint", self.constraint, "'clip' or 'gp' with loss 'wasserstein' (or d_norm "
                              "'spectral'): an unconstrained critic makes the Wasserstein loss unbounded")

    def _check_conditional(self, name: str, active: bool, condition: str) -> None:
        # A setting that the chosen algorithm ignores would be logged as if it mattered.
        if not active and getattr(self, name) is not None:
            raise ConfigError(name, getattr(self, name), f"only with {condition} (leave it unset)")


def expand_shorthand(values: dict[str, Any]) -> dict[str, Any]:
    """``loss`` given as a paper's name (``wgan``, ...) -> its (loss, constraint). A constraint
    that contradicts the shorthand is an error that says how to write the combination."""
    loss = values.get("loss")
    if loss is None:  # the dataclass's default axes: WGAN-GP
        return {**values, "loss": "wasserstein", "constraint": values.get("constraint") or "gp"}
    if loss not in SHORTHANDS:
        return dict(values)
    canonical, implied = SHORTHANDS[loss]
    constraint = values.get("constraint")
    if constraint is not None and constraint != implied:
        raise ConfigError("constraint", constraint, f"'{implied}' or unset with loss '{loss}' (shorthand for loss "
                          f"'{canonical}' with constraint '{implied}'); for another constraint write loss "
                          f"'{canonical}'")
    return {**values, "loss": canonical, "constraint": implied}


def resolve_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """The field values with shorthands expanded and every unset training setting filled from
    the constraint's paper and the optimizer's own defaults. Pure: returns a new dict."""
    out = expand_shorthand(values)
    loss = out.get("loss")
    if out.get("constraint") is None and loss in LOSS_CONSTRAINT:
        out["constraint"] = LOSS_CONSTRAINT[loss]
    paper = CONSTRAINT_DEFAULTS.get(out.get("constraint"), {})
    optimizer = out.get("optimizer") or paper.get("optimizer", "adam")
    # Optimizer settings come from the paper only when the paper's optimizer is used.
    optimizer_defaults = dict(OPTIMIZER_DEFAULTS.get(optimizer, {}))
    if optimizer == paper.get("optimizer"):
        optimizer_defaults.update({k: v for k, v in paper.items() if k in ("beta1", "beta2")})
    defaults = {"optimizer": optimizer, **{k: v for k, v in paper.items() if k not in ("optimizer", "beta1", "beta2")},
                **optimizer_defaults}
    for name, default in defaults.items():
        if out.get(name) is None:
            out[name] = default
    for name in ("checkpoint_every", "score_every"):
        if out.get(name) is None:
            out[name] = out.get("eval_every", 100)
    if out.get("checkpoint_steps") is None:  # Tune hands an empty list over as None
        out["checkpoint_steps"] = ()
    elif isinstance(out["checkpoint_steps"], list):
        out["checkpoint_steps"] = tuple(out["checkpoint_steps"])
    return out


def normalize_saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A config stored in an older checkpoint (loss named by its paper, no constraint field),
    in today's terms; today's configs pass unchanged."""
    if saved.get("loss") in SHORTHANDS:
        return expand_shorthand({k: v for k, v in saved.items() if k != "constraint" or v is not None})
    return saved


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_choice(name: str, value: Any, choices: tuple[str, ...], hint: str = "") -> None:
    if value not in choices:
        raise ConfigError(name, value, "one of " + ", ".join(repr(c) for c in choices) + hint)


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
