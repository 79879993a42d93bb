"""Can the scored evaluation's exact W1 run beside training? Times ganlib's ``w1_exact`` (POT's
network simplex) alone, a CPU-bound Python loop alone, and both at once (the OT on a thread).
Together near the longer of the two means POT releases the GIL while it solves, so a background
thread would overlap it with the next training steps on a spare core; near the sum means it
does not. Run it on an idle machine: with every core busy both cases read as the sum.

    python bench/ot_overlap.py                    # 2,048 points, 3 rounds
    python bench/ot_overlap.py --points 1024 4096
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from ganlib.metrics.wasserstein import w1_exact


def busy_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def side_by_side(x, y, loop_n: int) -> None:
    """The OT on a thread while this thread runs the loop."""
    thread = threading.Thread(target=w1_exact, args=(x, y))
    thread.start()
    busy_loop(loop_n)
    thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[2048])
    parser.add_argument("--rounds", type=int, default=7, help="medians over this many rounds of the three timings")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'points':>7} {'ot s':>7} {'loop s':>7} {'together s':>11} {'max':>7} {'sum':>7}  overlap")
    for points in args.points:
        x, y = rng.normal(size=(points, 2)), rng.normal(size=(points, 2))
        w1_exact(x, y)  # warm-up: imports, first allocations
        loop_n = max(1, int(timed(w1_exact, x, y) / timed(busy_loop, 1_000_000) * 1_000_000 / 2))  # half the OT
        rows = [(timed(w1_exact, x, y), timed(busy_loop, loop_n), timed(side_by_side, x, y, loop_n))
                for _ in range(args.rounds)]  # the three interleaved, so drifts in load hit all alike
        ot_s, loop_s, together = np.median(np.array(rows), axis=0)
        # 100 %: the loop hid entirely behind the OT (together = max); 0 %: one after the other (sum)
        overlap = (ot_s + loop_s - together) / min(ot_s, loop_s)
        print(f"{points:>7} {ot_s:>7.3f} {loop_s:>7.3f} {together:>11.3f} {max(ot_s, loop_s):>7.3f} "
              f"{ot_s + loop_s:>7.3f}  {overlap:>6.0%}")


if __name__ == "__main__":
    main()
