"""Evaluation cost as a fraction of training time, at a given evaluation cadence.

    python bench/eval_cost.py            # the configurations below, 3 rounds each
    python bench/eval_cost.py --rounds 5

For each configuration, one round trains ``eval_every`` generator steps and then runs one
evaluation (every metric of ganlib.evaluate plus the collapse verdict), timing both, side by
side in the same process. The figure that matters is the ratio eval / train: the share of a
trial's time spent measuring instead of training. Round 1 is a warm-up (it builds the cached
real statistics) and is left out of the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ganlib.evaluate import Evaluator
from ganlib.trainer import Trainer

CONFIGS = {
    # the sweep's `default` preset on ring8 (MLP width 128, batch 64): WGAN with clipping (paper
    # defaults, the cheapest training there is, so the worst case) and WGAN-GP
    "ring8 wgan, default preset": dict(dataset="ring8", loss="wgan", width=128, eval_every=100, eval_samples=1024),
    "ring8 wgan_gp, default preset": dict(dataset="ring8", loss="wgan_gp", width=128, eval_every=100,
                                          eval_samples=1024),
    # GanConfig's own defaults (eval_every 100, eval_samples 1024)
    "ring8 wgan_gp, GanConfig defaults": dict(dataset="ring8", loss="wgan_gp"),
    # images: DCGAN on 8x8 digits, FID/KID in the digits CNN's features
    "digits wgan_gp, GanConfig defaults": dict(dataset="digits", loss="wgan_gp"),
}


def measure(config: dict, rounds: int) -> tuple[float, float]:
    trainer = Trainer(dict(config, device="cpu", steps=10**9))
    evaluate = Evaluator(trainer)
    train_s, eval_s = [], []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        for _ in range(trainer.cfg.eval_every):
            stats = trainer.train_step()
        stats.loss_d.item()  # wait for the last step (no-op on the CPU)
        middle = time.perf_counter()
        evaluate({"step": trainer.step})
        end = time.perf_counter()
        train_s.append(middle - start)
        eval_s.append(end - middle)
    return statistics.median(train_s[1:]), statistics.median(eval_s[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'configuration':38} {'eval_every':>10} {'train s':>8} {'eval s':>7} {'eval/train':>10}")
    for name, config in CONFIGS.items():
        train_s, eval_s = measure(config, args.rounds)
        every = Trainer(dict(config, device="cpu")).cfg.eval_every
        print(f"{name:38} {every:>10} {train_s:>8.2f} {eval_s:>7.3f} {eval_s / train_s:>10.1%}", flush=True)


if __name__ == "__main__":
    main()
