"""Cohorts: every member's trajectory equals its configuration trained alone, for every loss x
constraint x optimizer; the stacked optimizers equal torch.optim member by member."""

import copy

import pytest
import torch

from ganlib.cohort import CohortError, CohortTrainer, StackedOptimizer, member_checkpoint
from ganlib.cohort_run import train_cohort
from ganlib.config import CONSTRAINTS, LOSSES
from ganlib.train import train
from ganlib.trainer import CheckpointMismatch, Trainer

BASE = dict(dataset="ring8", width=16, depth=2, batch_size=32, steps=50, eval_every=10, device="cpu")
OPTIMIZERS = {"adam": [dict(lr_d=1e-3, lr_g=2e-3, beta1=0.5, beta2=0.9), dict(lr_d=3e-4, lr_g=1e-4, beta1=0.0,
                                                                               beta2=0.99)],
              "rmsprop": [dict(lr_d=1e-3, lr_g=5e-4), dict(lr_d=5e-5, lr_g=2e-4)],
              "sgd": [dict(lr_d=1e-2, lr_g=1e-2, momentum=0.9), dict(lr_d=3e-3, lr_g=5e-3, momentum=0.0)]}
CASES = [(loss, constraint, optimizer) for loss in LOSSES for constraint in CONSTRAINTS for optimizer in OPTIMIZERS
         if (loss, constraint) != ("wasserstein", "none")]  # needs spectral norm, which cohorts do not run


def _members(loss, constraint, optimizer, **extra):
    per_constraint = {"clip": [dict(clip=0.05), dict(clip=0.2)], "gp": [dict(gp_lambda=0.5), dict(gp_lambda=10.0)],
                      "none": [{}, {}]}[constraint]
    return [dict(BASE, loss=loss, constraint=constraint, optimizer=optimizer, **h, **c, **extra)
            for h, c in zip(OPTIMIZERS[optimizer], per_constraint, strict=True)]


# Float tolerance: stacked kernels sum in another order (differences ~1e-8), and Adam turns the
# sign of a near-zero gradient into a step of up to its learning rate, so after 50 steps a weight
# may differ by ~1e-4. A wrong per-member hyperparameter moves weights by 1e-2 and more.
def _assert_same(cohort, solos, atol=3e-4):
    for k, solo in enumerate(solos):
        member = cohort.member_trainer(k)
        for net in ("generator", "critic"):
            mine, theirs = getattr(member, net).state_dict(), getattr(solo, net).state_dict()
            for name in theirs:
                torch.testing.assert_close(mine[name], theirs[name], atol=atol, rtol=1e-3, msg=f"{net}.{name}")


@pytest.mark.parametrize("loss, constraint, optimizer", CASES)
def test_each_member_trains_exactly_as_alone(loss, constraint, optimizer):
    configs = _members(loss, constraint, optimizer)
    cohort = CohortTrainer(configs)
    solos = [Trainer(c) for c in configs]
    for _ in range(50):
        stats = cohort.train_step()
        for solo in solos:
            solo.train_step()
    _assert_same(cohort, solos)
    assert stats["loss_d"].shape == (2,) and torch.isfinite(stats["loss_g"]).all()
    assert [t.step for t in cohort.solos] == [50, 50] and cohort.solos[0].critic_steps == solos[0].critic_steps


def test_members_of_different_seeds_keep_their_own_streams():
    configs = [dict(c, seed=s) for c, s in zip(_members("wasserstein", "gp", "adam"), (0, 7), strict=True)]
    cohort, solos = CohortTrainer(configs), [Trainer(c) for c in configs]
    for _ in range(20):
        cohort.train_step()
        for solo in solos:
            solo.train_step()
    _assert_same(cohort, solos)


@pytest.mark.parametrize("one_by_one", [True, False], ids=["one_by_one", "vmap"])
def test_dcgan_members_with_batch_norm_on_images(one_by_one):
    """Both ways to run convolutional members: one by one on slices of the stacks (the CPU's
    default) and vmap's batched kernels (CUDA's); each member trains as alone."""
    # SGD: a convolution bias feeding batch norm gets only float noise for a gradient, which Adam
    # would turn into learning-rate-sized steps (no real difference, but not a tight comparison).
    configs = _members("non_saturating", "none", "sgd", dataset="digits", width=4, g_norm="batch", d_norm="batch",
                       depth=None)
    cohort, solos = CohortTrainer(configs), [Trainer(c) for c in configs]
    assert cohort.critic.one_by_one and cohort.generator.one_by_one  # convolutions, on the CPU
    assert not CohortTrainer(_members("wasserstein", "gp", "adam", d_norm="layer")).critic.one_by_one
    cohort.critic.one_by_one = cohort.generator.one_by_one = one_by_one
    for _ in range(15):
        cohort.train_step()
        for solo in solos:
            solo.train_step()
    _assert_same(cohort, solos, atol=1e-5)  # parameters and batch norm's running statistics


