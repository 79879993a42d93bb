"""Paper defaults, the three independent axes and their shorthands, and the errors for bad
values: each names the field and the allowed range."""

import subprocess
import sys

import pytest

from ganlib.config import ConfigError, GanConfig, normalize_saved_config


def test_wgan_defaults_are_algorithm_1_of_the_wgan_paper():
    cfg = GanConfig.create(loss="wgan")
    assert (cfg.loss, cfg.constraint) == ("wasserstein", "clip")
    assert (cfg.optimizer, cfg.lr_d, cfg.lr_g, cfg.clip, cfg.batch_size, cfg.n_critic) == (
        "rmsprop", 5e-5, 5e-5, 0.01, 64, 5)
    assert cfg.gp_lambda is None and cfg.beta1 is None


def test_wgan_gp_defaults_are_algorithm_1_of_the_wgan_gp_paper():
    cfg = GanConfig.create(loss="wgan_gp")
    assert (cfg.loss, cfg.constraint) == ("wasserstein", "gp")
    assert (cfg.optimizer, cfg.lr_d, cfg.lr_g, cfg.beta1, cfg.beta2, cfg.gp_lambda, cfg.n_critic) == (
        "adam", 1e-4, 1e-4, 0.0, 0.9, 10.0, 5)
    assert cfg.clip is None
    assert GanConfig.create() == cfg  # WGAN-GP is the default


def test_gan_shorthands_and_the_dcgan_baseline():
    for shorthand, loss in (("gan_minimax", "minimax"), ("gan_ns", "non_saturating")):
        cfg = GanConfig.create(loss=shorthand)
        assert (cfg.loss, cfg.constraint, cfg.n_critic, cfg.optimizer, cfg.lr_d, cfg.beta1) == (
            loss, "none", 1, "adam", 2e-4, 0.5)


def test_the_axes_combine_freely_with_the_constraints_defaults():
    cfg = GanConfig.create(loss="non_saturating", constraint="gp")
    assert (cfg.loss, cfg.constraint, cfg.gp_lambda, cfg.n_critic, cfg.beta2) == ("non_saturating", "gp", 10.0, 5, 0.9)
    cfg = GanConfig.create(loss="least_squares", constraint="clip", clip=0.05)
    assert (cfg.optimizer, cfg.clip) == ("rmsprop", 0.05)
    cfg = GanConfig.create(loss="wasserstein", constraint="none", d_norm="spectral")
    assert cfg.n_critic == 1 and cfg.clip is None and cfg.gp_lambda is None
    assert GanConfig.create(loss="wasserstein").constraint == "clip"  # the WGAN paper's


def test_explicit_optimizer_gets_its_own_defaults():
    cfg = GanConfig.create(loss="wgan", optimizer="adam")
    assert (cfg.beta1, cfg.beta2, cfg.momentum) == (0.9, 0.999, None)
    assert GanConfig.create(loss="gan_ns", optimizer="sgd").momentum == 0.0


@pytest.mark.parametrize("values, field, allowed", [
    (dict(loss="wgan", clip=0.0), "clip", "> 0"),
    (dict(loss="wgan", clip=-0.01), "clip", "> 0"),
    (dict(loss="wgan_gp", gp_lambda=-1.0), "gp_lambda", ">= 0"),
    (dict(n_critic=0), "n_critic", ">= 1"),
    (dict(n_critic=2.5), "n_critic", "integer"),
    (dict(lr_d=0.0), "lr_d", "> 0"),
    (dict(lr_g=-1e-4), "lr_g", "> 0"),
    (dict(lr_g=float("nan")), "lr_g", "> 0"),
    (dict(beta1=1.0), "beta1", "[0, 1)"),
    (dict(beta2=-0.1), "beta2", "[0, 1)"),
    (dict(optimizer="sgd", momentum=1.5), "momentum", "[0, 1)"),
    (dict(loss="hinge"), "loss", "'least_squares'; or a shorthand: gan_minimax, gan_ns, wgan, wgan_gp"),
    (dict(loss="minimax", constraint="lipschitz"), "constraint", "'gp'"),
    (dict(optimizer="lbfgs"), "optimizer", "'rmsprop'"),
    (dict(dataset="imagenet"), "dataset", "parquet:"),
    (dict(batch_size=0), "batch_size", ">= 1"),
    (dict(device="tpu"), "device", "'cuda:N'"),
    (dict(d_norm="group"), "d_norm", "'spectral'"),
    (dict(loss="wgan_gp", clip=0.01), "clip", "constraint 'clip'"),
    (dict(loss="wgan", gp_lambda=10.0), "gp_lambda", "constraint 'gp'"),
    (dict(loss="gan_ns", clip=0.01), "clip", "constraint 'clip'"),
    (dict(loss="wgan", beta1=0.5), "beta1", "optimizer 'adam'"),
    (dict(eval_every=10, score_every=25), "score_every", "multiple of eval_every"),
    (dict(checkpoint_steps=[10, 0]), "checkpoint_steps", "integers >= 1"),
    (dict(collapse={"ceiling_factor": 2.0}), "collapse.ceiling_factor", ">= 10"),
    (dict(seed=2**64 - 1), "seed", "[0, 4611686018427387904]"),
])
def test_bad_values_name_the_field_and_the_allowed_range(values, field, allowed):
    with pytest.raises(ConfigError) as err:
        GanConfig.from_dict(values)
    assert err.value.field == field
    assert f"'{field}'" in str(err.value) and allowed in str(err.value)


