"""Pipelined backpropagation (Kosson et al. 2021): the simulated schedule against independent
write-ups of the paper's equations.

- one stage (no delay) is plain SGD at batch size one, bit for bit, through ``fit``;
- with delays, every update is SGD with momentum on the gradient taken with each stage's weights of
  ``D_s = 2(S - s)`` updates earlier in the forward pass and its current (or, stashed, the same
  stale) weights in the backward pass — written out below as a NumPy MLP with its own backprop;
- Spike Compensation (§4.2: ``w -= lr (m^D v + (1 - m^D)/(1 - m) g)``) and Linear Weight Prediction
  (§4.3: forward with ``w - lr D v``) are pinned the same way;
- the hyper-parameter scaling, the utilisation model, the stage plans and the errors.
"""
import numpy as np
import pytest

from nograd.core import Sequential
from nograd.core.optim import SGD, Adam
from nograd.data import blobs
from nograd.layers import Flatten, Linear, ReLU, Tanh
from nograd.rules import Backprop, PipelinedBackprop, get_rule
from nograd.rules.pipelined import pipeline_utilisation, scale_hyperparameters, stage_delays
from nograd.train import evaluate, fit

SIZES = (4, 6, 5, 3)          # a 3-layer tanh MLP: three stages by default


def _mlp(dtype=np.float64, sizes=SIZES, seed=3):
    r = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, rng=r, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(Tanh())
    return Sequential(*layers)


def _data(n=24, dtype=np.float64):
    return blobs(n, 3, 4, box=4.0, rng=1, dtype=np.dtype(dtype))


# --------------------------------------------------------------------------- the reference
def _reference(weights, X, y, delays, lr, m, *, stash=False, sc=False, lwp=False):
    """The pipeline written out for a tanh MLP with softmax cross-entropy, one sample per update.

    ``weights``: ``[(W, b), ...]`` per layer (float64 copies); ``delays[l]``: layer l's delay.
    Sample n: the forward of layer l uses version ``max(0, n - D_l)`` of its weights (LWP: that
    version minus ``lr D_l v``); the backward sends the error down through the current weights (or
    the forward ones when stashed); then ``v <- m v + g`` and ``w <- w - lr v``, or with SC
    ``w <- w - lr (m^D v + (1 - m^D)/(1 - m) g)``. Returns the final weights."""
    L = len(weights)
    w = [[W.copy(), b.copy()] for W, b in weights]
    v = [[np.zeros_like(W), np.zeros_like(b)] for W, b in weights]
    hist = [[] for _ in range(L)]                 # hist[l][k]: forward weights of version k
    for n in range(len(X)):
        for l in range(L):
            if lwp:
                hist[l].append([a - lr * delays[l] * va for a, va in zip(w[l], v[l])])
            else:
                hist[l].append([a.copy() for a in w[l]])
        fwd = [hist[l][max(0, n - delays[l])] for l in range(L)]
        bwd = fwd if stash else w
        x = X[n:n + 1]
        acts = [x]
        for l in range(L):
            z = acts[-1] @ fwd[l][0].T + fwd[l][1]
            acts.append(np.tanh(z) if l < L - 1 else z)
        logits = acts[-1]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        delta = p.copy()
        delta[0, y[n]] -= 1.0
        grads = [None] * L
        for l in range(L - 1, -1, -1):
            grads[l] = [delta.T @ acts[l], delta.sum(0)]
            if l:
                delta = (delta @ bwd[l][0]) * (1.0 - acts[l] ** 2)
        for l in range(L):
            D = delays[l]
            for i in range(2):
                g = grads[l][i]
                v[l][i] = m * v[l][i] + g if n else g.copy()
                if sc and D:
                    step = m ** D * v[l][i] + (1 - m ** D) / (1 - m) * g
                else:
                    step = v[l][i]
                w[l][i] = w[l][i] - lr * step
    return w


def _run_rule(model, X, y, lr, m, **options):
    rule = PipelinedBackprop(**options)
    opt = SGD(model.params, lr=lr, momentum=m)
    for n in range(len(X)):
        rule.step(model, X[n:n + 1], y[n:n + 1], optimizer=opt)
    return rule


def _layers(model):
    return [(model.params[f"{i}.weight"], model.params[f"{i}.bias"])
            for i in range(0, len(model), 2)]


# --------------------------------------------------------------------------- S = 1 is SGD
@pytest.mark.parametrize("compensation", ["none", "sc+lwp"])
def test_one_stage_is_sgd_at_batch_one_bit_for_bit(compensation):
    X, y = _data(dtype=np.float32)
    a, b = _mlp(np.float32), _mlp(np.float32)
    for model, rule in ((a, PipelinedBackprop(stages=1, compensation=compensation)),
                        (b, Backprop())):
        fit(model, rule, SGD(model.params, lr=0.05, momentum=0.9), (X, y), epochs=2,
            batch_size=1, rng=0, progress=False)
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    assert not np.array_equal(a.params["0.weight"], _mlp(np.float32).params["0.weight"])


