"""Trainer step against a plain loop, and both against the step's pure arithmetic.

ganlib's ``Trainer.train_step`` (n_critic critic steps, then one generator step) against the
same step written by hand, and both against the forward/backward/optimizer work alone.

    python bench/trainer_step.py                        # every case, CPU, 1 thread, ~4 min
    python bench/trainer_step.py --cases "ring8 wgan_gp" --rounds 301
    python bench/trainer_step.py --compile              # adds a torch.compile'd step (slow to build)
    python bench/trainer_step.py --device cuda --compile --compile-mode reduce-overhead

Three contenders per case, from the same weights (the plain loop and the pure step load the
Trainer's state dicts before its first step), batch size, data sampler and optimizer settings:

* ganlib: ``Trainer.train_step()``, all it does per step (sampling, noise, the loss and
  constraint objects, losses and gradient norms kept for logging, train mode, counters);
* plain: Algorithm 1 as a researcher writes it from the papers: per critic step a real batch
  from the same sampler, noise (and the penalty's eps) from copies of the Trainer's random
  generators, the loss (plus lambda x penalty), zero_grad, backward, step, clamp; then the
  generator step. torch's default optimizers; no gradient norms, no requires_grad toggles;
* pure: the same arithmetic on inputs drawn once before timing (real batches, noise, eps):
  forward, backward (the penalty's double backward included; in the generator step only the
  generator's gradients), optimizer updates (torch's multi-tensor "foreach" implementation, the
  fastest that gives the default's bits) and the clamp. It keeps only the Python that calls
  these operators: the floor of an eager step.

A correctness guard runs first, on the CPU: three steps of ganlib, of the plain loop and of the
pure step (fed the inputs the others draw) must leave the same parameters and buffers
(``torch.allclose``, rtol 1e-5; the largest |difference| is printed, "exact" when 0).

Timing is side by side in one process: each round runs a block of steps of every contender in
an order that changes from round to round, so load from other processes falls on all of them
alike. ``s/step`` is the median over rounds; ``ratio = ganlib / plain`` and ``overhead =
1 - pure / step`` are taken within each round (paired), and their median and interquartile
range are printed. On the CPU the clock is the process's CPU time (time spent descheduled by
other jobs is not counted; with --threads above 1 it adds the threads up); on CUDA wall time,
with a synchronize before each reading.

--compile adds a fourth contender: the pure step's two updates (optimizer steps included) under
``torch.compile``, fed fresh inputs each step; the penalty's double backward stays eager (aot
autograd cannot differentiate a compiled graph twice). ``compile s`` is the wall time of its
first three steps, from a cold inductor cache.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ganlib.models import build_models
from ganlib.trainer import Trainer

BATCH = 64
# The sweep's `default` preset on ring8 (MLP width 128, depth 3) and DCGAN at its default width
# on 8x8 digits; the three papers' algorithms, each with its paper's optimizer and n_critic.
CASES = {
    "ring8 wgan": dict(dataset="ring8", loss="wgan", width=128, depth=3),
    "ring8 wgan_gp": dict(dataset="ring8", loss="wgan_gp", width=128, depth=3),
    "ring8 gan_ns": dict(dataset="ring8", loss="gan_ns", width=128, depth=3),
    "digits wgan": dict(dataset="digits", loss="wgan", width=32),
    "digits wgan_gp": dict(dataset="digits", loss="wgan_gp", width=32),
    "digits gan_ns": dict(dataset="digits", loss="gan_ns", width=32),
}
GUARD_STEPS = 3
GUARD_RTOL, GUARD_ATOL = 1e-5, 1e-6


# -- the hand-written loop ----------------------------------------------------------------------
def plain_optimizer(cfg, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer of the paper, written out (torch's defaults otherwise)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2))
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)


class PlainLoop:
    """WGAN / WGAN-GP / GAN Algorithm 1, one generator iteration per ``step()``: what a
    researcher writes in a notebook, with ganlib's networks and data sampler only."""

    def __init__(self, trainer: Trainer):
        cfg = self.cfg = trainer.cfg
        self.device = trainer.device
        self.data = trainer.data
        self.G, self.D = (m.to(self.device) for m in build_models(cfg, trainer.data))
        self.G.load_state_dict(trainer.generator.state_dict())
        self.D.load_state_dict(trainer.critic.state_dict())
        self.G.train()
        self.D.train()
        self.opt_g = plain_optimizer(cfg, self.G.parameters(), cfg.lr_g)
        self.opt_d = plain_optimizer(cfg, self.D.parameters(), cfg.lr_d)
        self.data_rng = torch.Generator().set_state(trainer.data_rng.get_state())
        self.noise_rng = torch.Generator(self.device).set_state(trainer.noise_rng.get_state())
        self.wasserstein = cfg.loss == "wasserstein"

    def d_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        if self.wasserstein:  # the critic ascends E f(x) - E f(G(z))
            return d_fake.mean() - d_real.mean()
        # D ascends log D(x) + log(1 - D(G(z))), D = sigmoid(l): log D = -softplus(-l)
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()

    def g_loss(self, d_fake: Tensor) -> Tensor:
        if self.wasserstein:
            return -d_fake.mean()
        return F.softplus(-d_fake).mean()  # non-saturating: G ascends log D(G(z))

    def penalty(self, real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(x_hat).sum(), x_hat, create_graph=True)
        return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()

    def critic_update(self, real: Tensor, z: Tensor, eps: Tensor | None) -> None:
        cfg = self.cfg
        with torch.no_grad():
            fake = self.G(z)
        loss = self.d_loss(self.D(real), self.D(fake))
        if eps is not None:
            loss = loss + cfg.gp_lambda * self.penalty(real, fake, eps)
        self.opt_d.zero_grad()
        loss.backward()
        self.opt_d.step()
        if cfg.constraint == "clip":
            for p in self.D.parameters():
                p.data.clamp_(-cfg.clip, cfg.clip)

    def generator_update(self, z: Tensor) -> None:
        loss = self.g_loss(self.D(self.G(z)))
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()

    def step(self) -> None:
        cfg, device, rng = self.cfg, self.device, self.noise_rng
        eps_shape = (cfg.batch_size,) + (1,) * len(self.data.sample_shape)
        for _ in range(cfg.n_critic):
            real = self.data.sample(cfg.batch_size, self.data_rng).to(device)
            z = torch.randn(cfg.batch_size, cfg.z_dim, device=device, generator=rng)
            eps = torch.rand(eps_shape, device=device, generator=rng) if cfg.constraint == "gp" else None
            self.critic_update(real, z, eps)
        self.generator_update(torch.randn(cfg.batch_size, cfg.z_dim, device=device, generator=rng))


