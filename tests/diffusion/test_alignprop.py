"""Gradients through the sampler (AlignProp), checkpointing, truncation, DDIM's closed form, LoRA
at zero, and the DDPO baseline's surrogate gradient — float64 on a tiny U-Net and a few steps."""
import numpy as np
import pytest

from nograd import Adam
from nograd.diffusion import (DDIM, DDPO, AlignProp, NoiseSchedule, Reward, SymmetryReward, ddpm_sampler,
                              reward_gradient)
from nograd.models.diffusion_lora import add_lora, lora_params

from diffusion._tiny import tiny_unet

SCHEDULE = NoiseSchedule(100)


class Quadratic(Reward):
    """r(x) = -Σ (x - c)², a smooth reward with a gradient that reaches every pixel."""

    def __init__(self, c):
        self.c = c

    def value_and_grad(self, x):
        d = x - self.c
        return -np.sum(d.reshape(len(x), -1) ** 2, axis=1), -2 * d


def _adapted(seed=0):
    net = tiny_unet(seed=seed)
    add_lora(net, 2, rng=seed + 1)
    rng = np.random.default_rng(seed + 2)
    for v in lora_params(net).values():
        v += rng.normal(0, 0.2, v.shape)
    return net


def _chain_reward(net, sampler, reward, x, window_params, first):
    """Mean reward of the chain in which steps >= first use ``window_params`` (the others the
    model's own arrays): the function whose gradient truncated backprop computes."""
    for i in range(sampler.steps):
        p = window_params if i >= first else None
        eps = net.forward(x, t=np.full(len(x), sampler.ts[i]), params=p)[0]
        x = sampler.step(x, eps, i)
    return float(np.mean(reward(x)))


@pytest.mark.parametrize("checkpoint", [True, False])
@pytest.mark.parametrize("K", [3, 2, 1])
def test_gradient_through_the_sampler_matches_differences(checkpoint, K):
    net = _adapted()
    sampler = DDIM(SCHEDULE, 3)
    reward = Quadratic(0.3)
    x = np.random.default_rng(7).standard_normal((2, 1, 4, 4))
    keys = list(lora_params(net))
    _, _, g = reward_gradient(net, sampler, reward, x, K=K, checkpoint=checkpoint, keys=keys)
    rng = np.random.default_rng(8)
    base = {k: v.copy() for k, v in net.params.items()}
    for _ in range(2):
        d = {k: rng.standard_normal(base[k].shape) for k in keys}
        h = 1e-5
        f = [_chain_reward(net, sampler, reward, x, {**base, **{k: base[k] + s * h * d[k] for k in keys}},
                           sampler.steps - K) for s in (1, -1)]
        fd = (f[0] - f[1]) / (2 * h)
        analytic = sum(float(np.sum(g[k] * d[k])) for k in keys)
        assert abs(analytic - fd) <= 1e-7 * max(1.0, abs(fd)), (analytic, fd)
        assert abs(fd) > 1e-3                        # the direction moves the reward at all


def test_truncation_drops_the_early_steps():
    net, sampler, reward = _adapted(), DDIM(SCHEDULE, 3), Quadratic(0.3)
    x = np.random.default_rng(7).standard_normal((2, 1, 4, 4))
    g1 = reward_gradient(net, sampler, reward, x, K=1)[2]
    g3 = reward_gradient(net, sampler, reward, x, K=3)[2]
    key = next(iter(lora_params(net)))
    assert not np.allclose(g1[key], g3[key])


def test_checkpointed_and_plain_backward_give_identical_gradients():
    net, sampler, reward = _adapted(3), DDIM(SCHEDULE, 4), Quadratic(-0.2)
    x = np.random.default_rng(1).standard_normal((3, 1, 4, 4))
    for K in (4, 2):
        r1, x1, g1 = reward_gradient(net, sampler, reward, x, K=K, checkpoint=True)
        r2, x2, g2 = reward_gradient(net, sampler, reward, x, K=K, checkpoint=False)
        np.testing.assert_array_equal(x1, x2)
        assert set(g1) == set(g2) == set(net.params)
        for k in g1:
            np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)


def test_ddim_one_step_is_the_closed_form():
    net = tiny_unet()
    x = np.random.default_rng(2).standard_normal((2, 1, 4, 4))
    sampler = DDIM(SCHEDULE, 1)
    t = SCHEDULE.num_steps - 1
    ab = np.prod(1 - np.linspace(1e-4, 0.02, 100))            # ᾱ at the last step, from the betas
    eps = net(x, t=np.full(2, t))
    x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)              # Song et al. eq. 12 with ᾱ_prev = 1
    np.testing.assert_allclose(sampler.sample(net, x), x0, rtol=1e-12, atol=1e-12)


