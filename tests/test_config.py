"""Paper defaults and the errors for bad values: each names the field and the allowed range."""

import subprocess
import sys

import pytest

from ganlib.config import ConfigError, GanConfig


def test_wgan_defaults_are_algorithm_1_of_the_wgan_paper():
    cfg = GanConfig(loss="wgan")
    assert (cfg.optimizer, cfg.lr_d, cfg.lr_g, cfg.clip, cfg.batch_size, cfg.n_critic) == (
        "rmsprop", 5e-5, 5e-5, 0.01, 64, 5)
    assert cfg.gp_lambda is None and cfg.beta1 is None


def test_wgan_gp_defaults_are_algorithm_1_of_the_wgan_gp_paper():
    cfg = GanConfig(loss="wgan_gp")
    assert (cfg.optimizer, cfg.lr_d, cfg.lr_g, cfg.beta1, cfg.beta2, cfg.gp_lambda, cfg.n_critic) == (
        "adam", 1e-4, 1e-4, 0.0, 0.9, 10.0, 5)
    assert cfg.clip is None


def test_explicit_optimizer_gets_its_own_defaults():
    cfg = GanConfig(loss="wgan", optimizer="adam")
    assert (cfg.beta1, cfg.beta2, cfg.momentum) == (0.9, 0.999, None)
    assert GanConfig(loss="gan_ns", optimizer="sgd").momentum == 0.0


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
    (dict(loss="hinge"), "loss", "'wgan_gp'"),
    (dict(optimizer="lbfgs"), "optimizer", "'rmsprop'"),
    (dict(dataset="imagenet"), "dataset", "parquet:"),
    (dict(batch_size=0), "batch_size", ">= 1"),
    (dict(device="tpu"), "device", "'cuda:N'"),
    (dict(loss="wgan_gp", d_norm="batch"), "d_norm", "'layer'"),
    (dict(loss="wgan_gp", clip=0.01), "clip", "loss 'wgan'"),
    (dict(loss="wgan", gp_lambda=10.0), "gp_lambda", "loss 'wgan_gp'"),
    (dict(loss="wgan", beta1=0.5), "beta1", "optimizer 'adam'"),
])
def test_bad_values_name_the_field_and_the_allowed_range(values, field, allowed):
    with pytest.raises(ConfigError) as err:
        GanConfig.from_dict(values)
    assert err.value.field == field
    assert f"'{field}'" in str(err.value) and allowed in str(err.value)


def test_unknown_key_is_an_error_but_private_keys_ride_along():
    with pytest.raises(ConfigError, match="'lr'"):
        GanConfig.from_dict({"lr": 1e-3})
    cfg = GanConfig.from_dict({"_trial_note": "x", "lr_d": 1e-3})
    assert cfg.extra == {"_trial_note": "x"} and cfg.lr_d == 1e-3


def test_command_line_rejects_bad_values_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "ganlib.train", "--loss", "wgan", "--clip", "-1",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "config field 'clip' = -1.0" in proc.stderr and "> 0" in proc.stderr
    assert not out.exists()
