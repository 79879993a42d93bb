"""The sweep report, written to the parent MLflow run under ``report/``:

* ``trials.parquet`` / ``trials.csv``: one row per trial (status and reason, work done, best and
  last scores, metrics at the last evaluation, the searched values);
* ``best_config.json``: the best HEALTHY trial (completed, stopped by a rung, or stalled), ranked
  by its best score; its generator weights at that evaluation are the child run's
  ``checkpoint/generator_best.pt``;
* ``summary.json``: counts by status, work done and saved by stop cause, the schedule, the best;
* ``optuna_trials.json``: what the Optuna sampler was told, read back from the sweep's own saved
  searcher state (so it is the restored sweep's record after ``--resume``);
* plots of the primary metric against each searched hyperparameter, and the learning curves of
  the best trials;
* ``index.html``: all of the above on one self-contained page (``report_page.py``).

Work is counted as it was done: trial seconds, generator steps and critic steps (a generator step
costs n_critic critic steps). What stopping saved is estimated per stopped trial as the work its
remaining steps would have cost at its own measured rate, split by what stopped it: a scheduler's
rung, a collapse or divergence, a stall. Errors and interrupted trials save nothing.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .cohort import MEMBER_ERROR, MEMBERS_KEY, cohort_base, member_id, members_of
from .report_page import render_report_page
from .tracking import find_trial_run, log_bytes, log_metrics, trial_status

REPORT_DIR = "report"
HEALTHY = ("completed", "stopped_early", "stalled")
STOP_CAUSES = {"stopped_early": "scheduler", "collapsed": "collapse", "diverged": "collapse", "stalled": "stall"}
METRIC_COLUMNS = ("w1", "swd", "fid", "kid", "w_critic", "w_critic_corr", "modes", "hq", "diversity",
                  "samples_per_s")


@dataclass
class MemberResult:
    """A cohort member read as the report reads a Tune result."""

    metrics: dict[str, Any]
    config: dict[str, Any]
    error: Any
    path: str
    metrics_dataframe: Any = None


def member_results(results) -> list:
    """Tune's results, each cohort trial replaced by its members: each member's last metrics
    (under its member id), its config (the trial's run settings and its params) and the cohort's
    error. A member's trial seconds are the cohort's, shared by the work (critic + generator
    steps) each member did."""
    out = []
    for result in results:
        config = result.config or {}
        if MEMBERS_KEY not in config:
            out.append(result)
            continue
        last = members_of(result.metrics)
        trial_id = trial_id_of_result(result)
        work = {k: float(m.get("critic_steps", 0)) + float(m.get("step", 0)) for k, m in last.items()}
        seconds = float((result.metrics or {}).get("time_total_s", 0.0))
        base = cohort_base(config)
        for k, member in enumerate(config[MEMBERS_KEY]):
            metrics = {**last.get(k, {}), "trial_id": member_id(trial_id, k),
                       "time_total_s": seconds * work.get(k, 0.0) / (sum(work.values()) or 1.0)}
            failed = result.error or (metrics["reason"] if metrics.get("status") == MEMBER_ERROR else None)
            out.append(MemberResult(metrics, {**base, **member}, failed, result.path))
    return out


def trial_id_of_result(result) -> str:
    from .plan import trial_id_of_dirname

    return (result.metrics or {}).get("trial_id") or trial_id_of_dirname(result.path.rstrip("/").rsplit("/", 1)[-1])


def trial_rows(results, space, verdicts: dict[str, tuple[str, str]], steps: int, primary: str) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = trial_id_of_result(result)
        status, reason = verdicts.get(trial_id) or trial_status(metrics, steps, result.error is not None)
        history = result.metrics_dataframe
        # the evaluator's own record (kept in checkpoints): Tune's result file can lose rows when a
        # trial restarts, as it is replaced by the copy last synced to storage
        best_step = float(metrics["best_step"]) if status in HEALTHY and "best_step" in metrics else math.nan
        steps_run = int(metrics.get("step", 0))
        row = {"trial_id": trial_id, "status": status, "reason": reason, "steps_run": steps_run,
               "critic_steps": int(metrics.get("critic_steps", 0)),
               "trial_seconds": float(metrics.get("time_total_s", 0.0)),
               "objective": float(metrics.get("objective", math.nan)),
               "best_score": float(metrics["objective"]) if status in HEALTHY and "objective" in metrics else math.nan,
               "best_step": best_step, "last_score": float(metrics.get("score", math.nan)),
               f"last_{primary}": _last_value(metrics, history, primary)}
        for name in METRIC_COLUMNS:
            row[name] = float(metrics[name]) if isinstance(metrics.get(name), (int, float)) else math.nan
        config = result.config or {}
        for name in dict.fromkeys(("loss", "constraint", *space.fields)):
            value = config.get(name)
            row[f"config.{name}"] = value if value is None or isinstance(value, (int, float)) else str(value)
        rows.append(row)
    return rows


def _last_value(last: dict[str, Any], history, name: str) -> float:
    """The last result's value, else (``name`` is scored only at some evaluations) the history's last."""
    if isinstance(last.get(name), (int, float)):
        return float(last[name])
    if history is None or name not in history:
        return math.nan
    values = history[name].dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def work_summary(rows: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Work done by stop cause, and what stopping saved (remaining steps at each trial's rate)."""
    done: dict[str, dict[str, float]] = {}
    saved: dict[str, dict[str, float]] = {}
    for r in rows:
        d = done.setdefault(r["status"], {"trials": 0, "seconds": 0.0, "generator_steps": 0, "critic_steps": 0})
        d["trials"] += 1
        d["seconds"] += r["trial_seconds"]
        d["generator_steps"] += r["steps_run"]
        d["critic_steps"] += r["critic_steps"]
        cause = STOP_CAUSES.get(r["status"])
        if cause and 0 < r["steps_run"] < steps:
            remaining = steps - r["steps_run"]
            s = saved.setdefault(cause, {"trials": 0, "seconds": 0.0, "generator_steps": 0, "critic_steps": 0})
            s["trials"] += 1
            s["seconds"] += r["trial_seconds"] / r["steps_run"] * remaining
            s["generator_steps"] += remaining
            s["critic_steps"] += int(round(r["critic_steps"] / r["steps_run"] * remaining))
    total = {k: sum(d[k] for d in done.values()) for k in ("seconds", "generator_steps", "critic_steps")}
    total_saved = {k: sum(s[k] for s in saved.values()) for k in ("seconds", "generator_steps", "critic_steps")}
    fraction = {k: total_saved[k] / (total[k] + total_saved[k]) if total[k] + total_saved[k] else 0.0
                for k in total}
    return {"done": done, "saved": saved, "total_done": total, "total_saved": total_saved,
            "saved_fraction": fraction}


def optuna_record(experiment_path: str) -> list[dict[str, Any]]:
    """What the Optuna sampler was told, from the searcher state the sweep saved last (a restored
    sweep runs the searcher pickled with it, so no object of the resuming process has it)."""
    import tempfile

    import pyarrow.fs as pafs
    from ray.tune.search.optuna import OptunaSearch

    fs, root = pafs.FileSystem.from_uri(experiment_path) if "://" in experiment_path else (
        pafs.LocalFileSystem(), experiment_path)
    try:
        states = [e for e in fs.get_file_info(pafs.FileSelector(root)) if e.base_name.startswith("searcher-state-")]
    except OSError:
        return []
    if not states:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in states:
            pafs.copy_files(entry.path, f"{tmp}/{entry.base_name}", source_filesystem=fs)
        searcher = OptunaSearch()
        searcher.restore_from_dir(tmp)
    study = searcher._ot_study  # noqa: SLF001 - the restored study is what we came for
    if study is None:
        return []
    return [{"number": t.number, "state": t.state.name, "value": t.value, **t.params} for t in study.trials]


def _param_plot(rows, space, name: str, metric: str, confirmation: dict[str, Any] | None = None) -> bytes:
    from .figures import new_figure, png

    fig, ax = new_figure()
    key = f"config.{name}"
    param = space.field_param(name)
    categories = [str(c) for c in param.choices] if param.type == "categorical" else []
    column = f"last_{metric}"
    for status, marker, colour in (("completed", "o", "tab:blue"), ("stopped_early", "o", "0.6"),
                                   ("stalled", "s", "tab:green"), ("collapsed", "x", "tab:red"),
                                   ("diverged", "x", "tab:purple")):
        pts = [(r[key], r[column]) for r in rows
               if r["status"] == status and r.get(key) is not None and math.isfinite(r.get(column, math.nan))]
        if pts:
            xs = [categories.index(str(x)) if categories else x for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts], marker=marker, c=colour, label=status)
    for t in (confirmation or {}).get("table", []):  # the confirmed configurations: mean and 95 % interval
        x = t["config"].get(name)
        if x is None or not math.isfinite(t["mean"]):
            continue
        x = categories.index(str(x)) if categories else x
        err = [[t["mean"] - t["ci_low"]], [t["ci_high"] - t["mean"]]] if math.isfinite(t["ci_low"]) else None
        ax.errorbar([x], [t["mean"]], yerr=err, fmt="D", color="black", capsize=4, markersize=5,
                    label="confirmed (mean, 95% CI)" if t is confirmation["table"][0] else None)
    if categories:
        ax.set_xticks(range(len(categories)), categories)
    elif param.log:
        ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel(f"{metric} at the trial's last evaluation")
    ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return png(fig)


