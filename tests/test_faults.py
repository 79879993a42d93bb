"""Faults, with real processes: bad input refused before anything starts, training that goes
wrong, a killed driver (its private Ray cleaned up, the sweep resumed to the same report), killed
trial workers (restarted from their checkpoints, their MLflow runs continued), and a tracking
server that goes away mid-sweep. Figures: docs/reliability.md."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from ganlib.reaper import TOKEN_VARIABLE
from ganlib.sweep import main as sweep_main

REPO = Path(__file__).resolve().parent.parent


def sweep_argv(tmp_path: Path, name: str, *flags: str, tracking: str | None = None) -> list[str]:
    return [sys.executable, str(REPO / "sweeps" / "wgan_clip.py"), "--preset", "smoke", "--device", "cpu",
            "--name", name, "--tracking-uri", tracking or f"sqlite:///{tmp_path}/mlflow.db",
            "--storage-path", str(tmp_path / "ray"), *flags]


def sweep_processes() -> list[int]:
    """Processes of any private sweep cluster (they carry the reaper's token)."""
    needle = f"{TOKEN_VARIABLE}=".encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(v.startswith(needle) for v in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")):
                found.append(int(entry))
        except OSError:
            continue
    return found


def results_logged(tmp_path: Path, name: str) -> int:
    return sum(len(p.read_text().splitlines()) for p in (tmp_path / "ray" / name).glob("*/result.json"))


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def sweep_runs(tracking_uri: str, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("ganlib-wgan_clip")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in runs if r.data.tags.get("sweep_name") == name and r.data.tags.get("ganlib_role") == "sweep"]
    children = [r for r in runs if parents and r.data.tags.get("mlflow.parentRunId") in
                {p.info.run_id for p in parents}]
    return client, parents, children


def assert_one_value_per_step(client, children) -> None:
    for child in children:
        for key in ("loss_d", "objective"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert len(steps) == len(set(steps)), (child.info.run_name, key, sorted(steps))


# -- bad input: one line, exit 2, no Ray, no MLflow run, within 10 s ------------------------------
def _space(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


GOOD_PARAMS = "params:\n  clip: {type: loguniform, low: 1.0e-3, high: 1.0}\n"
SPACES = {  # name: (YAML, words in the error)
    "unknown_key": ("name: x\nfixed: {loss: wgan}\n" + GOOD_PARAMS + "budget: 3\n", "unknown top-level key"),
    "no_params": ("name: x\nfixed: {loss: wgan}\nparams: {}\n", "params"),
    "not_a_field": ("name: x\nparams:\n  lr: {type: uniform, low: 0.0, high: 1.0}\n", "params.lr"),
    "bad_type": ("name: x\nfixed: {loss: wgan}\nparams:\n  clip: {type: normal, low: 0.1, high: 1.0}\n",
                 "params.clip.type"),
    "inverted": ("name: x\nfixed: {loss: wgan}\nparams:\n  clip: {type: uniform, low: 1.0, high: 0.1}\n",
                 "params.clip.high"),
    "log_zero": ("name: x\nfixed: {loss: wgan}\nparams:\n  clip: {type: loguniform, low: 0.0, high: 1.0}\n",
                 "params.clip.low"),
    "int_float": ("name: x\nparams:\n  n_critic: {type: int, low: 1.5, high: 5}\n", "params.n_critic.low"),
    "empty_choices": ("name: x\nparams:\n  optimizer: {type: categorical, choices: []}\n", "params.optimizer.choices"),
    "when_unknown": ("name: x\nfixed: {loss: wgan}\nparams:\n  clip: {type: uniform, low: 0.1, high: 1.0, "
                     "when: {optimizer: adam}}\n", "params.clip.when.optimizer"),
    "when_never": ("name: x\nfixed: {loss: wgan}\nparams:\n  optimizer: {type: categorical, choices: [adam, sgd]}\n"
                   "  beta1: {type: uniform, low: 0.0, high: 0.9, when: {optimizer: rmsprop}}\n",
                   "params.beta1.when.optimizer"),
    "start_missing": ("name: x\nfixed: {loss: wgan}\nparams:\n  clip: {type: uniform, low: 0.1, high: 1.0}\n"
                      "  n_critic: {type: int, low: 1, high: 5}\nstart:\n  - {clip: 0.5}\n", "start[0].n_critic"),
    "start_outside": ("name: x\nfixed: {loss: wgan}\n" + GOOD_PARAMS + "start:\n  - {clip: 5.0}\n", "start[0].clip"),
    "fixed_rejected": ("name: x\nfixed: {loss: wgan, n_critic: 0}\n" + GOOD_PARAMS, "n_critic"),
    "duplicate": ("name: x\nfixed: {loss: wgan}\n" + GOOD_PARAMS + "  clip: {type: uniform, low: 0.1, high: 1.0}\n",
                  "duplicate key"),
    "not_yaml": ("name: x\nparams: [\n", "not valid YAML"),
    "string_number": ("name: x\nfixed: {loss: wgan}\nparams:\n  clip: {type: loguniform, low: 1e-3, high: 1.0}\n",
                      "write 1.0e-3"),
    "loss_unknown": ("name: x\nfixed: {loss: hinge}\n" + GOOD_PARAMS, "'loss' = 'hinge'"),
    "shorthand_conflict": ("name: x\nfixed: {loss: wgan, constraint: gp}\nparams:\n"
                           "  n_critic: {type: int, low: 1, high: 5}\n", "write loss 'wasserstein'"),
    "batch_norm_gp": ("name: x\nfixed: {loss: wgan_gp, d_norm: batch}\nparams:\n"
                      "  n_critic: {type: int, low: 1, high: 5}\n", "couples the samples"),
    "collapse_key": ("name: x\nfixed: {loss: wgan, collapse: {patience: 3}}\n" + GOOD_PARAMS, "collapse.patience"),
}


def _parquet_files(tmp_path: Path) -> dict[str, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "garbage.parquet").write_bytes(b"this is not parquet")
    pq.write_table(pa.table({"label": [1, 2, 3]}), tmp_path / "no_columns.parquet")
    pq.write_table(pa.table({"x": [[0.0, 1.0], [1.0], [2.0, 3.0]]}), tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"x": [[0.0, 1.0]] * 4, "split": ["train", "train", "valid", "test"]}),
                   tmp_path / "bad_split.parquet")
    return {name: str(tmp_path / f"{name}.parquet") for name in ("garbage", "no_columns", "ragged", "bad_split")}


def bad_inputs(tmp_path: Path) -> list[tuple[str, list[str], dict[str, str], str]]:
    """(id, flags, environment, words the one error line must hold)."""
    files = _parquet_files(tmp_path)
    cases = [(f"space-{name}", ["--space", _space(tmp_path, name, text)], {}, words)
             for name, (text, words) in SPACES.items()]
    cases += [
        ("space-missing", ["--space", "no_such_space"], {}, "shipped spaces"),
        ("data-missing-parquet", ["--dataset", f"parquet:{tmp_path}/nothing.parquet"], {}, "not found"),
        ("data-unreadable", ["--dataset", f"parquet:{files['garbage']}"], {}, "--dataset"),
        ("data-no-columns", ["--dataset", f"parquet:{files['no_columns']}"], {}, "expected an 'image' column"),
        ("data-ragged", ["--dataset", f"parquet:{files['ragged']}"], {}, "share one non-zero length"),
        ("data-bad-split", ["--dataset", f"parquet:{files['bad_split']}"], {}, "'valid'"),
        ("data-mnist-no-root", ["--dataset", "mnist"], {}, "data_root"),
        ("data-mnist-missing-root", ["--dataset", "mnist", "--data-root", str(tmp_path / "nothing")], {},
         "not found under data_root"),
        ("data-unknown", ["--dataset", "imagenet"], {}, "'dataset' = 'imagenet'"),
        ("flag-num-trials", ["--num-trials", "0"], {}, "--num-trials = 0"),
        ("flag-num-trials-text", ["--num-trials", "many"], {}, "--num-trials"),
        ("flag-steps", ["--steps", "-5"], {}, "--steps = -5"),
        ("flag-eval-every", ["--eval-every", "5000"], {}, "--eval-every = 5000"),
        ("flag-score-every", ["--eval-every", "10", "--score-every", "15"], {}, "multiple of --eval-every"),
        ("flag-rung-reduction", ["--rung-reduction", "1"], {}, "--rung-reduction = 1 is invalid"),
        ("flag-eval-samples", ["--eval-samples", "1"], {}, "--eval-samples = 1"),
        ("flag-width", ["--width", "0"], {}, "--width = 0"),
        ("flag-cpus-zero", ["--cpus-per-trial", "0"], {}, "--cpus-per-trial = 0"),
        ("flag-cpus-too-many", ["--cpus-per-trial", "64"], {}, "the private local Ray has"),
        ("flag-gpus-none-here", ["--gpus-per-trial", "0.3"], {}, "no CUDA device"),
        ("flag-gpus-odd", ["--gpus-per-trial", "1.5"], {}, "--gpus-per-trial = 1.5"),
        ("flag-device", ["--device", "tpu"], {}, "--device = 'tpu'"),
        ("flag-device-cuda", ["--device", "cuda"], {}, "--gpus-per-trial"),
        ("flag-max-failures", ["--max-failures", "-1"], {}, "--max-failures = -1"),
        ("flag-max-concurrent", ["--max-concurrent", "0"], {}, "--max-concurrent = 0"),
        ("flag-pbt-population", ["--scheduler", "pbt", "--num-trials", "3"], {}, "--scheduler pbt"),
        ("flag-confirm-seeds", ["--confirm-seeds", "1"], {}, "a mean's 95 % interval needs two seeds"),
        ("flag-preset", ["--preset", "huge"], {}, "--preset"),
        ("flag-scheduler", ["--scheduler", "bohb"], {}, "--scheduler"),
        ("flag-storage", ["--storage-path", "/proc/nope"], {}, "--storage-path '/proc/nope' is not writable"),
        ("flag-tracking", ["--tracking-uri", "http://127.0.0.1:9"], {}, "not reachable"),
        ("flag-ray-address", ["--ray-address", "127.0.0.1:1"], {}, "nothing answers at 127.0.0.1:1"),
        ("flag-ray-dashboard", ["--ray-address", "http://127.0.0.1:8265"], {}, "dashboard"),
        ("flag-resume-nothing", ["--resume"], {}, "--resume: there is no sweep"),
        ("flag-resume-unknown-name", ["--resume", "--name", "never-ran"], {}, "--resume: there is no sweep"),
        ("env-tracking", [], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "not reachable"),
        ("env-storage", [], {"GANLIB_STORAGE_PATH": "/proc/nope"}, "--storage-path '/proc/nope'"),
        ("env-ray-address", [], {"RAY_ADDRESS": "127.0.0.1:1"}, "nothing answers"),
        ("env-ray-address-form", [], {"RAY_ADDRESS": "not an address"}, "--ray-address"),
    ]
    return cases


def test_forty_bad_inputs_each_refused_in_one_line(tmp_path, monkeypatch, capsys):
    import ray

    cases = bad_inputs(tmp_path / "inputs")
    assert len(cases) >= 40
    ray_before = ray.is_initialized()  # the session's test Ray, if another test started it
    slowest = 0.0
    for case_id, flags, env, words in cases:
        work = tmp_path / case_id
        work.mkdir()
        for key in ("MLFLOW_TRACKING_URI", "GANLIB_STORAGE_PATH", "RAY_ADDRESS"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        argv = ["--space", "wgan_clip", "--preset", "smoke", "--name", "bad", "--device", "cpu"]
        if "MLFLOW_TRACKING_URI" not in env:
            argv += ["--tracking-uri", f"sqlite:///{work}/mlflow.db"]
        if "GANLIB_STORAGE_PATH" not in env:
            argv += ["--storage-path", str(work / "ray")]
        started = time.perf_counter()
        code = sweep_main(argv + flags)
        elapsed = time.perf_counter() - started
        slowest = max(slowest, elapsed)
        err = capsys.readouterr().err.strip()
        assert code == 2, (case_id, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (case_id, err)
        assert words in err, (case_id, words, err)
        assert elapsed < 10, (case_id, elapsed)
        assert ray.is_initialized() == ray_before, case_id  # no Ray started
        assert not (work / "ray").exists(), case_id
        db = work / "mlflow.db"
        if db.exists():  # the store was probed (only cases refused after the tracking check)
            from mlflow.tracking import MlflowClient

            assert not MlflowClient(f"sqlite:///{db}").search_runs(["0"]), case_id
    print(f"{len(cases)} bad inputs refused; slowest {slowest:.2f} s")


def test_an_unreachable_tracking_server_is_refused_at_once(tmp_path):
    """One probe, no retry loop (MLflow's client retries for minutes by default), and nothing
    heavy imported first: the refusal comes before torch or Ray is loaded (2-3 s here, interpreter
    and MLflow's import included; the bound below only catches a retry loop)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime",
                           *sweep_argv(tmp_path, "x", tracking="http://127.0.0.1:9")[1:]],
                          capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2 and "not reachable" in proc.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "mlflow" in imported and not imported & {"torch", "ray", "optuna"}, sorted(imported & {"torch", "ray"})
    assert elapsed < 30, elapsed


# -- training that goes wrong --------------------------------------------------------------------
def trial_that_raises_for_one_config(config, data=None, extractor=None):
    if config.get("lr_d") == 0.0123:
        raise ValueError("the trainer broke on purpose")
    from ganlib.tune import train_gan as real  # the workers' own, unpatched module

    real(config, data, extractor)


def test_diverged_and_raising_trials_are_told_and_the_sweep_completes(local_ray, tmp_path, monkeypatch):
    import ray

    import ganlib.tune
    from ganlib.settings import SweepSettings
    from ganlib.sweep import run_sweep

    space = {"name": "faults", "fixed": {"loss": "wgan_gp", "optimizer": "sgd"},
             "params": {"lr_d": {"type": "loguniform", "low": 1e-4, "high": 10.0},
                        "lr_g": {"type": "loguniform", "low": 1e-4, "high": 10.0}},
             "start": [{"lr_d": 1e-3, "lr_g": 1e-3}, {"lr_d": 10.0, "lr_g": 10.0}, {"lr_d": 0.0123, "lr_g": 1e-3}]}
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(space))
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(ganlib.tune, "train_gan", trial_that_raises_for_one_config)
    try:
        settings = SweepSettings(space=str(path), preset="smoke", num_trials=3, max_concurrent=1, scheduler="none",
                                 max_failures=0, name="faults", tracking_uri=f"sqlite:///{tmp_path}/m.db",
                                 storage_path=str(tmp_path / "ray"), device="cpu")
        summary = run_sweep(settings)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert summary["by_status"] == {"completed": 1, "diverged": 1, "error": 1}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    runs = {r.data.params.get("lr_d"): r for r in client.search_runs(
        [client.get_experiment_by_name(settings.experiment).experiment_id]) if r.data.tags.get("stage")}
    assert runs["10.0"].data.tags["status"] == "diverged" and "non-finite" in runs["10.0"].data.tags["reason"]
    assert runs["0.0123"].data.tags["status"] == "error"
    assert "ValueError: the trainer broke on purpose" in runs["0.0123"].data.tags["reason"]
    assert runs["0.0123"].info.status == "FAILED"
    told = {round(t["lr_d"], 4): t for t in json.loads(Path(client.download_artifacts(
        summary["parent_run_id"], "report/optuna_trials.json")).read_text())}
    assert told[10.0]["state"] == "COMPLETE" and told[10.0]["value"] > 1000  # the penalty
    assert told[0.0123]["state"] == "FAIL"


# -- a killed driver --------------------------------------------------------------------------------
def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path):
    before = set(sweep_processes())
    proc = subprocess.Popen(sweep_argv(tmp_path, "killed", "--steps", "4000", "--eval-every", "100",
                                       "--num-trials", "2", "--scheduler", "none"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: results_logged(tmp_path, "killed") >= 2, 180, "the first results")
        mine = set(sweep_processes()) - before
        assert len(mine) >= 4  # GCS, raylet, agents, trial workers: all carry the token
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not (set(sweep_processes()) - before), 30, "the private cluster's processes to end")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_two_resumes_of_one_sweep_started_together_drive_it_once(tmp_path):
    """Both check the parent run's driver record before either writes its own (that happens
    once Ray has started): without the claim on the sweep both pass and run its trials twice.
    With it, one resumes the sweep and the other is refused before it starts anything."""
    flags = ["--num-trials", "1", "--steps", "20", "--eval-every", "10", "--confirm-top", "0"]
    first = subprocess.run(sweep_argv(tmp_path, "twice", *flags), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    client, [parent], _ = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "twice")
    client.set_tag(parent.info.run_id, "sweep_state", "interrupted")  # as a Ctrl-C leaves it
    client.set_terminated(parent.info.run_id, "KILLED")
    procs = [subprocess.Popen(sweep_argv(tmp_path, "twice", *flags, "--resume"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert sorted(proc.returncode for proc in procs) == [0, 2], errors
    refused = errors[[proc.returncode for proc in procs].index(2)]
    # the claim refuses it; the driver record only if the other had already written it
    assert ("is being driven by another process on this machine" in refused
            or "'twice' is still running: its driver" in refused), refused
    assert refused.count("\n") == 1 and "Traceback" not in refused
    client, [parent], _ = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "twice")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_state"] == "finished"


def test_a_private_ray_closed_beside_the_report_leaves_no_process_behind():
    """The sweep writes its report while its private Ray shuts down (Cluster.close_in_background):
    the call returns at once, close() waits for the end, and by then every process of the cluster
    is gone, while the driver still runs (so not the reaper's cleanup at the driver's exit)."""
    driver = textwrap.dedent("""
        import sys, time
        from ganlib.cluster import connect
        from ganlib.settings import SweepSettings
        cluster = connect(SweepSettings(space="wgan_clip"))
        started = time.perf_counter()
        cluster.close_in_background()
        returned = time.perf_counter() - started
        cluster.close()
        print(f"{returned:.3f} {time.perf_counter() - started:.3f}", flush=True)
        sys.stdin.readline()  # stay alive until the test has looked
    """)
    before = set(sweep_processes())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", driver], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=REPO, env=env)
    try:
        returned, closed = map(float, proc.stdout.readline().split())
        assert returned < 0.5 < closed  # the shutdown ran on its thread, and close() waited for it
        assert not set(sweep_processes()) - before  # no GCS, raylet or worker left, the driver alive
        assert proc.poll() is None
    finally:
        proc.stdin.close()
        proc.wait(30)


def test_a_run_a_killed_driver_left_open_is_closed_by_the_resumed_sweep(tmp_path):
    """The driver is killed after Tune saved a trial as TERMINATED but before the tracking thread
    closed its run (the end is queued, not sent): the resumed sweep never sees that trial end
    again, so it closes the run itself, with the trial's verdict; runs already closed stay as they
    are. (The CI once caught a resumed report with a completed trial still 'running'.)"""
    import pickle

    from mlflow.tracking import MlflowClient
    from ray.tune.experiment import Trial

    from ganlib.tracking import SweepLogger

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("killed-driver")
    parent = client.create_run(experiment_id).info.run_id
    first = SweepLogger(uri, experiment_id, parent, steps=300, searched=("clip",), tags={}, log_hparams=False)
    first.setup()
    left_open, closed = (Trial("train_gan", config={"clip": c}, stub=True) for c in (0.01, 0.02))
    for trial in (left_open, closed):
        trial.set_status(Trial.RUNNING)
        first.on_trial_start(0, [], trial)
        for step in (100, 200, 300):
            trial.update_last_result({"step": step, "w1": 1.0 / step, "objective": 1.0 / step})
            first.on_trial_result(0, [], trial, dict(trial.last_result))
        trial.set_status(Trial.TERMINATED)
    first.on_trial_complete(0, [], closed)
    assert first.close() == []  # the results and the closed trial's end were delivered...
    saved = first.get_state()  # ...and Tune saved the experiment, left_open TERMINATED, before the kill

    resumed = pickle.loads(pickle.dumps(first))  # Tune restores the pickled callback
    resumed.set_state(saved)
    resumed.setup()
    closed_end = client.get_run(first.runs[closed.trial_id]).info.end_time
    resumed.on_experiment_end([left_open, closed])
    assert resumed.close() == []
    runs = {t.trial_id: client.get_run(first.runs[t.trial_id]) for t in (left_open, closed)}
    assert runs[left_open.trial_id].info.status == "FINISHED"
    assert runs[left_open.trial_id].data.tags["status"] == "completed"
    assert runs[closed.trial_id].info.end_time == closed_end  # not ended twice
    assert runs[closed.trial_id].data.tags["status"] == "completed"
    assert resumed.verdicts[left_open.trial_id] == ("completed", "")


def _cohort_of_two(tmp_path):
    """A SQLite store with a sweep's parent run, and a running cohort trial of two members (one of
    Tune's own Trial objects, as the logger's hooks get it)."""
    from mlflow.tracking import MlflowClient
    from ray.tune.experiment import Trial

    from ganlib.cohort import MEMBERS_KEY

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("cohort")
    parent = client.create_run(experiment_id).info.run_id
    trial = Trial("train_cohort_trial", stub=True, config={
        "steps": 300, MEMBERS_KEY: [{"loss": "wgan", "clip": 0.01}, {"loss": "wgan", "clip": 0.02}]})
    trial.set_status(Trial.RUNNING)
    return client, uri, experiment_id, parent, trial


def test_a_cohort_restarted_in_a_new_driver_leaves_its_stopped_members_runs_as_they_ended(tmp_path):
    """A member stopped at a rung, then its cohort restarted by a resumed sweep: the member's
    last metrics repeat in every result of the cohort, and its run must stay ended (not be marked
    running again), while the other member's run continues."""
    import pickle

    from ray.tune.experiment import Trial

    from ganlib.cohort import member_id
    from ganlib.tracking import SweepLogger

    client, uri, experiment_id, parent, trial = _cohort_of_two(tmp_path)

    def result(step: int, stopped_at: int) -> dict:
        live = {"step": step, "objective": 1.0 / step, "status": "ok", "ended": step == 300}
        stopped = {"step": stopped_at, "objective": 2.0, "status": "ok", "ended": step >= stopped_at}
        return {"step": step, "objective": 1.0 / step, "members": {"0": live, "1": stopped if step >= stopped_at
                                                                    else dict(stopped, step=step, ended=False)}}

    first = SweepLogger(uri, experiment_id, parent, steps=300, searched=("clip",), tags={}, log_hparams=False)
    first.setup()
    first.on_trial_start(0, [], trial)
    for step in (100, 200):
        first.on_trial_result(0, [], trial, result(step, stopped_at=100))
    assert first.close() == []
    saved = first.get_state()  # the driver is killed here; the cohort restarts in the resumed sweep

    resumed = pickle.loads(pickle.dumps(first))
    resumed.set_state(saved)
    resumed.setup()
    resumed.on_trial_start(0, [], trial)
    for step in (200, 300):  # 200 again: restarted from the checkpoint of step 100
        trial.update_last_result(result(step, stopped_at=100))
        resumed.on_trial_result(0, [], trial, result(step, stopped_at=100))
    trial.set_status(Trial.TERMINATED)
    resumed.on_trial_complete(0, [], trial)
    assert resumed.close() == []
    runs = {k: client.get_run(first.runs[member_id(trial.trial_id, k)]) for k in (0, 1)}
    assert runs[1].data.tags["status"] == "stopped_early" and runs[1].info.status == "FINISHED"
    assert runs[0].data.tags["status"] == "completed" and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["cohort"] == trial.trial_id and runs[1].data.tags["cohort_member"] == "1"
    for k, steps in ((0, [100, 200, 300]), (1, [100])):
        assert [m.step for m in client.get_metric_history(runs[k].info.run_id, "objective")] == steps


def test_a_cohort_whose_driver_was_killed_before_its_artifacts_gets_them_in_the_resumed_sweep(tmp_path):
    """The driver ended a cohort's member runs (from its results) and was killed before the
    tracking thread logged their artifacts: the resumed sweep, meeting the cohort ended in that
    session, logs the artifacts from the cohort's last checkpoint to each member's run."""
    import torch
    from ray import tune
    from ray.train._internal.session import _TrainingResult
    from ray.tune.experiment import Trial

    from ganlib.cohort import MEMBERS_KEY, member_id
    from ganlib.cohort_run import train_cohort
    from ganlib.tracking import SweepLogger
    from ganlib.tune import CHECKPOINT_FILE

    client, uri, experiment_id, parent, trial = _cohort_of_two(tmp_path)
    members = [dict(m, model="mlp", width=16, steps=20, eval_every=10, score_every=10, eval_samples=128, device="cpu")
               for m in trial.config[MEMBERS_KEY]]
    results, states = [], []
    train_cohort(members, lambda latest, state: (results.append(latest), states.append(state)))
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save(states[-1], folder / CHECKPOINT_FILE)
    first = SweepLogger(uri, experiment_id, parent, steps=20, searched=("clip",), tags={}, log_hparams=False)
    first.setup()
    first.on_trial_start(0, [], trial)
    for latest in results:  # the last result ends both members, and with them their runs
        result = {"step": max(m["step"] for m in latest.values()), "members": {str(k): m for k, m in latest.items()}}
        trial.update_last_result(result)
        first.on_trial_result(0, [], trial, result)
    assert first.close() == []  # killed here: on_trial_complete (and the artifacts) never came
    runs = [first.runs[member_id(trial.trial_id, k)] for k in (0, 1)]
    assert [client.get_run(r).info.status for r in runs] == ["FINISHED"] * 2
    assert all(not client.list_artifacts(r) for r in runs)

    trial.run_metadata.checkpoint_manager.register_checkpoint(
        _TrainingResult(checkpoint=tune.Checkpoint.from_directory(str(folder)), metrics={}))
    trial.set_status(Trial.TERMINATED)
    resumed = SweepLogger(uri, experiment_id, parent, steps=20, searched=("clip",), tags={}, log_hparams=False)
    resumed.set_state(first.get_state())
    resumed.setup()
    resumed.on_experiment_end([trial])  # Tune restored the cohort as ended: no hook but this one
    assert resumed.close() == []
    for r in runs:
        assert {a.path for a in client.list_artifacts(r, "checkpoint")} >= {"checkpoint/generator_last.pt"}
        assert client.get_run(r).info.status == "FINISHED"
    again = SweepLogger(uri, experiment_id, parent, steps=20, searched=("clip",), tags={}, log_hparams=False)
    again.setup()
    logged = [len(client.list_artifacts(r, "checkpoint")) for r in runs]
    again.on_experiment_end([trial])  # a second resume: nothing logged twice
    assert again.close() == [] and [len(client.list_artifacts(r, "checkpoint")) for r in runs] == logged


def test_a_run_created_before_an_outage_cut_off_its_params_gets_them_on_the_retry(tmp_path):
    """The tracking thread retries a call an outage failed, whole: a run created before the
    outage hit its params is found by the retry, which must log the params it never got."""
    from ray.tune.experiment import Trial

    from ganlib.tracking import SweepLogger

    client, uri, experiment_id, parent, _ = _cohort_of_two(tmp_path)
    trial = Trial("train_gan_trial", stub=True, config={"loss": "wgan", "clip": 0.02, "steps": 300})
    logger = SweepLogger(uri, experiment_id, parent, steps=300, searched=("clip",), tags={}, log_hparams=False)

    class Outage:  # the server goes away after create_run, before log_batch
        def __getattr__(self, name):
            if name == "log_batch":
                raise ConnectionError("tracking server unreachable")
            return getattr(client, name)

    with pytest.raises(ConnectionError):
        logger._log_result(Outage(), trial.trial_id, dict(trial.config), {"w1": 0.5}, 100)
    logger._log_result(client, trial.trial_id, dict(trial.config), {"w1": 0.5}, 100)  # the retry
    [run] = [r for r in client.search_runs([experiment_id]) if r.info.run_id != parent]
    assert run.data.params["clip"] == "0.02" and run.data.params["loss"] == "wasserstein"  # resolved
    assert [m.step for m in client.get_metric_history(run.info.run_id, "w1")] == [100]


def test_results_a_killed_driver_never_delivered_are_logged_from_tunes_results_by_the_resumed_sweep(tmp_path):
    """The driver logged steps 10 and 20 and was killed with 30 and 40 still queued for MLflow
    (Tune's result.json has them; the trial, continued from a checkpoint, does not report them
    again). The resumed sweep's logger logs what each run lacks, once, for a trial and for the
    members of a cohort; a line the kill cut short is skipped."""
    import json

    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from ganlib.cohort import MEMBERS_KEY, member_id
    from ganlib.tracking import SweepLogger

    client, uri, experiment_id, parent, _ = _cohort_of_two(tmp_path)

    def trial_with_results(name, config, results):
        storage = StorageContext(storage_path=str(tmp_path / "ray"), experiment_dir_name="sweep", trial_dir_name=name)
        trial = Trial("train", stub=True, config=config, trial_id=name, storage=storage)
        (tmp_path / "ray" / "sweep" / name).mkdir(parents=True)
        lines = [json.dumps(r) for r in results] + ['{"step": 50, "w1": 0.']  # the kill's cut
        (tmp_path / "ray" / "sweep" / name / "result.json").write_text("\n".join(lines))
        trial.set_status(Trial.RUNNING)
        return trial

    solo = trial_with_results("solo", {"loss": "wgan", "clip": 0.01},
                              [{"step": s, "w1": 1.0 / s, "status": "ok"} for s in (10, 20, 30, 40)])

    def member(s, k):
        return {"step": min(s, 20) if k else s, "w1": 2.0 / s, "status": "ok", "ended": bool(k) and s >= 20}
    members = [{"loss": "wgan", "clip": 0.01}, {"loss": "wgan", "clip": 0.1}]
    cohort = trial_with_results("cohort", {MEMBERS_KEY: members}, [
        {"step": s, "members": {str(k): member(s, k) for k in (0, 1)}} for s in (10, 20, 30, 40)])
    first = SweepLogger(uri, experiment_id, parent, steps=40, searched=("clip",), tags={}, log_hparams=False)
    first.setup()
    for trial, results in ((solo, [{"step": 10, "w1": 0.1}, {"step": 20, "w1": 0.05}]),
                           (cohort, [{"step": s, "members": {str(k): member(s, k) for k in (0, 1)}} for s in (10,)])):
        first.on_trial_start(0, [], trial)
        for result in results:
            first.on_trial_result(0, [], trial, result)
    assert first.close() == []  # killed: the rest never reached MLflow
    saved = first.get_state()

    for trial in (solo, cohort):
        trial.set_status(Trial.TERMINATED)  # they finished while the tracking thread lagged
    resumed = SweepLogger(uri, experiment_id, parent, steps=40, searched=("clip",), tags={}, log_hparams=False)
    resumed.set_state(saved)
    resumed.setup()
    resumed.on_experiment_end([solo, cohort])
    assert resumed.close() == []
    history = {name: [(m.step, m.value) for m in client.get_metric_history(first.runs[name], "w1")]
               for name in ("solo", member_id("cohort", 0), member_id("cohort", 1))}
    assert history["solo"] == [(10, 0.1), (20, 0.05), (30, 1 / 30), (40, 1 / 40)]  # logged ones kept as logged
    assert history[member_id("cohort", 0)] == [(s, 2.0 / s) for s in (10, 20, 30, 40)]
    assert history[member_id("cohort", 1)] == [(10, 0.2), (20, 0.1)]  # ended at 20: repeats not logged
    again = SweepLogger(uri, experiment_id, parent, steps=40, searched=("clip",), tags={}, log_hparams=False)
    again.set_state(saved)
    again.setup()
    again.on_experiment_end([solo, cohort])  # another resume: nothing twice
    assert again.close() == []
    assert len(client.get_metric_history(first.runs["solo"], "w1")) == 4


def test_ctrl_c_marks_a_cohorts_live_members_interrupted_and_its_stopped_ones_stay_as_they_ended(tmp_path):
    """After Ctrl-C Tune stops trials without telling callbacks: at the experiment's end the live
    members of a cohort are interrupted (KILLED), a member that had stopped keeps its verdict."""
    from ray.tune.experiment import Trial

    from ganlib.cohort import member_id
    from ganlib.tracking import SweepLogger

    client, uri, experiment_id, parent, trial = _cohort_of_two(tmp_path)
    logger = SweepLogger(uri, experiment_id, parent, steps=300, searched=("clip",), tags={}, log_hparams=False)
    logger.setup()
    logger.on_trial_start(0, [], trial)
    result = {"step": 100, "objective": 1.0, "members": {
        "0": {"step": 100, "objective": 1.0, "status": "ok", "ended": False},
        "1": {"step": 100, "objective": 9.0, "status": "collapsed", "reason": "few modes", "ended": True}}}
    trial.update_last_result(result)
    logger.on_trial_result(0, [], trial, result)
    trial.set_status(Trial.TERMINATED)  # what Ctrl-C leaves: no on_trial_complete
    logger.on_experiment_end([trial])
    assert logger.close() == []
    runs = {k: client.get_run(logger.runs[member_id(trial.trial_id, k)]) for k in (0, 1)}
    assert runs[0].info.status == "KILLED" and runs[0].data.tags["status"] == "interrupted"
    assert runs[1].info.status == "FINISHED" and runs[1].data.tags["status"] == "collapsed"
    assert logger.verdicts[member_id(trial.trial_id, 0)][0] == "interrupted"


def test_a_member_whose_evaluation_raised_is_an_errored_trial_to_mlflow_and_the_report(tmp_path):
    """A member that ended with status ``error`` (its own evaluation raised, cohort_run): its run
    is FAILED with the exception as its reason, the report counts it as an errored trial, and
    its cohort's other member completes as usual."""
    from ray.tune.experiment import Trial

    from ganlib.cohort import member_id
    from ganlib.report import member_results, trial_id_of_result
    from ganlib.tracking import SweepLogger, trial_status

    client, uri, experiment_id, parent, trial = _cohort_of_two(tmp_path)
    logger = SweepLogger(uri, experiment_id, parent, steps=300, searched=("clip",), tags={}, log_hparams=False)
    logger.setup()
    logger.on_trial_start(0, [], trial)
    failed = {"step": 100, "objective": 1e3, "status": "error", "ended": True,
              "reason": "evaluating this member raised ConvergenceError: no convergence"}
    for step in (100, 300):
        result = {"step": step, "objective": 0.5, "members": {
            "0": {"step": step, "objective": 0.5, "status": "ok", "ended": step == 300}, "1": failed}}
        trial.update_last_result(result)
        logger.on_trial_result(0, [], trial, result)
    trial.set_status(Trial.TERMINATED)
    logger.on_trial_complete(0, [], trial)
    assert logger.close() == []
    runs = {k: client.get_run(logger.runs[member_id(trial.trial_id, k)]) for k in (0, 1)}
    assert runs[1].info.status == "FAILED" and runs[1].data.tags["status"] == "error"
    assert "ConvergenceError: no convergence" in runs[1].data.tags["reason"]
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["status"] == "completed"

    class Result:  # what Tune's ResultGrid holds for the cohort trial
        metrics, config, error, path = dict(result, trial_id=trial.trial_id), trial.config, None, "/x/t"

    members = {trial_id_of_result(r): r for r in member_results([Result()])}
    errored = members[member_id(trial.trial_id, 1)]
    assert "ConvergenceError" in errored.error and members[member_id(trial.trial_id, 0)].error is None
    assert trial_status(errored.metrics, 300, errored.error is not None) == ("error", failed["reason"])


def _report(tmp_path: Path, name: str) -> dict:
    """What the report says, in terms that do not depend on the run (trial ids are random)."""
    client, [parent], children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", name)
    assert len(children) == len({c.data.tags["ray_trial_id"] for c in children})  # one child run per trial
    assert_one_value_per_step(client, children)
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "report/summary.json")).read_text())
    ids = {c.data.tags["ray_trial_id"]: (c.data.params["clip"], c.data.params["n_critic"]) for c in children}
    statuses = sorted((ids[c.data.tags["ray_trial_id"]], c.data.tags["status"]) for c in children)
    best = summary["best"]
    return {"statuses": statuses, "best": (ids[best["trial_id"]], round(best["score"], 6)),
            "parent": parent.info.run_id, "state": parent.data.tags["sweep_state"], "children": len(children)}