def test_plain_mlps_run_as_batched_matrix_products_with_vmaps_outputs():
    """Linear + ReLU MLPs take the batched-matmul path; its outputs and input gradients are those
    of vmap over the modules, for per-member and shared inputs. MLPs with norm layers keep vmap."""
    configs = _members("wasserstein", "gp", "adam")
    cohort = CohortTrainer(configs)
    assert cohort.critic.linear_layers == ["net.0", "net.2", "net.4"]
    z = torch.randn(32, 2)  # ring8's z_dim is 2
    x = torch.randn(2, 32, 2, requires_grad=True)
    for net, inputs in ((cohort.generator, (z, True)), (cohort.generator, (z.expand(2, -1, -1), False)),
                        (cohort.critic, (x, False)), (cohort.critic, (x[0].detach(), True))):
        fast = net(*inputs)
        layers, net.linear_layers = net.linear_layers, None
        try:
            reference = net(*inputs)
        finally:
            net.linear_layers = layers
        torch.testing.assert_close(fast, reference)
    (g_fast,) = torch.autograd.grad(cohort.critic(x).sum(), x)
    cohort.critic.linear_layers = None
    (g_ref,) = torch.autograd.grad(cohort.critic(x).sum(), x)
    torch.testing.assert_close(g_fast, g_ref)
    assert CohortTrainer(_members("wasserstein", "gp", "adam", d_norm="layer")).critic.linear_layers is None


def test_mlp_members_with_layer_and_batch_norm_train_as_alone():
    configs = _members("non_saturating", "none", "sgd", d_norm="layer", g_norm="batch")
    cohort, solos = CohortTrainer(configs), [Trainer(c) for c in configs]
    assert cohort.critic.linear_layers is None and cohort.generator.linear_layers is None
    for _ in range(20):
        cohort.train_step()
        for solo in solos:
            solo.train_step()
    _assert_same(cohort, solos, atol=1e-5)


def test_a_stopped_member_leaves_and_the_rest_continue_exactly():
    configs = _members("wasserstein", "clip", "rmsprop") + [dict(_members("wasserstein", "clip", "rmsprop")[0],
                                                                lr_d=2e-3)]
    cohort, solos = CohortTrainer(configs), [Trainer(c) for c in configs]
    for step in range(30):
        if step == 10:
            cohort.stop(1)
        cohort.train_step()
        for k, solo in enumerate(solos):
            if not (k == 1 and step >= 10):
                solo.train_step()
    assert cohort.active == [0, 2] and cohort.generator.size == 2
    for k in (0, 2):
        member = cohort.member_trainer(k)
        for name, value in solos[k].generator.state_dict().items():
            torch.testing.assert_close(member.generator.state_dict()[name], value, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["adam", "rmsprop", "sgd"])
def test_the_stacked_optimizer_is_torch_optim_member_by_member(kind):
    torch.manual_seed(0)
    members = [dict(lr=1e-2, beta1=0.5, beta2=0.9, momentum=0.9), dict(lr=3e-3, beta1=0.0, beta2=0.999, momentum=0.0),
               dict(lr=1e-1, beta1=0.9, beta2=0.99, momentum=0.5)]
    stacked = torch.randn(3, 4, 5).requires_grad_(True)
    alone = [stacked[k].detach().clone().requires_grad_(True) for k in range(3)]
    opt = StackedOptimizer(kind, [stacked], members)
    refs = [{"adam": lambda p, m: torch.optim.Adam([p], lr=m["lr"], betas=(m["beta1"], m["beta2"])),
             "rmsprop": lambda p, m: torch.optim.RMSprop([p], lr=m["lr"]),
             "sgd": lambda p, m: torch.optim.SGD([p], lr=m["lr"], momentum=m["momentum"])}[kind](p, m)
            for p, m in zip(alone, members, strict=True)]
    for _ in range(25):
        grads = torch.randn(3, 4, 5)
        stacked.grad = grads.clone()
        opt.step()
        for k, (p, ref) in enumerate(zip(alone, refs, strict=True)):
            p.grad = grads[k].clone()
            ref.step()
    for k in range(3):
        torch.testing.assert_close(stacked[k].detach(), alone[k].detach(), atol=1e-6, rtol=1e-5)


