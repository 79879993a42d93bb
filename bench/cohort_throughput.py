"""Aggregate training throughput of a cohort (K members as stacked networks) against K separate
trainers, side by side in one process.

    python bench/cohort_throughput.py                           # ring8 and digits, K = 1..32 (~10 min here)
    python bench/cohort_throughput.py --datasets ring8 --sizes 1 8

For each case (WGAN with clipping, WGAN-GP, non-saturating GAN; ring8 with the default preset's
3x128 MLP, digits with the 32-channel DCGAN; batch 64) and each K, the K members differ in their
learning rates. Both ways are timed in alternating rounds for at least ``--seconds`` each:
``CohortTrainer.train_step`` (one stacked step of all K members) and K ``Trainer``s stepped one after
the other. Printed: aggregate generator steps per second of each, and their ratio (the cohort's
speed-up). One thread, as a 1-CPU Ray trial gets.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ganlib.cohort import CohortTrainer
from ganlib.trainer import Trainer

CASES = {"wgan": dict(loss="wgan"), "wgan_gp": dict(loss="wgan_gp"), "gan_ns": dict(loss="gan_ns")}
DATASETS = {"ring8": dict(dataset="ring8", width=128, depth=3), "digits": dict(dataset="digits", width=32)}


def members(case: str, dataset: str, k: int, device: str = "cpu") -> list[dict]:
    base = dict(batch_size=64, device=device, steps=10**9, **CASES[case], **DATASETS[dataset])
    return [dict(base, lr_d=1e-4 * (1 + i / k), lr_g=1e-4 * (1 + i / (2 * k))) for i in range(k)]


def steps_per_second(step, k: int, seconds: float, sync=lambda: None) -> float:
    """Aggregate generator steps per second of ``step`` (which advances k members by one);
    ``sync`` waits for the device (CUDA runs asynchronously)."""
    step()  # warm-up
    sync()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < 2:
        step()
        done += 1
    sync()  # the steps queued on the device are done
    return k * done / (time.perf_counter() - started)


def measure(case: str, dataset: str, k: int, seconds: float, rounds: int, device: str = "cpu") -> tuple[float, float]:
    configs = members(case, dataset, k, device)
    cohort, solos = CohortTrainer(configs), [Trainer(c) for c in configs]
    sync = (lambda: torch.cuda.synchronize(cohort.device)) if cohort.device.type == "cuda" else (lambda: None)

    def separate():
        for solo in solos:
            solo.train_step()

    together, apart = [], []
    for _ in range(rounds):
        together.append(steps_per_second(cohort.train_step, k, seconds, sync))
        apart.append(steps_per_second(separate, k, seconds, sync))
    return statistics.median(together), statistics.median(apart)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU goal: >= 8x at K = 32)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, 1 thread, {where}; medians of {args.rounds} alternating rounds")
    print(f"{'dataset':8} {'case':8} {'K':>3} {'cohort steps/s':>15} {'separate steps/s':>17} {'speed-up':>9}")
    for dataset in args.datasets:
        for case in args.cases:
            for k in args.sizes:
                together, apart = measure(case, dataset, k, args.seconds, args.rounds, args.device)
                print(f"{dataset:8} {case:8} {k:>3} {together:>15.1f} {apart:>17.1f} {together / apart:>8.2f}x",
                      flush=True)


if __name__ == "__main__":
    main()
