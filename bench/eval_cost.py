"""Evaluation cost as a share of a trial's time, at the sweep's default cadence.

    python bench/eval_cost.py                  # every shipped space x ring8, grid25, digits (~15 min)
    python bench/eval_cost.py --steps 1000 --datasets ring8

For each shipped search space, its first start point (the paper's settings) is trained for a
whole `default`-preset trial (2,000 generator steps, the preset's width for the model kind) on
each dataset, evaluating as a sweep trial does: a light evaluation every 100 steps (the critic's
reading, modes, sliced W1, FID features, diversity, the collapse rules) and a scored one every
500 steps, at the ASHA rungs (100, 800) and at the end (exact W1 on 2-D data, KID on images, the
score). The trial is ``ganlib.train.train``'s run, its evaluation calls timed in the process;
the share printed is evaluation time over the trial's total (training + evaluation).
"""

from __future__ import annotations

import argparse
import time

import torch

from ganlib.evaluate import Evaluator
from ganlib.rungs import ASHA_REDUCTION, asha_first_rung, asha_rungs
from ganlib.settings import PRESETS
from ganlib.spaces import available, load_space
from ganlib.train import PendingEvaluation, train
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


class _Clock:
    """Seconds spent inside some methods, for the run ``train`` makes of them (one trial at a time)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, owner: type, name: str, before=None):
        """Time ``owner.name``; ``before(*args)``, if given, runs first, outside the clock."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if before is not None:
                before(*args, **kwargs)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        setattr(owner, name, timed)
        return original


def measure(config: dict) -> tuple[float, float, int, int]:
    """(training seconds, evaluation seconds, light evaluations, scored evaluations) of one trial,
    run by ``ganlib.train.train`` itself (no reporter). Evaluation is the time in the evaluator's
    ``measure`` and ``conclude`` and in copying the trainer's state for an evaluation computing
    on the thread (with ``eval_overlap``, what is left of an evaluation in the loop: the copies
    and the waits). Training is the rest of the run, less what is neither: building the trainer
    and the evaluator (once per trial; the real statistics are cached per process) and the
    checkpoints' states and sample pictures ``train`` builds at checkpoint steps."""
    evaluation, neither = _Clock(), _Clock()
    counts = {"light": 0, "scored": 0}

    def sync(evaluator, *args, **kwargs):  # the training queued on a GPU is training's time
        if evaluator.trainer.device.type == "cuda":
            torch.cuda.synchronize(evaluator.trainer.device)

    def count(pending, measured, trainer):
        counts["scored" if measured.scored else "light"] += 1

    originals = [(Evaluator, "measure", evaluation.wrap(Evaluator, "measure", before=sync)),
                 (Evaluator, "conclude", evaluation.wrap(Evaluator, "conclude")),
                 (PendingEvaluation, "__init__", evaluation.wrap(PendingEvaluation, "__init__", before=count)),
                 (PendingEvaluation, "checkpoint", neither.wrap(PendingEvaluation, "checkpoint")),
                 (Trainer, "__init__", neither.wrap(Trainer, "__init__")),
                 (Evaluator, "__init__", neither.wrap(Evaluator, "__init__"))]
    try:
        started = time.perf_counter()
        train(config, report=lambda metrics, state: None)
        if config.get("device", "cpu").startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - started
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    return wall - evaluation.seconds - neither.seconds, evaluation.seconds, counts["light"], counts["scored"]


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
