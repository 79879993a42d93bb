"""The single training loop: step counts, clipping, fresh batches, exact resume."""

import pytest
import torch

from ganlib.config import GanConfig
from ganlib.train import load_checkpoint, train
from ganlib.trainer import CheckpointMismatch, Trainer

LOSSES = ["gan_minimax", "gan_ns", "wgan", "wgan_gp"]


def _count_steps(optimizer):
    counter = {"n": 0}
    optimizer.register_step_post_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
    return counter


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n_critic", [1, 3])
def test_n_critic_critic_steps_then_one_generator_step(tiny, loss, n_critic):
    trainer = Trainer(dict(tiny, loss=loss, n_critic=n_critic))
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


def test_clipping_keeps_every_critic_parameter_in_the_box_at_every_use(tiny):
    c = 0.02
    trainer = Trainer(dict(tiny, loss="wgan", clip=c, n_critic=3, lr_d=0.05))  # big lr: would leave the box
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


def test_no_clipping_outside_wgan(tiny):
    trainer = Trainer(dict(tiny, loss="wgan_gp", lr_d=0.05))
    for _ in range(3):
        trainer.train_step()
    assert max(p.abs().max().item() for p in trainer.critic.parameters()) > 0.05


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
                    "status", "reason", "objective"}
        assert expected <= set(metrics)
        assert all(isinstance(v, (int, float)) for k, v in metrics.items() if k not in ("status", "reason"))
        assert metrics["status"] == "ok" and metrics["reason"] == ""


def test_model_defaults_are_resolved_and_recorded(tiny):
    trainer = Trainer(dict(tiny, dataset="digits", width=None, depth=None))
    cfg = trainer.cfg
    assert (cfg.model, cfg.d_norm, cfg.g_norm) == ("dcgan", "layer", "batch")
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in trainer.critic.modules())
    assert GanConfig.from_dict(cfg.to_dict()) == cfg