@pytest.mark.slow
def test_a_sweep_killed_three_times_resumes_to_the_uninterrupted_report(tmp_path):
    flags = ["--num-trials", "6", "--steps", "300", "--eval-every", "20", "--max-concurrent", "1", "--seed", "3"]
    reference = subprocess.run(sweep_argv(tmp_path, "reference", *flags), capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = _report(tmp_path, "reference")
    first_parent = None
    total = results_logged(tmp_path, "reference")
    for i, fraction in enumerate((0.2, 0.5, 0.8)):
        argv = sweep_argv(tmp_path, "cut", *flags, *(["--resume"] if i else []))
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda f=fraction: results_logged(tmp_path, "cut") >= f * total, 600, f"{fraction:.0%} of the results")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not sweep_processes(), 30, "the killed driver's Ray processes to end")
        _, parents, _ = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "cut")
        first_parent = first_parent or parents[0].info.run_id
    final = subprocess.run(sweep_argv(tmp_path, "cut", *flags, "--resume"), capture_output=True, text=True,
                           timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    resumed = _report(tmp_path, "cut")
    assert resumed["parent"] == first_parent and resumed["state"] == "finished"
    assert {k: resumed[k] for k in ("statuses", "best", "children")} == \
        {k: expected[k] for k in ("statuses", "best", "children")}
    # every result Tune saved is in MLflow, those the killed drivers never delivered included
    client, _, children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "cut")
    for child in children:
        [results] = (tmp_path / "ray" / "cut").glob(f"*{child.data.tags['ray_trial_id']}*/result.json")
        saved = {json.loads(line)["step"] for line in results.read_text().splitlines() if line.endswith("}")}
        logged = {m.step for m in client.get_metric_history(child.info.run_id, "objective")}
        assert saved <= logged, (child.info.run_name, sorted(saved - logged))
    again = subprocess.run(sweep_argv(tmp_path, "cut", *flags, "--resume"), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "finished: nothing to resume" in again.stderr


@pytest.mark.slow
def test_a_killed_cohort_sweep_resumes_every_member_to_the_uninterrupted_report(tmp_path):
    """Cohorts of 3 (``--cohort 3``): the driver is killed half-way; the resumed sweep restores
    each cohort from its checkpoint (the whole stack), the members' rung decisions and Optuna
    record from the saved state, and ends with the uninterrupted sweep's statuses and best."""
    flags = ["--num-trials", "6", "--cohort", "3", "--steps", "300", "--eval-every", "20", "--max-concurrent", "1",
             "--seed", "3"]
    reference = subprocess.run(sweep_argv(tmp_path, "reference", *flags), capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = _report(tmp_path, "reference")
    total = results_logged(tmp_path, "reference")
    proc = subprocess.Popen(sweep_argv(tmp_path, "cut", *flags), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: results_logged(tmp_path, "cut") >= 0.5 * total, 600, "half of the results")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not sweep_processes(), 30, "the killed driver's Ray processes to end")
    final = subprocess.run(sweep_argv(tmp_path, "cut", *flags, "--resume"), capture_output=True, text=True,
                           timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    resumed = _report(tmp_path, "cut")
    assert resumed["state"] == "finished" and expected["children"] == 6
    assert {k: resumed[k] for k in ("statuses", "best", "children")} == \
        {k: expected[k] for k in ("statuses", "best", "children")}


@pytest.mark.slow
@pytest.mark.parametrize("cohort", [1, 3])
def test_a_sweep_killed_in_its_confirmation_resumes_to_the_uninterrupted_confirmation(tmp_path, cohort):
    """The driver is killed while the confirmation stage trains (2 candidates x 2 seeds: 4 trials,
    or with ``--cohort 3`` 2 cohorts of 2); the resumed sweep restores its trials from their
    checkpoints and confirms the same candidates with the same per-seed scores, one child run
    per confirmation run."""
    flags = ["--num-trials", "6", "--cohort", str(cohort), "--steps", "300", "--eval-every", "20",
             "--max-concurrent", "1", "--seed", "3", "--confirm-top", "2", "--confirm-seeds", "2"]
    trial_tag = "cohort" if cohort > 1 else "ray_trial_id"  # the Tune trial a confirmation run trained in

    def confirmation(name: str) -> dict:
        client, [parent], children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", name)
        runs = [c for c in children if c.data.tags["stage"] == "confirm"]
        assert len(runs) == len({c.data.tags["ray_trial_id"] for c in runs}) == 4
        assert {c.data.tags["status"] for c in runs} == {"completed"}
        assert len({c.data.tags[trial_tag] for c in runs}) == (2 if cohort > 1 else 4)
        assert_one_value_per_step(client, runs)
        summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "report/summary.json")).read_text())
        params = {c.data.tags["ray_trial_id"]: (c.data.params["clip"], c.data.params["lr_d"]) for c in children}
        return {params[t["trial_id"]]: sorted(round(v, 6) for v in t["scores"])
                for t in summary["confirmation"]["table"]}

    reference = subprocess.run(sweep_argv(tmp_path, "reference", *flags), capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = confirmation("reference")
    total = results_logged(tmp_path, "reference-confirm")
    proc = subprocess.Popen(sweep_argv(tmp_path, "cut", *flags), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: results_logged(tmp_path, "cut-confirm") >= 0.5 * total, 600, "half of the confirmation", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not sweep_processes(), 30, "the killed driver's Ray processes to end")
    folders = (tmp_path / "ray" / "cut-confirm").glob("*/result.json")
    trials_before = {p.parent.name.removeprefix("trial_") for p in folders}
    final = subprocess.run(sweep_argv(tmp_path, "cut", *flags, "--resume"), capture_output=True, text=True,
                           timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert len(expected) == 2 and confirmation("cut") == expected
    _, _, children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "cut")
    restored = {c.data.tags[trial_tag] for c in children if c.data.tags["stage"] == "confirm"}
    assert restored & trials_before  # the stage was restored (its trials continued), not started again


# -- asking for what the cluster lacks ----------------------------------------------------------------
def test_a_joined_cluster_without_a_node_for_one_trial_is_warned_of_at_the_start(tmp_path):
    """Tune leaves trials no node can place PENDING, warning only after 60 s amid its output;
    whether an autoscaler will add a node that fits, the driver cannot tell. So the sweep says at
    the start what is missing, before Tune runs. A head of 1 CPU, trials of 2."""
    from servers import ray_head

    from ganlib.cluster import no_node_fits

    log = tmp_path / "sweep.log"
    with ray_head(tmp_path, num_cpus=1) as (_, _, ray_env):
        proc = subprocess.Popen(sweep_argv(tmp_path, "unplaceable", "--num-trials", "1", "--cpus-per-trial", "2"),
                                stdout=subprocess.DEVNULL, stderr=log.open("w"), env=ray_env)
        try:
            wait_for(lambda: "warning: no node" in log.read_text(), 180, "the warning", proc)
        finally:
            proc.send_signal(signal.SIGINT)  # the trial would wait for ever
            proc.wait(timeout=120)
    [warning] = [line for line in log.read_text().splitlines() if line.startswith("warning: no node")]
    assert warning.startswith("warning: no node of the cluster has the 2 CPUs and 0 GPUs of one trial")
    assert "the most any of its 1 nodes has is 1 CPUs and 0 GPUs" in warning
    # one bundle per trial: two nodes of 2 CPUs do not place a 3-CPU trial; dead nodes offer nothing
    two = [{"Alive": True, "Resources": {"CPU": 2.0}}] * 2
    assert no_node_fits(3, 0, two) and no_node_fits(2, 0, two) is None
    assert no_node_fits(1, 1, [*two, {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}])
    assert no_node_fits(1, 0.5, [*two, {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}}]) is None


