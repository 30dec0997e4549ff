"""Forward-Forward: local losses fall, goodness separates positive from negative data, both
prediction modes beat chance, the hand-written derivatives match finite differences, peer
normalisation equals Hinton's released code and revives a dead unit, seeds."""
import numpy as np
import pytest

import nograd
from nograd.core import Sequential
from nograd.core.optim import Adam
from nograd.data import blobs, load_digits
from nograd.layers import Conv2d, Flatten, LayerNorm, Linear, ReLU, Tanh
from nograd.rules import Backprop, ForwardForward, available_rules, get_rule
from nograd.train import evaluate, fit, predictor

K, D = 4, 10                       # the synthetic task: 4 Gaussian blobs in 10-D


@pytest.fixture(scope="module")
def task():
    X, y = blobs(800, K, D, spread=2.5, rng=0)
    X = X / np.abs(X).max()
    return X[:600], y[:600], X[600:], y[600:]


def net(seed=0, d_in=D + K, hidden=(48, 48), dtype=np.float32, act=ReLU):
    rng = np.random.default_rng(seed)
    layers, width = [], d_in
    for h in hidden:
        layers += [Linear(width, h, rng=rng, dtype=dtype), act()]
        width = h
    return Sequential(*layers, Linear(width, K, rng=rng, dtype=dtype))


def train(rule, model, X, y, epochs, lr=3e-3, seed=1):
    opt = Adam(model.params, lr=lr)
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        order = rng.permutation(len(X))
        losses = []
        for i in range(0, len(X), 32):
            idx = order[i:i + 32]
            grads, info = rule.grads(model, X[idx], y[idx], rng=rng)
            opt.step(grads)
            losses.append(info["layer_losses"])
        history.append(np.mean(losses, axis=0))
    return np.array(history)


@pytest.fixture(scope="module")
def trained(task):
    X, y, Xt, yt = task
    model, rule = net(), ForwardForward(seed=0)
    losses = train(rule, model, X, y, epochs=15)
    return model, rule, losses


def test_registered_with_defaults_within_three_times_backprop():
    assert "ff" in available_rules() and isinstance(get_rule("ff"), ForwardForward)
    hp, bp = ForwardForward.hyperparameters(), Backprop.hyperparameters()
    assert hp["epochs"] <= 3 * bp["epochs"]


def test_loss_falls_in_every_layer(trained):
    _, _, losses = trained
    first, last = losses[0], losses[-1]
    assert losses.shape[1] == 2
    assert np.all(last < 0.5 * first), (first, last)


def test_goodness_separates_positive_from_negative_data(trained, task):
    model, rule, _ = trained
    _, _, Xt, yt = task
    wrong = (yt + 1 + np.arange(len(yt)) % (K - 1)) % K
    pos = rule.layer_goodness(model, Xt, yt)
    neg = rule.layer_goodness(model, Xt, wrong)
    for layer, (gp, gn) in enumerate(zip(pos, neg)):
        theta = rule.threshold(48)
        assert gp.mean() > theta > gn.mean(), layer
        assert np.mean(gp > gn) > 0.9, layer


def test_both_prediction_modes_beat_chance_by_a_wide_margin(trained, task):
    model, rule, _ = trained
    _, _, Xt, yt = task
    for mode in ("goodness", "softmax"):
        acc = np.mean(rule.predict(model, Xt, mode=mode).argmax(1) == yt)
        assert acc >= 1 / K + 0.6, (mode, acc)           # chance is 0.25


def test_label_written_over_input_features_on_digits():
    X, y, Xt, yt = load_digits(seed=0)
    model = nograd.get_model("mlp", (64,), 10, rng=0, hidden=(128, 128))
    rule = ForwardForward(seed=0)
    fit(model, rule, Adam(model.params, lr=3e-3), (X, y), epochs=6, batch_size=64, rng=1,
        progress=False)
    # the 10 least-varying pixels of the first batch: the left and right borders of the 8x8 digits
    assert len(rule.label_positions_) == 10
    assert set(np.asarray(rule.label_positions_) % 8) <= {0, 7}
    for mode in ("goodness", "softmax"):
        assert np.mean(rule.predict(model, Xt, mode=mode).argmax(1) == yt) > 0.8   # chance 0.1