def test_the_comparison_bites_on_a_swapped_learning_rate():
    configs = _members("wasserstein", "gp", "adam")
    cohort = CohortTrainer(configs)
    solos = [Trainer(dict(configs[0], lr_d=configs[1]["lr_d"])), Trainer(configs[1])]
    for _ in range(20):
        cohort.train_step()
        for solo in solos:
            solo.train_step()
    with pytest.raises(AssertionError):
        _assert_same(cohort, solos)


def test_members_that_do_not_share_structure_are_refused():
    a, b = _members("wasserstein", "gp", "adam")
    with pytest.raises(CohortError, match="'n_critic'"):
        CohortTrainer([a, dict(b, n_critic=3)])
    with pytest.raises(CohortError, match="spectral"):
        CohortTrainer([dict(a, d_norm="spectral"), dict(b, d_norm="spectral")])


# -- the cohort's training run: each member evaluated, stopped and checkpointed as its solo run ----
RUN = dict(steps=60, eval_every=20, score_every=20, checkpoint_every=20, eval_samples=256)
COMPARED = ("step", "critic_steps", "loss_d", "loss_g", "w1", "score", "objective", "modes", "w_critic")


def _solo_history(config):
    history = []
    train(config, lambda metrics, state: history.append(metrics))
    return history


def _cohort_history(configs, resume=None, decide=None):
    """Per member, the metrics of each of its evaluations; the checkpoints by step; the last report."""
    history, checkpoints, last = {k: [] for k in range(len(configs))}, {}, {}

    def report(latest, state):
        step = max(m["step"] for m in latest.values())
        for k, metrics in latest.items():
            if metrics["step"] == step:  # evaluated now (a stopped member's last metrics repeat)
                history[k].append(metrics)
        if state is not None:
            checkpoints[step] = state
        last.clear()
        last.update(latest)

    cohort = train_cohort(configs, report, resume=resume, decide=decide)
    return history, checkpoints, cohort, last


def _assert_same_history(mine, theirs):
    assert [m["step"] for m in mine] == [m["step"] for m in theirs]
    for a, b in zip(mine, theirs, strict=True):
        assert a["status"] == b["status"], (a["step"], a["reason"], b["reason"])
        for key in COMPARED:
            if key in b and isinstance(b[key], float):
                assert a[key] == pytest.approx(b[key], rel=2e-3, abs=1e-4), (a["step"], key)


def test_a_cohort_run_reports_each_member_as_its_solo_run():
    configs = [dict(c, **RUN) for c in _members("wasserstein", "gp", "adam")]
    history, checkpoints, cohort, last = _cohort_history(configs)
    for k, config in enumerate(configs):
        _assert_same_history(history[k], _solo_history(config))
    assert sorted(checkpoints) == [20, 40, 60] and cohort.active == [0, 1]
    assert history[0][-1]["w1"] != history[1][-1]["w1"]  # two different runs, each matched to its own
    assert all(m["ended"] and m["step"] == 60 for m in last.values())


def test_a_member_that_diverges_stops_and_the_others_train_on():
    healthy, wild = (dict(c, **RUN) for c in _members("wasserstein", "clip", "rmsprop"))
    wild.update(lr_d=50.0, lr_g=50.0, clip=1e6)
    history, _, cohort, last = _cohort_history([healthy, wild])
    solo_wild = _solo_history(wild)
    assert solo_wild[-1]["status"] == "diverged" and solo_wild[-1]["step"] < 60  # it does diverge alone
    _assert_same_history(history[1], solo_wild)  # and stops at the same evaluation in the cohort
    _assert_same_history(history[0], _solo_history(healthy))
    assert cohort.active == [0] and cohort.generator.size == 1 and 1 in cohort.retired
    assert last[1]["ended"] and last[1]["status"] == "diverged" and last[1]["step"] == solo_wild[-1]["step"]


