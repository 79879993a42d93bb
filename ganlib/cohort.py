"""Cohorts: K configurations of one structure trained together as stacked networks.

Sweeps of GANs are sweeps of small models, whose steps on a CPU (or a GPU) are dominated by
framework overhead. A cohort trains K members that share their structure (dataset, model, widths
and norms, batch size, optimizer type, n_critic, loss and constraint) in one process: each
network's parameters are stacked along a leading member axis, so one kernel serves K members:
plain MLPs (linear layers and ReLUs) run as batched matrix products, other networks through
``torch.func.vmap(functional_call(...))``, which costs more per call (bench/cohort_throughput.py),
except convolutional networks on the CPU, which run member by member (``StackedNetwork``).
Everything that may differ between members is a tensor over that axis: learning rates, betas,
momentum, the clip value, lambda; so are the seeds (each member keeps its own data and noise
generators; members of one seed share one batch, as their solo runs would see the same one).

Each member's trajectory equals its configuration trained alone by ``Trainer`` (same seed, data
and noise streams) to float tolerance: the losses are computed per member (vmapped), the
gradients of different members never mix (their parameters are disjoint slices), and the
stacked optimizers apply torch.optim's update formulas with per-member hyperparameters
(``tests/test_cohort.py`` checks them member by member against ``torch.optim``).

Spectral normalisation is not supported (torch 2.14 has no batching rule for its
parametrisation); batch norm is (its running statistics are stacked buffers).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from .config import HYPERPARAMS, STRUCTURAL, GanConfig, normalize_saved_config
from .data import Dataset
from .losses import LOSSES
from .trainer import CheckpointMismatch, Trainer

COHORT_FORMAT = "ganlib-cohort-1"

# What members of one cohort must share: it decides the shapes and the computation.
SHARED = ("dataset", "data_root", "loss", "constraint", "model", "width", "depth", "z_dim", "d_norm", "g_norm",
          "batch_size", "optimizer", "n_critic", "steps", "eval_every", "score_every", "eval_samples", "eval_overlap",
          "device")


# A cohort trial's config: its members' configs (params only; the run settings are the trial's),
# their Optuna trial numbers, and the name of the actor holding the members' rungs (None: none).
MEMBERS_KEY, NUMBERS_KEY, RUNGS_KEY = "_members", "_member_trials", "_member_rungs"
MEMBER_ERROR = "error"  # the status of a member whose own evaluation raised (cohort_run.member_error)


def cohort_base(config: dict[str, Any]) -> dict[str, Any]:
    """A cohort trial's config without its members: the run settings every member gets."""
    return {k: v for k, v in config.items() if k not in (MEMBERS_KEY, NUMBERS_KEY, RUNGS_KEY)}


def member_id(trial_id: str, k: int) -> str:
    """A member's id (its MLflow run's ``ray_trial_id``): its cohort's trial id and its place."""
    return f"{trial_id}-m{k}"