@pytest.mark.parametrize("goodness", ["sumsq", "neg-sumsq", "l2"])
def test_layer_gradients_equal_finite_differences_of_the_local_losses(goodness):
    rng = np.random.default_rng(3)
    model = net(seed=2, hidden=(7, 5), dtype=np.float64, act=Tanh)
    x, y = rng.normal(size=(9, D)), rng.integers(0, K, 9)
    # (peer normalisation is not the gradient of a loss: it is pinned to Hinton's code below)
    rule = ForwardForward(goodness=goodness, theta=0.5, seed=0)
    probe = ForwardForward(goodness=goodness, theta=0.5, seed=0)
    grads, info = rule.grads(model, x, y, rng=np.random.default_rng(0))
    wrong = rule._wrong_labels(y, info["output"], K, np.random.default_rng(0))   # same draw

    def local_loss(layer):
        gp = probe.layer_goodness(model, x, y)[layer]
        gn = probe.layer_goodness(model, x, wrong)[layer]
        return np.logaddexp(0, 0.5 - gp).mean() + np.logaddexp(0, gn - 0.5).mean()

    for layer, prefix in enumerate(["0.", "2."]):
        for name in ("weight", "bias"):
            p = model.params[prefix + name]
            u = rng.normal(size=p.shape)
            keep = p.copy()
            p[...] = keep + 1e-6 * u
            plus = local_loss(layer)
            p[...] = keep - 1e-6 * u
            minus = local_loss(layer)
            p[...] = keep
            fd = (plus - minus) / 2e-6
            assert np.isclose(fd, np.sum(grads[prefix + name] * u), rtol=1e-6, atol=1e-9), \
                (goodness, prefix + name)
    # the head: the softmax cross-entropy gradient on the neutral pass
    assert np.isclose(info["head_loss"], nograd.get_loss("cross-entropy")(info["output"], y)[0])


def _rms(a):
    """nograd's RMS length normalisation (Hinton's ``ffnormrows`` with 1e-8 for his e^-50)."""
    return a / (np.sqrt(np.mean(a ** 2, axis=1, keepdims=True)) + 1e-8)


def _hinton_step(model, x, y, wrong, mu, lam, m=0.9):
    """One batch of Hinton's released FF code (ffnew.m, the Matlab code published with Hinton
    2022, arXiv:2212.13345), written out for two ReLU layers with labels appended to the input:
    for each layer, p = σ(Σ_j h_j² − J) (temperature 1, threshold the width J), the ascent
    direction on a unit's total input is (1 − p)·h_j on positive data and −p·h_j on negative
    data, and peer normalisation updates the running mean μ ← m·μ + (1 − m)·mean_n h⁺ and adds
    λ·(mean_k μ_k − μ_j) to every positive case's direction — *not* gated by h_j > 0, so that it
    revives units that are always off. Weight and bias directions are averaged over the batch.
    Returns ({name: ascent direction in nograd's (out, in) layout}, new μ per layer)."""
    onehot = np.eye(K)
    z_pos, z_neg = _rms(np.hstack([x, onehot[y]])), _rms(np.hstack([x, onehot[wrong]]))
    n, out, new_mu = len(x), {}, []
    for layer, prefix in enumerate(["0.", "2."]):
        W, b = model.params[prefix + "weight"], model.params[prefix + "bias"]
        h_pos, h_neg = np.maximum(0, z_pos @ W.T + b), np.maximum(0, z_neg @ W.T + b)
        width = W.shape[0]
        p_pos = 1 / (1 + np.exp(-((h_pos ** 2).sum(1) - width)))
        p_neg = 1 / (1 + np.exp(-((h_neg ** 2).sum(1) - width)))
        mu_l = m * mu[layer] + (1 - m) * h_pos.mean(0)
        d_pos = (1 - p_pos)[:, None] * h_pos + lam * (mu_l.mean() - mu_l)
        d_neg = -p_neg[:, None] * h_neg
        out[prefix + "weight"] = (d_pos.T @ z_pos + d_neg.T @ z_neg) / n
        out[prefix + "bias"] = (d_pos.sum(0) + d_neg.sum(0)) / n
        new_mu.append(mu_l)
        z_pos, z_neg = _rms(h_pos), _rms(h_neg)
    return out, new_mu