def draw_inputs(loop: PlainLoop) -> tuple[list, Tensor]:
    """One step's random inputs, drawn as the plain loop draws them: ([(real, z, eps)] *
    n_critic, z for the generator)."""
    cfg, device, rng = loop.cfg, loop.device, loop.noise_rng
    eps_shape = (cfg.batch_size,) + (1,) * len(loop.data.sample_shape)
    critic = []
    for _ in range(cfg.n_critic):
        real = loop.data.sample(cfg.batch_size, loop.data_rng).to(device)
        z = torch.randn(cfg.batch_size, cfg.z_dim, device=device, generator=rng)
        eps = torch.rand(eps_shape, device=device, generator=rng) if cfg.constraint == "gp" else None
        critic.append((real, z, eps))
    return critic, torch.randn(cfg.batch_size, cfg.z_dim, device=device, generator=rng)


class PureStep(PlainLoop):
    """The plain loop's arithmetic on inputs given in advance: nothing is sampled or kept. The
    optimizers run torch's multi-tensor (foreach) implementation, the fastest one that gives the
    same bits as the default per-parameter loop."""

    def __init__(self, trainer: Trainer):
        super().__init__(trainer)
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["foreach"] = True
        self.inputs = draw_inputs(self)  # reused by every timed step
        self.g_params = list(self.G.parameters())

    def generator_update(self, z: Tensor) -> None:
        loss = self.g_loss(self.D(self.G(z)))
        self.opt_g.zero_grad()
        loss.backward(inputs=self.g_params)  # the generator's gradients only, not the critic's
        self.opt_g.step()

    def step(self, inputs: tuple[list, Tensor] | None = None) -> None:
        critic, z_g = inputs or self.inputs
        for real, z, eps in critic:
            self.critic_update(real, z, eps)
        self.generator_update(z_g)


