"""The gradient penalty against an independent per-sample computation (torch.func)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ganlib.penalties import clip_weights_, gradient_penalty


def _critic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))


def _reference_penalty(critic, real, fake, eps):
    """Per-sample input gradients through vmap(grad(.)) of a single-sample function."""
    params = dict(critic.named_parameters())

    def f(x):
        return functional_call(critic, params, (x.unsqueeze(0),)).squeeze()

    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
    grads = vmap(grad(f))(x_hat)
    return ((grads.norm(dim=1) - 1) ** 2).mean()


def test_penalty_equals_per_sample_reference():
    critic = _critic()
    real, fake = torch.randn(8, 3), torch.randn(8, 3) + 2
    rng = torch.Generator().manual_seed(123)
    got = gradient_penalty(critic, real, fake, generator=rng)
    eps = torch.rand(8, 1, generator=torch.Generator().manual_seed(123)).squeeze(1)  # same draw
    expected = _reference_penalty(critic, real, fake, eps)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_eps_is_drawn_per_sample():
    critic = _critic()
    real, fake = torch.randn(8, 3), torch.randn(8, 3) + 2
    got = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(7))
    eps = torch.rand(8, generator=torch.Generator().manual_seed(7))
    shared = _reference_penalty(critic, real, fake, torch.full((8,), eps[0].item()))
    per_sample = _reference_penalty(critic, real, fake, eps)
    assert eps.unique().numel() == 8
    assert got.item() == pytest.approx(per_sample.item(), rel=1e-5)
    assert got.item() != pytest.approx(shared.item(), rel=1e-3)


def test_norm_is_per_sample_not_over_the_batch():
    # A linear critic f(x) = w.x has gradient w at every point: per-sample norms are ||w||,
    # so the penalty is (||w|| - 1)^2; a batch-wide norm would give (sqrt(n)*||w|| - 1)^2.
    critic = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    penalty = gradient_penalty(critic, torch.randn(16, 2), torch.randn(16, 2))
    assert penalty.item() == pytest.approx((5.0 - 1.0) ** 2, rel=1e-6)


def test_penalty_works_on_images_and_trains_the_critic():
    critic = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 1))
    penalty = gradient_penalty(critic, torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8))
    penalty.backward()  # create_graph=True: the penalty has gradients w.r.t. critic weights
    weights = [critic[0].weight, critic[2].weight]  # the last bias cannot change d f / d x
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)


def test_clip_clamps_every_parameter():
    critic = _critic()
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(100)
    clip_weights_(critic, 0.05)
    c = torch.tensor(0.05)  # the float32 value the parameters are clamped to
    for p in critic.parameters():
        assert (p.abs() <= c).all()
    assert max(p.abs().max() for p in critic.parameters()) == c
