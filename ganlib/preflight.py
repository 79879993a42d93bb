"""Everything a sweep checks before Ray starts: the flags, the search space and every start
point as a config, the data and its feature extractor, the Tune storage, the MLflow store, and
what a private local Ray could run. A failure raises ``PreflightError`` (one line: the field or
flag, and what is allowed); nothing is written."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, GanConfig
from .settings import SettingsError, SweepSettings, check_settings, resolve_paths


class PreflightError(Exception):
    """A sweep cannot start; the message says what and how to fix it."""


@dataclass
class Prepared:
    """What the checks established, for the run."""

    space: Any  # SearchSpace
    base: dict[str, Any]  # GanConfig fields every trial gets (budget, data, cadence, seed...)
    primary: str  # the metric trials are scored on
    feature_extractor: str
    model_kind: str
    extractor: Any = None  # the FID feature extractor itself: trials get this one (a worker may lack its file)


def preflight(settings: SweepSettings, cwd: Path | None = None) -> Prepared:
    try:
        resolve_paths(settings, cwd)
        check_settings(settings)
    except SettingsError as err:
        raise PreflightError(str(err)) from None
    store = settings.tracking_uri[len("sqlite:///"):] if settings.tracking_uri.startswith("sqlite:///") else None
    if settings.resume and store and not Path(store).exists():
        raise PreflightError(f"--resume: there is no sweep to resume: no MLflow store at {store}; run without "
                             "--resume to start one")
    if "://" in settings.tracking_uri and not settings.tracking_uri.startswith(("sqlite:", "file:")):
        check_tracking(settings.tracking_uri)  # a server: say at once if it does not answer (writes nothing)
    from .cluster import check_address, check_private_resources  # torch, Optuna...: after the quick checks
    from .data import load_dataset
    from .evaluate import primary_metric
    from .metrics.features import feature_extractor_for
    from .models import resolve_model_defaults
    from .spaces import SpaceError, load_space

    try:
        if settings.ray_address:
            check_address(settings.ray_address)
        else:
            check_private_resources(settings)
    except SettingsError as err:
        raise PreflightError(str(err)) from None
    try:
        space = load_space(settings.space)
    except (SpaceError, FileNotFoundError) as err:
        raise PreflightError(str(err)) from None
    starts = len(space.start_points())
    if settings.scheduler != "pbt" and settings.num_trials < starts:  # PBT samples its population
        print(f"warning: --num-trials {settings.num_trials} runs the first {settings.num_trials} of the space's "
              f"{starts} start points (the papers' settings) and no others", file=sys.stderr)
    try:
        GanConfig.create(dataset=settings.dataset, data_root=settings.data_root)  # a known name, first
    except ConfigError as err:
        raise PreflightError(f"sweep settings: {err}") from None
    try:
        data = load_dataset(settings.dataset, settings.data_root)
    except (OSError, ValueError) as err:
        raise PreflightError(f"--dataset {settings.dataset!r} is not reachable: {err}") from None
    model_kind = space.fixed.get("model") if space.fixed.get("model", "auto") != "auto" else (
        "dcgan" if data.kind == "image" else "mlp")
    base = {k: v for k, v in dict(
        dataset=settings.dataset, data_root=settings.data_root, inception_weights=settings.inception_weights,
        steps=settings.steps, eval_every=settings.eval_every, score_every=settings.score_every,
        eval_samples=settings.eval_samples, width=settings.width_for(model_kind), seed=settings.seed,
        device=settings.device, eval_overlap=settings.eval_overlap,
        stop_on_collapse=settings.collapse_stop).items() if v is not None}
    try:
        for point in space.start_points() or [{}]:
            GanConfig.from_dict({**base, **space.fixed, **space.to_config(point)})
        corners = [(c, GanConfig.from_dict({**base, **c})) for c in space.corner_configs()]
        for corner, config in corners:  # what the data makes of the model: a DCGAN on 2-D points...
            resolved = resolve_model_defaults(config, data)
            if resolved.model == "dcgan" and "depth" in corner:  # ...a depth it would ignore, logged as if used
                raise ConfigError("depth", corner["depth"], f"unset with model 'dcgan' in space {space.name!r} (the "
                                  "DCGAN's depth follows the image size)")
    except ConfigError as err:
        raise PreflightError(f"sweep settings: {err}") from None
    if settings.cohort > 1 and any(config.d_norm == "spectral" for _, config in corners):
        raise PreflightError(str(SettingsError(
            "cohort", settings.cohort, f"1 for space {space.name!r}: some of its configurations use spectral "
            "normalisation (d_norm 'spectral'), which cohorts cannot stack (torch 2.14's vmap has no batching rule "
            "for its parametrisation)")))
    try:  # the FID features: committed, trained once per machine, or a local Inception file
        extractor = feature_extractor_for(data.name, data.kind, inception_path=settings.inception_weights)
    except (OSError, ValueError) as err:
        raise PreflightError(f"no feature extractor for dataset {settings.dataset!r}: {err}") from None
    check_storage(settings.storage_path)  # leaves nothing behind
    check_tracking(settings.tracking_uri)  # may create a local store: last
    return Prepared(space, base, primary_metric(data), extractor.name, model_kind, extractor)


def check_tracking(uri: str) -> None:
    from mlflow.tracking import MlflowClient  # not ganlib.tracking: that imports Ray

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # One probe without MLflow's minutes of retries: a dead server (connection refused) fails at
    # once; a live but busy one gets 15 s to answer.
    probe_env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
    saved = {k: os.environ.get(k) for k in probe_env}
    os.environ.update(probe_env)
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure means the same thing to the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PreflightError(f"--tracking-uri {uri!r}: the MLflow tracking store is not reachable: {first}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_storage(path: str) -> None:
    """Tune must be able to create the sweep's folder there: create the missing folders, write
    and delete a probe file, and remove every folder this made."""
    import pyarrow.fs as pafs

    try:
        if "://" in path:
            fs, root = pafs.FileSystem.from_uri(path)
        else:
            fs, root = pafs.LocalFileSystem(), path
        created = []
        folder = root.rstrip("/")
        while folder and fs.get_file_info(folder).type == pafs.FileType.NotFound:
            created.append(folder)
            folder = folder.rsplit("/", 1)[0] if "/" in folder else ""
        if folder and fs.get_file_info(folder).type != pafs.FileType.Directory:
            raise OSError(f"{folder} is not a folder")
        try:
            fs.create_dir(root, recursive=True)
            probe = f"{root.rstrip('/')}/.ganlib-write-test"
            with fs.open_output_stream(probe) as out:
                out.write(b"ok")
            fs.delete_file(probe)
        finally:
            for made in created:  # deepest first
                try:
                    fs.delete_dir(made)
                except OSError:
                    pass
    except Exception as err:  # noqa: BLE001 - pyarrow raises OSError subclasses and ArrowInvalid
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PreflightError(f"--storage-path {path!r} is not writable: {first}") from None