def members_of(result: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """A cohort trial's result's members' latest metrics, by place in the cohort; from Tune's
    result as reported (``members`` nested) or as Tune flattens it for searchers (``members/k/...``)."""
    result = result or {}
    if isinstance(result.get("members"), dict):
        return {int(k): dict(v) for k, v in result["members"].items()}
    out: dict[int, dict[str, Any]] = {}
    for key, value in result.items():
        if key.startswith("members/"):
            _, k, name = key.split("/", 2)
            out.setdefault(int(k), {})[name] = value
    return out


class CohortError(ValueError):
    """The members cannot be trained as one cohort; the message says which field differs."""


def check_members(configs: list[GanConfig]) -> None:
    first = configs[0]
    for i, cfg in enumerate(configs[1:], start=1):
        for name in SHARED:
            if getattr(cfg, name) != getattr(first, name):
                raise CohortError(f"cohort member {i} differs from member 0 in {name!r} ({getattr(cfg, name)!r} vs "
                                  f"{getattr(first, name)!r}): members share "
                                  + ", ".join(SHARED))
    if first.d_norm == "spectral":
        raise CohortError("d_norm 'spectral' cannot be trained in a cohort: torch 2.14's vmap has no batching rule "
                          "for the spectral-norm parametrisation")


def _view(values: list[float], like: Tensor) -> Tensor:
    """Per-member scalars as a [K, 1, ...] tensor that broadcasts over a stacked parameter."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


def _plain_mlp_layers(module: nn.Module) -> list[str] | None:
    """The names of an MLP generator's or critic's linear layers when it is nothing but linear
    layers and ReLUs (no norm layers), else None."""
    from .models.mlp import MLPCritic, MLPGenerator

    if not isinstance(module, (MLPGenerator, MLPCritic)):
        return None
    layers = list(module.net.named_children())
    if [type(m) for _, m in layers] != [nn.Linear, nn.ReLU] * (len(layers) // 2) + [nn.Linear]:
        return None
    return [f"net.{name}" for name, m in layers if isinstance(m, nn.Linear)]


def _convolutional(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


class StackedNetwork:
    """K networks of one structure: parameters and buffers stacked on a leading member axis.

    Three ways to run them: plain MLPs as batched matrix products; convolutional networks on the
    CPU member by member (``one_by_one``: the same kernels as alone, on slices of the stacks; a
    DCGAN's convolutions keep a core busy, and vmap's grouped convolutions ran them at 0.7-0.9x the
    speed of separate trainers here, bench/cohort_throughput.py); the rest through
    ``vmap(functional_call(...))``, which fills a GPU with one batched kernel per layer."""

    def __init__(self, modules: list[nn.Module], one_by_one: bool | None = None):
        params, buffers = stack_module_state(modules)
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(modules[0]).to("meta")  # the structure; the tensors are ours
        self.training = True
        self.linear_layers = _plain_mlp_layers(self.base)
        on_cpu = next(iter(self.params.values())).device.type == "cpu"
        self.one_by_one = on_cpu and _convolutional(self.base) if one_by_one is None else one_by_one

    def _batched_mlp(self, x: Tensor, shared: bool) -> Tensor:
        """A plain MLP (linear layers and ReLUs) as batched matrix products: the same arithmetic
        as vmap's, without its per-call batching of every module (measured: bench/cohort_throughput.py)."""
        batch = x.shape[0] if shared else x.shape[1]
        h = x.reshape(batch, -1) if shared else x.reshape(x.shape[0], batch, -1)
        last = len(self.linear_layers) - 1
        for i, name in enumerate(self.linear_layers):
            weight, bias = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
            h = torch.baddbmm(bias.unsqueeze(1), h.expand(weight.shape[0], -1, -1) if h.dim() == 2 else h,
                              weight.transpose(1, 2))
            if i < last:
                h = torch.relu(h)
        out_shape = getattr(self.base, "out_shape", None)
        return h.view(h.shape[0], batch, *out_shape) if out_shape is not None else h.squeeze(2)

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def __call__(self, x: Tensor, shared: bool = False) -> Tensor:
        """``x``: [K, B, ...] per member, or [B, ...] the same for all (``shared``)."""
        if self.linear_layers is not None:
            return self._batched_mlp(x, shared)
        self.base.train(self.training)
        if self.one_by_one:  # slices of the stacks: gradients and batch norm's updates reach them
            return torch.stack([functional_call(self.base, ({n: t[k] for n, t in self.params.items()},
                                                            {n: t[k] for n, t in self.buffers.items()}),
                                                (x if shared else x[k],)) for k in range(self.size)])

        def one(params, buffers, xi):
            return functional_call(self.base, (params, buffers), (xi,))

        return vmap(one, in_dims=(0, 0, None if shared else 0), randomness="error")(self.params, self.buffers, x)

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    def requires_grad_(self, flag: bool) -> None:
        for p in self.params.values():
            p.requires_grad_(flag)

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member ``k`` as an ordinary state dict (for its checkpoint or a solo module)."""
        return {name: t[k].detach().clone() for name, t in {**self.params, **self.buffers}.items()}

    def keep(self, index: Tensor) -> None:
        """Keep only the members at ``index`` (a member that stopped costs nothing more)."""
        self.params = {k: v.detach()[index].clone().requires_grad_(True) for k, v in self.params.items()}
        self.buffers = {k: v[index].clone() for k, v in self.buffers.items()}

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        return {"params": {k: v.detach().clone() for k, v in self.params.items()},
                "buffers": {k: v.clone() for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        """Stacks of the same members (the shapes are checked, names and all)."""
        for mine, theirs in ((self.params, state["params"]), (self.buffers, state["buffers"])):
            if {k: tuple(v.shape) for k, v in mine.items()} != {k: tuple(v.shape) for k, v in theirs.items()}:
                raise CheckpointMismatch("the checkpoint's stacked networks differ in shape from this cohort's")
        device = next(iter(self.params.values())).device
        self.params = {k: v.to(device).clone().requires_grad_(True) for k, v in state["params"].items()}
        self.buffers = {k: v.to(device).clone() for k, v in state["buffers"].items()}


class StackedOptimizer:
    """torch.optim's Adam, RMSprop or SGD update, with hyperparameters per member (lr, betas,
    momentum), on stacked parameters. Defaults as torch's: eps 1e-8, RMSprop alpha 0.99, no
    weight decay, no AMSGrad, no Nesterov, no dampening."""

    def __init__(self, kind: str, params: list[Tensor], members: list[dict[str, float]]):
        self.kind, self.params = kind, params
        self.members = [dict(m) for m in members]
        self.state: list[dict[str, Tensor]] = [{} for _ in params]
        self.steps = 0
        self._views: dict[tuple[str, int], Tensor] = {}  # (name, parameter index) -> [K, 1, ...]

    def _h(self, name: str, i: int) -> Tensor:
        """Hyperparameter ``name`` per member, shaped to broadcast over parameter ``i`` (built once)."""
        if (name, i) not in self._views:
            self._views[name, i] = _view([m[name] for m in self.members], self.params[i])
        return self._views[name, i]

    def _zeros(self, state: dict[str, Tensor], key: str, like: Tensor) -> Tensor:
        if key not in state:
            state[key] = torch.zeros_like(like)
        return state[key]

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        for i, (p, state) in enumerate(zip(self.params, self.state, strict=True)):
            g = p.grad
            if g is None:
                continue
            lr = self._h("lr", i)
            if self.kind == "adam":
                b1, b2 = self._h("beta1", i), self._h("beta2", i)
                m, v = self._zeros(state, "exp_avg", p), self._zeros(state, "exp_avg_sq", p)
                m.mul_(b1).add_((1 - b1) * g)
                v.mul_(b2).add_((1 - b2) * g * g)
                bias1, bias2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
                denom = (v.sqrt() / bias2.sqrt()).add_(1e-8)
                p.sub_(lr / bias1 * m / denom)
            elif self.kind == "rmsprop":  # torch.optim.RMSprop's own in-place sequence
                sq = self._zeros(state, "square_avg", p)
                sq.mul_(0.99).addcmul_(g, g, value=0.01)
                p.addcdiv_(g * lr, sq.sqrt().add_(1e-8), value=-1)
            else:  # sgd
                momentum = self._h("momentum", i)
                buf = state.get("momentum_buffer")
                buf = g.clone() if buf is None else buf.mul_(momentum).add_(g)
                state["momentum_buffer"] = buf
                p.sub_(lr * buf)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def keep(self, index: Tensor, params: list[Tensor]) -> None:
        self.params = params
        self._views.clear()
        self.members = [self.members[i] for i in index.tolist()]
        self.state = [{k: v[index].clone() for k, v in s.items()} for s in self.state]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "state": [{k: v.clone() for k, v in s.items()} for s in self.state]}

    def load_state_dict(self, state: dict[str, Any], params: list[Tensor]) -> None:
        """Continue from ``state`` on ``params`` (the stacks just loaded); the hyperparameters
        stay this optimizer's own."""
        self.params, self.steps = params, int(state["steps"])
        self.state = [{k: v.to(p.device).clone() for k, v in s.items()} for s, p in zip(state["state"], params,
                                                                                       strict=True)]
        self._views.clear()


