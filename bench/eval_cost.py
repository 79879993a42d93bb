"""Evaluation cost as a share of a trial's time, at the sweep's default cadence.

    python bench/eval_cost.py                  # every shipped space x ring8, grid25, digits (~15 min)
    python bench/eval_cost.py --steps 1000 --datasets ring8

For each shipped search space, its first start point (the paper's settings) is trained for a
whole `default`-preset trial (2,000 generator steps, the preset's width for the model kind) on
each dataset, evaluating as a sweep trial does: a light evaluation every 100 steps (the critic's
reading, modes, sliced W1, FID features, diversity, the collapse rules) and a scored one every
500 steps, at the ASHA rungs (100, 800) and at the end (exact W1 on 2-D data, KID on images, the
score). Training and evaluation are timed side by side in one process; the share printed is
evaluation time over the trial's total (training + evaluation).
"""

from __future__ import annotations

import argparse
import time

import torch

from ganlib.config import GanConfig
from ganlib.evaluate import Evaluator
from ganlib.rungs import ASHA_REDUCTION, asha_first_rung, asha_rungs
from ganlib.settings import PRESETS
from ganlib.spaces import available, load_space
from ganlib.train import PendingEvaluation
from ganlib.trainer import Trainer

DATASETS = ("ring8", "grid25", "digits")


def trial_config(space_name: str, dataset: str, steps: int, device: str = "cpu") -> dict:
    space, preset = load_space(space_name), PRESETS["default"]
    start = space.to_config(space.start_points()[0])
    model_kind = "dcgan" if dataset == "digits" else "mlp"
    width = preset["width"][model_kind]
    return {**space.fixed, **start, "dataset": dataset, "steps": steps, "eval_every": preset["eval_every"],
            "score_every": preset["score_every"], "eval_samples": preset["eval_samples"], "device": device,
            "checkpoint_steps": asha_rungs(asha_first_rung(steps, preset["eval_every"]), steps, ASHA_REDUCTION),
            **({"width": width} if width else {})}


def measure(config: dict) -> tuple[float, float, int, int]:
    """(training seconds, evaluation seconds, light evaluations, scored evaluations) of one trial.
    The loop is ``ganlib.train.train``'s: with ``eval_overlap`` an evaluation is concluded when
    its metrics are in or at the next evaluation; the time the loop spends on it (copying the
    networks and the trainer's state, waiting) is evaluation."""
    cfg = GanConfig.from_dict(config)
    trainer = Trainer(cfg)
    evaluate = Evaluator(trainer)  # built once per trial, as in a sweep (real statistics cached per process)
    train_s = eval_s = 0.0
    light = scored = 0
    pending = None
    try:
        for step in range(1, cfg.steps + 1):
            start = time.perf_counter()
            stats = trainer.train_step()
            evaluates = not (step % cfg.eval_every and step != cfg.steps and step not in cfg.checkpoint_steps)
            if not evaluates and pending is None:
                train_s += time.perf_counter() - start
                continue
            stats.loss_d.item()  # the step is done (a no-op on the CPU)
            middle = time.perf_counter()
            train_s += middle - start
            if pending is not None and (evaluates or pending.measured.ready()):
                evaluate.conclude(pending.measured)
                pending = None
            if evaluates:
                is_scored = evaluate.is_scored(step)
                pending = PendingEvaluation(evaluate.measure({"step": step}, scored=is_scored), trainer)
                if pending.measured.ready() or step == cfg.steps:
                    evaluate.conclude(pending.measured)
                    pending = None
                scored, light = scored + is_scored, light + (not is_scored)
            eval_s += time.perf_counter() - middle
    finally:
        evaluate.close()
    return train_s, eval_s, light, scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=PRESETS["default"]["steps"])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--spaces", nargs="+", default=available())
    parser.add_argument("--eval-overlap", choices=("off", "on"), nargs="+", default=["off"],
                        help="on: evaluations on a thread beside training (needs a core the trial does not train "
                             "on); 'off on': both, one after the other for each case")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (where `auto` overlaps)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a sweep trial gets one CPU (Ray sets OMP_NUM_THREADS=1)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, 1 thread, {where}; {args.steps} steps per trial, default preset cadence")
    print(f"{'space':18} {'dataset':8} {'overlap':>10} {'train s':>8} {'eval s':>7} {'evals':>9} {'eval share':>10}")
    worst = dict.fromkeys(args.eval_overlap, 0.0)
    for space in args.spaces:
        for dataset in args.datasets:
            for overlap in args.eval_overlap:
                config = {**trial_config(space, dataset, args.steps, args.device), "eval_overlap": overlap}
                train_s, eval_s, light, scored = measure(config)
                share = eval_s / (train_s + eval_s)
                worst[overlap] = max(worst[overlap], share)
                print(f"{space:18} {dataset:8} {overlap:>10} {train_s:>8.1f} {eval_s:>7.2f} {light:>4}+{scored:<4} "
                      f"{share:>10.1%}", flush=True)
    for overlap, share in worst.items():
        print(f"largest evaluation share, overlap {overlap}: {share:.1%}")


if __name__ == "__main__":
    main()
