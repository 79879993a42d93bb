"""The evaluator inside a training run: which metrics, computed on what, checked against
independent computations; its state survives a resume."""

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.stats import spearmanr

from ganlib.evaluate import Evaluator, primary_metric
from ganlib.metrics.fid import DEFAULT_CACHE
from ganlib.metrics.wasserstein import w1_exact
from ganlib.train import train
from ganlib.trainer import Trainer


def _history(config, resume=None):
    history, states = [], []
    train(config, report=lambda m, s: (history.append(m), states.append(s)), resume=resume)
    return history, states


@pytest.mark.parametrize("dataset, loss, expected, absent, extractor", [
    ("ring8", "wgan_gp", {"w_critic", "w1", "swd", "fid", "modes", "hq", "rkl", "diversity"}, {"d_fake", "kid"},
     "identity"),
    ("swissroll", "gan_ns", {"d_real", "d_fake", "w1", "swd", "fid", "diversity"}, {"w_critic", "modes", "kid"},
     "identity"),
    ("digits", "wgan", {"w_critic", "swd", "fid", "kid", "diversity"}, {"w1", "modes"}, "digits_cnn_v1"),
])
def test_metrics_per_kind_of_data(tiny, dataset, loss, expected, absent, extractor):
    history, _ = _history(dict(tiny, dataset=dataset, loss=loss, steps=2))
    [metrics] = history
    assert expected <= set(metrics) and not absent & set(metrics)
    assert all(np.isfinite(metrics[k]) for k in expected)
    trainer = Trainer(dict(tiny, dataset=dataset, loss=loss))
    assert Evaluator(trainer).feature_extractor == extractor
    assert primary_metric(trainer.data)[0] == ("fid" if dataset == "digits" else "w1")


def test_w1_fid_and_w_critic_match_independent_computations(tiny):
    trainer = Trainer(dict(tiny, loss="wgan_gp", eval_samples=300))
    for _ in range(3):
        trainer.train_step()
    metrics = Evaluator(trainer).metrics()
    fake, heldout = trainer.sample(300).double(), trainer.data.heldout.double()

    # exact W1 against the first eval_samples held-out points (a fixed subset)
    assert metrics["w1"] == pytest.approx(w1_exact(fake, heldout[:300]), rel=1e-9)
    assert metrics["w1"] != pytest.approx(w1_exact(fake, heldout[300:600]), rel=1e-6)

    # FID in data space (identity features), by numpy and scipy's sqrtm
    a, b = fake.numpy(), heldout.numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert metrics["fid"] == pytest.approx(expected, rel=1e-6)

    # the critic's estimate on HELD-OUT real data, not on a training batch
    with torch.no_grad():
        f = lambda x: trainer.critic(x.float()).double().mean().item()
        assert metrics["w_critic"] == pytest.approx(f(heldout) - f(fake), rel=1e-5)
        batch = trainer.data.sample(len(heldout), torch.Generator().manual_seed(5))
        assert metrics["w_critic"] != pytest.approx(f(batch) - f(fake), rel=1e-4)


def test_real_statistics_are_computed_once_per_process(tiny):
    first = Evaluator(Trainer(dict(tiny, seed=0)))
    second = Evaluator(Trainer(dict(tiny, seed=1, loss="wgan")))
    assert first.real is second.real  # the same cached FeatureSet, not a recomputation
    assert ("ring8/heldout", "identity", len(first.data.heldout)) in DEFAULT_CACHE._memory


def test_w_critic_corr_is_the_rank_correlation_of_the_run_so_far(tiny):
    history, _ = _history(dict(tiny, loss="wgan", clip=0.1, steps=12, eval_every=2))
    assert "w_critic_corr" not in history[0] and "w_critic_corr" not in history[1]  # undefined below 3
    for i in range(2, len(history)):
        w = [m["w_critic"] for m in history[:i + 1]]
        w1 = [m["w1"] for m in history[:i + 1]]
        assert history[i]["w_critic_corr"] == pytest.approx(spearmanr(w, w1).statistic)


def test_generator_collapsed_to_one_image_is_flagged_by_diversity(tiny):
    trainer = Trainer(dict(tiny, dataset="digits", loss="wgan_gp", collapse={"warmup_steps": 0}))
    evaluator = Evaluator(trainer)
    healthy = evaluator.metrics()["diversity"]
    assert healthy > 1e-3  # an untrained generator varies little, but it varies
    with torch.no_grad():
        for p in trainer.generator.parameters():
            p.zero_()  # every z now maps to the same image
    metrics = evaluator({"step": 1})
    assert metrics["diversity"] == pytest.approx(0, abs=1e-9)
    assert metrics["status"] == "collapsed" and "diversity" in metrics["reason"]
    assert metrics["objective"] == 1e3


def test_resume_continues_the_evaluation_state(tiny):
    # A stall rule strict enough to fire 3 evaluations after the first: straight, the run is
    # flagged at step 8. Resumed from the step-6 checkpoint it must be flagged at step 8 too,
    # which needs the detector's counters (and the w_critic / w1 history) from the checkpoint.
    config = dict(tiny, loss="wgan", clip=0.1, steps=10, eval_every=2, checkpoint_every=2,
                  collapse={"stall_patience": 3, "stall_min_delta": 0.5})
    straight, _ = _history(config)
    assert [m["step"] for m in straight] == [2, 4, 6, 8] and straight[-1]["status"] == "collapsed"
    first, states = _history(dict(config, steps=6))
    rest, _ = _history(config, resume=states[-1])
    timeless = lambda history: [{k: v for k, v in m.items() if k != "samples_per_s"} for m in history]
    assert timeless(first + rest) == timeless(straight)  # every metric, w_critic_corr and the verdict
    assert "stalled" in rest[-1]["reason"] and "w_critic_corr" in rest[-1]
