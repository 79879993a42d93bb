"""The single training loop: every loss x constraint pair for step counts, the clip bound, the
penalty value and a finite run; fresh batches; exact resume; checkpoints refused with a reason."""

import pytest
import torch
from torch.func import functional_call, grad, vmap

from ganlib.config import CONSTRAINTS, LOSSES, GanConfig
from ganlib.train import load_checkpoint, train
from ganlib.trainer import CheckpointError, CheckpointMismatch, Trainer

# Every loss with every constraint; the unconstrained Wasserstein critic needs spectral norm.
PAIRS = [dict(loss=loss, constraint=constraint, **({"d_norm": "spectral"} if (loss, constraint) == (
    "wasserstein", "none") else {})) for loss in LOSSES for constraint in CONSTRAINTS]
PAIR_IDS = [f"{p['loss']}-{p['constraint']}" for p in PAIRS]


def _count_steps(optimizer):
    counter = {"n": 0}
    optimizer.register_step_post_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
    return counter


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("n_critic", [1, 3])
def test_n_critic_critic_steps_then_one_generator_step(tiny, pair, n_critic):
    trainer = Trainer(dict(tiny, **pair, n_critic=n_critic))
    d_steps, g_steps = _count_steps(trainer.opt_d), _count_steps(trainer.opt_g)
    batches = []
    original = trainer.data.sample
    trainer.data.sample = lambda n, g: batches.append(original(n, g)) or batches[-1]
    for iteration in range(1, 4):
        trainer.train_step()
        assert (d_steps["n"], g_steps["n"]) == (n_critic * iteration, iteration)
    assert trainer.step == 3
    # one fresh real batch per critic step, never reused
    assert len(batches) == 3 * n_critic
    assert len({b.sum().item() for b in batches}) == len(batches)


@pytest.mark.parametrize("loss", LOSSES)
def test_clipping_keeps_every_critic_parameter_in_the_box_at_every_use(tiny, loss):
    c = 0.02
    trainer = Trainer(dict(tiny, loss=loss, constraint="clip", clip=c, n_critic=3, lr_d=0.05))  # would leave the box
    bound = torch.tensor(c)
    seen = []

    def check(module, args):
        seen.append(max(p.detach().abs().max() for p in module.parameters()))

    trainer.critic.register_forward_pre_hook(check)
    for _ in range(4):
        trainer.train_step()
        assert all((p.abs() <= bound).all() for p in trainer.critic.parameters())
    assert seen and max(seen) <= bound
    assert max(seen) == bound  # the constraint is active, not vacuous


@pytest.mark.parametrize("pair", [p for p in PAIRS if p["constraint"] != "clip"], ids=lambda p: p["loss"] + "-"
                         + p["constraint"])
def test_no_clipping_without_the_clip_constraint(tiny, pair):
    trainer = Trainer(dict(tiny, **pair, lr_d=0.05))
    for _ in range(3):
        trainer.train_step()
    assert max(p.abs().max().item() for p in trainer.critic.parameters()) > 0.05


def _reference_penalty(critic, real, fake, eps):
    """Per-sample input gradients through vmap(grad(.)) of a single-sample critic."""
    params = {**dict(critic.named_parameters()), **dict(critic.named_buffers())}
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
    grads = vmap(grad(lambda x: functional_call(critic, params, (x.unsqueeze(0),)).squeeze()))(x_hat)
    return ((grads.norm(dim=1) - 1) ** 2).mean()


