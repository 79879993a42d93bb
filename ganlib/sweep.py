"""A search space -> Optuna (define-by-run) -> Ray Tune run, logged to MLflow.

Shared by every script in ``sweeps/``: each is ``sys.exit(main(["--space", NAME, *argv]))``.
Pre-flight checks (space, dataset, tracking store, storage path) all run before Ray starts; a
failure is one clear line on stderr and exit code 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray.tune.stopper import Stopper

from .config import GanConfig

PROJECT_DIR = Path(__file__).resolve().parent.parent

# Presets: budgets sized for a test (smoke), this 2-core machine in <= ~10 min (default), and a
# GPU cluster (paper: the paper-scale budgets of the large GAN studies).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(num_trials=4, steps=40, eval_every=10, eval_samples=512, max_concurrent=2, width=32),
    "default": dict(num_trials=16, steps=2000, eval_every=100, eval_samples=1024, max_concurrent=2, width=128),
    "paper": dict(num_trials=200, steps=20000, eval_every=500, eval_samples=10000, max_concurrent=None,
                  width=None),
}
SCHEDULERS = ("asha", "hyperband", "pbt", "none")


class PreflightError(Exception):
    """A sweep cannot start; the message says what and how to fix it."""


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
    eval_samples: int | None = None
    width: int | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    scheduler: str = "asha"
    tracking_uri: str | None = None
    experiment: str | None = None
    storage_path: str | None = None
    name: str | None = None
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.experiment = self.experiment or f"ganlib-{Path(self.space).stem}"
        self.name = self.name or f"{Path(self.space).stem}-{self.dataset.replace(':', '_').replace('/', '_')}"
        self.storage_path = (self.storage_path or os.environ.get("GANLIB_STORAGE_PATH")
                             or str(PROJECT_DIR / "ray_results"))
        self.ray_address = self.ray_address or os.environ.get("RAY_ADDRESS") or None
        self.tracking_uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{PROJECT_DIR / 'mlflow.db'}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run a hyperparameter sweep of GAN training on Ray Tune + Optuna.")
    p.add_argument("--space", required=True, help="search space name (search_spaces/NAME.yaml) or a YAML path")
    p.add_argument("--dataset", default="ring8", help="ring8, grid25, swissroll, digits, mnist, ..., parquet:URI")
    p.add_argument("--data-root", help="local folder of a torchvision dataset")
    p.add_argument("--inception-weights", help="local pytorch-fid Inception-v3 weights file: the FID features of "
                                               "image data other than digits / mnist / fashion_mnist")
    p.add_argument("--preset", choices=list(PRESETS), default="default")
    p.add_argument("--num-trials", type=int)
    p.add_argument("--steps", type=int, help="generator iterations per trial (the budget)")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-samples", type=int, help="generated samples per evaluation, fixed for the sweep")
    p.add_argument("--width", type=int, help="network width for every trial (unset: model default)")
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractional GPU share per trial")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="asha")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment name (default: ganlib-<space>)")
    p.add_argument("--storage-path", help="Tune storage: a local folder, or shared storage / s3:// on a cluster "
                                          "(default: $GANLIB_STORAGE_PATH, else ./ray_results)")
    p.add_argument("--name", help="sweep name (Tune experiment folder; default <space>-<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else a new local one)")
    return p


def _check_range(name: str, value: Any, low: float, allowed: str) -> None:
    if value is not None and not value >= low:
        raise PreflightError(f"--{name.replace('_', '-')} = {value!r} is invalid: allowed {allowed}")


def _checkpoint_every(settings: SweepSettings) -> int:
    """PBT exploits at every evaluation and needs a checkpoint there; otherwise about five per
    trial (plus the final one) bound the work lost to a failure without flooding the storage."""
    if settings.scheduler == "pbt":
        return settings.eval_every
    return settings.eval_every * max(1, settings.steps // 5 // settings.eval_every)


# -- pre-flight ------------------------------------------------------------------------------------
def preflight(settings: SweepSettings):
    """Everything that can be checked before Ray starts. Returns (space, base trial config,
    primary metric name)."""
    from .data import load_dataset
    from .evaluate import primary_metric
    from .metrics.features import feature_extractor_for
    from .spaces import SpaceError, load_space

    _check_range("num_trials", settings.num_trials, 1, "an integer >= 1")
    _check_range("max_concurrent", settings.max_concurrent, 1, "an integer >= 1")
    _check_range("eval_every", settings.eval_every, 1, "an integer >= 1")
    _check_range("cpus_per_trial", settings.cpus_per_trial, 0, "a number >= 0")
    _check_range("gpus_per_trial", settings.gpus_per_trial, 0, "a number >= 0 (a fraction shares a GPU)")
    try:
        space = load_space(settings.space)
    except (SpaceError, FileNotFoundError) as err:
        raise PreflightError(str(err)) from None
    base = {k: v for k, v in dict(dataset=settings.dataset, data_root=settings.data_root,
                                  inception_weights=settings.inception_weights, steps=settings.steps,
                                  eval_every=settings.eval_every, checkpoint_every=_checkpoint_every(settings),
                                  eval_samples=settings.eval_samples, width=settings.width, seed=settings.seed,
                                  device=settings.device).items() if v is not None}
    try:
        for point in space.start_points() or [{}]:
            GanConfig.from_dict({**base, **space.fixed, **point})
    except ValueError as err:
        raise PreflightError(f"sweep settings: {err}") from None
    try:
        data = load_dataset(settings.dataset, settings.data_root)
    except (OSError, ValueError) as err:
        raise PreflightError(f"dataset {settings.dataset!r} is not reachable: {err}") from None
    try:  # the FID features: committed, trained once per machine, or a local Inception file
        feature_extractor_for(data.name, data.kind, inception_path=settings.inception_weights)
    except (OSError, ValueError) as err:
        raise PreflightError(f"no feature extractor for dataset {settings.dataset!r}: {err}") from None
    _check_storage(settings.storage_path)  # leaves nothing behind; the tracking check may create the store
    _check_tracking(settings.tracking_uri)
    return space, base, primary_metric(data)[0]


def _check_tracking(uri: str) -> None:
    from .tracking import client_for

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # One quick probe: MLflow's default is minutes of retries with backoff on a dead server.
    probe_env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in probe_env}
    os.environ.update(probe_env)
    try:
        client_for(uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure means the same thing to the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PreflightError(f"MLflow tracking store {uri!r} is not reachable: {first}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_storage(path: str) -> None:
    import pyarrow.fs as pafs

    if "://" not in path:  # local: Tune creates it; it only has to be creatable
        folder = Path(path).expanduser().resolve()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise PreflightError(f"Tune storage path {path!r} is not writable ({existing} is not a writable folder)")
        return
    try:
        fs, root = pafs.FileSystem.from_uri(path)
        fs.create_dir(root, recursive=True)
        probe = f"{root.rstrip('/')}/.ganlib-write-test"
        with fs.open_output_stream(probe) as out:
            out.write(b"ok")
        fs.delete_file(probe)
    except Exception as err:  # noqa: BLE001
        raise PreflightError(f"Tune storage path {path!r} is not writable: {err}") from None


# -- the run ---------------------------------------------------------------------------------------
def _scheduler(settings: SweepSettings, space):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, PopulationBasedTraining

    if settings.scheduler == "asha":
        # Rungs in generator steps; the first at a quarter of the budget (GANs start noisily).
        grace = max(settings.eval_every, settings.steps // 4)
        return ASHAScheduler(time_attr="step", max_t=settings.steps, grace_period=grace, reduction_factor=2)
    if settings.scheduler == "hyperband":
        return HyperBandScheduler(time_attr="step", max_t=settings.steps, reduction_factor=3)
    if settings.scheduler == "pbt":
        # Mutate the always-active float parameters; conditional ones keep their sampled value.
        mutations = {name: tune.loguniform(p.low, p.high) if p.type == "loguniform" else tune.uniform(p.low, p.high)
                     for name in space.searched for p in [space.param(name)]
                     if p.type in ("loguniform", "uniform") and not p.when}
        return PopulationBasedTraining(time_attr="step", perturbation_interval=settings.eval_every,
                                       hyperparam_mutations=mutations, synch=False)
    return None


class CollapseStopper(Stopper):
    """Tune stopper: a trial whose detector says collapsed or diverged stops at once."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return result.get("status", "ok") != "ok"

    def stop_all(self) -> bool:
        return False


