"""One configuration of a space (by default its first start point: the paper's settings) trained
on the confirmation seeds, exactly as a sweep's confirmation stage trains a candidate, so that
the paper's setting can be set beside the configurations a sweep confirmed.

    python bench/seed_runs.py --space wgan_clip --dataset ring8          # the paper's c = 0.01, n_critic 5
    python bench/seed_runs.py --space wgan_gp_lambda --dataset grid25 --set gp_lambda=1

Same budget, cadence, width and seeds as the `default` preset's confirmation runs (sweep seed +
1,000,000 + j), no stall stop, a final evaluation on 8x eval_samples. Printed per seed: the
robust score (mean primary metric over the last 3 scored evaluations) and the final metric; then
their mean, sd and 95 % t-interval (`ganlib.confirm.interval`, as in the sweep's report).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile

import torch

from ganlib.config import GanConfig
from ganlib.confirm import Candidate, confirmation_configs, interval, seeds_for
from ganlib.preflight import preflight
from ganlib.settings import settings_from_args
from ganlib.train import train


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="wgan_clip")
    parser.add_argument("--dataset", default="ring8")
    parser.add_argument("--start-point", type=int, default=0, help="index into the space's start points")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override config fields")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sweep-seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a sweep trial (Ray gives it one CPU)
    scratch = tempfile.mkdtemp(prefix="seed-runs-")  # the pre-flight checks a store and a storage path
    settings = settings_from_args(["--space", args.space, "--dataset", args.dataset, "--seed", str(args.sweep_seed),
                                   "--tracking-uri", f"sqlite:///{scratch}/mlflow.db", "--storage-path", scratch])
    prepared = preflight(settings)
    space = prepared.space
    point = space.to_config(space.start_points()[args.start_point]) if space.start_points() else {}
    overrides = dict(item.split("=", 1) for item in args.set)
    config = {**prepared.base, **space.fixed, **point, **{k: _value(v) for k, v in overrides.items()},
              "device": "cpu"}
    primary = prepared.primary
    shown = {k: v for k, v in config.items() if k in space.fields or k in overrides}
    print(f"{args.space} on {args.dataset}: {shown}, {config['steps']} steps, primary {primary}")
    # The confirmation stage's own configs (fresh seeds, no stall stop, the larger final evaluation)
    runs = confirmation_configs([Candidate("start", config, math.nan)], seeds_for(args.sweep_seed, args.seeds),
                                prepared.base["eval_samples"], checkpoint_every=config["steps"])
    scores, finals = [], []
    for run in runs:
        seed, last = run["seed"], {}
        train(GanConfig.from_dict(run), report=lambda metrics, _state, last=last: last.update(metrics))
        score, final = float(last.get("score", math.nan)), float(last.get(f"final_{primary}", math.nan))
        extra = "".join(f", {k} {last[k]:.4g}" for k in ("final_modes", "final_hq", "final_rkl") if k in last)
        print(f"seed {seed}: status {last.get('status')}, score {score:.4f}, final_{primary} {final:.4f}{extra}")
        if last.get("status") in ("ok", "stalled"):
            scores.append(score)
            finals.append(final)
    for label, values in (("score", scores), (f"final_{primary}", finals)):
        mean, sd, low, high = interval(values)
        print(f"{label}: mean {mean:.4f}, sd {sd:.4f}, 95% interval {low:.4f} to {high:.4f} over {len(values)} seeds")


if __name__ == "__main__":
    main()
