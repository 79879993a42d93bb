"""What a sweep is asked to do: its flags, the presets, and the checks and path resolution that
need nothing but the flags themselves (no data, no Ray, no MLflow).

Every check raises ``SettingsError`` naming the flag and what is allowed; the sweep prints it as
one ``error:`` line and exits 2 before anything starts.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .config import EVAL_OVERLAP, SEED_MAX
from .rungs import ASHA_REDUCTION, HYPERBAND_REDUCTION

PROJECT_DIR = Path(__file__).resolve().parent.parent

# Budgets sized for a test (smoke), this 2-core machine in a few minutes (default), and a GPU
# cluster (paper: the budgets of the large GAN studies). Widths are per model kind, so an image
# sweep trains its DCGAN at the DCGAN's own size (None: the model's default).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(num_trials=4, steps=40, eval_every=10, score_every=10, eval_samples=512, max_concurrent=2,
                  width={"mlp": 32, "dcgan": 8}, confirm_top=0, confirm_seeds=3),
    "default": dict(num_trials=16, steps=2000, eval_every=100, score_every=500, eval_samples=1024,
                    max_concurrent=2, width={"mlp": 128, "dcgan": None}, confirm_top=3, confirm_seeds=3),
    "paper": dict(num_trials=200, steps=20000, eval_every=500, score_every=1000, eval_samples=10000,
                  max_concurrent=None, width={"mlp": None, "dcgan": None}, confirm_top=5, confirm_seeds=3),
}
SCHEDULERS = ("asha", "hyperband", "pbt", "none")
SEARCHERS = ("tpe", "random")
PBT_MIN_POPULATION = 4  # exploits clone the top quarter into the bottom quarter
COHORT_MAX = 64


class SettingsError(ValueError):
    """A flag's value cannot work; the message names the flag and what is allowed."""

    def __init__(self, flag: str, value: Any, allowed: str):
        self.flag, self.value, self.allowed = flag, value, allowed
        super().__init__(f"--{flag.replace('_', '-')} = {value!r} is invalid: allowed {allowed}")

    def __reduce__(self):
        return type(self), (self.flag, self.value, self.allowed)


@dataclass
class SweepSettings:
    space: str
    dataset: str = "ring8"
    data_root: str | None = None
    inception_weights: str | None = None
    preset: str = "default"
    num_trials: int | None = None
    steps: int | None = None
    eval_every: int | None = None
    score_every: int | None = None
    eval_samples: int | None = None
    width: int | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 3
    scheduler: str = "asha"
    first_rung: int | None = None  # ASHA / Hyperband grace period in steps (None: budget / 20, / 9)
    rung_reduction: int | None = None  # ASHA / Hyperband reduction factor (None: the defaults in rungs.py)
    searcher: str = "tpe"
    collapse_stop: bool = True  # end a trial at its first collapsed / diverged / stalled verdict
    tracking_uri: str | None = None
    experiment: str | None = None
    storage_path: str | None = None
    name: str | None = None
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    eval_overlap: str = "auto"  # evaluations beside training (GanConfig.eval_overlap)
    ray_address: str | None = None
    confirm_top: int | None = None
    confirm_seeds: int | None = None
    cohort: int = 1  # configurations trained together per trial, as stacked networks

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise SettingsError("preset", self.preset, "one of " + ", ".join(PRESETS))
        preset = PRESETS[self.preset]
        explicit = {k for k in preset if getattr(self, k, None) is not None}
        for key, value in preset.items():
            if key != "width" and key not in explicit:
                setattr(self, key, value)
        if self.scheduler == "pbt" and "max_concurrent" not in explicit:
            self.max_concurrent = None  # a preset's limit is for searches: PBT's whole population is live at once
        # A preset's cadence adapts to a budget given on the command line; explicit values are checked.
        if isinstance(self.steps, int) and self.steps >= 1:
            if "eval_every" not in explicit:
                self.eval_every = min(self.eval_every, self.steps)
            if "score_every" not in explicit and (self.score_every > self.steps or
                                                  self.score_every % max(self.eval_every, 1)):
                self.score_every = self.eval_every
        self.experiment = self.experiment or f"ganlib-{Path(self.space).stem}"
        # A new sweep gets a new name (so `make run` twice makes two sweeps); --resume without
        # --name continues the latest unfinished sweep of this space and dataset.
        self.base_name = f"{Path(self.space).stem}-{self.dataset.replace(':', '_').replace('/', '_')[-60:]}"
        self.name_given = self.name is not None
        self.name = self.name or f"{self.base_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.storage_path = (self.storage_path or os.environ.get("GANLIB_STORAGE_PATH")
                             or str(PROJECT_DIR / "ray_results"))
        self.ray_address = self.ray_address or os.environ.get("RAY_ADDRESS") or None
        self.tracking_uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{PROJECT_DIR / 'mlflow.db'}"

    def width_for(self, model_kind: str) -> int | None:
        """The network width trials get: ``--width`` for every model, else the preset's for
        this model kind (None: the model's own default)."""
        return self.width if self.width is not None else PRESETS[self.preset]["width"].get(model_kind)

    @property
    def experiment_path(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}