def test_peer_normalisation_is_hintons_ungated_term_and_reaches_a_dead_unit():
    """λ is Hinton's ``lambdamean``: his code ascends (1 − p)·h, half the exact derivative
    2(1 − p)·h of log p in a unit's total input, and adds λ(μ̄ − μ_j) to it; nograd descends the
    exact gradient of the batch-mean loss, so every term of its update is −2× his, the peer term
    included, and a unit that never fires still gets it."""
    rng = np.random.default_rng(5)
    model = net(seed=8, hidden=(7, 5), dtype=np.float64)
    model.params["0.bias"][3] = -100.0                 # unit 3 of layer 1 never fires
    lam = 0.03
    rule = ForwardForward(peer_normalization=lam, seed=0)
    mu = [np.full(7, 0.5), np.full(5, 0.5)]           # Hinton starts every running mean at 0.5
    for step in range(2):                              # the running means carry over
        x, y = rng.normal(size=(9, D)), rng.integers(0, K, 9)
        grads, info = rule.grads(model, x, y, rng=np.random.default_rng(step))
        wrong = rule._wrong_labels(y, info["output"], K, np.random.default_rng(step))
        ascent, mu = _hinton_step(model, x, y, wrong, mu, lam)
        for k, ref in ascent.items():
            np.testing.assert_allclose(grads[k], -2 * ref, rtol=1e-10, atol=1e-13,
                                       err_msg=f"step {step}, {k}")
        assert info["peer_loss"] == pytest.approx(
            sum(lam * np.sum((u - u.mean()) ** 2) for u in mu), rel=1e-10)
        h = rule.hidden_states(model, x, y)[0]
        assert np.all(h[:, 3] == 0)                    # still dead: only the peer term reaches it
        assert grads["0.bias"][3] == pytest.approx(-2 * lam * (mu[0].mean() - mu[0][3]), rel=1e-10)
        assert grads["0.bias"][3] < 0                  # descent raises its bias
        assert np.abs(grads["0.weight"][3]).max() > 0


