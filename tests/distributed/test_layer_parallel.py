"""Layer-parallel local learning on Ray: DFA with delay 0 is single-process DFA; every rule reaches
the single-process rule's accuracy within noise; bad arguments are named."""
import numpy as np
import pytest

pytest.importorskip("ray")

import nograd as ng  # noqa: E402
from nograd.data.embedded import load_digits  # noqa: E402
from nograd.distributed import layer_parallel  # noqa: E402
from nograd.distributed.layer_parallel import split_stages  # noqa: E402
from nograd.metrics import accuracy  # noqa: E402
from nograd.rules import DFA  # noqa: E402
from nograd.train import fit, predictor  # noqa: E402


def mlp(act, dtype=np.float32, hidden=(64, 64)):
    return ng.models.mlp((64,), 10, rng=np.random.default_rng(0), hidden=hidden, activation=act,
                         dtype=dtype)


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


def test_dfa_without_delay_is_single_process_dfa(ray_cluster, digits):
    x, y = digits[0][:256].astype(np.float64), digits[1][:256]
    res = layer_parallel(mlp("tanh", np.float64), "dfa", (x, y), workers=3, epochs=1,
                         batch_size=32, lr=1e-2, optimizer="sgd", delay=0, shuffle=False, seed=4)
    ref, rule = mlp("tanh", np.float64), DFA(seed=4)
    opt = ng.get_optimizer("sgd", ref.params, lr=1e-2)
    losses = []
    for a in range(0, len(x), 32):                 # Nøkland's update, one optimizer, in order
        g, info = rule.grads(ref, x[a:a + 32], y[a:a + 32])
        opt.step(g)
        losses.append(info["loss"])
    assert len(res.stages) == 3
    for k in ref.params:
        np.testing.assert_allclose(res.model.params[k], ref.params[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.losses, losses, rtol=1e-12)
    assert not np.allclose(ref.params["0.weight"], mlp("tanh", np.float64).params["0.weight"])


@pytest.mark.parametrize("rule, act, lr, epochs, bar", [("dfa", "tanh", 1e-2, 5, 0.85),
                                                        ("mono-forward", "tanh", 3e-3, 4, 0.85),
                                                        ("ff", "relu", 1e-2, 6, 0.72)])
def test_accuracy_matches_the_single_process_rule(ray_cluster, digits, rule, act, lr, epochs, bar):
    xtr, ytr, xte, yte = digits
    res = layer_parallel(mlp(act), rule, (xtr, ytr), workers=2, epochs=epochs, batch_size=128,
                         lr=lr, eval_data=(xte, yte))
    model, single = mlp(act), ng.get_rule(rule)
    fit(model, single, ng.get_optimizer("adam", model.params, lr=lr), (xtr, ytr), epochs=epochs,
        batch_size=128, progress=False, rng=0)
    acc = accuracy(yte, predictor(model, single)(xte))
    assert res.accuracy > bar and acc > bar, (res.accuracy, acc)
    assert abs(res.accuracy - acc) < 0.05, (res.accuracy, acc)


def test_stages_and_bad_arguments(ray_cluster, digits):
    assert split_stages([10, 10, 10, 10], 2) == [(0, 2), (2, 4)]
    assert split_stages([100, 1, 1], 3) == [(0, 1), (1, 2), (2, 3)]
    x, y = digits[0][:64], digits[1][:64]
    with pytest.raises(ValueError, match="rule must be one of"):
        layer_parallel(mlp("relu"), "backprop", (x, y))
    with pytest.raises(ValueError, match="workers=5"):
        layer_parallel(mlp("relu"), "dfa", (x, y), workers=5)
    with pytest.raises(ValueError, match="negatives='random'"):
        layer_parallel(mlp("relu"), "ff", (x, y), rule_options={"negatives": "hard"})
    with pytest.raises(ValueError, match="cannot train"):
        layer_parallel(ng.Sequential(ng.Linear(64, 10), ng.Dropout(0.1), ng.Linear(10, 10)),
                       "dfa", (x, y))
