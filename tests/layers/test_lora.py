"""LoRA (Hu et al. 2021, §4.1) and nograd.lora.apply/merge: the paper's definition, PyTorch's
autograd on the same formula, merging, freezing, applying by name, and a small learning test."""
import numpy as np
import pytest

import nograd
from nograd.core.losses import mse
from nograd.layers import LayerNorm, Linear, LoRA, ReLU
from nograd.lora import apply, lora_params, merge


def _lora(n_in=6, n_out=4, rank=2, alpha=None, dtype=np.float64, seed=0, bias=True, **kw):
    rng = np.random.default_rng(seed)
    base = Linear(n_in, n_out, bias=bias, rng=rng, dtype=dtype)
    if bias:
        base._own["bias"] = rng.standard_normal(n_out).astype(dtype)
    m = LoRA(base, rank, alpha, rng=rng, **kw)
    m._own["lora_B"] = rng.standard_normal(m._own["lora_B"].shape).astype(dtype)
    return m, rng


def _mlp(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return nograd.Sequential(Linear(4, 8, rng=rng, dtype=dtype), ReLU(), Linear(8, 8, rng=rng, dtype=dtype),
                             ReLU(), Linear(8, 3, rng=rng, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_B_gives_exactly_the_base_output(dtype):
    rng = np.random.default_rng(0)
    base = Linear(5, 3, rng=rng, dtype=dtype)
    base._own["bias"] = rng.standard_normal(3).astype(dtype)
    m = LoRA(base, 2, rng=rng)
    assert not m.params["lora_B"].any() and m.params["lora_A"].any()
    x = rng.standard_normal((4, 2, 5)).astype(dtype)
    y = m(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, base(x))


def test_forward_is_the_papers_definition():
    """h = W0 x + ΔW x = W0 x + (α/r) B A x per sample (§4.1, eq. 3), written out with loops."""
    m, rng = _lora(7, 5, rank=3, alpha=6.0)
    x = rng.standard_normal((4, 7))
    W0, b0 = m.base.params["weight"], m.base.params["bias"]
    A, B = m.params["lora_A"], m.params["lora_B"]
    want = np.stack([W0 @ xi + b0 + (6.0 / 3) * (B @ (A @ xi)) for xi in x])
    np.testing.assert_allclose(m(x), want, rtol=1e-12, atol=1e-12)
    assert m.scale == 2.0 and LoRA(Linear(4, 4, rng=0), 2).scale == 1.0    # default alpha = rank


def test_gradients_and_tangents_match_torch_autograd():
    torch = pytest.importorskip("torch")
    m, rng = _lora(6, 4, rank=2, alpha=5.0, dropout=0.25)
    x = rng.standard_normal((3, 2, 6))
    y, cache = m.forward(x, train=True, rng=np.random.default_rng(1))
    mask = cache[3]
    assert mask is not None and (mask == 0).any()
    dy = rng.standard_normal(y.shape)
    dx, grads = m.backward(cache, dy)

    t = {k: torch.tensor(v, requires_grad=True) for k, v in m.params.items()}
    tx = torch.tensor(x, requires_grad=True)
    W0, b0 = torch.tensor(m.base.params["weight"]), torch.tensor(m.base.params["bias"])
    ty = (torch.nn.functional.linear(tx, W0, b0)
          + (tx * torch.tensor(mask)) @ t["lora_A"].T @ t["lora_B"].T * (5.0 / 2))
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    for k in ("lora_A", "lora_B"):
        np.testing.assert_allclose(grads[k], t[k].grad.numpy(), rtol=1e-12, atol=1e-12)

    u = rng.standard_normal(x.shape)
    dp = {k: rng.standard_normal(v.shape) for k, v in m.params.items()}
    _, ydot = m.jvp(x, u, dp, train=True, rng=np.random.default_rng(1))

    def f(xx, a, b):
        return torch.nn.functional.linear(xx, W0, b0) + (xx * torch.tensor(mask)) @ a.T @ b.T * 2.5

    _, want = torch.func.jvp(f, (tx.detach(), t["lora_A"].detach(), t["lora_B"].detach()),
                             (torch.tensor(u), torch.tensor(dp["lora_A"]), torch.tensor(dp["lora_B"])))
    np.testing.assert_allclose(ydot, want.numpy(), rtol=1e-12, atol=1e-12)


def test_A_is_initialised_like_loralib():
    """loralib draws A with kaiming_uniform_(a=√5): U(±1/√in)."""
    torch = pytest.importorskip("torch")
    ref = torch.empty(8, 64, dtype=torch.float64)
    torch.nn.init.kaiming_uniform_(ref, a=np.sqrt(5))
    A = LoRA(Linear(64, 16, rng=0), 8, rng=1).params["lora_A"]
    for a in (A, ref.numpy()):
        assert 0.95 / 8 < np.abs(a).max() <= 1 / 8 + 1e-7
        assert abs(a.std() - 1 / (8 * np.sqrt(3))) < 0.01


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_merge_equals_the_wrapper(dtype, tol):
    m, rng = _lora(6, 5, rank=3, alpha=2.0, dtype=dtype)
    x = rng.standard_normal((4, 3, 6)).astype(dtype)
    merged = m.merge()
    assert type(merged) is Linear and list(merged.params) == ["weight", "bias"]
    assert merged.params["weight"].dtype == dtype
    np.testing.assert_allclose(merged(x), m(x), rtol=tol, atol=tol)
    W = m.base.params["weight"] + 2.0 / 3 * m.params["lora_B"] @ m.params["lora_A"]
    np.testing.assert_allclose(merged.params["weight"], W, rtol=tol, atol=tol)
    nobias, _ = _lora(6, 5, bias=False, dtype=dtype)
    assert list(nobias.merge().params) == ["weight"]


def test_only_the_adapter_is_trainable():
    m, rng = _lora(6, 4, rank=2)
    assert list(m.params) == ["lora_A", "lora_B"]
    assert m.params["lora_A"].shape == (2, 6) and m.params["lora_B"].shape == (4, 2)
    assert (m.in_features, m.out_features) == (6, 4)
    x = rng.standard_normal((5, 6))
    y, cache = m.forward(x)
    dx, grads = m.backward(cache, np.ones_like(y), need_dx=False)
    assert dx is None and list(grads) == ["lora_A", "lora_B"]


def test_params_override_and_astype():
    m, rng = _lora(5, 4, rank=2)
    x = rng.standard_normal((3, 5))
    B2 = rng.standard_normal((4, 2))
    y = m(x, params={"lora_B": B2})
    m._own["lora_B"] = B2
    np.testing.assert_array_equal(y, m(x))
    nograd.Sequential(m).astype(np.float32)
    assert m.base.params["weight"].dtype == np.float32 == m.params["lora_A"].dtype
    assert m(x.astype(np.float32)).dtype == np.float32


def test_constructor_errors_name_the_argument():
    base = Linear(4, 3, rng=0)
    with pytest.raises(TypeError, match="base"):
        LoRA(LayerNorm(4), 1)
    with pytest.raises(TypeError, match="base"):
        LoRA(np.zeros((3, 4)), 1)
    for bad in (0, -1, 4):
        with pytest.raises(ValueError, match="rank"):
            LoRA(base, bad)
    with pytest.raises(TypeError, match="rank"):
        LoRA(base, 1.5)
    with pytest.raises(ValueError, match="alpha"):
        LoRA(base, 2, alpha=0.0)
    with pytest.raises(ValueError, match="dropout"):
        LoRA(base, 2, dropout=1.0)
    with pytest.raises(ValueError, match="rng"):
        LoRA(base, 2, dropout=0.1).forward(np.ones((2, 4), np.float32), train=True)


def test_optimizer_steps_leave_the_base_alone():
    net = apply(_mlp(), 2, rng=0)
    frozen = {name: {k: v.copy() for k, v in m.base.params.items()}
              for name, m in net.modules() if isinstance(m, LoRA)}
    before = {k: v.copy() for k, v in net.params.items()}
    opt = nograd.AdamW(net.params, lr=1e-2)
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal((16, 3)).astype(np.float32)
    for _ in range(3):
        y, cache = net.forward(x)
        _, dy = mse(y, t)
        _, grads = net.backward(cache, dy, need_dx=False)
        opt.step(grads)
    assert len(frozen) == 3
    for name, m in net.modules():
        if isinstance(m, LoRA):
            for k, v in m.base.params.items():
                np.testing.assert_array_equal(v, frozen[name][k])
    for k in before:     # the adapters (A and B) did move
        assert not np.array_equal(before[k], net.params[k]), k


def test_apply_everywhere_keeps_the_output_and_renames_params():
    net = _mlp()
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    y0 = net(x)
    assert apply(net, 2, rng=0) is net
    assert list(net.params) == [f"{i}.lora_{c}" for i in (0, 2, 4) for c in "AB"]
    np.testing.assert_array_equal(net(x), y0)
    assert lora_params(net).keys() == net.params.keys()
    assert all(lora_params(net)[k] is v for k, v in net.params.items())


def test_apply_by_targets_in_a_nested_model():
    rng = np.random.default_rng(0)
    block = nograd.Sequential(Linear(6, 6, rng=rng), LayerNorm(6), Linear(6, 6, rng=rng))
    net = nograd.Sequential(Linear(4, 6, rng=rng), nograd.Residual(block), Linear(6, 2, rng=rng))
    apply(net, 1, targets=["body.2", "2"], alpha=4, rng=0)
    assert isinstance(net[1]._children["body"][2], LoRA) and isinstance(net[2], LoRA)
    assert type(net[0]) is Linear and type(block[0]) is Linear
    assert net[2].scale == 4.0
    assert list(lora_params(net)) == ["1.body.2.lora_A", "1.body.2.lora_B", "2.lora_A", "2.lora_B"]
    assert "1.body.1.weight" in net.params and "0.weight" in net.params   # not frozen by apply
    m = net[2]
    m._own["lora_B"] += 0.5
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = net(x)
    assert merge(net) is net
    assert type(net[2]) is Linear and type(block[2]) is Linear
    assert list(net.params) == ["0.weight", "0.bias", "1.body.0.weight", "1.body.0.bias",
                                "1.body.1.weight", "1.body.1.bias", "1.body.2.weight", "1.body.2.bias",
                                "2.weight", "2.bias"]
    np.testing.assert_allclose(net(x), y, rtol=1e-5, atol=1e-5)


def test_apply_errors():
    net = _mlp()
    with pytest.raises(ValueError, match=r"\['nope'\].*\['0', '2', '4'\]"):
        apply(net, 1, targets=["0", "nope"])
    assert all(type(net[i]) is Linear for i in (0, 2, 4))     # nothing replaced on error
    with pytest.raises(TypeError, match="targets"):
        apply(net, 1, targets="0")
    with pytest.raises(TypeError, match="model"):
        apply(Linear(2, 2, rng=0).params, 1)
    with pytest.raises(ValueError, match="rank"):
        apply(net, 4)                       # the last layer has 3 outputs
    assert all(type(net[i]) is Linear for i in (0, 2, 4))
    with pytest.raises(ValueError, match="no Linear"):
        apply(nograd.Sequential(ReLU()), 1)


def test_lora_learns_a_rank_one_correction():
    """A frozen random Linear, data from W0 + u vᵀ: a rank-1 LoRA trained with Adam on the mean
    squared error recovers the change (the loss falls more than 10×)."""
    rng = np.random.default_rng(0)
    base = Linear(10, 6, rng=rng, dtype=np.float64)
    W0, b0 = base.params["weight"].copy(), base.params["bias"].copy()
    delta = np.outer(rng.standard_normal(6), rng.standard_normal(10)) / 3
    x = rng.standard_normal((64, 10))
    t = x @ (W0 + delta).T + b0
    m = LoRA(base, 1, rng=rng)
    opt = nograd.Adam(m.params, lr=0.05)
    losses = []
    for _ in range(200):
        y, cache = m.forward(x)
        loss, dy = mse(y, t)
        losses.append(loss)
        opt.step(m.backward(cache, dy, need_dx=False)[1])
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    np.testing.assert_array_equal(base.params["weight"], W0)
