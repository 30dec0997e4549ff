"""Forward gradients: real JVPs, unbiased random guesses, exact projection, local guesses learn."""
import numpy as np
import pytest

from nograd.core import Sequential
from nograd.core.losses import softmax_cross_entropy
from nograd.core.optim import Adam
from nograd.data import spirals
from nograd.layers import Dropout, LayerNorm, Linear, ReLU, Tanh
from nograd.metrics import cosine
from nograd.rules import Backprop, ForwardGradient, ForwardGradientLocal, available_rules, get_rule
from nograd.rules.forward_gradient import forward_gradient
from nograd.testing import check_jvp


def net64(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(Linear(4, 8, rng=rng, dtype=np.float64), Tanh(),
                      Linear(8, 6, rng=rng, dtype=np.float64), Tanh(),
                      Linear(6, 3, rng=rng, dtype=np.float64))


def batch(n=10, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, n)


def test_registered_by_name():
    assert {"forward-gradient", "forward-gradient-local"} <= set(available_rules())
    assert isinstance(get_rule("forward-gradient"), ForwardGradient)
    assert isinstance(get_rule("forward-gradient-local"), ForwardGradientLocal)


def test_jvp_of_the_full_model_equals_finite_differences():
    rng = np.random.default_rng(0)
    net = Sequential(Linear(4, 8, rng=rng, dtype=np.float64), LayerNorm(8, dtype=np.float64),
                     Tanh(), Linear(8, 3, rng=rng, dtype=np.float64))
    x, _ = batch()
    assert check_jvp(net, x) < 1e-6


def test_directional_derivative_equals_finite_differences_of_the_loss():
    net = net64()
    x, y = batch()
    rng = np.random.default_rng(2)
    v = {k: rng.normal(size=a.shape) for k, a in net.params.items()}
    _, info = forward_gradient(net, x, y, v)
    h = 1e-5
    p = net.params
    plus = softmax_cross_entropy(net(x, params={k: a + h * v[k] for k, a in p.items()}), y)[0]
    minus = softmax_cross_entropy(net(x, params={k: a - h * v[k] for k, a in p.items()}), y)[0]
    assert np.isclose(info["directional"], (plus - minus) / (2 * h), rtol=1e-7)


def test_guess_equal_to_the_true_gradient_is_exact():
    net = net64()
    x, y = batch()
    true, _ = Backprop().grads(net, x, y)
    g, _ = forward_gradient(net, x, y, true)
    for k in true:
        np.testing.assert_allclose(g[k], true[k], rtol=1e-12, atol=1e-15)
    g, _ = forward_gradient(net, x, y, {k: 3.0 * a for k, a in true.items()})   # any scale
    for k in true:
        np.testing.assert_allclose(g[k], true[k], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_weight_guesses_are_unbiased(distribution):
    """Averaged over more tangents the estimate turns towards the true gradient (cosine → 1); the
    unbiased scaling also matches its length."""
    net = net64()
    x, y = batch()
    true, _ = Backprop().grads(net, x, y)
    cos = {}
    for t in (10, 2000):
        g, _ = ForwardGradient(tangents=t, distribution=distribution).grads(net, x, y, rng=0)
        cos[t] = cosine(g, true)
    assert cos[10] < 0.8 and cos[2000] > 0.95, cos
    g, _ = ForwardGradient(tangents=2000, distribution=distribution,
                           scaling="unbiased").grads(net, x, y, rng=1)
    err = np.sqrt(sum(np.sum((g[k] - true[k]) ** 2) for k in true))
    norm = np.sqrt(sum(np.sum(true[k] ** 2) for k in true))
    d = net.num_params                   # E‖ĝ − ∇L‖² ≤ (d + 2)‖∇L‖²/T for T tangents
    assert err < 1.5 * np.sqrt((d + 2) / 2000) * norm, err / norm


def test_random_weight_guesses_never_run_a_backward(monkeypatch):
    net = net64()
    x, y = batch()

    def refuse(*args, **kwargs):
        raise AssertionError("backward was called")

    for _, m in net.modules():
        monkeypatch.setattr(m, "backward", refuse)
    g, info = ForwardGradient(tangents=3).grads(net, x, y, rng=0)
    assert set(g) == set(net.params) and np.isfinite(info["loss"])


def test_local_guess_of_the_last_block_is_its_exact_gradient_and_cosine_is_logged():
    net = net64()
    x, y = batch()
    true, _ = Backprop().grads(net, x, y)
    g, info = ForwardGradientLocal(track_cosine=True).grads(net, x, y, rng=0)
    for k in ("4.weight", "4.bias"):
        np.testing.assert_allclose(g[k], true[k], rtol=1e-10, atol=1e-14)
    assert np.isclose(info["cosine"], cosine({k: g[k] for k in true}, true))   # the model's arrays
    assert len(info["local_losses"]) == 2


def test_local_guesses_align_far_better_than_random_ones():
    x, y = spirals(40, 3, rng=0)
    net = Sequential(Linear(2, 32, rng=0), ReLU(), Linear(32, 32, rng=1), ReLU(),
                     Linear(32, 3, rng=2))
    _, loc = ForwardGradientLocal(track_cosine=True).grads(net, x, y, rng=0)
    _, rnd = ForwardGradient(track_cosine=True).grads(net, x, y, rng=0)
    assert loc["cosine"] > 0.5 and abs(rnd["cosine"]) < 0.2, (loc["cosine"], rnd["cosine"])


def test_activation_guesses_and_local_targets_run():
    net = net64()
    x, y = batch()
    true, _ = Backprop().grads(net, x, y)
    g, _ = ForwardGradient(guess="activation", tangents=500).grads(net, x, y, rng=0)
    assert cosine(g, true) > 0.6
    for rule in (ForwardGradient(target="local", tangents=2), ForwardGradientLocal(target="local")):
        g, info = rule.grads(net, x, y, rng=0)
        assert list(g) == list(net.params) + list(rule.params)      # the model's, then the heads'
        assert rule.params and all(np.isfinite(a).all() for a in g.values())


def _train(rule, epochs, seed=0):
    X, y = spirals(60, 3, noise=0.1, rng=0)
    net = Sequential(Linear(2, 32, rng=seed), ReLU(), Linear(32, 32, rng=seed + 1), ReLU(),
                     Linear(32, 3, rng=seed + 2))
    opt = Adam(net.params, lr=0.01)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), 60):
            idx = order[i:i + 60]
            info = rule.step(net, X[idx], y[idx], optimizer=opt, rng=rng)   # heads join opt
            losses.append(info["loss"])
    return net, losses, np.mean(net(X).argmax(1) == y)


