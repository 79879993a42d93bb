"""The YAML search spaces: shipped files, sampling through Optuna and Ray's OptunaSearch, validation."""

import copy

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from ganlib.config import GanConfig
from ganlib.spaces import SpaceError, load_space

SHIPPED = ["wgan_clip", "wgan_gp_lambda", "gan_k", "compare_losses"]
# GanConfig's conditional fields, written out independently of the space files.
CONDITIONS = {"beta1": ("optimizer", "adam"), "beta2": ("optimizer", "adam"), "momentum": ("optimizer", "sgd"),
              "clip": ("constraint", "clip"), "gp_lambda": ("constraint", "gp")}
# (space, start index) pairs that are a paper's Algorithm 1 (CONSTRAINT_DEFAULTS); wgan_gp_lambda's second
# start is the toy-data setting instead.
PAPER_STARTS = [("wgan_clip", 0), ("wgan_gp_lambda", 0), ("gan_k", 0), ("gan_k", 1)] + [
    ("compare_losses", i) for i in range(4)]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def check_config(space, config):
    """Keys are fixed + active searched params, conditionals present exactly when their condition
    holds, values of the right type, and GanConfig accepts it."""
    assert set(config) <= set(space.fixed) | set(space.searched)
    assert {k: config[k] for k in space.fixed} == space.fixed
    resolved = GanConfig.from_dict(config).to_dict()
    for name in space.searched:
        if name in CONDITIONS:
            on, value = CONDITIONS[name]
            assert (name in config) == (resolved[on] == value), (name, config)
        elif not space.param(name).when:
            assert name in config
        if name in config:
            p = space.param(name)
            assert p.contains(config[name]), (name, config[name])
            assert type(config[name]) is {"int": int, "uniform": float, "loguniform": float}.get(p.type, str)


def check_both_branches(space, configs):
    # 30 samples must exercise each conditional both ways where its controlling value is searched,
    # or the conditional checks above would pass vacuously.
    for name in space.searched:
        if name in CONDITIONS:
            present = {name in c for c in configs}
            searched_control = any(k in space.searched for k in space.param(name).when)
            assert present == ({True, False} if searched_control else {True}), name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_samples_start_points_then_valid_conditional_configs(name):
    space = load_space(name)
    assert space.name == name and space.start_points()
    configs = space.sample_configs(30, seed=0)
    assert len(configs) == 30
    starts = space.start_points()
    assert configs[: len(starts)] == [{**space.fixed, **p} for p in starts]
    for config in configs:
        check_config(space, config)
    check_both_branches(space, configs)
    assert space.sample_configs(12, seed=0) == configs[:12]  # seeded: reproducible dry runs


@pytest.mark.parametrize("name, index", PAPER_STARTS)
def test_paper_start_points_are_the_family_defaults(name, index):
    space = load_space(name)
    point = space.start_points()[index]
    loss = point.get("loss", space.fixed.get("loss"))
    defaults = GanConfig.from_dict({**space.fixed, "loss": loss}).to_dict()
    assert {k: v for k, v in point.items() if k != "loss"} == {k: defaults[k] for k in point if k != "loss"}