class CompiledStep(PureStep):
    """``torch.compile`` of the two updates (optimizer steps included), fed fresh inputs each
    step like the plain loop; ``mode='reduce-overhead'`` captures CUDA graphs on a GPU."""

    def __init__(self, trainer: Trainer, mode: str):
        super().__init__(trainer)
        # aot_autograd cannot differentiate a compiled graph twice: the penalty's double
        # backward stays eager, the rest of the critic update is compiled around it
        self.penalty = torch.compiler.disable(self.penalty)
        if self.device.type == "cuda":  # step counters on the GPU, so the update can be graphed
            for optimizer in (self.opt_g, self.opt_d):
                for group in optimizer.param_groups:
                    group["capturable"] = True
        self.critic_update = torch.compile(self.critic_update, mode=mode)
        self.generator_update = torch.compile(self.generator_update, mode=mode)

    def step(self, inputs: tuple[list, Tensor] | None = None) -> None:
        critic, z_g = inputs or draw_inputs(self)
        for real, z, eps in critic:
            self.critic_update(real, z, eps)
        self.generator_update(z_g)


# -- measuring ----------------------------------------------------------------------------------
def build(config: dict, device: str) -> Trainer:
    return Trainer(dict(config, batch_size=BATCH, device=device, steps=10**9))


def guard(config: dict) -> float:
    """Max |difference| of every parameter and buffer after GUARD_STEPS steps of ganlib, the
    plain loop and the pure step, on the CPU; raises if they disagree."""
    trainer = build(config, "cpu")
    plain, pure = PlainLoop(trainer), PureStep(trainer)
    pure.data_rng.set_state(trainer.data_rng.get_state())  # PureStep drew its timing inputs
    pure.noise_rng.set_state(trainer.noise_rng.get_state())
    for _ in range(GUARD_STEPS):
        trainer.train_step()
        plain.step()
        pure.step(draw_inputs(pure))
    worst = 0.0
    for other in (plain, pure):
        for ours, theirs in ((trainer.generator, other.G), (trainer.critic, other.D)):
            theirs_state = theirs.state_dict()
            for key, a in ours.state_dict().items():
                b = theirs_state[key]
                if a.is_floating_point():
                    worst = max(worst, (a - b).abs().max().item())
                    ok = torch.allclose(a, b, rtol=GUARD_RTOL, atol=GUARD_ATOL)
                else:
                    ok = torch.equal(a, b)
                if not ok:
                    raise AssertionError(f"{type(other).__name__} differs from ganlib in {key} after "
                                         f"{GUARD_STEPS} steps: the comparison would be unfair")
    return worst


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def time_block(step: Callable[[], object], n: int, device: torch.device, clock: Callable[[], float]) -> float:
    sync(device)
    start = clock()
    for _ in range(n):
        step()
    sync(device)
    return (clock() - start) / n


@dataclass
class Result:
    case: str
    device: str
    seconds: dict[str, float]  # contender -> median s/step
    ratio: tuple[float, float, float]  # median, q1, q3 of ganlib / plain
    overhead: dict[str, tuple[float, float, float]]  # contender -> median, q1, q3 of 1 - pure / step
    guard: float
    compile_s: float | None = None  # wall-clock seconds of the first compiled steps
    compiled_ratio: tuple[float, float, float] | None = None  # compiled / ganlib


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, q1, q3


