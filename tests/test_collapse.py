"""Each collapse rule fires on a constructed metric stream and stays quiet on a healthy one."""

import math

import pytest

from ganlib.collapse import COLLAPSED, DIVERGED, OK, CollapseDetector, CollapseRules
from ganlib.config import ConfigError, GanConfig


def healthy_stream(n=40):
    """A run that improves slowly with noisy but bounded losses and norms."""
    for i in range(n):
        step = (i + 1) * 100
        yield dict(step=step, loss_d=-0.5 + 0.01 * (i % 3), loss_g=0.2, grad_norm_d=1.0 + 0.3 * (i % 4),
                   grad_norm_g=0.5 + 0.1 * (i % 2), w_critic=0.4 / (1 + 0.05 * i), w1=1.0 / (1 + 0.1 * i),
                   modes=min(8, 3 + i), hq=0.3)


def run(stream, rules=None, **kw):
    detector = CollapseDetector(rules or CollapseRules(), primary="w1", n_modes=8, **kw)
    for metrics in stream:
        status, reason = detector.update(metrics)
    return status, reason


def test_healthy_stream_is_never_flagged():
    detector = CollapseDetector(CollapseRules(), primary="w1", n_modes=8)
    assert all(detector.update(m) == (OK, "") for m in healthy_stream())


def with_change(index, **changes):
    return [dict(m, **changes) if i == index else m for i, m in enumerate(healthy_stream(12))]


@pytest.mark.parametrize("change, words", [
    (dict(loss_d=math.nan), "non-finite loss_d"),
    (dict(w1=math.inf), "non-finite w1"),
    (dict(grad_norm_d=500.0), "grad_norm_d"),
    (dict(w_critic=300.0), "w_critic"),
])
def test_divergence_rules(change, words):
    status, reason = run(with_change(8, **change))
    assert status == DIVERGED and words in reason


def test_non_finite_parameters_diverge():
    detector = CollapseDetector(CollapseRules(), primary="w1")
    assert detector.update(dict(step=1, loss_d=0.1), params_finite=False)[0] == DIVERGED


def test_verdicts_are_sticky():
    stream = with_change(5, loss_d=math.nan)
    detector = CollapseDetector(CollapseRules(), primary="w1", n_modes=8)
    statuses = [detector.update(m)[0] for m in stream]
    assert statuses[:5] == [OK] * 5 and set(statuses[5:]) == {DIVERGED}


def test_gan_discriminator_saturation_needs_patience():
    stream = [dict(m, loss_d=0.01, d_fake=0.001) if i >= 6 else dict(m, d_fake=0.4)
              for i, m in enumerate(healthy_stream(12))]
    detector = CollapseDetector(CollapseRules(saturation_patience=3), primary="w1", n_modes=8)
    statuses = [detector.update(m)[0] for m in stream]
    assert statuses[:8] == [OK] * 8 and statuses[8] == COLLAPSED  # third saturated evaluation
    assert "saturated" in detector.reason
    # one saturated evaluation alone is not enough
    assert run(with_change(6, loss_d=0.01, d_fake=0.001))[0] == OK


def test_mode_collapse_only_after_warmup():
    stream = [dict(m, modes=2) for m in healthy_stream(12)]  # 2 of 8 <= 0.25 * 8, hq 0.3
    detector = CollapseDetector(CollapseRules(warmup_steps=500), primary="w1", n_modes=8)
    statuses = [detector.update(m)[0] for m in stream]
    assert statuses[:4] == [OK] * 4 and statuses[4] == COLLAPSED and "2 of 8 modes" in detector.reason


def test_few_modes_without_high_quality_samples_is_not_mode_collapse():
    # A generator that has not reached the data yet (hq ~ 0) covers no mode, but it has not
    # collapsed onto a few: that verdict is the stall rule's, not the mode rule's.
    stream = [dict(m, modes=0, hq=0.01) for m in healthy_stream(12)]
    assert run(stream)[0] == OK
    assert run(stream, CollapseRules(mode_collapse_hq=0.0))[0] == COLLAPSED


def test_sample_diversity_collapse():
    stream = [dict(m, diversity=0.9 if i < 7 else 0.05) for i, m in enumerate(healthy_stream(12))]
    status, reason = run(stream)
    assert status == COLLAPSED and "diversity" in reason


def test_stall_rule():
    flat = [dict(m, w1=0.8) for m in healthy_stream(30)]
    status, reason = run(flat, CollapseRules(stall_patience=10))
    assert status == COLLAPSED and "stalled" in reason
    assert run(flat, CollapseRules(stall_patience=0))[0] == OK
    improving = [dict(m, hq=0.1 * i) for i, m in enumerate(healthy_stream(30))]
    detector = CollapseDetector(CollapseRules(stall_patience=5), primary="hq", mode="max")
    assert all(detector.update(m)[0] == OK for m in improving)


def test_thresholds_are_validated_in_the_config():
    assert GanConfig(collapse={"warmup_steps": 100}).collapse == {"warmup_steps": 100}
    with pytest.raises(ConfigError, match="collapse.warmup"):
        GanConfig(collapse={"warmup": 100})
    with pytest.raises(ConfigError, match="collapse.min_mode_fraction"):
        GanConfig(collapse={"min_mode_fraction": 2.0})
    with pytest.raises(ConfigError, match="collapse.stall_patience"):
        GanConfig(collapse={"stall_patience": 1.5})
