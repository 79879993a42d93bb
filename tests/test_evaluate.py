"""The evaluator inside a training run: which metrics, computed on what, checked against
independent computations; its state survives a resume."""

import copy

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.stats import spearmanr

from ganlib.evaluate import Evaluator, evaluate_checkpoint, primary_metric
from ganlib.metrics.fid import DEFAULT_CACHE
from ganlib.metrics.wasserstein import swd, w1_exact
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
    ("digits", "wgan", {"w_critic", "swd", "fid", "kid", "diversity"}, {"w1", "modes"}, "digits_cnn_"),
])
def test_metrics_per_kind_of_data(tiny, dataset, loss, expected, absent, extractor):
    history, _ = _history(dict(tiny, dataset=dataset, loss=loss, steps=2))
    [metrics] = history
    assert expected <= set(metrics) and not absent & set(metrics)
    assert all(np.isfinite(metrics[k]) for k in expected)
    trainer = Trainer(dict(tiny, dataset=dataset, loss=loss))
    name = Evaluator(trainer).feature_extractor
    assert name == extractor if extractor == "identity" else name.startswith(extractor) and "untrained" not in name
    assert primary_metric(trainer.data) == ("fid" if dataset == "digits" else "w1")


def test_w1_fid_and_w_critic_match_independent_computations(tiny):
    trainer = Trainer(dict(tiny, loss="wgan_gp", eval_samples=300))
    for _ in range(3):
        trainer.train_step()
    metrics = Evaluator(trainer).metrics()
    fake, heldout = trainer.sample(300).double(), trainer.data.heldout.double()

    # exact W1 against the first eval_samples held-out points (a fixed subset)
    assert metrics["w1"] == pytest.approx(w1_exact(fake, heldout[:300]), rel=1e-9)
    assert metrics["w1"] != pytest.approx(w1_exact(fake, heldout[300:600]), rel=1e-6)
    # sliced W1 with the real projections sorted once: POT's value on the same subset and seed
    assert metrics["swd"] == pytest.approx(swd(fake, heldout[:300], n_projections=64, seed=0), rel=1e-9)

    # FID in data space (identity features), by numpy and scipy's sqrtm
    a, b = fake.numpy(), heldout.numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert metrics["fid"] == pytest.approx(expected, rel=1e-6)

    # the critic's estimate on HELD-OUT real data (the fixed subset of the distances), not on a training batch
    with torch.no_grad():
        f = lambda x: trainer.critic(x.float()).double().mean().item()
        assert metrics["w_critic"] == pytest.approx(f(heldout[:300]) - f(fake), rel=1e-5)
        batch = trainer.data.sample(300, torch.Generator().manual_seed(5))
        assert metrics["w_critic"] != pytest.approx(f(batch) - f(fake), rel=1e-4)


def test_real_statistics_are_computed_once_per_process(tiny):
    first = Evaluator(Trainer(dict(tiny, seed=0)))
    second = Evaluator(Trainer(dict(tiny, seed=1, loss="wgan")))
    assert first.real is second.real  # the same cached FeatureSet, not a recomputation
    assert ("ring8/heldout", "identity", len(first.data.heldout)) in DEFAULT_CACHE._memory


def test_a_feature_extractor_is_loaded_once_per_process_and_device(tiny, monkeypatch):
    # a cohort's K members each build an evaluator: with Inception, K loads of ~100 MB each
    import ganlib.evaluate

    loads = []
    real = ganlib.evaluate.feature_extractor_for
    monkeypatch.setattr(ganlib.evaluate, "_EXTRACTORS", {})
    monkeypatch.setattr(ganlib.evaluate, "feature_extractor_for", lambda *a, **kw: loads.append(a) or real(*a, **kw))
    digits = dict(tiny, dataset="digits", loss="wgan")
    members = [Evaluator(Trainer(dict(digits, seed=seed, lr_d=lr))) for seed, lr in ((0, 1e-4), (1, 1e-3))]
    assert members[0].extractor is members[1].extractor and loads == [("digits", "image")]
    other = Evaluator(Trainer(dict(tiny, loss="wgan")))  # another dataset: its own extractor
    assert other.feature_extractor == "identity" and len(loads) == 2
    fake = members[0].trainer.sample(64)
    assert torch.equal(members[0].extractor(fake), real("digits", "image")(fake))  # the same features