def _curves_plot(curves: dict[str, list[tuple[int, float]]], metric: str) -> bytes:
    """``curves``: trial id -> (step, value) points."""
    from .figures import new_figure, png

    fig, ax = new_figure()
    for trial_id, points in curves.items():
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=trial_id)
    ax.set_xlabel("generator step")
    ax.set_ylabel(metric)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return png(fig)


def logged_curves(client, parent_run_id: str, trial_ids: list[str], metric: str) -> dict[str, list[tuple[int, float]]]:
    """Each trial's ``metric`` by step from its MLflow run (one value per step, whatever restarts
    the trial had; Tune's own result files lose rows on a restart)."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    curves = {}
    for trial_id in trial_ids:
        run_id = find_trial_run(client, experiment_id, parent_run_id, trial_id)
        history = client.get_metric_history(run_id, metric) if run_id else []
        curves[trial_id] = sorted((m.step, m.value) for m in history if math.isfinite(m.value))
    return curves


def _table_bytes(rows: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    columns = {key: [row.get(key) for row in rows] for key in rows[0]}
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    parquet, csv = io.BytesIO(), io.BytesIO()
    pq.write_table(table, parquet)
    pacsv.write_csv(table, csv)
    return parquet.getvalue(), csv.getvalue()


def build_report(results, space, settings, verdicts, primary: str, plan_text: str) -> dict[str, Any]:
    """The summary (a plain dict) and the report's rows; pure, no MLflow."""
    rows = trial_rows(results, space, verdicts, settings.steps, primary)
    by_status = Counter(r["status"] for r in rows)
    summary: dict[str, Any] = {
        "name": settings.name, "trials": len(rows), "primary": primary, "searched": list(space.fields),
        "by_status": {s: by_status[s] for s in ("completed", "stopped_early", "stalled", "collapsed", "diverged",
                                                "error", "interrupted") if by_status[s]},
        "schedule": plan_text, "work": work_summary(rows, settings.steps)}
    healthy = sorted((r for r in rows if r["status"] in HEALTHY and math.isfinite(r["best_score"])),
                     key=lambda r: r["best_score"])
    if healthy:
        best = healthy[0]
        config = next(res.config for res in results if trial_id_of_result(res) == best["trial_id"])
        summary["best"] = {"trial_id": best["trial_id"], "status": best["status"], "score": best["best_score"],
                           "score_of": f"mean {primary} over the last scored evaluations (best reached)",
                           "best_step": best["best_step"], "weights": "checkpoint/generator_best.pt",
                           "config": {k: v for k, v in config.items() if not k.startswith("_")}}
    summary["ranked"] = [r["trial_id"] for r in healthy]
    return {"summary": summary, "rows": rows}


