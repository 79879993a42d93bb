"""Each loss against a hand computation in plain Python floats on fixed small tensors."""

import math

import pytest
import torch

from ganlib import losses

REAL = [0.0, 2.0, -1.5]
FAKE = [-1.0, 1.0, 0.5]


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def mean(values):
    return sum(values) / len(values)


def test_gan_discriminator_loss_is_negative_log_likelihood():
    # D maximises log D(x) + log(1 - D(G(z))): its loss is the negation.
    expected = -mean([math.log(sigmoid(r)) for r in REAL]) - mean([math.log(1 - sigmoid(f)) for f in FAKE])
    got = losses.gan_d_loss(torch.tensor(REAL), torch.tensor(FAKE)).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_minimax_generator_descends_log_one_minus_d():
    expected = mean([math.log(1 - sigmoid(f)) for f in FAKE])
    assert losses.gan_minimax_g_loss(torch.tensor(FAKE)).item() == pytest.approx(expected, rel=1e-6)


def test_non_saturating_generator_ascends_log_d():
    expected = -mean([math.log(sigmoid(f)) for f in FAKE])
    assert losses.gan_ns_g_loss(torch.tensor(FAKE)).item() == pytest.approx(expected, rel=1e-6)


def test_wasserstein_losses():
    assert losses.wasserstein_d_loss(torch.tensor(REAL), torch.tensor(FAKE)).item() == pytest.approx(
        mean(FAKE) - mean(REAL), rel=1e-6)
    assert losses.wasserstein_g_loss(torch.tensor(FAKE)).item() == pytest.approx(-mean(FAKE), rel=1e-6)


def test_gan_losses_stay_finite_where_log_sigmoid_by_hand_overflows():
    extreme = torch.tensor([200.0, -200.0])
    naive = torch.log(1 - torch.sigmoid(extreme))  # log(0) = -inf at l = 200
    assert not torch.isfinite(naive).all()
    for value in (losses.gan_d_loss(extreme, extreme), losses.gan_minimax_g_loss(extreme),
                  losses.gan_ns_g_loss(extreme)):
        assert torch.isfinite(value)


def test_saturation_minimax_gradient_vanishes_non_saturating_does_not():
    # The GAN paper's argument for the non-saturating loss: when D rejects fakes confidently
    # (logit very negative), log(1 - D) has a vanishing gradient, -log D does not.
    logit = torch.tensor([-10.0], requires_grad=True)
    (g_mm,) = torch.autograd.grad(losses.gan_minimax_g_loss(logit), logit)
    (g_ns,) = torch.autograd.grad(losses.gan_ns_g_loss(logit), logit)
    assert abs(g_mm.item()) < 1e-4 < abs(g_ns.item())


def test_least_squares_losses():
    # Mao et al. 2017 with targets a = 0 (fake), b = c = 1 (real, and what G wants D to say)
    expected_d = 0.5 * mean([(r - 1) ** 2 for r in REAL]) + 0.5 * mean([f**2 for f in FAKE])
    expected_g = 0.5 * mean([(f - 1) ** 2 for f in FAKE])
    assert losses.least_squares_d_loss(torch.tensor(REAL), torch.tensor(FAKE)).item() == pytest.approx(expected_d)
    assert losses.least_squares_g_loss(torch.tensor(FAKE)).item() == pytest.approx(expected_g)


def test_every_loss_has_one_signature_and_only_minimax_saturates():
    real, fake = torch.randn(4), torch.randn(4)
    for loss in losses.LOSSES.values():
        assert loss.d_loss(real, fake).dim() == 0
        assert loss.g_loss(fake).dim() == 0
        assert all(isinstance(v, float) for v in loss.describe(real, fake).values())
    assert [name for name, loss in losses.LOSSES.items() if loss.saturates] == ["minimax"]
    assert losses.LOSSES["wasserstein"].describe(torch.tensor(REAL), torch.tensor(FAKE)) == {
        "w_critic": pytest.approx(mean(REAL) - mean(FAKE))}
    assert losses.LOSSES["non_saturating"].describe(torch.tensor(REAL), torch.tensor(FAKE))["d_fake"] == \
        pytest.approx(mean([sigmoid(f) for f in FAKE]))