# --------------------------------------------------------------------------- delays
def test_a_delay_of_d_is_sgd_on_gradients_at_the_weights_d_updates_earlier():
    """Two stages, the first a Linear alone (D = 2): its gradient, and the head's, are those of the
    network with the first layer's weights of two updates earlier."""
    X, y = _data()
    model = _mlp(sizes=(4, 6, 3))
    start = [(W.copy(), b.copy()) for W, b in _layers(model)]
    rule = _run_rule(model, X, y, 0.1, 0.5, stages=[1], compensation="none")
    assert [d for d, _, _ in rule.plan(model)] == [2, 0]
    ref = _reference(start, X, y, [2, 0], 0.1, 0.5)
    for (W, b), (rW, rb) in zip(_layers(model), ref):
        np.testing.assert_allclose(W, rW, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b, rb, rtol=0, atol=1e-12)
    plain = _reference(start, X, y, [0, 0], 0.1, 0.5)          # the delay does change the run
    assert np.abs(plain[0][0] - ref[0][0]).max() > 1e-3


@pytest.mark.parametrize("compensation", ["none", "sc", "lwp", "sc+lwp"])
@pytest.mark.parametrize("stash", [False, True])
def test_three_stages_follow_the_written_out_pipeline(compensation, stash):
    X, y = _data()
    model = _mlp()
    start = [(W.copy(), b.copy()) for W, b in _layers(model)]
    rule = _run_rule(model, X, y, 0.05, 0.8, compensation=compensation, stash=stash)
    delays = [d for d, _, _ in rule.plan(model)]
    assert delays == [4, 2, 0] == stage_delays(3)
    ref = _reference(start, X, y, delays, 0.05, 0.8, stash=stash,
                     sc="sc" in compensation, lwp="lwp" in compensation)
    for (W, b), (rW, rb) in zip(_layers(model), ref):
        np.testing.assert_allclose(W, rW, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b, rb, rtol=0, atol=1e-12)
    assert rule.updates == len(X)


def test_the_compensations_and_stashing_each_change_the_run():
    """The pins above are not vacuous: each option gives other weights than plain PB."""
    X, y = _data()
    runs = {}
    for key, opts in {"none": {"compensation": "none"}, "sc": {"compensation": "sc"},
                      "lwp": {"compensation": "lwp"},
                      "stash": {"compensation": "none", "stash": True}}.items():
        model = _mlp()
        _run_rule(model, X, y, 0.05, 0.8, **opts)
        runs[key] = model.params["0.weight"].copy()
    for key in ("sc", "lwp", "stash"):
        assert np.abs(runs[key] - runs["none"]).max() > 1e-6, key


def test_grads_changes_nothing_and_is_what_the_next_step_applies():
    X, y = _data(dtype=np.float64)
    model = _mlp()
    rule = PipelinedBackprop(compensation="none")
    opt = SGD(model.params, lr=0.1)
    for n in range(5):
        rule.step(model, X[n:n + 1], y[n:n + 1], optimizer=opt)
    before = {k: a.copy() for k, a in model.params.items()}
    g1, _ = rule.grads(model, X[5:6], y[5:6])
    g2, _ = rule.grads(model, X[5:6], y[5:6])
    assert all(np.array_equal(g1[k], g2[k]) for k in g1) and rule.updates == 5
    rule.step(model, X[5:6], y[5:6], optimizer=opt)
    for k, a in model.params.items():            # plain SGD: w_new = w - lr g
        np.testing.assert_allclose(a, before[k] - 0.1 * g1[k], rtol=0, atol=1e-14)
    fresh = PipelinedBackprop(compensation="none")
    g0, _ = fresh.grads(model, X[5:6], y[5:6])    # an empty pipeline: the plain gradient
    bp, _ = Backprop().grads(model, X[5:6], y[5:6])
    assert all(np.array_equal(g0[k], bp[k]) for k in bp)
    assert not np.allclose(g1["0.weight"], g0["0.weight"])


def test_another_model_starts_an_empty_pipeline():
    X, y = _data()
    rule = PipelinedBackprop()
    a = _mlp()
    opt = SGD(a.params, lr=0.05, momentum=0.9)
    for n in range(6):
        rule.step(a, X[n:n + 1], y[n:n + 1], optimizer=opt)
    b = _mlp(seed=4)
    g, _ = rule.grads(b, X[6:7], y[6:7])       # no stale weights of a: the plain gradient
    bp, _ = Backprop().grads(b, X[6:7], y[6:7])
    assert rule.updates == 0 and all(np.array_equal(g[k], bp[k]) for k in bp)


# --------------------------------------------------------------------------- learning
def test_pipelined_sgd_learns_the_blobs_through_fit():
    X, y = blobs(240, 3, 4, box=4.0, rng=0, dtype=np.dtype(np.float32))
    model = _mlp(np.float32)
    fit(model, "pipelined", None, (X[:180], y[:180]), epochs=4, rng=0, progress=False)
    assert evaluate(model, X[180:], y[180:])["accuracy"] >= 0.9