@pytest.mark.parametrize("name", SHIPPED)
def test_through_ray_optuna_search(name, tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    space = load_space(name)
    starts = space.start_points()
    # The space and metric given here set up the study at once: no set_search_properties needed
    # (Tune's call to it returns False and is then a no-op).
    searcher = OptunaSearch(space=space.define_by_run, metric="w1", mode="min", points_to_evaluate=starts,
                            seed=0)
    suggestions = [searcher.suggest(f"t{i}") for i in range(len(starts) + 4)]
    # The fixed values come back merged in as constants, the start points exactly as written.
    assert suggestions[: len(starts)] == [{**space.fixed, **p} for p in starts]
    for config in suggestions:
        check_config(space, config)

    searcher.on_trial_complete("t0", result={"w1": 1.0, "training_iteration": 3})
    searcher.on_trial_complete("t1", error=True)
    trials = searcher._ot_study.trials
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[0].value == 1.0 and trials[0].params == starts[0]

    # Tune pickles the searcher into experiment checkpoints: the bound define_by_run must survive.
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = OptunaSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    check_config(space, restored.suggest("after_restore"))


def test_conditionals_survive_the_tpe_phase():
    """Past TPE's 10 random startup trials the multivariate sampler (Optuna 5's default) sees params
    absent from some trials; suggestions must still respect the conditions."""
    from ray.tune.search.optuna import OptunaSearch

    space = load_space("compare_losses")
    searcher = OptunaSearch(space=space.define_by_run, metric="w1", mode="min", seed=1)
    for i in range(16):
        config = searcher.suggest(f"t{i}")
        check_config(space, config)
        searcher.on_trial_complete(f"t{i}", result={"w1": config["lr_d"] * 100 + (config["loss"] != "wgan")})
    assert sum(t.state == TrialState.COMPLETE for t in searcher._ot_study.trials) == 16


def test_optuna_ignores_unasked_enqueued_values_and_samples_missing_ones():
    """Why load_space demands exactly the active params in a start point: Optuna silently drops an
    enqueued value the define-by-run function never asks for and samples a missing one at random."""
    space = load_space("wgan_clip")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial({"optimizer": "rmsprop", "beta1": 0.3, "clip": 0.01})
    trial = study.ask()
    space.define_by_run(trial)
    assert set(trial.params) == {"clip", "n_critic", "lr_g", "lr_d", "optimizer"}
    assert trial.params["optimizer"] == "rmsprop" and trial.params["clip"] == 0.01


def test_names_paths_accessors_and_round_trip(tmp_path):
    space = load_space("wgan_clip")
    assert space.searched[:2] == ("clip", "n_critic") and space.fixed == {"loss": "wgan"}
    assert space.is_log("clip") and space.is_log("lr_d") and not space.is_log("n_critic")
    assert not space.is_log("beta1")
    with pytest.raises(KeyError):
        space.is_log("loss")
    copy_path = tmp_path / "copy.yaml"
    copy_path.write_text(yaml.safe_dump(space.to_dict(), sort_keys=False))
    assert load_space(copy_path).to_dict() == space.to_dict()
    assert load_space(str(copy_path)).define_by_run(optuna.create_study().ask()) == {"loss": "wgan"}
    with pytest.raises(SpaceError, match="no_such_space.yaml.*wgan_clip"):
        load_space("no_such_space")


# -- invalid spaces ----------------------------------------------------------------------------------

BASE = {
    "name": "bad",
    "fixed": {"loss": "wgan"},
    "params": {
        "clip": {"type": "loguniform", "low": 1.0e-3, "high": 1.0},
        "n_critic": {"type": "int", "low": 1, "high": 10},
        "lr_g": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-2},
        "optimizer": {"type": "categorical", "choices": ["rmsprop", "adam", "sgd"]},
        "beta1": {"type": "uniform", "low": 0.0, "high": 0.9, "when": {"optimizer": "adam"}},
        "momentum": {"type": "uniform", "low": 0.0, "high": 0.95, "when": {"optimizer": ["sgd"]}},
    },
    "start": [{"clip": 0.01, "n_critic": 5, "lr_g": 5.0e-5, "optimizer": "rmsprop"}],
}


_DELETE = object()


def _set(path, value):
    """An edit of the raw YAML dict: set (or delete) the value at ``path``."""
    def edit(raw):
        *parents, last = path
        node = raw
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return edit


def _both(*edits):
    def edit(raw):
        for e in edits:
            e(raw)
    return edit