def _hparams(cfg: GanConfig, which: str) -> dict[str, float]:
    lr = cfg.lr_g if which == "g" else cfg.lr_d
    return {"lr": lr, "beta1": cfg.beta1 or 0.0, "beta2": cfg.beta2 or 0.0, "momentum": cfg.momentum or 0.0}


@dataclass
class MemberAt:
    """One member as it was at an evaluation whose metrics computed while the cohort trained on
    (the evaluation overlap): its counters and the copies of its networks taken at that step.
    A member that evaluation stops ends as it was then (``CohortTrainer.stop``)."""

    step: int
    critic_steps: int
    real_samples_seen: int
    generator: nn.Module
    critic: nn.Module

    def networks(self) -> dict[str, dict[str, Tensor]]:
        return {name: {k: v.detach().clone() for k, v in net.state_dict().items()}
                for name, net in (("generator", self.generator), ("critic", self.critic))}


class CohortTrainer:
    """K ``Trainer``s' worth of training in stacked networks. ``train_step`` runs one generator
    iteration of every active member; ``stop(k)`` drops member k; ``member_trainer(k)`` gives a
    solo ``Trainer`` holding member k's current state (for its evaluation and its checkpoint)."""

    def __init__(self, configs: list[GanConfig | dict[str, Any]], data: Dataset | None = None):
        solos = [Trainer(c, data) for c in configs]  # each member's init, RNG streams and resolved config
        check_members([t.cfg for t in solos])
        self.solos = solos
        self.data, self.device = solos[0].data, solos[0].device
        self.cfg0 = solos[0].cfg
        self.loss = LOSSES[self.cfg0.loss]
        self.active = list(range(len(solos)))  # member indices still training
        self.generator = StackedNetwork([t.generator for t in solos])
        self.critic = StackedNetwork([t.critic for t in solos])
        self.opt_g = StackedOptimizer(self.cfg0.optimizer, self.generator.parameters(),
                                      [_hparams(t.cfg, "g") for t in solos])
        self.opt_d = StackedOptimizer(self.cfg0.optimizer, self.critic.parameters(),
                                      [_hparams(t.cfg, "d") for t in solos])
        self.step = 0
        self._clips: list[Tensor] | None = None
        self.retired: dict[int, dict[str, dict[str, Tensor]]] = {}  # stopped member -> its last networks

    # -- per-member values --------------------------------------------------------------------------
    def _members(self) -> list[Trainer]:
        return [self.solos[k] for k in self.active]

    def _shared_stream(self) -> bool:
        """Members of one seed see one batch and one noise draw (their solo runs would)."""
        seeds = {t.cfg.seed for t in self._members()}
        return len(seeds) == 1

    def _real(self) -> tuple[Tensor, bool]:
        members, bs = self._members(), self.cfg0.batch_size
        if self._shared_stream():
            batch = self.data.sample(bs, members[0].data_rng)
            for t in members[1:]:
                t.data_rng.set_state(members[0].data_rng.get_state())
            return batch.to(self.device), True
        return torch.stack([self.data.sample(bs, t.data_rng) for t in members]).to(self.device), False

    def _draw(self, fn) -> tuple[Tensor, bool]:
        """A draw from every member's noise generator (once when they share a seed)."""
        members = self._members()
        if self._shared_stream():
            out = fn(members[0].noise_rng)
            for t in members[1:]:
                t.noise_rng.set_state(members[0].noise_rng.get_state())
            return out, True
        return torch.stack([fn(t.noise_rng) for t in members]), False

    def _noise(self) -> tuple[Tensor, bool]:
        bs, z = self.cfg0.batch_size, self.cfg0.z_dim
        return self._draw(lambda g: torch.randn(bs, z, device=self.device, generator=g))

    def _fakes(self, z: Tensor, shared: bool) -> Tensor:
        return self.generator(z, shared=shared)

    # -- one iteration ------------------------------------------------------------------------------
    def critic_step(self) -> dict[str, Tensor]:
        members = self._members()
        real, real_shared = self._real()
        with torch.no_grad():
            fake = self._fakes(*self._noise())
        real_out = self.critic(real, shared=real_shared)
        loss = vmap(self.loss.d_loss)(real_out, self.critic(fake))  # [K]
        total = loss
        out = {"loss_d": loss.detach()}
        if self.cfg0.constraint == "gp":
            shape = (self.cfg0.batch_size,) + (1,) * (real.dim() - (1 if real_shared else 2))
            eps, eps_shared = self._draw(lambda g: torch.rand(shape, device=self.device, dtype=real.dtype, generator=g))
            real_k = real.expand_as(fake) if real_shared else real
            eps_k = eps.unsqueeze(0) if eps_shared else eps
            x_hat = (eps_k * real_k + (1 - eps_k) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.critic(x_hat).sum(), x_hat, create_graph=True)
            penalty = ((grad.flatten(2).norm(2, dim=2) - 1.0) ** 2).mean(1)  # per member, per sample norms
            lam = torch.tensor([t.cfg.gp_lambda for t in members], dtype=penalty.dtype, device=penalty.device)
            total = loss + lam * penalty
            out["gp"] = penalty.detach()
        self.opt_d.zero_grad()
        total.sum().backward()  # members' parameters are disjoint: each gets its own gradient
        out["grad_norm_d"] = _member_norms(self.critic.parameters())
        self.opt_d.step()
        if self.cfg0.constraint == "clip":
            with torch.no_grad():
                if self._clips is None:  # per member, per parameter; rebuilt when a member stops
                    self._clips = [_view([t.cfg.clip for t in members], p) for p in self.critic.parameters()]
                for p, c in zip(self.critic.parameters(), self._clips, strict=True):
                    p.clamp_(min=-c, max=c)
        return out

    def generator_step(self) -> dict[str, Tensor]:
        self.critic.requires_grad_(False)
        try:
            z, shared = self._noise()
            loss = vmap(self.loss.g_loss)(self.critic(self._fakes(z, shared)))
            self.opt_g.zero_grad()
            loss.sum().backward()
        finally:
            self.critic.requires_grad_(True)
        norms = _member_norms(self.generator.parameters())
        self.opt_g.step()
        return {"loss_g": loss.detach(), "grad_norm_g": norms}

    def train_step(self) -> dict[str, Tensor]:
        """One generator iteration of every active member; per-member statistics [K_active]."""
        self.generator.training = self.critic.training = True
        for _ in range(self.cfg0.n_critic):
            stats = self.critic_step()
        stats.update(self.generator_step())
        self.step += 1
        for t in self._members():
            t.step += 1
            t.critic_steps += self.cfg0.n_critic
            t.real_samples_seen += self.cfg0.n_critic * self.cfg0.batch_size
        return stats

    # -- members ------------------------------------------------------------------------------------
    def member_trainer(self, k: int, at: MemberAt | None = None) -> Trainer:
        """Member ``k``'s solo Trainer with its current networks copied in (evaluate, checkpoint);
        a stopped member's holds the networks it stopped with; ``at``'s networks if given."""
        t = self.solos[k]
        if at is not None:
            nets = {"generator": at.generator.state_dict(), "critic": at.critic.state_dict()}
        elif k in self.retired:
            nets = self.retired[k]
        else:
            i = self.active.index(k)
            nets = {"generator": self.generator.member_state(i), "critic": self.critic.member_state(i)}
        t.generator.load_state_dict(nets["generator"])
        t.critic.load_state_dict(nets["critic"])
        return t

    def stop(self, k: int, at: MemberAt | None = None) -> None:
        """Member ``k`` stops: its slices leave the stacks and cost nothing more (its last
        networks are kept in ``retired``, for its checkpoint). ``at``: the member as it was at
        the evaluation that stopped it, when the cohort has trained on since (evaluation overlap);
        it ends with those networks and counters."""
        i = self.active.index(k)
        if at is None:
            self.retired[k] = {"generator": self.generator.member_state(i), "critic": self.critic.member_state(i)}
        else:
            self.retired[k] = at.networks()
            t = self.solos[k]
            t.step, t.critic_steps, t.real_samples_seen = at.step, at.critic_steps, at.real_samples_seen
        keep = torch.tensor([i for i, m in enumerate(self.active) if m != k], device=self.device)
        self.active = [m for m in self.active if m != k]
        self._clips = None
        if not self.active:
            return
        self.generator.keep(keep)
        self.critic.keep(keep)
        self.opt_g.keep(keep, self.generator.parameters())
        self.opt_d.keep(keep, self.critic.parameters())


    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole stack, the stopped members' last networks and every member's step, counters
        and RNG streams: enough to continue every member exactly. Loadable with
        ``torch.load(..., weights_only=True)``."""
        return {
            "format": COHORT_FORMAT, "step": self.step, "active": list(self.active),
            "configs": [t.cfg.to_dict() for t in self.solos],
            "generator": self.generator.state_dict(), "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "retired": {str(k): v for k, v in self.retired.items()},
            "members": [{"step": t.step, "critic_steps": t.critic_steps, "real_samples_seen": t.real_samples_seen,
                         "rng": {"data": t.data_rng.get_state(), "noise": t.noise_rng.get_state(),
                                 "noise_device": t.device.type}} for t in self.solos],
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: a checkpoint of this cohort (same members, same configs)."""
        if state.get("format") != COHORT_FORMAT:
            raise CheckpointMismatch(f"checkpoint format {state.get('format')!r}, expected {COHORT_FORMAT!r}")
        saved = state["configs"]
        if len(saved) != len(self.solos):
            raise CheckpointMismatch(f"the checkpoint holds {len(saved)} members, this cohort {len(self.solos)}")
        for k, (t, cfg) in enumerate(zip(self.solos, saved, strict=True)):
            diff = t.cfg.differences(normalize_saved_config(cfg), STRUCTURAL + HYPERPARAMS)
            if diff:
                raise CheckpointMismatch(f"member {k}'s config differs from the checkpoint's: "
                                         + ", ".join(f"{n}: {a!r} vs {b!r}" for n, (a, b) in diff.items()))
        for k in [m for m in self.active if m not in state["active"]]:
            self.stop(k)  # the stacks and the optimizers' members now have the checkpoint's shapes
        self.retired = {int(k): v for k, v in state["retired"].items()}
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"], self.generator.parameters())
        self.opt_d.load_state_dict(state["opt_d"], self.critic.parameters())
        self._clips = None
        self.step = int(state["step"])
        for t, member in zip(self.solos, state["members"], strict=True):
            t.step, t.critic_steps = int(member["step"]), int(member["critic_steps"])
            t.real_samples_seen = int(member["real_samples_seen"])
            t.data_rng.set_state(member["rng"]["data"])
            if member["rng"]["noise_device"] == t.device.type:
                t.noise_rng.set_state(member["rng"]["noise"])
            else:  # CUDA and CPU generator states are not interchangeable: continue reproducibly
                t.noise_rng.manual_seed(t.cfg.seed + 1 + t.step)
        torch.set_rng_state(state["torch_rng"])