@pytest.mark.parametrize("loss", LOSSES)
def test_the_penalty_of_every_loss_matches_an_independent_computation(tiny, loss):
    trainer = Trainer(dict(tiny, loss=loss, constraint="gp", gp_lambda=7.0))
    for _ in range(2):
        trainer.train_step()
    # Replay the next critic step's random draws from copies of the run's generators.
    data_rng = torch.Generator().set_state(trainer.data_rng.get_state())
    noise_rng = torch.Generator().set_state(trainer.noise_rng.get_state())
    real = trainer.data.sample(tiny["batch_size"], data_rng)
    with torch.no_grad():
        fake = trainer.generator(torch.randn(tiny["batch_size"], trainer.cfg.z_dim, generator=noise_rng))
    eps = torch.rand(tiny["batch_size"], 1, generator=noise_rng).squeeze(1)
    expected = _reference_penalty(trainer.critic, real, fake, eps)  # before the update
    critic_loss = trainer.loss.d_loss(trainer.critic(real), trainer.critic(fake)).item()
    loss_value, gp, _ = trainer.critic_step()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss_value.item() == pytest.approx(critic_loss, rel=1e-5)
    assert trainer.constraint.weight == 7.0


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_a_short_run_of_every_pair_stays_finite(tiny, pair):
    reports = []
    train(dict(tiny, **pair, steps=30, eval_every=10), report=lambda m, s: reports.append(m))
    last = reports[-1]
    assert last["step"] == 30 and last["status"] in ("ok", "stalled")
    assert all(torch.isfinite(torch.tensor(v)) for k, v in last.items() if isinstance(v, float))
    assert ("gp" in last) == (pair["constraint"] == "gp")


def _params(trainer):
    return [p.detach().clone() for p in list(trainer.generator.parameters()) + list(trainer.critic.parameters())]


@pytest.mark.parametrize("overrides", [
    dict(loss="wgan_gp"),  # uses the noise stream for eps too
    dict(loss="wgan"),
    dict(loss="gan_ns", dataset="digits", width=4, g_norm="batch", d_norm="batch"),  # conv + BN buffers
])
def test_resume_continues_exactly(tiny, tmp_path, overrides):
    config = dict(tiny, steps=6, eval_every=3, **overrides)
    straight = train(config, report=lambda m, s: None)

    saved = {}
    train(dict(config, steps=3), report=lambda m, s: saved.setdefault(m["step"], s))
    torch.save(saved[3], tmp_path / "half.pt")
    resumed = train(config, report=lambda m, s: None, resume=load_checkpoint(tmp_path / "half.pt"))

    assert resumed.step == straight.step == 6
    for a, b in zip(_params(straight), _params(resumed), strict=True):
        assert torch.equal(a, b)
    for key, value in straight.generator.state_dict().items():  # BN running stats too
        assert torch.equal(value, resumed.generator.state_dict()[key])


def test_resume_refuses_a_different_config(tiny):
    saved = {}
    train(dict(tiny, steps=2, eval_every=2), report=lambda m, s: saved.update(state=s))
    with pytest.raises(CheckpointMismatch, match="width"):
        Trainer(dict(tiny, width=32)).load_state_dict(saved["state"])
    with pytest.raises(CheckpointMismatch, match="lr_d"):
        Trainer(dict(tiny, lr_d=1e-3)).load_state_dict(saved["state"])


def test_population_restore_applies_the_restoring_trials_hyperparameters(tiny):
    saved = {}
    train(dict(tiny, steps=2, eval_every=2), report=lambda m, s: saved.update(state=s))
    assert saved["state"]["opt_d"]["param_groups"][0]["lr"] == 1e-4  # the donor's value is in the file
    trainer = Trainer(dict(tiny, lr_d=3e-3, lr_g=2e-3, beta1=0.5))
    trainer.load_state_dict(saved["state"], allow_hparam_change=True)
    assert trainer.step == 2
    assert [g["lr"] for g in trainer.opt_d.param_groups] == [3e-3]
    assert [g["lr"] for g in trainer.opt_g.param_groups] == [2e-3]
    assert trainer.opt_d.param_groups[0]["betas"] == (0.5, 0.9)
    assert trainer.opt_d.state  # Adam moments came from the checkpoint


def test_a_population_restore_puts_a_donors_critic_into_this_runs_clipping_box(tiny):
    # Algorithm 1 clips after every critic update: a critic restored from a donor clipped at
    # c = 0.1 is used by the next critic step and the evaluations before any update
    saved = {}
    wide = dict(tiny, loss="wgan", constraint="clip", clip=0.1, optimizer="rmsprop", steps=2, eval_every=2)
    train(wide, report=lambda m, s: saved.update(state=s))
    assert max(p.abs().max().item() for p in saved["state"]["critic"].values()) > 0.01
    trainer = Trainer(dict(wide, clip=0.01))
    trainer.load_state_dict(saved["state"], allow_hparam_change=True)
    assert max(p.abs().max().item() for p in trainer.critic.parameters()) <= 0.01


