"""The default sweep with cohorts against without: ``python sweeps/wgan_clip.py --cohort K`` for
each K given (default 1 and 8), one after the other, same seed, same machine.

    python bench/cohort_sweep.py                       # the default wgan_clip sweep, K = 1 then 8 (~10 min here)
    python bench/cohort_sweep.py --cohorts 1 4 8 -- --preset smoke   # flags after -- go to the sweep

Printed per K: the whole command's wall time, the trials by status, the search's best score,
the confirmed best with its 95 % interval (the confirmation stage trains the top configurations
again on fresh seeds, in cohorts of up to K as the search did), and the two stages' times from
the MLflow runs (search: the sweep run's start to its last search run's end; confirmation: from
there to the sweep run's end). The answers are equally good when the confirmed bests' intervals
overlap.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(k: int, out: Path, extra: list[str]) -> dict:
    name = f"cohort-{k}-{time.strftime('%H%M%S')}"
    argv = [sys.executable, str(REPO / "sweeps" / "wgan_clip.py"), "--cohort", str(k), "--name", name,
            "--tracking-uri", f"sqlite:///{out}/mlflow.db", "--storage-path", str(out / "ray"), *extra]
    started = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"--cohort {k} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("ganlib-wgan_clip")
    [parent] = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.sweep_name = '{name}' and tags.ganlib_role = 'sweep'")
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "report/summary.json")).read_text())
    search_runs = client.search_runs([experiment.experiment_id], max_results=5000, filter_string=(
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.stage = 'search'"))
    search_end = max(r.info.end_time for r in search_runs)
    stages = {"search_s": (search_end - parent.info.start_time) / 1000,
              "confirm_s": (parent.info.end_time - search_end) / 1000}
    return {"k": k, "wall_s": wall, "summary": summary, **stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=Path("bench/results/cohort_sweep"))
    parser.add_argument("sweep_flags", nargs="*", help="after --: flags for sweeps/wgan_clip.py")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run(k, args.out, args.sweep_flags) for k in args.cohorts]
    print(f"{'K':>3} {'wall s':>7} {'search s':>8} {'confirm s':>9} {'trials by status':<42} {'search best':>11}  "
          "confirmed best (95 % interval)")
    for row in rows:
        s = row["summary"]
        by_status = ", ".join(f"{n} {c}" for c, n in s["by_status"].items())
        confirmed = (s.get("confirmation") or {}).get("rows") or []
        first = confirmed[0] if confirmed else None
        text = (f"{first['mean']:.4f} ({first['interval'][0]:.4f} to {first['interval'][1]:.4f})" if first
                else "(no confirmation stage)")
        best = s.get("best", {}).get("score", float("nan"))
        print(f"{row['k']:>3} {row['wall_s']:>7.0f} {row['search_s']:>8.0f} {row['confirm_s']:>9.0f} {by_status:<42} "
              f"{best:>11.4f}  {text}")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