# --------------------------------------------------------------------------- the formulas
def test_scaling_keeps_the_momentum_per_sample_and_the_step_per_sample():
    lr, m = scale_hyperparameters(0.1, 0.9, 1, 128)
    assert m ** 128 == pytest.approx(0.9, rel=1e-12)
    assert lr / (1 * (1 - m)) == pytest.approx(0.1 / (128 * (1 - 0.9)), rel=1e-12)
    assert scale_hyperparameters(0.1, 0.0, 4, 32) == (pytest.approx(0.0125), 0.0)
    assert scale_hyperparameters(0.1, 0.9, 32, 32) == (pytest.approx(0.1), pytest.approx(0.9))
    with pytest.raises(ValueError, match="momentum"):
        scale_hyperparameters(0.1, 1.0, 1, 32)
    with pytest.raises(ValueError, match="reference_batch_size"):
        scale_hyperparameters(0.1, 0.9, 1, 0)


def test_utilisation_of_fill_and_drain_against_counted_ticks():
    for S, B in ((1, 1), (4, 1), (4, 16), (9, 32)):
        u = pipeline_utilisation(S, B)
        # count: micro-batch j runs forward on stage s at tick j + s and backward on stage s at
        # tick (B + S - 1) + (B - 1 - j) + (S - 1 - s); the batch ends after the last backward
        last = max((B + S - 1) + (B - 1 - j) + (S - 1 - s) for j in range(B) for s in range(S))
        ticks, busy = last + 1, 2 * B
        assert u["fill_drain_utilisation"] == pytest.approx(busy / ticks)
        assert u["fill_drain_bubble"] == pytest.approx(1 - busy / ticks)
        assert u["pb_utilisation"] == 1.0 and u["speedup"] == pytest.approx(ticks / busy)
    with pytest.raises(ValueError, match="stages"):
        pipeline_utilisation(0, 4)


# --------------------------------------------------------------------------- stages and errors
def _image_mlp():
    r = np.random.default_rng(0)
    return Sequential(Flatten(), Linear(4, 5, rng=r), ReLU(), Linear(5, 5, rng=r), ReLU(),
                      Linear(5, 5, rng=r), ReLU(), Linear(5, 3, rng=r))


@pytest.mark.parametrize("stages, groups", [
    (None, [["1.weight", "1.bias"], ["3.weight", "3.bias"], ["5.weight", "5.bias"],
            ["7.weight", "7.bias"]]),
    (2, [["1.weight", "1.bias", "3.weight", "3.bias"], ["5.weight", "5.bias", "7.weight", "7.bias"]]),
    ([5], [["1.weight", "1.bias", "3.weight", "3.bias"], ["5.weight", "5.bias", "7.weight", "7.bias"]]),
    ([2, 7], [["1.weight", "1.bias"], ["3.weight", "3.bias", "5.weight", "5.bias"],
              ["7.weight", "7.bias"]]),
])
def test_stage_plans(stages, groups):
    plan = PipelinedBackprop(stages=stages).plan(_image_mlp())
    assert [names for _, _, names in plan] == groups
    assert [d for d, _, _ in plan] == stage_delays(len(groups))
    assert sum(len(blocks) for _, blocks, _ in plan) == 8       # every block in one stage


def test_bad_options_and_models_are_clear_errors():
    with pytest.raises(ValueError, match="compensation"):
        PipelinedBackprop(compensation="spike")
    with pytest.raises(TypeError, match="stash"):
        PipelinedBackprop(stash="yes")
    with pytest.raises(ValueError, match="stages"):
        PipelinedBackprop(stages=0)
    with pytest.raises(ValueError, match="stages"):
        PipelinedBackprop(stages=[3, 2])
    with pytest.raises(ValueError, match="PipelinedBackprop.*stages=5.*4 blocks"):
        PipelinedBackprop(stages=5).check_model(_image_mlp())
    with pytest.raises(ValueError, match="PipelinedBackprop.*stages \\[8\\]"):
        PipelinedBackprop(stages=[8]).check_model(_image_mlp())
    with pytest.raises(ValueError, match="PipelinedBackprop.*no trainable"):
        PipelinedBackprop().check_model(Sequential(Tanh()))
    X, y = _data()
    model = _mlp()
    with pytest.raises(ValueError, match="compensation='sc\\+lwp'.*Adam.*momentum"):
        PipelinedBackprop().step(model, X[:1], y[:1], optimizer=Adam(model.params))
    with pytest.raises(ValueError, match="Nesterov"):
        PipelinedBackprop(compensation="sc").step(
            model, X[:1], y[:1], optimizer=SGD(model.params, lr=0.1, momentum=0.9, nesterov=True))
    rule = PipelinedBackprop(compensation="none")     # any optimizer without compensation
    before = model.params["0.weight"].copy()
    rule.step(model, X[:1], y[:1], optimizer=Adam(model.params, lr=0.01))
    assert not np.array_equal(before, model.params["0.weight"])


def test_registered_with_batch_one_defaults():
    rule = get_rule("pipelined")
    assert isinstance(rule, PipelinedBackprop) and rule.compensation == "sc+lwp"
    hp = PipelinedBackprop.hyperparameters()
    assert hp["batch_size"] == 1 and hp["optimizer"] == "sgd"
    assert hp["optimizer_options"]["momentum"] > 0