def test_local_guesses_learn_a_small_task():
    _, losses, acc = _train(ForwardGradientLocal(head_lr=0.01), 60)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses[::20]
    assert acc > 0.8, acc


def test_same_seed_same_run_even_with_dropout():
    def run(rule_cls, **kw):
        net = Sequential(Linear(2, 16, rng=0), ReLU(), Dropout(0.3), Linear(16, 3, rng=1))
        X, y = spirals(20, 3, rng=0)
        rule, opt, rng = rule_cls(**kw), Adam(net.params, lr=0.01), np.random.default_rng(5)
        for _ in range(3):
            rule.step(net, X, y, optimizer=opt, rng=rng)
        return [a.copy() for a in net.params.values()]

    for cls, kw in ((ForwardGradient, {"tangents": 2}), (ForwardGradient, {"guess": "activation"}),
                    (ForwardGradientLocal, {})):
        a, b = run(cls, **kw), run(cls, **kw)
        assert all(np.array_equal(p, q) for p, q in zip(a, b)), cls


def test_block_guesses_with_dropout_match_backprop_masks():
    """The block-wise JVPs replay each block's dropout mask: the last block's estimate is exact."""
    net = Sequential(Linear(2, 16, rng=0, dtype=np.float64), ReLU(), Dropout(0.3),
                     Linear(16, 3, rng=1, dtype=np.float64))
    X, y = spirals(20, 3, rng=0)
    X = X.astype(np.float64)
    g, info = ForwardGradientLocal(track_cosine=True).grads(net, X, y, rng=3)
    assert info["cosine"] > 0.3


def test_bad_options_and_models_fail_early():
    with pytest.raises(ValueError, match="guess"):
        ForwardGradient(guess="local")
    with pytest.raises(ValueError, match="target"):
        ForwardGradientLocal(target="both")
    with pytest.raises(ValueError, match="scaling"):
        ForwardGradient(scaling="none")
    with pytest.raises(ValueError, match="blocks"):
        ForwardGradientLocal(blocks=[3, 1])

    with pytest.raises(ValueError, match="Sequential"):
        ForwardGradientLocal().check_model(Linear(2, 3, rng=0))
    with pytest.raises(ValueError, match="no trainable"):
        ForwardGradientLocal(blocks=[1]).check_model(Sequential(Linear(2, 3, rng=0), ReLU()))


def test_batchnorm_statistics_move_once_per_step_like_backprop():
    from nograd.layers import BatchNorm1d

    def net():
        return Sequential(Linear(4, 8, rng=0), BatchNorm1d(8), ReLU(), Linear(8, 3, rng=1))

    x, y = batch()
    x = x.astype(np.float32)
    ref = net()
    Backprop().grads(ref, x, y)
    for rule in (ForwardGradient(tangents=3, track_cosine=True), ForwardGradientLocal(),
                 ForwardGradient(guess="activation", tangents=2)):
        m = net()
        rule.grads(m, x, y, rng=0)
        for k, v in ref.buffers.items():
            np.testing.assert_array_equal(m.buffers[k], v, err_msg=f"{rule}: {k}")
