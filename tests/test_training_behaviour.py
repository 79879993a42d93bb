"""Training behaviour against known outcomes, on 2 CPU cores in about a minute each."""

from ganlib.train import train

# The WGAN-GP paper's toy experiment settings (lambda 0.1, Adam betas (0.5, 0.9)) with a larger
# learning rate (5e-4) and a 3x128 MLP so the outcome shows within 1,500 generator steps here.
# Seeds 0, 1 and 2 all cover 8 of 8 modes from step ~1,100 on (hq 0.2-0.4); lr 1e-3 oscillates.
RING8_WGAN_GP = dict(dataset="ring8", loss="wgan_gp", gp_lambda=0.1, beta1=0.5, beta2=0.9, lr_g=5e-4,
                     lr_d=5e-4, batch_size=128, width=128, depth=3, steps=1500, eval_every=100,
                     eval_samples=4096, device="cpu", seed=0)


def _history(config):
    history = []
    train(config, report=lambda metrics, checkpoint: history.append(metrics))
    return history


def test_wgan_gp_covers_the_ring8_modes():
    history = _history(RING8_WGAN_GP)
    first, last = history[0], history[-1]
    assert last["step"] == 1500
    assert last["modes"] >= 7, history
    assert last["hq"] >= 0.1, history  # a random generator scores hq ~ 0
    assert first["hq"] < last["hq"]
    # a healthy run is never flagged by the collapse detector over its whole run
    assert {m["status"] for m in history} == {"ok"}, [m["reason"] for m in history]


def test_a_run_built_to_fail_is_flagged_within_its_budget():
    # Minimax GAN with a far too strong discriminator (lr 1e-2, k 10 vs G lr 1e-5): D wins
    # outright, D(G(z)) -> 0, and the minimax generator's gradient vanishes (GAN paper, 3).
    history = _history(dict(dataset="ring8", loss="gan_minimax", n_critic=10, lr_d=1e-2, lr_g=1e-5, width=64,
                            steps=200, eval_every=20, eval_samples=1024, device="cpu", seed=0))
    last = history[-1]
    assert last["status"] == "collapsed" and "saturated" in last["reason"]
    assert last["step"] <= 100  # flagged within 100 generator steps (3 evaluations of patience)
    # the finite penalty a sweep's searcher is told: worse than the divergence ceiling, above
    # which no run counts as healthy (ring8's baseline, a point at the data mean, is w1 ~ 2)
    assert last["objective"] == last["score"] > 1000 * 2 * 9


def test_wgan_with_clipping_learns_its_held_out_critic_estimate_falls():
    # Paper defaults: RMSProp 5e-5, c 0.01, n_critic 5, batch 64.
    history = _history(dict(dataset="ring8", loss="wgan", width=128, steps=500, eval_every=50,
                            eval_samples=2048, device="cpu", seed=0))
    w = [m["w_critic"] for m in history]
    early, late = max(w[:3]), sum(w[-3:]) / 3
    assert late < 0.5 * early, w