def measure(name: str, config: dict, args: argparse.Namespace) -> Result:
    device = torch.device(args.device)
    checked = guard(config)  # on the CPU, where the three are bit-comparable
    trainer = build(config, args.device)
    plain, pure = PlainLoop(trainer), PureStep(trainer)
    contenders: dict[str, Callable[[], object]] = {"ganlib": trainer.train_step, "plain": plain.step,
                                                   "pure": pure.step}
    compile_s = None
    if args.compile:
        compiled = CompiledStep(trainer, args.compile_mode)
        start = time.perf_counter()
        try:
            for _ in range(3):  # compiles, and re-records CUDA graphs until they are stable
                compiled.step()
            sync(device)
            compile_s = time.perf_counter() - start
            contenders["compiled"] = compiled.step
        except Exception as err:  # noqa: BLE001 - report what the compiler refuses, go on
            print(f"  {name}: torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
    # warm-up, then a block size of about args.block seconds for the slowest contender
    clock = CLOCKS[args.clock]
    slowest = max(time_block(step, 3, device, clock) for step in contenders.values())
    n = max(1, round(args.block / slowest))
    per_step: dict[str, list[float]] = {k: [] for k in contenders}
    orders = list(itertools.permutations(contenders))
    gc.collect()
    for r in range(args.rounds):
        for key in orders[r % len(orders)]:
            per_step[key].append(time_block(contenders[key], n, device, clock))
    rounds = range(args.rounds)
    ratio = quartiles([per_step["ganlib"][i] / per_step["plain"][i] for i in rounds])
    overhead = {k: quartiles([1 - per_step["pure"][i] / per_step[k][i] for i in rounds]) for k in ("ganlib", "plain")}
    compiled_ratio = None
    if "compiled" in per_step:
        compiled_ratio = quartiles([per_step["compiled"][i] / per_step["ganlib"][i] for i in rounds])
    return Result(name, str(device), {k: statistics.median(v) for k, v in per_step.items()}, ratio, overhead,
                  checked, compile_s, compiled_ratio)


def spread(q: tuple[float, float, float], fmt: str) -> str:
    return f"{q[0]:{fmt}} [{q[1]:{fmt}}, {q[2]:{fmt}}]"


def print_header(compiled: bool) -> None:
    line = (f"{'case':15} {'device':6} {'ganlib s/step':>13} {'plain s/step':>12} {'ratio [IQR]':>19} "
            f"{'pure s/step':>11} {'overhead ganlib [IQR]':>23} {'overhead plain [IQR]':>23} {'guard':>8}")
    if compiled:
        line += f" {'compiled s/step':>15} {'compiled/ganlib':>15} {'compile s':>9}"
    print(line, flush=True)


def print_row(r: Result, compiled: bool) -> None:
    guard_text = f"{r.guard:.0e}" if r.guard else "exact"
    line = (f"{r.case:15} {r.device:6} {r.seconds['ganlib']:>13.3g} {r.seconds['plain']:>12.3g} "
            f"{spread(r.ratio, '.3f'):>19} {r.seconds['pure']:>11.3g} "
            f"{spread(r.overhead['ganlib'], '.1%'):>23} {spread(r.overhead['plain'], '.1%'):>23} {guard_text:>8}")
    if compiled:
        if r.compiled_ratio is None:
            line += f" {'failed':>15} {'-':>15} {'-':>9}"
        else:
            line += f" {r.seconds['compiled']:>15.3g} {r.compiled_ratio[0]:>15.3f} {r.compile_s:>9.1f}"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), metavar="CASE",
                        help=f"some of: {', '.join(repr(c) for c in CASES)}")
    parser.add_argument("--rounds", type=int, default=121, help="interleaved rounds per case (default 121)")
    parser.add_argument("--block", type=float, default=0.03,
                        help="seconds per contender per round, at least one step (default 0.03)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: what a 1-CPU trial gets; see docs/benchmarks.md)")
    parser.add_argument("--clock", choices=list(CLOCKS),
                        help="cpu: the process's CPU time (default on the CPU: time spent descheduled by other jobs "
                        "is not counted), wall: elapsed time (default and the only choice on CUDA)")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile'd step (reports compile time)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode: default, reduce-overhead (CUDA graphs on a GPU), max-autotune")
    args = parser.parse_args()
    args.clock = args.clock or ("wall" if args.device.startswith("cuda") else "cpu")
    if args.clock == "cpu" and args.device.startswith("cuda"):
        parser.error("--clock cpu cannot time CUDA work: use --clock wall")
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (quartiles)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    torch.set_num_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="trainer_step_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # compile times from a cold cache, as a fresh machine sees them
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {where}, {args.clock} clock; "
          f"batch {BATCH}, {args.rounds} rounds of ~{args.block} s per contender")
    print_header(args.compile)
    start = time.perf_counter()
    try:
        for name in args.cases:
            print_row(measure(name, CASES[name], args), args.compile)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"total {time.perf_counter() - start:.0f} s wall")


if __name__ == "__main__":
    main()
