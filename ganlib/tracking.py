"""MLflow: one parent run per sweep, one child run per trial nested under it.

Trials log their own child runs from inside the trial process, with the tracking URI passed
explicitly in the trial config (Ray's MLflow callback does not carry it into trials, and
``mlflow.set_experiment`` on the driver leaks through ``MLFLOW_EXPERIMENT_ID``; we only use
``MlflowClient`` with explicit ids). The driver creates the experiment (trials racing to create
it hit a UNIQUE constraint), the parent run, and sets each child's final verdict: a trial that
Tune stops is killed and cannot tag itself.
"""

from __future__ import annotations

import io
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TRIAL_ID_TAG = "ray_trial_id"
PARENT_TAG = "mlflow.parentRunId"
STATUSES = ("completed", "stopped_early", "collapsed", "diverged", "error")


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def local_artifact_root(uri: str) -> str | None:
    """For a local SQLite store, an absolute artifact folder beside the database: MLflow's
    default is ./mlruns of whichever process creates the experiment, and Tune trials run in
    other working directories. Remote servers choose (or proxy) their own artifact store."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


def get_or_create_experiment(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=local_artifact_root(client.tracking_uri))


def log_metrics(client, run_id: str, metrics: dict[str, Any], step: int) -> None:
    """Numeric, finite metrics in one batch; the rest are not metrics (status, reason)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    client.log_batch(run_id, metrics=batch)


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(params.items()) if v is not None])


def find_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.{TRIAL_ID_TAG} = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'"), max_results=1)
    return runs[0].info.run_id if runs else None


# -- figures ---------------------------------------------------------------------------------------
def sample_figure(fake: torch.Tensor, real: torch.Tensor, title: str) -> bytes:
    """PNG bytes: a scatter of generated vs held-out real points (2-D) or a grid of images."""
    if fake.dim() == 4:
        from torchvision.utils import make_grid, save_image

        buffer = io.BytesIO()
        grid = make_grid(fake[:64].clamp(-1, 1), nrow=8, normalize=True, value_range=(-1, 1), pad_value=1)
        save_image(grid, buffer, format="png")
        return buffer.getvalue()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.scatter(real[:2000, 0], real[:2000, 1], s=2, c="0.6", label="held-out real")
    ax.scatter(fake[:2000, 0], fake[:2000, 1], s=2, c="tab:red", label="generated")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def log_bytes(client, run_id: str, data: bytes, artifact_path: str) -> None:
    folder, name = artifact_path.rsplit("/", 1) if "/" in artifact_path else ("", artifact_path)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(data)
        client.log_artifact(run_id, str(Path(tmp) / name), folder or None)


# -- the trial side -------------------------------------------------------------------------------
class TrialTracker:
    """Observer of a training run (``train(..., observers=[tracker])``) inside a Tune trial.

    ``tracking`` is the trial config's ``_tracking`` entry: {uri, experiment_id, parent_run_id}.
    A trial that is restarted (after a failure, or a population-based exploit) finds its own
    child run again by its Tune trial id and continues it; parameters are logged only once."""

    def __init__(self, tracking: dict[str, str], trial_id: str, trial_name: str, params: dict[str, Any],
                 plot_every: int):
        self.client = client_for(tracking["uri"])
        self.plot_every = plot_every
        existing = find_trial_run(self.client, tracking["experiment_id"], tracking["parent_run_id"], trial_id)
        if existing:
            self.run_id = existing
        else:
            run = self.client.create_run(tracking["experiment_id"], run_name=trial_name, tags={
                PARENT_TAG: tracking["parent_run_id"], TRIAL_ID_TAG: trial_id, "status": "running"})
            self.run_id = run.info.run_id
            log_params(self.client, self.run_id, params)
        self._tagged_extractor = False

    def __call__(self, trainer, metrics: dict[str, Any], evaluator) -> None:
        step = int(metrics["step"])
        log_metrics(self.client, self.run_id, metrics, step)
        if not self._tagged_extractor:
            self.client.set_tag(self.run_id, "feature_extractor", evaluator.feature_extractor)
            self.client.set_tag(self.run_id, "primary_metric", evaluator.primary)
            self._tagged_extractor = True
        if metrics.get("status", "ok") != "ok":
            self.client.set_tag(self.run_id, "status", metrics["status"])
            self.client.set_tag(self.run_id, "reason", metrics["reason"])
        if step % self.plot_every == 0 or step == trainer.cfg.steps or metrics.get("status", "ok") != "ok":
            fake = trainer.sample(min(trainer.cfg.eval_samples, 2000))
            png = sample_figure(fake, trainer.data.heldout, f"{trainer.cfg.loss} step {step}")
            log_bytes(self.client, self.run_id, png, f"samples/step_{step:07d}.png")