# What a resumed sweep must be given as it was started: Tune restores its run (trial configs,
# scheduler, searcher, concurrency, retries) as it began, while the driver plans, reports and
# confirms with the settings given now. Where it runs may change: --tracking-uri, --storage-path,
# --ray-address, --cpus-per-trial, --gpus-per-trial.
RESUME_KEEPS = ("space", "dataset", "data_root", "inception_weights", "preset", "num_trials", "steps", "eval_every",
                "score_every", "eval_samples", "width", "max_concurrent", "max_failures", "scheduler", "first_rung",
                "rung_reduction", "searcher", "collapse_stop", "seed", "device", "confirm_top", "confirm_seeds",
                "cohort")


def resume_mismatches(settings: SweepSettings, recorded: dict[str, str]) -> list[str]:
    """The flags of ``RESUME_KEEPS`` whose values differ from those the sweep recorded when it
    started (its parent run's params: ``str`` of each value, unset ones absent), as
    ``--flag RECORDED (given: NOW)``. A field the sweep's version did not record is skipped."""
    unset_by_default = {f.name for f in fields(SweepSettings) if f.default is None}
    now, out = settings.to_dict(), []
    for key in RESUME_KEEPS:
        if key not in recorded and key not in unset_by_default:
            continue  # recorded by a version without this setting
        was, given = recorded.get(key), now.get(key)
        if was != (None if given is None else str(given)):
            out.append(f"--{key.replace('_', '-')} {'unset' if was is None else was} "
                       f"(given: {'unset' if given is None else given})")
    return out