def test_a_trial_scores_with_the_extractor_the_driver_shipped_not_its_nodes_file(tiny, monkeypatch):
    # on a cluster a worker may lack the LeNet / Inception file the driver's pre-flight found, or
    # hold other weights under its name: trials get the driver's extractor (tune.trainable)
    import copy as copying

    import ganlib.evaluate
    from ganlib.metrics.features import feature_extractor_for

    monkeypatch.setattr(ganlib.evaluate, "_EXTRACTORS", {})
    monkeypatch.setattr(ganlib.evaluate, "_SHIPPED", {})
    monkeypatch.setattr(ganlib.evaluate, "feature_extractor_for", lambda *a, **kw: pytest.fail("loaded a file"))
    digits = dict(tiny, dataset="digits", loss="wgan")
    trainer = Trainer(digits)
    shipped = copying.deepcopy(feature_extractor_for("digits", "image"))
    with torch.no_grad():
        for p in shipped.parameters():
            p.mul_(0.5)  # other weights than the file's: the driver's are the ones used
    ganlib.evaluate.use_extractor(trainer.data, None, shipped)
    evaluator = Evaluator(trainer)
    fake = trainer.sample(32)
    assert torch.equal(evaluator.extractor(fake), shipped(fake))
    assert not torch.equal(shipped(fake), feature_extractor_for("digits", "image")(fake))


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
    assert metrics["objective"] == metrics["score"] == evaluator.penalty == 10 * 1000 * evaluator.baseline


def test_resume_continues_the_evaluation_state(tiny):
    # A stall rule strict enough to fire 3 evaluations after the first: straight, the run is
    # flagged at step 8. Resumed from the step-6 checkpoint it must be flagged at step 8 too,
    # which needs the detector's counters (and the w_critic / w1 history) from the checkpoint.
    config = dict(tiny, loss="wgan", clip=0.1, steps=10, eval_every=2, checkpoint_every=2,
                  collapse={"stall_patience": 3, "stall_min_delta": 0.5})
    straight, _ = _history(config)
    assert [m["step"] for m in straight] == [2, 4, 6, 8] and straight[-1]["status"] == "stalled"
    first, states = _history(dict(config, steps=6))
    rest, _ = _history(config, resume=states[-1])
    timeless = lambda history: [{k: v for k, v in m.items() if k != "samples_per_s"} for m in history]
    assert timeless(first + rest) == timeless(straight)  # every metric, w_critic_corr and the verdict
    assert "stalled" in rest[-1]["reason"] and "w_critic_corr" in rest[-1]


def test_the_baseline_is_the_score_of_a_generator_at_the_data_mean(tiny):
    evaluator = Evaluator(Trainer(dict(tiny, eval_samples=300)))
    real, mean = evaluator.data.heldout[:300].double(), evaluator.data.heldout.double().mean(0)
    # W1 between a point mass and an empirical measure is the mean distance to that point
    assert evaluator.baseline == pytest.approx((real - mean).norm(dim=1).mean().item(), rel=1e-6)
    assert evaluator.detector.ceiling == 1000 * evaluator.baseline