# -- the driver side ------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "ray", "optuna", "mlflow", "pot", "torchmetrics", "ganlib"):
        try:
            out[f"version.{name}"] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _code_version() -> str:
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).parent).stdout.strip()
        return head + ("+dirty" if dirty and head else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_sweep_run(settings, space) -> tuple[Any, str, str]:
    """(client, experiment_id, parent_run_id). On --resume, the sweep's running parent run of
    the same name is continued instead of starting a new one."""
    import yaml

    from .sweep import settings_dict

    client = client_for(settings.tracking_uri)
    experiment_id = get_or_create_experiment(client, settings.experiment)
    if settings.resume:
        runs = client.search_runs([experiment_id], filter_string=(
            f"tags.ganlib_role = 'sweep' and tags.sweep_name = '{settings.name}'"), max_results=1,
            order_by=["attributes.start_time DESC"])
        if runs:
            return client, experiment_id, runs[0].info.run_id
    run = client.create_run(experiment_id, run_name=settings.name, tags={
        "ganlib_role": "sweep", "sweep_name": settings.name, "space": space.name,
        "searcher": "pbt-population" if settings.scheduler == "pbt" else "optuna-tpe",
        "scheduler": settings.scheduler, "code_version": _code_version(), **_versions()})
    run_id = run.info.run_id
    log_params(client, run_id, {**settings_dict(settings), "searched": ",".join(space.searched)})
    log_bytes(client, run_id, yaml.safe_dump(space.to_dict(), sort_keys=False).encode(), "space.yaml")
    return client, experiment_id, run_id


def trial_status(last: dict[str, Any] | None, steps: int, errored: bool) -> tuple[str, str]:
    """The final verdict of a finished trial from its last result."""
    last = last or {}
    if errored:
        return "error", f"the trial raised an error after step {last.get('step', 0)}"
    if last.get("status") in ("collapsed", "diverged"):
        return last["status"], last.get("reason", "")
    if last.get("step", 0) >= steps:
        return "completed", ""
    return "stopped_early", f"stopped by the scheduler at step {last.get('step', 0)} of {steps}"


def _tune_callback_base():
    from ray.tune import Callback

    return Callback


class SweepCallback(_tune_callback_base()):
    """Driver-side: when a trial ends, tag its child run with the verdict, attach the final
    generator weights, and close it."""

    def __init__(self, client, experiment_id: str, parent_run_id: str, steps: int):
        self.client, self.experiment_id, self.parent_run_id, self.steps = client, experiment_id, parent_run_id, steps
        self.verdicts: dict[str, tuple[str, str, int]] = {}  # trial id -> (status, reason, steps run)

    def _finish(self, trial, errored: bool) -> None:
        status, reason = trial_status(trial.last_result, self.steps, errored)
        steps_run = int((trial.last_result or {}).get("step", 0))
        self.verdicts[trial.trial_id] = (status, reason, steps_run)
        run_id = find_trial_run(self.client, self.experiment_id, self.parent_run_id, trial.trial_id)
        if run_id is None:  # the trial failed before it could create its run
            run_id = self.client.create_run(self.experiment_id, run_name=str(trial), tags={
                PARENT_TAG: self.parent_run_id, TRIAL_ID_TAG: trial.trial_id}).info.run_id
        self.client.set_tag(run_id, "status", status)
        self.client.set_tag(run_id, "reason", reason)
        if trial.checkpoint is not None:
            try:
                from .tune import load_tune_checkpoint

                state = load_tune_checkpoint(trial.checkpoint)
                buffer = io.BytesIO()
                torch.save({"generator": state["generator"], "config": state["config"], "step": state["step"]},
                           buffer)
                log_bytes(self.client, run_id, buffer.getvalue(), "checkpoint/generator.pt")
            except Exception as err:  # noqa: BLE001 - a missing artifact must not end the sweep
                self.client.set_tag(run_id, "checkpoint_error", str(err)[:500])
        self.client.set_terminated(run_id, "FAILED" if status == "error" else "FINISHED")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, errored=True)