def without_members(state: dict[str, Any], stopped: dict[int, dict[str, dict[str, Tensor]]]) -> dict[str, Any]:
    """A cohort state (``CohortTrainer.state_dict``) with the active members ``stopped`` retired
    with the networks given: the state had they stopped before it was taken (``stop`` in sorted
    order, which keeps the last member's slices in the stacks when no member is left)."""
    if not stopped:
        return state
    active = [k for k in state["active"] if k not in stopped]
    kept = active or [max(stopped)]
    index = torch.tensor([state["active"].index(k) for k in kept])

    def stack(net: dict[str, dict[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
        return {part: {name: t[index.to(t.device)] for name, t in tensors.items()} for part, tensors in net.items()}

    def optimizer(opt: dict[str, Any]) -> dict[str, Any]:
        return {**opt, "state": [{k: v[index.to(v.device)] for k, v in s.items()} for s in opt["state"]]}

    return {**state, "active": active, "generator": stack(state["generator"]), "critic": stack(state["critic"]),
            "opt_g": optimizer(state["opt_g"]), "opt_d": optimizer(state["opt_d"]),
            "retired": {**state["retired"], **{str(k): nets for k, nets in stopped.items()}}}


def _member_norms(params: list[Tensor]) -> Tensor:
    """The gradient norm of each member over all its parameters: [K]."""
    grads = [p.grad.flatten(1) for p in params if p.grad is not None]
    return torch.cat(grads, dim=1).norm(2, dim=1)


def member_checkpoint(state: dict[str, Any], k: int) -> dict[str, Any]:
    """Member ``k`` of a cohort checkpoint (``cohort_run.cohort_checkpoint``) as a solo run's
    checkpoint reads for its artifacts and its evaluation: config, step, generator, critic,
    evaluation state and samples. Its optimizer and RNG states stay in the stack: a member is
    continued only as part of its cohort."""
    cohort = state["cohort"]
    if str(k) in cohort["retired"]:
        nets = cohort["retired"][str(k)]
    else:
        i = cohort["active"].index(k)
        nets = {net: {name: t[i] for part in ("params", "buffers") for name, t in cohort[net][part].items()}
                for net in ("generator", "critic")}
    member = cohort["members"][k]
    return {"format": COHORT_FORMAT, "config": cohort["configs"][k], "step": member["step"],
            "critic_steps": member["critic_steps"], "generator": nets["generator"], "critic": nets["critic"],
            "evaluation": state["evaluation"][k], "samples": state.get("samples", {}).get(str(k))}