# -- killed trial workers ---------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_trial_workers_restart_from_checkpoints_and_continue_their_runs(tmp_path):
    from servers import BIN, ray_head

    def alive_trial_actors(dashboard: str, env: dict) -> list[dict]:
        """Ray's state API, through its CLI (the token setting is read when Ray is imported)."""
        proc = subprocess.run([str(BIN / "ray"), "list", "actors", "--detail", "--filter", "state=ALIVE",
                               "--format", "json", "--address", dashboard], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        actors = [] if proc.stdout.startswith("No resource") else json.loads(proc.stdout)
        return [a for a in actors if "ImplicitFunc" in (a.get("class_name") or "")]

    with ray_head(tmp_path) as (dashboard, _, env):
        argv = sweep_argv(tmp_path, "workers", "--num-trials", "4", "--steps", "3000", "--eval-every", "50",
                          "--scheduler", "none", "--no-collapse-stop", "--max-failures", "5",
                          "--ray-address", env["RAY_ADDRESS"])
        log = tmp_path / "sweep.log"  # a pipe nobody reads would fill up and block the sweep
        proc = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        rng, kills = random.Random(0), []
        wait_for(lambda: results_logged(tmp_path, "workers") >= 2, 240, "the first results", proc)
        while len(kills) < 5 and proc.poll() is None:
            time.sleep(rng.uniform(1.5, 4.0))
            actors = alive_trial_actors(dashboard, env)
            if actors:
                victim = rng.choice(actors)["pid"]
                os.kill(victim, signal.SIGKILL)
                kills.append(victim)
        proc.wait(timeout=900)
        assert proc.returncode == 0, log.read_text()[-4000:]
    assert len(kills) == 5
    client, [parent], children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "workers")
    assert len(children) == 4 and "error" not in {c.data.tags["status"] for c in children}
    assert_one_value_per_step(client, children)
    for child in children:  # every run reaches the budget with every evaluation step, once
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss_d"))
        assert steps == list(range(50, 3001, 50))
    # some steps after a checkpoint were trained again, and not logged again (Tune's own result.json
    # cannot show it: a restart replaces it with the copy last synced to storage)
    assert sum(int(c.data.tags.get("replayed_results", 0)) for c in children) >= 1