def test_score_is_a_window_mean_and_the_objective_the_best_score_with_its_weights(tiny):
    config = dict(tiny, loss="wgan_gp", steps=12, eval_every=2, score_window=3, lr_g=5e-3, lr_d=5e-3)
    history, states = _history(config)
    w1 = [m["w1"] for m in history]
    for i, m in enumerate(history):
        window = w1[max(0, i - 2):i + 1]
        assert m["score"] == pytest.approx(sum(window) / len(window))
        assert m["objective"] == pytest.approx(min(h["score"] for h in history[:i + 1]))
    best = states[-1]["evaluation"]["best"]
    assert best["score"] == history[-1]["objective"]
    best_step = best["step"]
    assert history[best_step // 2 - 1]["score"] == best["score"]
    # the weights kept are the generator's at that evaluation: re-run to that step and compare
    again = train(dict(config, steps=best_step), report=lambda m, s: None)
    for key, value in again.generator.state_dict().items():
        assert torch.equal(value, best["generator"][key])


def test_w1_and_the_score_only_at_scored_evaluations(tiny):
    history, _ = _history(dict(tiny, steps=12, eval_every=2, score_every=6))
    assert [m["step"] for m in history if "w1" in m] == [2, 6, 12]  # the first, every 6, the last
    assert [m["scored"] for m in history] == [True, False, True, False, False, True]
    # between scored evaluations the score and objective are carried, the cheap metrics are fresh
    assert history[1]["score"] == history[0]["score"] and history[1]["swd"] != history[0]["swd"]


def test_a_saved_generator_is_rescored_offline(tiny, tmp_path):
    _, states = _history(dict(tiny, steps=4, eval_every=2))
    torch.save(states[-1], tmp_path / "checkpoint.pt")
    result = evaluate_checkpoint(states[-1], eval_samples=512)
    assert result["eval_samples"] == 512 and result["primary"] == "w1" and result["step"] == 4
    trainer = Trainer(dict(tiny, steps=4, eval_samples=512))
    trainer.generator.load_state_dict(states[-1]["generator"])
    assert result["w1"] == pytest.approx(w1_exact(trainer.sample(512), trainer.data.heldout[:512]), rel=1e-9)
    best = evaluate_checkpoint(states[-1], which="best")
    assert best["weights"] == "best"

    import json
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "ganlib.evaluate", str(tmp_path / "checkpoint.pt"),
                           "--eval-samples", "512"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["w1"] == pytest.approx(result["w1"])
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "ganlib.evaluate", str(tmp_path / "bad.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bad.pt" in proc.stderr and proc.stderr.startswith("error:")


def test_more_samples_than_the_held_out_set_has(tiny):
    # digits holds out 359 images; the default eval_samples is 1024
    history, _ = _history(dict(tiny, dataset="digits", loss="wgan_gp", width=4, steps=2, eval_every=2,
                               eval_samples=1024))
    assert all(np.isfinite(history[-1][k]) for k in ("swd", "fid", "kid", "w_critic", "diversity"))


def _same(a, b, ignore=("samples_per_s", "eval_overlap")) -> bool:
    """Equal as nested checkpoint states are: tensors bit for bit, everything else by ==, but for
    the keys ``ignore`` (a timing the detector's history keeps; the setting that differs)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a if k not in ignore)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _overlap_run(config):
    """(metrics without timings, checkpoint states, the trainer returned, how many steps the
    trainer was past each evaluation when it was concluded)."""
    history, states, lag = [], [], []
    observe = lambda trainer, metrics, evaluator: lag.append(trainer.step - metrics["step"])
    # a state holds the live tensors (Tune serialises it at once): copy it as it is at the report
    trainer = train(config, report=lambda m, s: (history.append(m), states.append(copy.deepcopy(s))),
                    observers=[observe])
    return [{k: v for k, v in m.items() if k != "samples_per_s"} for m in history], states, trainer, lag


@pytest.mark.parametrize("case", ["ring8", "ring8-stalls", "digits"])
def test_eval_overlap_reports_saves_and_returns_what_a_run_without_it_does(tiny, case):
    # An evaluation of 1,024 samples (exact W1 on 2-D data: 0.1-0.3 s here; on digits the networks'
    # and the feature CNN's forwards, KID) outlasts many tiny steps, so with the overlap most are
    # concluded steps after they were taken. The stall rule of the second case ends the run at an
    # evaluation (step 8, as without the overlap).
    config = dict(tiny, loss="wgan", clip=0.1, steps=40, eval_every=4, score_every=8, checkpoint_every=8,
                  eval_samples=1024, checkpoint_steps=[4])
    if case == "ring8-stalls":
        config.update(steps=12, eval_every=2, score_every=2, checkpoint_every=2, checkpoint_steps=[],
                      collapse={"stall_patience": 3, "stall_min_delta": 0.5})
    if case == "digits":
        config.update(dataset="digits", width=4, steps=16, batch_size=16)
    plain = _overlap_run(dict(config, eval_overlap="off"))
    overlapped = _overlap_run(dict(config, eval_overlap="on"))

    assert max(plain[3]) == 0 and max(overlapped[3]) > 0  # the evaluations did run beside training
    assert overlapped[0] == plain[0]  # every metric, score, objective and verdict, in order
    steps = {"ring8": list(range(4, 41, 4)), "ring8-stalls": [2, 4, 6, 8], "digits": [4, 8, 12, 16]}[case]
    assert [m["step"] for m in plain[0]] == steps
    assert plain[0][-1]["status"] == ("stalled" if case == "ring8-stalls" else "ok")
    assert ("w1" in plain[0][0]) == (case != "digits") and ("kid" in plain[0][0]) == (case == "digits")
    assert sum(s is not None for s in plain[1]) >= 3
    assert all(_same(a, b) for a, b in zip(plain[1], overlapped[1], strict=True))  # checkpoints of their step
    assert overlapped[2].step == plain[2].step  # a stopped run is put back to its evaluation's step
    assert _same(overlapped[2].state_dict(), plain[2].state_dict())
