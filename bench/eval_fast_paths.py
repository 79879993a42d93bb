"""An image evaluation with and without its CPU fast paths, side by side in one process.

    python bench/eval_fast_paths.py                      # digits, the GAN start points' config
    python bench/eval_fast_paths.py --rounds 11 --loss wasserstein --constraint clip --n-critic 5

The fast paths (docs/benchmarks.md, evaluation cost): channels-last copies of the generator and
the critic for sampling and the critic's reading (``ganlib.models.evaluation_copy``), channels-last
weights in the small feature CNNs, and KID from the whole kernel matrices
(``ganlib.metrics.fid.KID_FULL_KERNELS_MAX``). "Without" switches all three off as the code was
before them. A light and a scored evaluation of a trainer a few steps in are timed both ways in
alternating rounds (medians), and the metrics of the two ways are compared.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch

import ganlib.evaluate as evaluate_module
import ganlib.metrics.fid as fid_module
import ganlib.trainer as trainer_module
from ganlib.evaluate import Evaluator
from ganlib.trainer import Trainer


@contextmanager
def without_fast_paths(evaluator: Evaluator):
    """The evaluation as it was: the networks themselves, channels-first feature weights, KID subset
    by subset."""
    saved = (trainer_module.evaluation_copy, evaluate_module.evaluation_copy, fid_module.KID_FULL_KERNELS_MAX)
    itself = lambda network, device: network  # noqa: E731
    trainer_module.evaluation_copy = evaluate_module.evaluation_copy = itself
    fid_module.KID_FULL_KERNELS_MAX = 0
    net = getattr(evaluator.extractor, "net", None)
    if net is not None:
        net.to(memory_format=torch.contiguous_format)
    try:
        yield
    finally:
        trainer_module.evaluation_copy, evaluate_module.evaluation_copy, fid_module.KID_FULL_KERNELS_MAX = saved
        if net is not None:
            net.to(memory_format=torch.channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--loss", default="non_saturating")
    parser.add_argument("--constraint", default="none")
    parser.add_argument("--n-critic", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3, help="evaluations per timing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    trainer = Trainer(dict(dataset=args.dataset, loss=args.loss, constraint=args.constraint, n_critic=args.n_critic,
                           optimizer="adam", batch_size=64, device="cpu", steps=2000, eval_samples=1024))
    for _ in range(20):
        trainer.train_step()
    evaluator = Evaluator(trainer)

    def timed(scored: bool) -> float:
        started = time.perf_counter()
        for _ in range(args.calls):
            evaluator.metrics(scored=scored)
        return (time.perf_counter() - started) / args.calls

    times = {(way, scored): [] for way in ("with", "without") for scored in (False, True)}
    for _ in range(args.rounds):
        for scored in (False, True):
            times["with", scored].append(timed(scored))
            with without_fast_paths(evaluator):
                times["without", scored].append(timed(scored))
    fast = evaluator.metrics(scored=True)
    with without_fast_paths(evaluator):
        slow = evaluator.metrics(scored=True)
    print(f"torch {torch.__version__}, 1 thread, CPU; {args.dataset} {args.loss}/{args.constraint}, "
          f"{trainer.cfg.eval_samples} samples; medians of {args.rounds} rounds")
    print(f"{'evaluation':11} {'without s':>10} {'with s':>8} {'speed-up':>9}")
    for scored, name in ((False, "light"), (True, "scored")):
        before, after = (statistics.median(times[way, scored]) for way in ("without", "with"))
        print(f"{name:11} {before:>10.3f} {after:>8.3f} {before / after:>8.2f}x")
    diffs = {k: abs(fast[k] - slow[k]) / max(abs(slow[k]), 1e-12) for k in slow if isinstance(slow[k], float)}
    worst = max(diffs, key=diffs.get)
    print(f"largest relative difference of a metric: {diffs[worst]:.1e} ({worst})")


if __name__ == "__main__":
    main()