def run_sweep(settings: SweepSettings) -> dict[str, Any]:
    """Pre-flight, then the Tune run, then the sweep report. Returns a summary dict."""
    space, base, primary = preflight(settings)
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from .report import write_sweep_report
    from .tracking import SweepCallback, start_sweep_run
    from .tune import train_gan

    mode = "min"  # every primary metric (w1, swd, fid) is a distance
    client, experiment_id, parent_run_id = start_sweep_run(settings, space)
    plot_every = max(settings.eval_every, settings.steps // 4)
    param_space = {**base, "_tracking": {"uri": settings.tracking_uri, "experiment_id": experiment_id,
                                         "parent_run_id": parent_run_id, "plot_every": plot_every}}

    if not ray.is_initialized():
        # Join the cluster named by --ray-address / $RAY_ADDRESS (set by `ray job submit`), else
        # start a private local one: a bare ray.init() would join whatever cluster
        # /tmp/ray/ray_current_cluster names, stale or not.
        ray.init(address=settings.ray_address or "local", log_to_driver=False)
    trainable = tune.with_resources(train_gan, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})

    scheduler = _scheduler(settings, space)
    if settings.scheduler == "pbt":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # PBT drives the search itself (Tune refuses a searcher beside it): start the population
        # from the space's own sampler, paper defaults first.
        points = [{**space.fixed, **c} for c in space.sample_configs(settings.num_trials, seed=settings.seed)]
        # Every key of a point must exist in the param space; None is GanConfig's "unset", which
        # a conditional setting (beta1 without adam) must be.
        param_space.update({key: None for point in points for key in point if key not in param_space})
        search_alg = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=settings.max_concurrent or 0)
        max_concurrent = None  # the generator limits it (Tune ignores the TuneConfig value here)
    else:
        max_concurrent = settings.max_concurrent
        search_alg = OptunaSearch(space=space.define_by_run, metric="objective", mode=mode,
                                  points_to_evaluate=[{**p} for p in space.start_points()], seed=settings.seed,
                                  study_name=settings.name)

    callback = SweepCallback(client, experiment_id, parent_run_id, settings.steps)
    run_config = tune.RunConfig(
        name=settings.name, storage_path=settings.storage_path, stop=CollapseStopper(), callbacks=[callback],
        failure_config=tune.FailureConfig(max_failures=1),
        # PBT exploiters restore other trials' checkpoints: keep enough that none is deleted
        # before it is copied (Tune warns at <= 2).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if settings.scheduler == "pbt" else 2), verbose=1)
    experiment_path = f"{settings.storage_path.rstrip('/')}/{settings.name}"
    if settings.resume and tune.Tuner.can_restore(experiment_path):
        tuner = tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, run_config=run_config, tune_config=tune.TuneConfig(
            metric="objective", mode=mode, search_alg=search_alg, scheduler=scheduler,
            num_samples=settings.num_trials, max_concurrent_trials=max_concurrent))
    results = tuner.fit()
    study = getattr(search_alg, "_ot_study", None)  # what the Optuna sampler was told, per trial
    told = [{"state": t.state.name, "value": t.value, **t.params} for t in study.trials] if study else []
    return write_sweep_report(client, parent_run_id, results, space, settings, callback, told, primary)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = SweepSettings(**{k: v for k, v in vars(args).items()})
    started = time.time()
    try:
        summary = run_sweep(settings)
    except PreflightError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\nSweep {settings.name!r} finished in {time.time() - started:.0f} s: {summary['trials']} trials "
          f"({', '.join(f'{n} {s}' for s, n in summary['by_status'].items())})")
    best = summary.get("best")
    if best:
        searched = {k: v for k, v in best["config"].items() if k in summary["searched"] or k == "loss"}
        print(f"Best trial {best['trial_id']}: {summary['primary']} = {best['objective']:.4g} with "
              f"{json.dumps(searched)}")
    print(f"Compute saved by pruning: {summary['compute_saved']:.0%} of the budgeted generator steps")
    print(f"MLflow parent run {summary['parent_run_id']} in experiment {settings.experiment!r} at "
          f"{settings.tracking_uri}")
    print(f"Report: {summary['report']}")
    if not settings.tracking_uri.startswith("http"):
        print(f"Open the UI: mlflow ui --backend-store-uri {settings.tracking_uri} --host 127.0.0.1 --port 5000")
    return 0


def settings_dict(settings: SweepSettings) -> dict[str, Any]:
    return {k: v for k, v in asdict(settings).items() if v is not None}
