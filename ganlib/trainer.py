"""One training loop for every configuration: per generator iteration, ``n_critic`` critic
(or discriminator) steps, each on a fresh real batch and fresh noise, then one generator step.

The loss (``losses.py``) and the critic constraint (``constraints.py``) are independent: the
loss gives the two objectives, the constraint what adds to the critic's (the gradient penalty)
and what runs after each critic update (clipping). With the papers' combinations this is
Algorithm 1 of each of the three papers; the loop never asks which loss it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import HYPERPARAMS, STRUCTURAL, GanConfig, normalize_saved_config
from .constraints import build_constraint
from .data import Dataset, load_dataset
from .losses import LOSSES
from .models import build_models, evaluation_copy, resolve_model_defaults
from .optim import apply_hparams, build_optimizer

# 2: the config names the loss and the constraint separately (format 1 checkpoints, whose loss
# was a paper's name, are read through ``normalize_saved_config``).
CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)
EVAL_NOISE_SEED = 2_147_483_647  # fixed noise for evaluations: curves compare like with like


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: truncated, not a checkpoint, or of another program."""


CHECKPOINT_KEYS = ("format", "step", "config", "generator", "critic", "opt_g", "opt_d", "rng")
GENERATOR_KEYS = ("step", "config", "generator")  # a generator file logged by a sweep