def test_ddim_step_with_noise_is_equation_12():
    s = DDIM(SCHEDULE, 5, eta=0.7)
    rng = np.random.default_rng(0)
    x, eps, z = (rng.standard_normal((2, 1, 4, 4)) for _ in range(3))
    i = 1
    ab, abp = SCHEDULE.alpha_bar[s.ts[i]], SCHEDULE.alpha_bar[s.ts[i + 1]]
    sigma = 0.7 * np.sqrt((1 - abp) / (1 - ab) * (1 - ab / abp))
    want = np.sqrt(abp) * (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab) + np.sqrt(1 - abp - sigma ** 2) * eps + sigma * z
    np.testing.assert_allclose(s.step(x, eps, i, z), want, rtol=1e-12, atol=1e-12)
    full = ddpm_sampler(SCHEDULE)                                # η = 1 on every step: σ² = β̃_t
    t = 50
    beta_tilde = (1 - SCHEDULE.alpha_bar[t - 1]) / (1 - SCHEDULE.alpha_bar[t]) * SCHEDULE.betas[t]
    np.testing.assert_allclose(full.sigma[SCHEDULE.num_steps - 1 - t] ** 2, beta_tilde, rtol=1e-12)


def test_lora_with_zero_b_leaves_samples_unchanged():
    net = tiny_unet(seed=4)
    sampler = DDIM(SCHEDULE, 4)
    x = np.random.default_rng(3).standard_normal((3, 1, 4, 4))
    before = sampler.sample(net, x)
    add_lora(net, 2, rng=5)
    lp = lora_params(net)
    assert all(np.any(v != 0) for k, v in lp.items() if k.endswith("lora_A"))
    np.testing.assert_array_equal(sampler.sample(net, x), before)
    next(v for k, v in lp.items() if k.endswith("lora_B"))[...] += 0.1
    assert not np.allclose(sampler.sample(net, x), before)


def test_truncation_is_drawn_uniformly_over_the_chain():
    ap = AlignProp(DDIM(SCHEDULE, 5), SymmetryReward())
    ks = [ap.draw_k(np.random.default_rng(s)) for s in range(400)]
    assert set(ks) == {1, 2, 3, 4, 5}
    assert max(np.bincount(ks)[1:]) < 2 * min(np.bincount(ks)[1:])
    with pytest.raises(ValueError, match="k_max"):
        AlignProp(DDIM(SCHEDULE, 5), SymmetryReward(), k_max=6)
    with pytest.raises(ValueError, match="K"):
        reward_gradient(tiny_unet(), DDIM(SCHEDULE, 2), SymmetryReward(), np.zeros((1, 1, 4, 4)), K=0)


def test_ddpo_gradient_is_the_surrogate_derivative():
    net = _adapted(5)
    ddpo = DDPO(DDIM(SCHEDULE, 3, eta=1.0), Quadratic(0.1), clip=10.0)
    rng = np.random.default_rng(0)
    xs, mus = ddpo.rollout(net, rng.standard_normal((3, 1, 4, 4)), rng=rng)
    adv = np.array([1.0, -0.5, -0.5])
    keys = list(lora_params(net))
    base = {k: v.copy() for k, v in net.params.items()}
    d = {k: rng.standard_normal(base[k].shape) for k in keys}
    for k in keys:                                              # move off the behaviour policy: ρ ≠ 1
        net.params[k][...] = base[k] + 0.01 * d[k]
    g, _ = ddpo.surrogate_grads(net, xs, mus, adv, keys=keys)
    live = [i for i in range(3) if ddpo.sampler.sigma[i] > 0]

    def surrogate(params):
        total = 0.0
        for i in live:
            eps = net.forward(xs[i], t=np.full(3, ddpo.sampler.ts[i]), params=params)[0]
            mu = ddpo.sampler.a[i] * xs[i] + ddpo.sampler.b[i] * eps
            var = ddpo.sampler.sigma[i] ** 2
            logp = -np.sum((xs[i + 1] - mu) ** 2, axis=(1, 2, 3)) / (2 * var)
            logq = -np.sum((xs[i + 1] - mus[i]) ** 2, axis=(1, 2, 3)) / (2 * var)
            total += np.mean(-adv * np.exp(logp - logq))
        return total / len(live)

    h = 1e-6
    cur = {k: v.copy() for k, v in net.params.items()}
    e = {k: rng.standard_normal(cur[k].shape) for k in keys}
    f = [surrogate({**cur, **{k: cur[k] + s * h * e[k] for k in keys}}) for s in (1, -1)]
    fd = (f[0] - f[1]) / (2 * h)
    analytic = sum(float(np.sum(g[k] * e[k])) for k in keys)
    assert abs(fd) > 1e-4 and abs(analytic - fd) <= 1e-6 * abs(fd), (analytic, fd)
    with pytest.raises(ValueError, match="stochastic"):
        DDPO(DDIM(SCHEDULE, 3), Quadratic(0.0))


def test_alignprop_raises_the_reward_of_a_tiny_model():
    net = tiny_unet(seed=6, dtype=np.float32)
    add_lora(net, 2, rng=0)
    opt = Adam(lora_params(net), lr=3e-2)
    ap = AlignProp(DDIM(SCHEDULE, 3), SymmetryReward())
    rng = np.random.default_rng(0)
    rewards = [ap.step(net, opt, 16, (1, 4, 4), rng=rng)["reward"] for _ in range(20)]
    assert np.mean(rewards[-5:]) > 0.5 * np.mean(rewards[:5])   # rewards are negative: closer to 0