P = "params"
BAD = {
    "unknown top-level key": (_set(["paramz"], {}), "paramz"),
    "unknown param key": (_set([P, "clip", "lo"], 1.0), "params.clip.lo"),
    "key of another type": (_set([P, "clip", "choices"], [1.0]), "params.clip.choices"),
    "not a GanConfig field": (_set([P, "learning_rate"], {"type": "uniform", "low": 0.1, "high": 1.0}),
                              "params.learning_rate"),
    "unknown type": (_set([P, "clip", "type"], "normal"), "params.clip.type"),
    "low is a string": (_set([P, "clip", "low"], "1e-3"), "params.clip.low"),
    "missing high": (_set([P, "clip", "high"], _DELETE), "params.clip.high"),
    "int with a float bound": (_set([P, "n_critic", "low"], 1.5), "params.n_critic.low"),
    "inverted range": (_set([P, "clip", "low"], 2.0), "params.clip.high"),
    "empty range": (_set([P, "n_critic", "high"], 1), "params.n_critic.high"),
    "loguniform from zero": (_set([P, "clip", "low"], 0.0), "params.clip.low"),
    "step with log": (_both(_set([P, "n_critic", "log"], True), _set([P, "n_critic", "step"], 3)),
                      "params.n_critic.step"),
    "step off the range": (_set([P, "n_critic", "step"], 4), "params.n_critic.step"),
    "empty categorical": (_set([P, "optimizer", "choices"], []), "params.optimizer.choices"),
    "param also fixed": (_set(["fixed", "n_critic"], 5), "params.n_critic"),
    "condition on an unknown param": (_set([P, "beta1", "when"], {"optimiser": "adam"}), "params.beta1.when.optimiser"),
    "condition on a later param": (_set([P, "clip", "when"], {"optimizer": "rmsprop"}), "params.clip.when.optimizer"),
    "condition on a number": (_set([P, "beta1", "when"], {"clip": 0.1}), "params.beta1.when.clip"),
    "condition value never chosen": (_set([P, "beta1", "when"], {"optimizer": "adamw"}),
                                     "params.beta1.when.optimizer"),
    "condition never true": (_set([P, "momentum", "when"], {"loss": "gan_ns"}), "params.momentum.when"),
    "conditional param without condition": (_set([P, "beta1", "when"], _DELETE), "params.beta1"),
    "range end GanConfig rejects": (_set([P, "beta1", "high"], 1.0), "params.beta1"),
    "fixed value GanConfig rejects": (_set(["fixed", "batch_size"], 0), "fixed.batch_size"),
    "fixed loss unknown": (_set(["fixed", "loss"], "wgan_lp"), "fixed.loss"),
    "fixed not a field": (_set(["fixed", "steps_total"], 10), "fixed.steps_total"),
    "start names an inactive param": (_set(["start", 0, "beta1"], 0.5), "start[0].beta1"),
    "start names an unknown param": (_set(["start", 0, "lr"], 0.5), "start[0].lr"),
    "start names a fixed field": (_set(["start", 0, "loss"], "wgan"), "start[0].loss"),
    "start value outside range": (_set(["start", 0, "clip"], 5.0), "start[0].clip"),
    "start value not a choice": (_set(["start", 0, "optimizer"], "adamw"), "start[0].optimizer"),
    "start int not an int": (_set(["start", 0, "n_critic"], 5.5), "start[0].n_critic"),
    "start misses an active param": (_set(["start", 0, "lr_g"], _DELETE), "start[0].lr_g"),
    "start not a list": (_set(["start"], {"clip": 0.01}), "start"),
    # what the sweep sets (budget, cadence, data, seed, checkpoints): the scheduler, the pre-flight
    # and the report would not know a space's value
    "fixed sweep budget": (_set(["fixed", "steps"], 5000), "fixed.steps"),
    "fixed sweep data": (_set(["fixed", "dataset"], "grid25"), "fixed.dataset"),
    "fixed sweep checkpoints": (_set(["fixed", "checkpoint_steps"], []), "fixed.checkpoint_steps"),
    "searched sweep setting": (_set([P, "eval_samples"], {"type": "int", "low": 16, "high": 64}),
                               "params.eval_samples"),
    "aliased sweep setting": (_set([P, "seeds"], {"type": "int", "low": 0, "high": 9, "field": "seed"}),
                              "params.seeds.field"),
    "name Tune would nest": (_set([P, "opt/lr"], {"type": "loguniform", "low": 1e-5, "high": 1e-2, "field": "lr_d"}),
                             "params.opt/lr"),
    "alias named as another field": (_set([P, "batch_size"], {"type": "categorical", "choices": ["batch", "none"],
                                                              "field": "d_norm"}), "params.batch_size"),
    "alias named as a fixed field": (_set([P, "loss"], {"type": "categorical", "choices": ["batch", "none"],
                                                        "field": "d_norm"}), "params.loss"),
    "choices equal to Optuna": (_set([P, "n_critic"], {"type": "categorical", "choices": [1, 1.0, 5]}),
                                "params.n_critic.choices"),
}