def test_damaged_or_foreign_checkpoints_are_refused_naming_the_file(tiny, tmp_path):
    trainer = train(dict(tiny, steps=2, eval_every=2), report=lambda m, s: None)
    torch.save(trainer.state_dict(), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"model": torch.zeros(3)}, tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    assert load_checkpoint(tmp_path / "good.pt")["step"] == 2
    for name, words in (("truncated.pt", "damaged"), ("foreign.pt", "not a ganlib checkpoint"),
                        ("text.pt", "damaged"), ("missing.pt", "does not exist")):
        with pytest.raises(CheckpointError, match=f"{name}.*{words}"):
            load_checkpoint(tmp_path / name)


def test_a_checkpoint_of_the_papers_format_still_resumes(tiny):
    saved = {}
    train(dict(tiny, loss="wgan", steps=2, eval_every=2), report=lambda m, s: saved.update(state=s))
    old = dict(saved["state"], format=1, config={**saved["state"]["config"], "loss": "wgan"})
    del old["config"]["constraint"]
    trainer = Trainer(dict(tiny, loss="wgan"))
    trainer.load_state_dict(old)
    assert trainer.step == 2


def test_checkpoint_loads_with_weights_only(tiny, tmp_path):
    trainer = train(dict(tiny, steps=2, eval_every=2), report=lambda m, s: None)
    torch.save(trainer.state_dict(), tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["step"] == 2 and state["config"] == trainer.cfg.to_dict()
    assert set(state["rng"]) >= {"data", "noise", "torch"}


def test_report_cadence_and_metrics(tiny):
    reports = []
    train(dict(tiny, loss="wgan_gp", steps=5, eval_every=2, checkpoint_every=4),
          report=lambda m, s: reports.append((m, s is not None)))
    assert [m["step"] for m, _ in reports] == [2, 4, 5]  # the last step is always reported
    assert [saved for _, saved in reports] == [False, True, True]
    for metrics, _ in reports:
        expected = {"loss_d", "loss_g", "gp", "grad_norm_d", "grad_norm_g", "samples_per_s", "modes", "hq",
                    "status", "reason", "objective", "score", "scored"}
        assert expected <= set(metrics)
        assert all(isinstance(v, (int, float)) for k, v in metrics.items() if k not in ("status", "reason"))
        assert metrics["status"] == "ok" and metrics["reason"] == ""


def test_model_defaults_are_resolved_and_recorded(tiny):
    trainer = Trainer(dict(tiny, dataset="digits", width=None, depth=None))
    cfg = trainer.cfg
    assert (cfg.model, cfg.d_norm, cfg.g_norm) == ("dcgan", "layer", "batch")
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in trainer.critic.modules())
    assert GanConfig.from_dict(cfg.to_dict()) == cfg


def test_evaluation_noise_is_drawn_on_the_cpu_whatever_the_trainers_device(tiny, monkeypatch):
    """CUDA's generator draws other numbers than the CPU's from one seed: the evaluation noise is
    drawn on the CPU and moved, so a checkpoint is scored on the same samples on any device. Here
    the trainer's device is 'meta' (no CUDA on CI): a generator made for it would be caught."""
    from ganlib.trainer import EVAL_NOISE_SEED

    trainer = Trainer(dict(tiny))
    made, real_generator = [], torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device="cpu": made.append(torch.device(device)) or
                        real_generator(device))

    class Shape(torch.nn.Module):  # what a generator on the device returns, read back on the CPU
        def forward(self, z):
            seen.append(z.device)
            return torch.zeros(z.shape[0], 2)

    seen = []
    trainer.device = torch.device("meta")
    assert trainer.sample(10, chunk=4, generator=Shape()).shape == (10, 2)
    assert made == [torch.device("cpu")] and seen == [torch.device("meta")] * 3
    trainer.device = torch.device("cpu")  # and on the CPU the noise is that CPU generator's draws
    noise = torch.randn(10, trainer.cfg.z_dim, generator=real_generator().manual_seed(EVAL_NOISE_SEED))
    torch.testing.assert_close(trainer.sample(10), trainer.generator.eval()(noise))