# -- the tracking server goes away --------------------------------------------------------------------
@pytest.mark.slow
def test_a_tracking_server_outage_of_60_s_loses_nothing(tmp_path):
    from servers import mlflow_server, run_script

    with mlflow_server(tmp_path) as (uri, _, env):
        argv = sweep_argv(tmp_path, "outage", "--num-trials", "3", "--steps", "3000", "--eval-every", "50",
                          "--scheduler", "none", "--no-collapse-stop", "--max-concurrent", "1", tracking=uri)
        log = tmp_path / "sweep.log"
        proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
        wait_for(lambda: results_logged(tmp_path, "outage") >= 5, 240, "the first results", proc)
        run_script("mlflow-server.sh", "stop", env)
        during = results_logged(tmp_path, "outage")
        time.sleep(60)
        grew = results_logged(tmp_path, "outage") - during
        run_script("mlflow-server.sh", "start", env)
        proc.wait(timeout=900)
        output = log.read_text()
        assert proc.returncode == 0, output[-4000:]
        assert grew > 5  # trials kept training through the outage
        client, [parent], children = sweep_runs(uri, "outage")
        assert parent.data.tags["sweep_state"] == "finished" and len(children) == 3
        for child in children:  # every evaluation arrived, once, and the end-of-trial artifacts too
            steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss_d"))
            assert steps == list(range(50, 3001, 50)), child.info.run_name
            assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"checkpoint", "samples"}
        assert "could not be delivered" not in output


@pytest.mark.slow
def test_ctrl_c_marks_the_sweep_interrupted_and_resume_finishes_it(tmp_path):
    flags = ["--num-trials", "3", "--steps", "600", "--eval-every", "20", "--max-concurrent", "1",
             "--scheduler", "none"]
    log = tmp_path / "sweep.log"
    proc = subprocess.Popen(sweep_argv(tmp_path, "ctrl-c", *flags), stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_for(lambda: results_logged(tmp_path, "ctrl-c") >= 5, 240, "the first results", proc)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(120) == 130, log.read_text()[-3000:]
    assert "--resume --name ctrl-c" in log.read_text()
    client, [parent], children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "ctrl-c")
    assert parent.info.status == "KILLED" and parent.data.tags["sweep_state"] == "interrupted"
    statuses = {c.data.tags["status"] for c in children}
    assert "interrupted" in statuses and "running" not in statuses
    wait_for(lambda: not sweep_processes(), 30, "the private cluster's processes to end")
    resumed = subprocess.run(sweep_argv(tmp_path, "ctrl-c", *flags, "--resume"), capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, [parent], children = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "ctrl-c")
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert "interrupted" not in {c.data.tags["status"] for c in children}
    assert_one_value_per_step(client, children)
