"""The sweep report on the parent MLflow run: a table of all trials (Parquet and CSV), the
best configuration, plots of the objective against each searched hyperparameter, learning
curves of the best trials, and the compute that pruning saved."""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from typing import Any

from .tracking import log_bytes, log_metrics, trial_status

REPORT_DIR = "report"


def trial_rows(results, space, verdicts: dict[str, tuple[str, str, int]], steps: int) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or result.path.rstrip("/").rsplit("/", 1)[-1]
        status, reason, steps_run = verdicts.get(trial_id) or (*trial_status(metrics, steps, result.error is not None),
                                                                int(metrics.get("step", 0)))
        row = {"trial_id": trial_id, "status": status, "reason": reason, "steps_run": steps_run,
               "objective": metrics.get("objective", math.nan)}
        for name in ("w1", "swd", "fid", "kid", "w_critic", "w_critic_corr", "modes", "hq", "samples_per_s"):
            row[name] = float(metrics[name]) if isinstance(metrics.get(name), (int, float)) else math.nan
        for name in ("loss", *space.searched):
            value = (result.config or {}).get(name)
            row[f"config.{name}"] = None if value is None else value
        rows.append(row)
    return rows


def _table_bytes(rows: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    # Searched values may be numbers in one trial and absent in another: keep columns typed.
    columns = {key: [row.get(key) for row in rows] for key in rows[0]} if rows else {}
    table = pa.table({k: pa.array([str(v) if isinstance(v, str) else v for v in vals]) for k, vals in columns.items()})
    parquet, csv = io.BytesIO(), io.BytesIO()
    pq.write_table(table, parquet)
    pacsv.write_csv(table, csv)
    return parquet.getvalue(), csv.getvalue()


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _param_plot(rows, space, name: str, metric: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    key = f"config.{name}"
    categorical = space.param(name).type == "categorical"
    categories = list(space.param(name).choices) if categorical else []
    for status, marker, colour in (("completed", "o", "tab:blue"), ("stopped_early", "o", "0.6"),
                                   ("collapsed", "x", "tab:red"), ("diverged", "x", "tab:purple")):
        # The metric's own last value, also for collapsed trials (their objective is the penalty).
        pts = [(r[key], r[metric]) for r in rows
               if r["status"] == status and r.get(key) is not None and math.isfinite(r.get(metric, math.nan))]
        if pts:
            xs = [categories.index(x) if categorical else x for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts], marker=marker, c=colour, label=status)
    if categorical:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    elif space.is_log(name):
        ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel(f"{metric} at the trial's last evaluation")
    ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:  # nothing plotted (e.g. no finite value): no legend
        ax.legend(fontsize=7)
    return _figure_png(fig)


def _curves_plot(results, best_ids: list[str], metric: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for result in results:
        df = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id in best_ids and df is not None and metric in df:
            ax.plot(df["step"], df[metric], label=trial_id)
    ax.set_xlabel("generator step")
    ax.set_ylabel(metric)
    if ax.get_legend_handles_labels()[0]:  # nothing plotted (e.g. no finite value): no legend
        ax.legend(fontsize=7)
    return _figure_png(fig)


def write_sweep_report(client, parent_run_id: str, results, space, settings, callback,
                       optuna_trials: list[dict[str, Any]], primary: str) -> dict[str, Any]:
    """``primary`` names the metric behind the objective (w1, swd or fid): the plots show it."""
    rows = trial_rows(results, space, callback.verdicts, settings.steps)
    summary: dict[str, Any] = {"parent_run_id": parent_run_id, "trials": len(rows), "primary": primary,
                               "searched": list(space.searched),
                               "by_status": dict(Counter(r["status"] for r in rows)),
                               "optuna_trials": optuna_trials}
    if optuna_trials:
        log_bytes(client, parent_run_id, json.dumps(optuna_trials, indent=1, default=str).encode(),
                  f"{REPORT_DIR}/optuna_trials.json")
    steps_run = sum(r["steps_run"] for r in rows)
    budget = settings.steps * max(len(rows), 1)
    summary["compute_saved"] = 1 - steps_run / budget
    if rows:
        parquet, csv = _table_bytes(rows)
        log_bytes(client, parent_run_id, parquet, f"{REPORT_DIR}/trials.parquet")
        log_bytes(client, parent_run_id, csv, f"{REPORT_DIR}/trials.csv")
        for name in space.searched:
            log_bytes(client, parent_run_id, _param_plot(rows, space, name, primary),
                      f"{REPORT_DIR}/{primary}_vs_{name}.png")
    ranked = sorted((r for r in rows if r["status"] != "error" and math.isfinite(r["objective"])),
                    key=lambda r: r["objective"])
    if ranked:
        best = ranked[0]
        by_id = {(res.metrics or {}).get("trial_id"): res for res in results}
        config = {k: v for k, v in (by_id[best["trial_id"]].config or {}).items() if not k.startswith("_")}
        summary["best"] = {"trial_id": best["trial_id"], "objective": best["objective"], "config": config}
        log_bytes(client, parent_run_id, json.dumps(summary["best"], indent=2).encode(),
                  f"{REPORT_DIR}/best_config.json")
        client.set_tag(parent_run_id, "best_trial", best["trial_id"])
        log_bytes(client, parent_run_id, _curves_plot(results, [r["trial_id"] for r in ranked[:3]], primary),
                  f"{REPORT_DIR}/learning_curves_best.png")
    log_metrics(client, parent_run_id, {
        "steps_run": steps_run, "steps_budgeted": budget, "compute_saved_fraction": summary["compute_saved"],
        "best_objective": summary.get("best", {}).get("objective", math.nan),
        **{f"trials_{k}": v for k, v in summary["by_status"].items()}}, step=0)
    client.set_terminated(parent_run_id, "FINISHED")
    artifact_uri = client.get_run(parent_run_id).info.artifact_uri
    summary["report"] = f"{artifact_uri}/{REPORT_DIR}"
    return summary