@pytest.mark.parametrize("overlap", ["off", "on"])
def test_a_member_whose_evaluation_raises_ends_with_error_alone(monkeypatch, overlap):
    """An exception while evaluating member 1 (here exact OT failing to converge at step 40, as
    it can on a degenerate point cloud) ends member 1 with ``error`` and the exception as its
    reason, as it was at that step; the others train on exactly as alone."""
    import ganlib.cohort_run
    from ganlib.evaluate import Evaluator
    from ganlib.metrics.wasserstein import ConvergenceError

    configs = [dict(c, **RUN, eval_overlap=overlap) for c in _members("wasserstein", "clip", "rmsprop")]
    configs.append(dict(configs[0], lr_d=2e-3))

    class FailsOnMember1(Evaluator):
        def measure(self, train_metrics, scored=None, overlap=True):
            if self.trainer.cfg.lr_d == 2e-3 and self.trainer.step == 40:
                raise ConvergenceError("network simplex did not converge")
            return super().measure(train_metrics, scored, overlap)

    monkeypatch.setattr(ganlib.cohort_run, "Evaluator", FailsOnMember1)
    history, checkpoints, cohort, last = _cohort_history(configs)
    assert last[2]["ended"] and last[2]["status"] == "error" and last[2]["step"] == 40
    assert "ConvergenceError: network simplex did not converge" in last[2]["reason"]
    assert last[2]["objective"] > 100 * max(m["objective"] for m in history[0])  # a failed run's penalty
    assert cohort.active == [0, 1] and 2 in cohort.retired and checkpoints[40]["cohort"]["active"] == [0, 1]
    assert cohort.solos[2].step == checkpoints[40]["cohort"]["members"][2]["step"] == 40
    monkeypatch.undo()
    for k in (0, 1):
        _assert_same_history(history[k], _solo_history(configs[k]))
        assert last[k]["step"] == 60 and last[k]["status"] == "ok"


def test_a_member_the_reporter_stops_leaves_the_stack():
    configs = [dict(c, **RUN) for c in _members("least_squares", "gp", "sgd")]
    history, checkpoints, cohort, last = _cohort_history(configs, decide=lambda results, ending: {1} & set(results))
    assert [m["step"] for m in history[1]] == [20] and [m["step"] for m in history[0]] == [20, 40, 60]
    assert last[1]["ended"] and last[1]["step"] == 20 and last[1]["status"] == "ok"  # stopped early, healthy
    assert checkpoints[20]["cohort"]["active"] == [0]  # stopped before the checkpoint was taken
    assert cohort.active == [0] and cohort.solos[1].step == 20 and cohort.solos[0].step == 60
    _assert_same_history(history[0], _solo_history(configs[0]))


def test_a_cohort_resumes_every_member_from_its_checkpoint(tmp_path):
    """Member 1 is stopped at step 20; the run is cut at step 40 and resumed from that checkpoint
    (through torch.save / weights_only load, as Tune stores it): both members end as uninterrupted."""
    configs = [dict(c, **RUN) for c in _members("non_saturating", "clip", "rmsprop")] + \
        [dict(_members("non_saturating", "clip", "rmsprop")[0], **RUN, lr_d=2e-3)]
    stop_1 = lambda results, ending: {1} & set(results)  # noqa: E731
    whole, checkpoints, _, _ = _cohort_history(configs, decide=stop_1)
    torch.save(checkpoints[40], tmp_path / "cohort.pt")
    state = torch.load(tmp_path / "cohort.pt", weights_only=True)
    resumed, _, cohort, last = _cohort_history(configs, resume=state, decide=stop_1)
    assert not resumed[1] and last[1]["step"] == 20 and last[1]["ended"]  # its last metrics came with the state
    for k in (0, 2):
        _assert_same_history(resumed[k], [m for m in whole[k] if m["step"] > 40])
    assert cohort.active == [0, 2] and sorted(cohort.retired) == [1]


def test_a_cohort_checkpoint_of_other_members_is_refused():
    configs = [dict(c, **RUN) for c in _members("wasserstein", "gp", "adam")]
    _, checkpoints, _, _ = _cohort_history([dict(c, steps=20) for c in configs])
    other = [configs[0], dict(configs[1], gp_lambda=3.0)]
    with pytest.raises(CheckpointMismatch, match="member 1.*gp_lambda"):
        train_cohort(other, lambda latest, state: None, resume=checkpoints[20])


def test_a_member_of_a_cohort_checkpoint_reads_as_its_solo_checkpoint():
    configs = [dict(c, **RUN) for c in _members("wasserstein", "clip", "rmsprop")]
    _, checkpoints, _, _ = _cohort_history(configs, decide=lambda results, ending: {0} & set(results))
    solo_state = {}
    train(configs[1], lambda metrics, state: solo_state.update(state or {}))
    member = member_checkpoint(checkpoints[60], 1)
    assert member["step"] == solo_state["step"] == 60 and member["config"] == solo_state["config"]
    for name, value in solo_state["generator"].items():
        torch.testing.assert_close(member["generator"][name], value, atol=3e-4, rtol=1e-3)
    assert member["evaluation"]["best"]["step"] == solo_state["evaluation"]["best"]["step"]
    stopped = member_checkpoint(checkpoints[60], 0)  # stopped at 20: its networks of step 20
    assert stopped["step"] == 20 and stopped["samples"].shape == member["samples"].shape
    assert member_checkpoint(checkpoints[20], 0)["samples"].shape == member["samples"].shape