def test_base_of_the_invalid_cases_is_valid(tmp_path):
    raw = copy.deepcopy(BASE)
    raw["start"][0]["clip"] = 1  # a YAML int for a float param
    path = tmp_path / "good_space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    space = load_space(path)
    assert space.searched == tuple(BASE["params"])
    # Optuna hands enqueued values back unconverted: the loader must have made it a float.
    first = space.sample_configs(1, seed=0)[0]
    assert first["clip"] == 1.0 and type(first["clip"]) is float


@pytest.mark.parametrize("edit, key", BAD.values(), ids=list(BAD))
def test_invalid_space_names_file_and_key(tmp_path, edit, key):
    raw = copy.deepcopy(BASE)
    edit(raw)
    path = tmp_path / "bad_space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert "bad_space.yaml" in str(info.value) and f": {key}: " in str(info.value)
    assert info.value.key == key


@pytest.mark.parametrize("text, key", [
    ("params:\n  clip: {type: uniform, low: 0.1, high: 1.0}\n  clip: {type: uniform, low: 0.2, high: 1.0}\n",
     "(yaml)"),
    ("- just\n- a list\n", "(top level)"),
    ("fixed: {loss: wgan}\nparams:\n  clip: {type: loguniform, low: 1e-3, high: 1.0}\n", "params.clip.low"),
])
def test_yaml_level_mistakes(tmp_path, text, key):
    path = tmp_path / "bad_space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match="bad_space.yaml") as info:
        load_space(path)
    assert info.value.key == key
    if key == "params.clip.low":
        assert "1.0e-3" in str(info.value)  # the hint about YAML 1.1 floats


def test_aliased_params_set_one_field_under_disjoint_conditions(tmp_path):
    space = load_space("loss_penalty_norm")
    assert space.fields[:3] == ("loss", "constraint", "d_norm") and "norm_gp" in space.searched
    configs = space.sample_configs(40, seed=0)
    seen = set()
    for config in configs:
        assert not set(config) & {"norm_free", "norm_gp", "norm_clip", "norm_wasserstein_free"}  # fields only
        cfg = GanConfig.from_dict(config)
        seen.add((cfg.loss, cfg.constraint, cfg.d_norm))
        assert not (cfg.constraint == "gp" and cfg.d_norm == "batch")
        assert not (cfg.constraint == "clip" and cfg.d_norm == "spectral")
    assert len(seen) >= 12  # the grid is explored, not one corner
    assert space.field_param("d_norm").choices == ("none", "batch", "layer", "spectral")
    # two params that could set the same field in one trial are refused at load time
    overlapping = tmp_path / "overlap.yaml"
    overlapping.write_text(
        "name: overlap\nfixed: {loss: non_saturating}\nparams:\n"
        "  constraint: {type: categorical, choices: [none, gp]}\n"
        "  a: {field: d_norm, type: categorical, choices: [none, layer]}\n"
        "  b: {field: d_norm, type: categorical, choices: [spectral], when: {constraint: gp}}\n")
    with pytest.raises(SpaceError, match="a and b both set field 'd_norm'"):
        load_space(overlapping)
    bad_field = tmp_path / "bad_field.yaml"
    bad_field.write_text("name: b\nparams:\n  a: {field: norm, type: categorical, choices: [none]}\n")
    with pytest.raises(SpaceError, match="params.a.field: not a GanConfig field"):
        load_space(bad_field)


def test_the_searcher_hands_trials_config_fields(tmp_path):
    from ganlib.plan import SpaceSearch

    space = load_space("loss_penalty_norm")
    searcher = SpaceSearch(space, metric="objective", seed=0, study_name="s")
    for i in range(8):
        config = searcher.suggest(f"t{i}")
        assert "d_norm" in config and not any(k.startswith("norm_") for k in config)
        GanConfig.from_dict(config)
        searcher.on_trial_complete(f"t{i}", result={"objective": float(i)})
    names = {k for t in searcher._ot_study.trials for k in t.params}
    assert {"norm_free", "norm_gp"} & names  # Optuna keeps the params' own names