def load_checkpoint(path: str | Path, keys: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Any]:
    """A checkpoint written by a run (``torch.save(trainer.state_dict(), path)``); tensors only,
    no code is unpickled. A truncated, foreign or unreadable file raises ``CheckpointError``
    naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or not a torch file: {first}") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a ganlib checkpoint (missing {', '.join(missing)})")
    return state


class CheckpointMismatch(ValueError):
    """A checkpoint was made under a different configuration than the run resuming it."""


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config field 'device' = {name!r}, but CUDA is not available here")
    return device


@dataclass
class StepStats:
    """Losses and gradient norms of one generator iteration, as 0-d tensors (no host sync)."""

    loss_d: Tensor
    loss_g: Tensor
    gp: Tensor | None
    grad_norm_d: Tensor
    grad_norm_g: Tensor


def _grad_norm(module: torch.nn.Module) -> Tensor:
    """The 2-norm of all the module's gradients as one vector: what
    ``torch.nn.utils.get_total_norm`` computes on one device, bit for bit (per-tensor norms by
    ``_foreach_norm``, then the norm of those), without its grouping by device and dtype."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class Trainer:
    """Holds G, D, both optimizers and the RNG streams; ``train_step`` runs one generator
    iteration. Everything is built from the config, so a sampled learning rate applies from
    step 0, and (config, seed) reproduces a run bit for bit on the CPU."""

    def __init__(self, config: GanConfig | dict[str, Any], data: Dataset | None = None):
        cfg = config if isinstance(config, GanConfig) else GanConfig.from_dict(config)
        self.data = data if data is not None else load_dataset(cfg.dataset, cfg.data_root, cfg.download)
        self.cfg = resolve_model_defaults(cfg, self.data)
        self.device = resolve_device(self.cfg.device)
        # Weight init draws from the global RNG: seed it, then keep our own streams.
        torch.manual_seed(self.cfg.seed)
        generator, critic = build_models(self.cfg, self.data)
        self.generator, self.critic = generator.to(self.device), critic.to(self.device)
        self.loss = LOSSES[self.cfg.loss]
        self.constraint = build_constraint(self.cfg)
        self.constraint.start(self.critic)
        self.opt_g = build_optimizer(self.cfg, self.generator.parameters(), self.cfg.lr_g)
        self.opt_d = build_optimizer(self.cfg, self.critic.parameters(), self.cfg.lr_d)
        self._prefer_foreach()
        # fixed after construction (a restore copies into them): read per step without walking the modules
        self._all_modules = list(self.generator.modules()) + list(self.critic.modules())
        self._generator_params = list(self.generator.parameters())
        self.data_rng = torch.Generator().manual_seed(self.cfg.seed)
        self.noise_rng = torch.Generator(self.device).manual_seed(self.cfg.seed + 1)
        self.step = 0  # generator iterations done
        self.critic_steps = 0  # critic updates done (n_critic may change under PBT)
        self.real_samples_seen = 0

    # -- one iteration ------------------------------------------------------------------------
    def _noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.cfg.z_dim, device=self.device, generator=generator or self.noise_rng)

    def _real_batch(self) -> Tensor:
        batch = self.data.sample(self.cfg.batch_size, self.data_rng)
        self.real_samples_seen += self.cfg.batch_size
        return batch.to(self.device, non_blocking=True)

    def _prefer_foreach(self) -> None:
        """Multi-tensor optimizer updates on the CPU too (torch picks them by itself on CUDA
        only): the same arithmetic in the same order, bit for bit, with one call per operation
        instead of one per parameter: an optimizer step of the ring8 MLP or the digits DCGAN
        measured 10-15 % cheaper here (docs/benchmarks.md). A loaded optimizer state brings its
        own flag, so this runs again after a restore."""
        if self.device.type != "cpu":
            return
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                if group.get("foreach") is None:
                    group["foreach"] = True

    def critic_step(self, grad_norm: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One critic update. ``grad_norm=False`` skips the critic's gradient norm (None is
        returned in its place): ``train_step`` reports only the last critic step's."""
        cfg = self.cfg
        real = self._real_batch()
        with torch.no_grad():
            fake = self.generator(self._noise(cfg.batch_size))
        loss = self.loss.d_loss(self.critic(real), self.critic(fake))
        penalty = self.constraint.penalty(self.critic, real, fake, self.noise_rng)
        total = loss if penalty is None else loss + self.constraint.weight * penalty
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        norm = _grad_norm(self.critic) if grad_norm else None
        self.opt_d.step()
        self.constraint.after_step(self.critic)
        self.critic_steps += 1
        return loss.detach(), None if penalty is None else penalty.detach(), norm

    def generator_step(self) -> tuple[Tensor, Tensor]:
        loss = self.loss.g_loss(self.critic(self.generator(self._noise(self.cfg.batch_size))))
        self.opt_g.zero_grad(set_to_none=True)
        # G's gradients only: autograd skips the critic's weight gradients (and leaves the
        # critic's .grad alone) without switching requires_grad off and on around the step
        loss.backward(inputs=self._generator_params)
        grad_norm = _grad_norm(self.generator)
        self.opt_g.step()
        return loss.detach(), grad_norm

    def train_step(self) -> StepStats:
        if not all(m.training for m in self._all_modules):  # .train() walks every module: only when needed
            self.generator.train()
            self.critic.train()
        last = self.cfg.n_critic - 1
        for i in range(self.cfg.n_critic):
            loss_d, gp, grad_norm_d = self.critic_step(grad_norm=i == last)
        loss_g, grad_norm_g = self.generator_step()
        self.step += 1
        return StepStats(loss_d, loss_g, gp, grad_norm_d, grad_norm_g)

    # -- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, chunk: int = 4096, seed: int = EVAL_NOISE_SEED, generator: torch.nn.Module | None = None
               ) -> Tensor:
        """n generated samples from fixed noise (the evaluation noise unless ``seed`` says
        otherwise), on the CPU. Uses its own random generator: sampling never shifts the training
        stream. ``generator``: a copy of this trainer's generator to sample instead (the evaluation
        thread's). The noise is drawn on the CPU: CUDA's generator draws other numbers from the
        same seed, and a checkpoint is scored on the same samples on any device."""
        eval_rng = torch.Generator().manual_seed(seed)
        network = evaluation_copy(self.generator if generator is None else generator, self.device)
        was_training = network.training
        network.eval()
        try:
            out = [network(torch.randn(min(chunk, n - i), self.cfg.z_dim, generator=eval_rng).to(self.device)).cpu()
                   for i in range(0, n, chunk)]
        finally:
            network.train(was_training)
        return torch.cat(out)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, optimizers, RNG states, step,
        config. Loadable with ``torch.load(..., weights_only=True)``."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "critic_steps": self.critic_steps,
            "real_samples_seen": self.real_samples_seen,
            "config": self.cfg.to_dict(),
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": {
                "data": self.data_rng.get_state(),
                "noise": self.noise_rng.get_state(),
                "noise_device": self.device.type,
                "torch": torch.get_rng_state(),
            },
        }

    def load_state_dict(self, state: dict[str, Any], allow_hparam_change: bool = False) -> None:
        """Continue from ``state``. Refuses a checkpoint of a different structure (data, model,
        loss, optimizer, seed...) and, unless ``allow_hparam_change`` (a population-based
        exploit), of different hyperparameters. This run's hyperparameters are applied to the
        restored optimizers either way: loading an optimizer state restores the old lr."""
        if state.get("format") not in READABLE_FORMATS:
            raise CheckpointMismatch(f"checkpoint format {state.get('format')!r}, expected one of {READABLE_FORMATS}")
        names = STRUCTURAL if allow_hparam_change else STRUCTURAL + HYPERPARAMS
        diff = self.cfg.differences(normalize_saved_config(state["config"]), names)
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs run {b!r}" for k, (a, b) in diff.items())
            raise CheckpointMismatch(f"checkpoint config differs from this run's: {detail}")
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.constraint.start(self.critic)  # a donor's critic clipped at another c (PBT) into this run's box
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        apply_hparams(self.opt_g, self.cfg, self.cfg.lr_g)
        apply_hparams(self.opt_d, self.cfg, self.cfg.lr_d)
        self._prefer_foreach()
        rng = state["rng"]
        self.data_rng.set_state(rng["data"])
        torch.set_rng_state(rng["torch"])
        if rng["noise_device"] == self.device.type:
            self.noise_rng.set_state(rng["noise"])
        else:  # CUDA and CPU generator states are not interchangeable: continue reproducibly
            self.noise_rng.manual_seed(self.cfg.seed + 1 + state["step"])
        self.step = int(state["step"])
        self.critic_steps = int(state.get("critic_steps", self.step * self.cfg.n_critic))
        self.real_samples_seen = int(state.get("real_samples_seen", 0))


class Throughput:
    """Real samples consumed per second of training (batch x n_critic per iteration)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.reset()

    def reset(self) -> None:
        self._t0 = time.perf_counter()
        self._n0 = self.trainer.real_samples_seen

    def rate(self) -> float:
        if self.trainer.device.type == "cuda":
            torch.cuda.synchronize(self.trainer.device)
        elapsed = time.perf_counter() - self._t0
        return (self.trainer.real_samples_seen - self._n0) / max(elapsed, 1e-9)