def write_sweep_report(client, parent_run_id: str, built: dict[str, Any], results, space,
                       optuna_trials: list[dict[str, Any]],
                       confirmation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Log the report (``build_report``'s, and the confirmation stage's if it ran) to the parent
    run; returns the summary."""
    summary, rows = built["summary"], built["rows"]
    primary = summary["primary"]
    summary["optuna_trials"] = len(optuna_trials)
    if confirmation:
        summary["confirmation"] = {k: v for k, v in confirmation.items() if k != "runs"}
        # what the report page shows: one row per confirmed configuration, its searched values
        summary["confirmation"]["rows"] = [
            {"trial_id": t["trial_id"], "configuration": {k: t["config"].get(k) for k in space.fields},
             "seeds": t["seeds"], "failed": t["failed"], "mean": t["mean"], "std": t["sd"],
             "interval": [t["ci_low"], t["ci_high"]], f"final_{primary}": t.get(f"final_{primary}_mean")}
            for t in confirmation["table"]]
        log_bytes(client, parent_run_id, json.dumps(confirmation, indent=1, default=str).encode(),
                  f"{REPORT_DIR}/confirmation.json")
        confirm_table = [{"trial_id": t["trial_id"], "seeds": t["seeds"], "failed": t["failed"], "mean": t["mean"],
                          "sd": t["sd"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
                          **{f"config.{k}": t["config"].get(k) for k in space.fields}} for t in confirmation["table"]]
        if confirm_table:
            log_bytes(client, parent_run_id, _table_bytes(confirm_table)[1], f"{REPORT_DIR}/confirmation.csv")
    if optuna_trials:
        log_bytes(client, parent_run_id, json.dumps(optuna_trials, indent=1, default=str).encode(),
                  f"{REPORT_DIR}/optuna_trials.json")
    images: dict[str, bytes] = {}  # report/<name> -> PNG: logged, and embedded in report/index.html
    if rows:
        parquet, csv = _table_bytes(rows)
        log_bytes(client, parent_run_id, parquet, f"{REPORT_DIR}/trials.parquet")
        log_bytes(client, parent_run_id, csv, f"{REPORT_DIR}/trials.csv")
        for name in space.fields:
            images[f"{primary}_vs_{name}.png"] = _param_plot(rows, space, name, primary, confirmation)
    if "best" in summary:
        best = dict(summary["best"])
        if confirmation and "best" in confirmation:
            first = confirmation["table"][0]
            best = {"confirmed": {k: first[k] for k in ("trial_id", "mean", "sd", "ci_low", "ci_high", "seeds",
                                                         "failed", "config")},
                    "distinguishable_from_runner_up": confirmation.get("distinguishable"),
                    "welch_p": confirmation.get("welch_p"), "search_best": best}
        log_bytes(client, parent_run_id, json.dumps(best, indent=2, default=str).encode(),
                  f"{REPORT_DIR}/best_config.json")
        client.set_tag(parent_run_id, "best_trial", summary["best"]["trial_id"])
        images["learning_curves_best.png"] = _curves_plot(
            logged_curves(client, parent_run_id, summary["ranked"][:3], primary), primary)
    for file_name, data in images.items():
        log_bytes(client, parent_run_id, data, f"{REPORT_DIR}/{file_name}")
    work = summary["work"]
    log_metrics(client, parent_run_id, {
        # under the primary metric's own name too: the runs table's w1 / fid column shows the sweep's best
        primary: summary.get("best", {}).get("score", math.nan),
        "best_score": summary.get("best", {}).get("score", math.nan),
        "trials": summary["trials"], **{f"trials_{k}": v for k, v in summary["by_status"].items()},
        "work_seconds": work["total_done"]["seconds"], "work_generator_steps": work["total_done"]["generator_steps"],
        "work_critic_steps": work["total_done"]["critic_steps"],
        "saved_fraction_seconds": work["saved_fraction"]["seconds"],
        "saved_fraction_critic_steps": work["saved_fraction"]["critic_steps"],
        **({f"confirmed_{k}": confirmation["table"][0][k] for k in ("mean", "ci_low", "ci_high")}
           if confirmation and "best" in confirmation else {})}, step=0)
    log_bytes(client, parent_run_id, json.dumps(summary, indent=1, default=str).encode(), f"{REPORT_DIR}/summary.json")
    log_bytes(client, parent_run_id, render_report_page(summary, rows, images).encode(), f"{REPORT_DIR}/index.html")
    summary["report"] = f"{client.get_run(parent_run_id).info.artifact_uri}/{REPORT_DIR}"
    return summary