@pytest.mark.parametrize("lam", [0.0, 0.03])
def test_peer_normalisation_revives_a_dead_unit_in_training(task, lam):
    X, y, _, _ = task
    model = net(seed=9, hidden=(16, 16))
    rule = ForwardForward(peer_normalization=lam, seed=0)
    z = rule._normalise(np.hstack([X, np.eye(K, dtype=X.dtype)[y]]))
    pre = z @ model.params["0.weight"][0] + model.params["0.bias"][0]
    model.params["0.bias"][0] -= pre.max() + 0.1       # unit 0 is off for every training input
    opt = Adam(model.params, lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(60):
        idx = rng.choice(len(X), 32, replace=False)
        grads, _ = rule.grads(model, X[idx], y[idx], rng=rng)
        opt.step(grads)
    fires = np.mean(rule.hidden_states(model, X, y)[0][:, 0] > 0)
    if lam == 0:
        assert fires == 0                              # nothing else reaches a dead ReLU unit
    else:
        assert fires > 0.05, fires


def test_hard_negatives_are_wrong_and_follow_the_head():
    rule = ForwardForward(negatives="hard")
    y = np.zeros(4000, dtype=np.int64)
    logits = np.tile(np.log([1.0, 6.0, 2.0, 1.0]), (4000, 1))
    neg = rule._wrong_labels(y, logits, 4, np.random.default_rng(0))
    assert not np.any(neg == y)
    share = np.bincount(neg, minlength=4) / len(neg)
    assert np.allclose(share[1:], [6 / 9, 2 / 9, 1 / 9], atol=0.03)


def test_hard_negatives_train(task):
    X, y, Xt, yt = task
    model, rule = net(seed=4), ForwardForward(negatives="hard", seed=0)
    losses = train(rule, model, X, y, epochs=8)
    assert np.all(losses[-1] < losses[0])
    assert np.mean(rule.predict(model, Xt).argmax(1) == yt) > 0.8


def test_greedy_schedule_trains_one_layer_at_a_time(task):
    X, y, _, _ = task
    model = net(seed=5)
    rule = ForwardForward(schedule="greedy", steps_per_layer=3)
    seen = []
    for step in range(8):
        grads, info = rule.grads(model, X[:32], y[:32], rng=step)
        seen.append((info["active_layers"], sorted(grads)))
    head = ["4.bias", "4.weight"]
    assert seen[0] == ([0], sorted(["0.weight", "0.bias"] + head))
    assert seen[3] == ([1], sorted(["2.weight", "2.bias"] + head))
    assert seen[7][0] == [1]                       # the last layer keeps learning


def test_fit_evaluates_through_the_rules_predict(task):
    X, y, Xt, yt = task
    model, rule = net(seed=6), ForwardForward(seed=0)
    hist = fit(model, rule, Adam(model.params, lr=3e-3), (X, y), val=(Xt, yt), epochs=2,
               batch_size=32, rng=0, progress=False)
    expect = np.mean(rule.predict(model, Xt).argmax(1) == yt)
    assert hist["val_accuracy"][-1] == pytest.approx(expect)
    ev = evaluate(model, Xt, yt, predict=predictor(model, rule))
    assert ev["accuracy"] == pytest.approx(expect)
    with pytest.raises(ValueError, match="last axis"):
        evaluate(model, Xt, yt)        # a plain forward pass has no slot for the label


def test_same_seed_same_run_and_other_seed_other_run(task):
    X, y, _, _ = task

    def run(seed):
        model, rule = net(seed=7), ForwardForward(negatives="hard", seed=0)
        fit(model, rule, Adam(model.params, lr=3e-3), (X[:200], y[:200]), epochs=2, batch_size=32,
            rng=seed, progress=False)
        return model.params

    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_models_it_cannot_train_fail_at_once():
    rule = ForwardForward()
    with pytest.raises(ValueError, match="ends with ReLU"):
        rule.check_model(Sequential(Linear(14, 8), ReLU(), Linear(8, 4), ReLU()))
    with pytest.raises(ValueError, match="at least one hidden"):
        rule.check_model(Sequential(Linear(14, 4)))
    with pytest.raises(ValueError, match="cannot train LayerNorm"):
        rule.check_model(Sequential(Linear(14, 8), LayerNorm(8), ReLU(), Linear(8, 4)))
    with pytest.raises(ValueError, match="cannot train Conv2d"):
        rule.check_model(Sequential(Conv2d(1, 2, 3), Flatten(), Linear(8, 4)))
    x, y = np.zeros((3, 5), np.float32), np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="x has 5 features"):
        rule.grads(net(), x, y)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        rule.grads(net(), np.zeros((3, D), np.float32), np.array([0, 1, 4]))
    peer = ForwardForward(peer_normalization=0.03)     # its running means belong to one model
    peer.grads(net(), np.ones((3, D), np.float32), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="running means of 48 units .* now has 20"):
        peer.grads(net(hidden=(20, 48)), np.ones((3, D), np.float32), np.zeros(3, np.int64))


@pytest.mark.parametrize("kwargs, match", [
    ({"goodness": "max"}, "goodness must be one of"),
    ({"schedule": "greedy"}, "needs steps_per_layer"),
    ({"steps_per_layer": 5}, "for schedule='greedy' only"),
    ({"peer_momentum": 1.0}, "peer_momentum must be < 1"),
    ({"peer_normalization": -0.1}, "peer_normalization must be ≥ 0"),
    ({"label_positions": [1, 1, 2]}, "distinct integer indices"),
    ({"norm": "max"}, "norm must be one of"),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForwardForward(**kwargs)