@pytest.mark.parametrize("values, field, reason", [
    # the penalty is per sample: batch norm couples the samples
    (dict(loss="wgan_gp", d_norm="batch"), "d_norm", "couples the samples"),
    (dict(loss="least_squares", constraint="gp", d_norm="batch"), "d_norm", "couples the samples"),
    (dict(loss="wgan", d_norm="spectral"), "d_norm", "both bound the critic's weights"),
    (dict(loss="wasserstein", constraint="none"), "constraint", "unbounded"),
    (dict(loss="wasserstein", constraint="none", d_norm="layer"), "constraint", "unbounded"),
    (dict(loss="wgan_gp", gp_lambda=0.0), "gp_lambda", "unbounded"),  # no penalty: unconstrained
    # a shorthand and a contradicting constraint: the message says how to write it
    (dict(loss="wgan", constraint="gp"), "constraint", "write loss 'wasserstein'"),
    (dict(loss="gan_ns", constraint="clip"), "constraint", "write loss 'non_saturating'"),
])
def test_combinations_that_make_no_sense_are_refused_with_the_reason(values, field, reason):
    with pytest.raises(ConfigError) as err:
        GanConfig.from_dict(values)
    assert err.value.field == field and reason in str(err.value)


def test_unknown_key_is_an_error_but_private_keys_ride_along():
    with pytest.raises(ConfigError, match="'lr'"):
        GanConfig.from_dict({"lr": 1e-3})
    cfg = GanConfig.from_dict({"_trial_note": "x", "lr_d": 1e-3})
    assert cfg.extra == {"_trial_note": "x"} and cfg.lr_d == 1e-3


def test_the_resolved_config_round_trips_and_is_never_mutated():
    cfg = GanConfig.create(loss="wgan", eval_every=50)
    assert GanConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.checkpoint_every, cfg.score_every) == (50, 50)
    with pytest.raises(AttributeError):
        cfg.clip = 0.5  # frozen


def test_configs_saved_under_the_papers_names_read_as_today():
    old = {"loss": "wgan_gp", "gp_lambda": 10.0, "clip": None}  # a format-1 checkpoint's config
    assert normalize_saved_config(old) == {"loss": "wasserstein", "constraint": "gp", "gp_lambda": 10.0, "clip": None}
    today = GanConfig.create(loss="wgan").to_dict()
    assert normalize_saved_config(today) == today


def test_command_line_rejects_bad_values_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "ganlib.train", "--loss", "wgan", "--clip", "-1",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "config field 'clip' = -1.0" in proc.stderr and "> 0" in proc.stderr
    assert not out.exists()


def test_errors_survive_copy_and_pickle():
    # Ray copies a trial's exception to report it: one that cannot be copied hides the real error.
    import copy
    import pickle

    from ganlib.settings import SettingsError
    from ganlib.spaces import SpaceError

    for err in (ConfigError("clip", -1.0, "a finite number > 0"), SettingsError("steps", 0, "an integer >= 1"),
                SpaceError("x.yaml", "params.clip", "bad")):
        for clone in (copy.copy(err), pickle.loads(pickle.dumps(err))):
            assert type(clone) is type(err) and str(clone) == str(err)
    assert GanConfig.create(checkpoint_steps=None).checkpoint_steps == ()