def test_eval_overlap_reports_stops_and_saves_each_member_as_a_cohort_without_it(tmp_path, monkeypatch):
    """With the overlap the members' evaluations compute on a thread pool while the cohort trains
    on, and are concluded steps later. Every member's metrics, verdicts and stops are those of the
    cohort without it; a member stopped by its verdict (here diverging) or by the reporter ends
    with its networks and counters of that evaluation's step; a checkpoint holds the cohort of its
    evaluation's step, and a cohort restored from one ends as the uninterrupted run."""
    import ganlib.cohort_run

    healthy, wild = (dict(c, steps=40, eval_every=4, score_every=8, checkpoint_every=8, eval_samples=1024)
                     for c in _members("wasserstein", "clip", "rmsprop"))
    wild.update(lr_d=50.0, lr_g=50.0, clip=1e6)
    cut = dict(healthy, lr_d=2e-3)  # the reporter stops it at step 8
    stop_cut = lambda results, ending: {2} & set(results) if results[next(iter(results))]["step"] == 8 else set()  # noqa: E731
    trained = [0]  # the cohort's step, as it trains

    class Recording(CohortTrainer):
        def train_step(self):
            stats = super().train_step()
            trained.append(self.step)
            return stats

    monkeypatch.setattr(ganlib.cohort_run, "CohortTrainer", Recording)

    def run(overlap, resume=None):
        history, states, lags = {k: [] for k in range(3)}, {}, {}

        def report(latest, state):
            step = max(m["step"] for m in latest.values())
            lags[step] = trained[-1] - step
            history.update({k: history[k] + [{n: v for n, v in m.items() if n != "samples_per_s"}]
                            for k, m in latest.items() if m["step"] == step})
            if state is not None:
                states[step] = copy.deepcopy(state)  # as Tune would save it, at once

        configs = [dict(c, eval_overlap=overlap) for c in (healthy, wild, cut)]
        return history, states, train_cohort(configs, report, resume=resume, decide=stop_cut), lags

    plain, plain_states, plain_cohort, plain_lags = run("off")
    history, states, cohort, lags = run("on")
    assert max(plain_lags.values()) == 0 and max(lags.values()) > 0  # concluded after the cohort trained on
    # Every member's metrics, scores, objectives and verdicts, in order: the stopped members' bit
    # for bit; the one that ran on trained a few steps in a larger stack (float tolerance).
    assert history[1] == plain[1] and history[2] == plain[2]
    _assert_same_history(history[0], plain[0])
    assert history[1][-1]["status"] == "diverged" and history[1][-1]["step"] < 40
    assert [m["step"] for m in history[2]] == [4, 8]
    assert cohort.active == plain_cohort.active == [0]
    for k in (1, 2):  # stopped as they were at their evaluation's step, not where the cohort had got to
        assert cohort.solos[k].step == plain_cohort.solos[k].step == history[k][-1]["step"]
        assert cohort.solos[k].critic_steps == plain_cohort.solos[k].critic_steps
        for net in ("generator", "critic"):
            for name, value in plain_cohort.retired[k][net].items():
                torch.testing.assert_close(cohort.retired[k][net][name], value, rtol=0, atol=0, equal_nan=True)
    for net in ("generator", "critic"):  # the member that ran out: as without the overlap
        torch.testing.assert_close(getattr(cohort.member_trainer(0), net).state_dict(),
                                   getattr(plain_cohort.member_trainer(0), net).state_dict(), atol=3e-4, rtol=1e-3)
    # The checkpoints: the cohort at their evaluation's step, the members stopped there retired
    assert sorted(states) == sorted(plain_states)
    for step, state in states.items():
        assert state["cohort"]["step"] == step and state["cohort"]["active"] == plain_states[step]["cohort"]["active"]
        assert state["cohort"]["members"][1]["step"] == plain_states[step]["cohort"]["members"][1]["step"]
    step = max(s for s in states if lags[s] > 0 and s < 40)  # one concluded steps after it was taken
    torch.save(states[step], tmp_path / "cohort.pt")
    resumed, _, resumed_cohort, _ = run("on", resume=torch.load(tmp_path / "cohort.pt", weights_only=True))
    assert resumed[0] == [m for m in history[0] if m["step"] > step]
    for net in ("generator", "critic"):
        torch.testing.assert_close(getattr(resumed_cohort.member_trainer(0), net).state_dict(),
                                   getattr(cohort.member_trainer(0), net).state_dict(), rtol=0, atol=0)
