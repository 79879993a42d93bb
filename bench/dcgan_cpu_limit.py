"""Why a cohort of DCGANs gains nothing on this CPU: how busy a trainer's step already keeps the
core, and what stacking K critics' convolutions costs, side by side in one process.

    python bench/dcgan_cpu_limit.py            # ~1 min here

1. For each case (ring8's 3x128 MLP and digits' 32-channel DCGAN; WGAN with clipping and the
   non-saturating GAN; batch 64): the floating-point operations of one ``Trainer.train_step``
   (torch's ``FlopCounterMode``: matrix products and convolutions, forward and backward), its time,
   and the rate achieved, against the rate of one large matrix product on this core (a bound no
   stacking can pass). WGAN-GP is left out: the counter cannot follow the penalty's double
   backward.
2. K = 8 digits critics (``DCGANCritic``, no norm) forward and backward on their own batches three
   ways, checked to give the same outputs and input gradients: one after the other (what a CPU
   cohort does), as one grouped convolution (what ``vmap`` lowers a convolution to), and as
   im2col (``unfold``) + batched matrix products (how the cohort stacks its MLPs' linear layers).

One thread, as a 1-CPU Ray trial gets; medians of ``--rounds`` timings of ``--seconds`` each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ganlib.models.dcgan import DCGANCritic
from ganlib.trainer import Trainer

CASES = {"ring8 mlp": dict(dataset="ring8", width=128, depth=3), "digits dcgan": dict(dataset="digits", width=32)}
LOSSES = ("wgan", "gan_ns")


def seconds_per_call(fn, seconds: float, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or done < 2:
            fn()
            done += 1
        times.append((time.perf_counter() - started) / done)
    return statistics.median(times)


def gemm_rate(n: int, seconds: float, rounds: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / seconds_per_call(lambda: a @ b, seconds, rounds) / 1e9


def trainer_rates(seconds: float, rounds: int) -> list[tuple[str, str, float, float]]:
    rows = []
    for case, kw in CASES.items():
        for loss in LOSSES:
            trainer = Trainer(dict(batch_size=64, device="cpu", steps=10**9, loss=loss, **kw))
            trainer.train_step()
            with FlopCounterMode(display=False) as counter:
                trainer.train_step()
            rows.append((case, loss, counter.get_total_flops() / 1e9,
                         seconds_per_call(trainer.train_step, seconds, rounds)))
    return rows


def stacked_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """K members' convolutions as im2col + one batched product: x (K, B, C, H, W), weight
    (K, O, C, k, k), bias (K, O) -> (K, B, O, H', W')."""
    k_members, batch, channels, height, width = x.shape
    out_channels, size = weight.shape[1], weight.shape[-1]
    cols = F.unfold(x.reshape(k_members * batch, channels, height, width), size, padding=padding, stride=stride)
    positions, side = cols.shape[-1], (height + 2 * padding - size) // stride + 1
    cols = cols.view(k_members, batch, -1, positions).transpose(2, 3).reshape(k_members, batch * positions, -1)
    out = torch.baddbmm(bias.unsqueeze(1), cols, weight.reshape(k_members, out_channels, -1).transpose(1, 2))
    return out.view(k_members, batch, positions, out_channels).transpose(2, 3).reshape(
        k_members, batch, out_channels, side, side)


def critic_ways(k: int = 8, batch: int = 64):
    """The three ways, each returning (outputs, input gradients) of K critics on their batches."""
    torch.manual_seed(0)
    critics = [DCGANCritic((1, 8, 8), 32) for _ in range(k)]
    conv1, conv2 = ([c.features[i] for c in critics] for i in (0, 2))
    stack = {name: torch.stack([getattr(m, attr) for m in mods]).detach().requires_grad_()
             for name, mods, attr in (("w1", conv1, "weight"), ("b1", conv1, "bias"), ("w2", conv2, "weight"),
                                      ("b2", conv2, "bias"))}
    head_w = torch.stack([c.head.weight.squeeze(0) for c in critics]).detach().requires_grad_()
    head_b = torch.stack([c.head.bias for c in critics]).detach().requires_grad_()
    x = torch.randn(k, batch, 1, 8, 8)

    def run(forward):
        xs = x.clone().requires_grad_()
        out = forward(xs)
        out.sum().backward()
        return out.detach(), xs.grad

    def one_by_one(xs):
        return torch.stack([critic(xs[i]) for i, critic in enumerate(critics)])

    def grouped(xs):  # members along the channels, one convolution with groups=K
        h = xs.transpose(0, 1).reshape(batch, k, 8, 8)
        h = F.leaky_relu(F.conv2d(h, stack["w1"].flatten(0, 1), stack["b1"].flatten(), padding=1, groups=k), 0.2)
        h = F.leaky_relu(F.conv2d(h, stack["w2"].flatten(0, 1), stack["b2"].flatten(), stride=2, padding=1,
                                  groups=k), 0.2)
        h = h.view(batch, k, -1).transpose(0, 1)
        return torch.baddbmm(head_b.unsqueeze(1), h, head_w.unsqueeze(2)).squeeze(2)

    def im2col(xs):
        h = F.leaky_relu(stacked_conv(xs, stack["w1"], stack["b1"], 1, 1), 0.2)
        h = F.leaky_relu(stacked_conv(h, stack["w2"], stack["b2"], 2, 1), 0.2)
        return torch.baddbmm(head_b.unsqueeze(1), h.flatten(2), head_w.unsqueeze(2)).squeeze(2)

    return {name: (lambda f=f: run(f)) for name, f in
            (("one by one", one_by_one), ("grouped conv", grouped), ("im2col + bmm", im2col))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    peak = max(gemm_rate(n, args.seconds, args.rounds) for n in (256, 1024))
    print(f"torch {torch.__version__}, 1 thread; a 256^2 or 1024^2 matrix product: {peak:.1f} GFLOP/s (the bound)")
    print(f"{'case':13} {'loss':7} {'GFLOP/step':>11} {'ms/step':>8} {'GFLOP/s':>8} {'of the bound':>13}")
    for case, loss, gflop, step_s in trainer_rates(args.seconds, args.rounds):
        rate = gflop / step_s
        print(f"{case:13} {loss:7} {gflop:>11.3f} {step_s * 1e3:>8.1f} {rate:>8.1f} {rate / peak:>12.0%}")
    ways = critic_ways()
    reference = ways["one by one"]()
    print("8 digits critics, forward + backward, batch 64 each:")
    base = None
    for name, way in ways.items():
        out, grad = way()
        assert torch.allclose(out, reference[0], rtol=1e-4, atol=1e-5), name
        assert torch.allclose(grad, reference[1], rtol=1e-4, atol=1e-6), name
        took = seconds_per_call(way, args.seconds, args.rounds)
        base = base or took
        print(f"  {name:13} {took * 1e3:7.1f} ms   {base / took:.2f}x the one-by-one speed")


if __name__ == "__main__":
    main()