class UsageError(ValueError):
    """The command line does not parse (an unknown flag, a word where a number belongs)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + error on two lines and exits itself
        raise UsageError(f"{message} (see --help)")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Run a hyperparameter sweep of GAN training on Ray Tune + "
                                                       "Optuna, tracked in MLflow.")
    p.add_argument("--space", required=True, help="search space name (search_spaces/NAME.yaml) or a YAML path")
    p.add_argument("--dataset", default="ring8", help="ring8, grid25, swissroll, digits, mnist, ..., parquet:URI")
    p.add_argument("--data-root", help="local folder of a torchvision dataset")
    p.add_argument("--inception-weights", help="local pytorch-fid Inception-v3 weights file: the FID features of "
                                               "image data other than digits / mnist / fashion_mnist")
    p.add_argument("--preset", choices=list(PRESETS), default="default")
    p.add_argument("--num-trials", type=int)
    p.add_argument("--steps", type=int, help="generator iterations per trial (the budget)")
    p.add_argument("--eval-every", type=int, help="steps between evaluations (curves, collapse rules)")
    p.add_argument("--score-every", type=int, help="steps between scored evaluations (exact W1, KID, the score); "
                                                   "a multiple of --eval-every")
    p.add_argument("--eval-samples", type=int, help="generated samples per evaluation, fixed for the sweep")
    p.add_argument("--width", type=int, help="network width for every trial (unset: the preset's per model kind)")
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPU share per trial; a fraction packs "
                                                                     "several trials on one GPU")
    p.add_argument("--max-failures", type=int, default=3, help="retries of a failed trial from its last checkpoint "
                                                              "(a lost worker, a preempted spot node)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="asha")
    p.add_argument("--first-rung", type=int, help="step of the scheduler's first rung, where trials are first "
                                                  "compared (asha: a twentieth of --steps; hyperband: --steps / "
                                                  "reduction^2); later for GANs that start slowly")
    p.add_argument("--rung-reduction", type=int, help="the scheduler's reduction factor: a rung keeps the best "
                                                      "1/N of the trials it has seen and the next rung is N "
                                                      f"times later (asha: {ASHA_REDUCTION}; hyperband: "
                                                      f"{HYPERBAND_REDUCTION})")
    p.add_argument("--searcher", choices=SEARCHERS, default="tpe", help="Optuna's TPE (default) or random sampling "
                                                                       "(a baseline); not with --scheduler pbt")
    p.add_argument("--no-collapse-stop", dest="collapse_stop", action="store_false",
                   help="let collapsed, diverged and stalled trials run their whole budget (verdicts still logged)")
    p.add_argument("--confirm-top", type=int, help="configurations re-trained on fresh seeds after the search "
                                                   "(preset: smoke 0, default 3, paper 5)")
    p.add_argument("--confirm-seeds", type=int, help="fresh seeds per confirmed configuration (3)")
    p.add_argument("--cohort", type=int, default=1, help="configurations each trial trains together as stacked "
                                                         "networks (each still its own Optuna trial, MLflow run and "
                                                         "verdict); with --scheduler asha or none")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment name (default: ganlib-<space>)")
    p.add_argument("--storage-path", help="Tune storage: a local folder, or shared storage / s3:// on a cluster "
                                          "(default: $GANLIB_STORAGE_PATH, else ./ray_results)")
    p.add_argument("--name", help="sweep name (Tune experiment folder; default <space>-<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when Ray gave the trial a GPU), cpu, cuda (= cuda:0, the trial's GPU)")
    p.add_argument("--eval-overlap", choices=EVAL_OVERLAP, default="auto",
                   help="evaluations on a thread beside training, on copies of the networks: auto = on CUDA "
                        "trials; on = also on the CPU, where a trial owns a core it does not train on (default: auto)")
    p.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a new local one)")
    return p


def settings_from_args(argv: list[str] | None, prog: str | None = None) -> SweepSettings:
    return SweepSettings(**vars(build_parser(prog).parse_args(argv)))


# -- checks that need the flags only ----------------------------------------------------------------
def _integer(flag: str, value: Any, low: int, high: int | None = None, what: str = "") -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise SettingsError(flag, value, f"an integer {bounds}{what}")


def check_settings(s: SweepSettings) -> None:
    """Ranges and combinations of the flags; raises ``SettingsError``."""
    _integer("num_trials", s.num_trials, 1)
    _integer("steps", s.steps, 1)
    _integer("eval_every", s.eval_every, 1, s.steps, f" (the budget --steps is {s.steps})")
    _integer("score_every", s.score_every, s.eval_every, s.steps, f" (from --eval-every to --steps = {s.steps})")
    if s.score_every % s.eval_every:
        raise SettingsError("score_every", s.score_every, f"a multiple of --eval-every ({s.eval_every})")
    _integer("eval_samples", s.eval_samples, 2)
    if s.width is not None:
        _integer("width", s.width, 1)
    if s.max_concurrent is not None:
        _integer("max_concurrent", s.max_concurrent, 1)
    _integer("max_failures", s.max_failures, 0, what=" (retries from the last checkpoint)")
    _integer("seed", s.seed, 0, SEED_MAX)
    _integer("confirm_top", s.confirm_top, 0)
    _integer("confirm_seeds", s.confirm_seeds, 2, what=" (a mean's 95 % interval needs two seeds at least)")
    if not (isinstance(s.cpus_per_trial, (int, float)) and math.isfinite(s.cpus_per_trial) and s.cpus_per_trial > 0):
        raise SettingsError("cpus_per_trial", s.cpus_per_trial, "a number > 0")
    gpus = s.gpus_per_trial
    if not (isinstance(gpus, (int, float)) and math.isfinite(gpus) and 0 <= gpus <= 1):
        raise SettingsError("gpus_per_trial", gpus, "0, a fraction in (0, 1) that shares a GPU, or 1: a trial "
                            "trains on one GPU (more would sit idle)")
    if s.device not in ("auto", "cpu", "cuda", "cuda:0"):
        raise SettingsError("device", s.device, "'auto', 'cpu', 'cuda' or 'cuda:0': a trial sees only the GPU Ray "
                            "gave it, numbered 0")
    if s.device.startswith("cuda") and gpus == 0:
        raise SettingsError("device", s.device, "'auto' or 'cpu' with --gpus-per-trial 0: a trial uses CUDA only "
                            "when Ray gave it a GPU (set --gpus-per-trial)")
    if s.eval_overlap not in EVAL_OVERLAP:
        raise SettingsError("eval_overlap", s.eval_overlap, "one of " + ", ".join(EVAL_OVERLAP))
    if s.searcher not in SEARCHERS:
        raise SettingsError("searcher", s.searcher, "one of " + ", ".join(SEARCHERS))
    if s.first_rung is not None:
        if s.scheduler not in ("asha", "hyperband"):
            raise SettingsError("first_rung", s.first_rung, f"unset with --scheduler {s.scheduler} (it has no rungs)")
        _integer("first_rung", s.first_rung, s.eval_every, s.steps - 1,
                 f" (from --eval-every to below --steps = {s.steps}: a rung is an evaluation inside the budget)")
        if s.first_rung % s.eval_every:
            raise SettingsError("first_rung", s.first_rung, f"a multiple of --eval-every ({s.eval_every}): rungs "
                                "are compared at evaluations")
    if s.rung_reduction is not None:
        if s.scheduler not in ("asha", "hyperband"):
            raise SettingsError("rung_reduction", s.rung_reduction,
                                f"unset with --scheduler {s.scheduler} (it has no rungs)")
        _integer("rung_reduction", s.rung_reduction, 2, 10)
    _integer("cohort", s.cohort, 1, COHORT_MAX)
    if s.cohort > 1 and s.scheduler not in ("asha", "none"):
        raise SettingsError("cohort", s.cohort, f"1 with --scheduler {s.scheduler}: cohort members meet the rungs "
                            "of --scheduler asha (or none); PBT and Hyperband schedule whole trials")
    if s.scheduler == "pbt":
        if s.searcher != "tpe":
            raise SettingsError("searcher", s.searcher, "'tpe' (unset) with --scheduler pbt: PBT samples its "
                                "population from the space and searches by itself")
        if s.num_trials < PBT_MIN_POPULATION:
            raise SettingsError("num_trials", s.num_trials, f"an integer >= {PBT_MIN_POPULATION} with --scheduler pbt "
                                "(the population exploits its top quarter)")
        if s.max_concurrent is not None and s.max_concurrent < s.num_trials:
            raise SettingsError("max_concurrent", s.max_concurrent, f"unset or an integer >= --num-trials "
                                f"({s.num_trials}) with --scheduler pbt (the population trains side by side; a "
                                "smaller live population clones the same few trials and starts the rest late)")


# -- paths: trials run in their own working directories, so every path is made absolute --------------
def _absolute(path: str, cwd: Path) -> str:
    return str((cwd / Path(path).expanduser()).resolve())


def absolute_tracking_uri(uri: str, cwd: Path) -> str:
    """``sqlite:///rel.db`` and a bare folder are relative to ``cwd``; server URIs pass."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + _absolute(uri[len("sqlite:///"):], cwd)
    if uri.startswith("file:"):
        rest = uri[len("file:"):].lstrip("/")
        return uri if uri.startswith("file:///") else Path(_absolute(rest, cwd)).as_uri()
    if "://" not in uri and ":" not in uri.split("/")[0]:
        return _absolute(uri, cwd)
    return uri


def absolute_data(dataset: str, cwd: Path) -> str:
    if dataset.startswith("parquet:") and "://" not in dataset:
        return "parquet:" + _absolute(dataset[len("parquet:"):], cwd)
    return dataset


def resolve_paths(s: SweepSettings, cwd: Path | None = None) -> SweepSettings:
    """Every relative path of the settings, against the folder the user ran the sweep from."""
    cwd = Path.cwd() if cwd is None else cwd
    s.tracking_uri = absolute_tracking_uri(s.tracking_uri, cwd)
    s.dataset = absolute_data(s.dataset, cwd)
    for name in ("data_root", "inception_weights"):
        if getattr(s, name):
            setattr(s, name, _absolute(getattr(s, name), cwd))
    if "://" not in s.storage_path:
        s.storage_path = _absolute(s.storage_path, cwd)
    return s
