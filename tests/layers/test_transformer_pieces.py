"""RMSNorm, SiLU and PatchEmbed against their papers' definitions, written out independently, and
against PyTorch in float64; numerical safety and errors. (Gradient, adjoint, dtype and bad-input
properties run over their entries in tests/registry.py.)"""
import math

import numpy as np
import pytest

from nograd.layers import ACTIVATIONS, PatchEmbed, RMSNorm, SiLU, get_activation


def _torch():
    torch = pytest.importorskip("torch")
    return torch


# --------------------------------------------------------------------------- RMSNorm
def _paper_rmsnorm(x, g, eps, k):
    """Zhang & Sennrich 2019 eq. 4, one sample at a time over the last ``k`` axes:
    ā_i = a_i / RMS(a) · g_i with RMS(a) = sqrt(1/n Σ a_i² + ε)."""
    lead = x.shape[:x.ndim - k]
    rows = x.reshape(-1, int(np.prod(x.shape[x.ndim - k:])))
    gflat = g.ravel()
    out = np.empty_like(rows)
    for r, a in enumerate(rows):
        rms = math.sqrt(sum(float(v) * float(v) for v in a) / len(a) + eps)
        for i, v in enumerate(a):
            out[r, i] = v / rms * gflat[i]
    return out.reshape(lead + x.shape[x.ndim - k:])


@pytest.mark.parametrize("shape, norm", [((4, 6), 6), ((2, 3, 2, 5), (2, 5))])
@pytest.mark.parametrize("eps", [None, 1e-5])
def test_rmsnorm_matches_torch_float64(shape, norm, eps):
    torch = _torch()
    rng = np.random.default_rng(0)
    layer = RMSNorm(norm, eps=eps, dtype=np.float64)
    layer._own["weight"] = rng.uniform(0.5, 1.5, layer.normalized_shape)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    y, cache = layer.forward(x)
    dx, grads = layer.backward(cache, dy)

    ref = torch.nn.RMSNorm(norm, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.params["weight"]))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["weight"], ref.weight.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_rmsnorm_without_affine_matches_torch():
    torch = _torch()
    rng = np.random.default_rng(1)
    layer = RMSNorm(7, elementwise_affine=False, dtype=np.float64)
    assert layer.params == {}
    x, dy = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    y, cache = layer.forward(x)
    dx, grads = layer.backward(cache, dy)
    assert grads == {}
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.nn.RMSNorm(7, elementwise_affine=False)(xt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, scale", [(np.float32, 1e-4), (np.float64, 1e-8)])
def test_rmsnorm_default_eps_is_the_dtype_machine_epsilon(dtype, scale):
    """Inputs so small that ε dominates the mean square: only PyTorch's ε = finfo(dtype).eps agrees."""
    torch = _torch()
    x = (scale * np.random.default_rng(2).standard_normal((3, 4))).astype(dtype)
    y = RMSNorm(4, dtype=dtype)(x)
    yt = torch.nn.RMSNorm(4, dtype=getattr(torch, np.dtype(dtype).name))(torch.from_numpy(x))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(y, _paper_rmsnorm(x, np.ones(4), float(np.finfo(dtype).eps), 1),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_rmsnorm_is_the_papers_definition_and_has_unit_rms():
    rng = np.random.default_rng(3)
    x = 3 * rng.standard_normal((2, 3, 2, 4))
    layer = RMSNorm((2, 4), eps=1e-6, dtype=np.float64)
    y = layer(x)
    rms = np.sqrt(np.mean(y.reshape(6, 8) ** 2, axis=1))
    np.testing.assert_allclose(rms, 1, rtol=1e-6)               # g = 1: unit RMS up to the ε
    g = rng.uniform(0.5, 1.5, (2, 4))
    layer._own["weight"] = g
    np.testing.assert_allclose(layer(x), _paper_rmsnorm(x, g, 1e-6, 2), rtol=1e-13, atol=1e-13)


def test_rmsnorm_is_invariant_to_rescaling_the_input():
    """§4 of the paper: RMSNorm(αx) = RMSNorm(x) for α > 0 (up to ε); LayerNorm's centring is absent,
    so adding a constant does change the output."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 6))
    layer = RMSNorm(6, dtype=np.float64)
    layer._own["weight"] = rng.uniform(0.5, 1.5, 6)
    np.testing.assert_allclose(layer(7.5 * x), layer(x), rtol=1e-12)
    assert np.abs(layer(x + 1.0) - layer(x)).max() > 1e-2


def test_rmsnorm_errors():
    with pytest.raises(ValueError, match="normalized_shape"):
        RMSNorm(0)
    with pytest.raises(ValueError, match="normalized_shape"):
        RMSNorm(())
    with pytest.raises(TypeError, match="normalized_shape"):
        RMSNorm("abc")
    with pytest.raises(ValueError, match="eps"):
        RMSNorm(4, eps=-1.0)
    with pytest.raises(TypeError, match="dtype"):
        RMSNorm(4, dtype=np.int32)
    layer = RMSNorm((2, 3))
    with pytest.raises(ValueError, match="x must end with shape"):
        layer(np.zeros((4, 3, 2), np.float32))
    with pytest.raises(ValueError, match="x must have at least 2"):
        layer(np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="dx"):
        layer.jvp(np.ones((1, 2, 3), np.float32), np.ones((1, 6), np.float32))


# --------------------------------------------------------------------------- SiLU
def test_silu_is_x_times_the_logistic_and_its_derivative():
    x = np.linspace(-30, 30, 241)
    silu = SiLU()
    y, cache = silu.forward(x)
    dx, _ = silu.backward(cache, np.ones_like(x))
    sig = np.array([1 / (1 + math.exp(-v)) for v in x])
    np.testing.assert_allclose(y, x * sig, rtol=1e-13, atol=1e-300)
    # d/dx x/(1+e^{-x}) = 1/(1+e^{-x}) + x e^{-x}/(1+e^{-x})², by the quotient rule
    deriv = np.array([1 / (1 + math.exp(-v)) + v * math.exp(-v) / (1 + math.exp(-v)) ** 2 for v in x])
    np.testing.assert_allclose(dx, deriv, rtol=1e-12, atol=1e-15)
    assert get_activation("silu").__class__ is SiLU and ACTIVATIONS["silu"] is SiLU


def test_silu_matches_torch_float64_over_a_wide_range():
    torch = _torch()
    x = np.concatenate([np.linspace(-700, 700, 281), np.random.default_rng(5).standard_normal(50)])
    dy = np.random.default_rng(6).standard_normal(x.shape)
    y, cache = SiLU().forward(x)
    dx, _ = SiLU().backward(cache, dy)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.nn.functional.silu(xt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_is_quiet_and_exact_in_the_tails(dtype):
    x = np.array([-1000.0, -100.0, 100.0, 1000.0], dtype)
    silu = SiLU()
    with np.errstate(all="raise"):
        y, cache = silu.forward(x)
        dx, _ = silu.backward(cache, np.ones_like(x))
        _, ydot = silu.jvp(x, np.ones_like(x))
    assert y.dtype == dx.dtype == ydot.dtype == dtype
    np.testing.assert_array_equal(y[2:], x[2:])
    np.testing.assert_array_equal(dx[2:], 1)
    assert np.all(np.abs(y[:2]) < 1e-30) and np.all(np.abs(dx[:2]) < 1e-30)
    np.testing.assert_array_equal(ydot, dx)


# --------------------------------------------------------------------------- PatchEmbed
def _naive_patch_embed(x, W, b, p):
    """ViT eq. 1 by a loop: flatten each (C, ph, pw) patch, in row-major grid order, then E·x_p + b."""
    N, C, H, Wd = x.shape
    ph, pw = p
    E = W.shape[0]
    tokens = []
    for n in range(N):
        row = []
        for i in range(H // ph):
            for j in range(Wd // pw):
                patch = x[n, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].ravel()
                row.append(W.reshape(E, -1) @ patch + (0 if b is None else b))
        tokens.append(row)
    return np.array(tokens)


@pytest.mark.parametrize("img, patch", [((6, 8), 2), (6, (3, 2)), (4, 4)])
def test_patch_embed_matches_conv2d_with_stride_equal_kernel(img, patch):
    torch = _torch()
    rng = np.random.default_rng(7)
    layer = PatchEmbed(img, patch, 3, 5, rng=rng, dtype=np.float64)
    H, W = layer.img_size
    x = rng.standard_normal((2, 3, H, W))
    y, cache = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(cache, dy)

    conv = torch.nn.Conv2d(3, 5, layer.patch_size, stride=layer.patch_size, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(layer.params["weight"]))
        conv.bias.copy_(torch.from_numpy(layer.params["bias"]))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = conv(xt).flatten(2).transpose(1, 2)
    yt.backward(torch.from_numpy(dy))
    assert y.shape == (2, layer.num_patches, 5)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["weight"], conv.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["bias"], conv.bias.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_patch_embed_is_a_loop_over_patches(bias):
    rng = np.random.default_rng(8)
    layer = PatchEmbed((4, 6), (2, 3), 2, 4, bias=bias, rng=rng, dtype=np.float64)
    assert layer.grid == (2, 2) and layer.num_patches == 4
    x = rng.standard_normal((3, 2, 4, 6))
    expected = _naive_patch_embed(x, layer.params["weight"], layer.params.get("bias"), (2, 3))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-13, atol=1e-13)
    # the patch rows and their inverse are a permutation of the entries
    np.testing.assert_array_equal(layer.unpatch(layer.patches(x), 3), x)
    np.testing.assert_array_equal(np.sort(layer.patches(x).ravel()), np.sort(x.ravel()))


def test_patch_embed_init_is_conv2d_default():
    """U(±1/√fan_in) for weight and bias, fan_in = C·ph·pw (PyTorch's Conv2d reset_parameters)."""
    layer = PatchEmbed(8, 4, 3, 400, rng=0)
    bound = 1 / math.sqrt(3 * 4 * 4)
    w, b = layer.params["weight"], layer.params["bias"]
    assert w.shape == (400, 3, 4, 4) and b.shape == (400,) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.02        # uniform, not a narrower law
    assert abs(w.mean()) < 0.1 * bound
    np.testing.assert_array_equal(w, PatchEmbed(8, 4, 3, 400, rng=0).params["weight"])
    assert not np.array_equal(w, PatchEmbed(8, 4, 3, 400, rng=1).params["weight"])


def test_patch_embed_errors():
    with pytest.raises(ValueError, match="img_size .* divisible by patch_size"):
        PatchEmbed(10, 4, 3, 8)
    with pytest.raises(ValueError, match="divisible"):
        PatchEmbed((8, 6), (2, 4), 3, 8)
    with pytest.raises(ValueError, match="patch_size"):
        PatchEmbed(8, 0, 3, 8)
    with pytest.raises(TypeError, match="img_size"):
        PatchEmbed((8, 8, 8), 2, 3, 8)
    with pytest.raises(TypeError, match="patch_size"):
        PatchEmbed(8, 2.0, 3, 8)
    with pytest.raises(ValueError, match="embed_dim"):
        PatchEmbed(8, 2, 3, 0)
    layer = PatchEmbed((4, 6), 2, 3, 5, rng=0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, 4, 6\)"):
        layer(np.zeros((1, 3, 6, 4), np.float32))
    with pytest.raises(ValueError, match="x must be 4-D"):
        layer(np.zeros((3, 4, 6), np.float32))
    x = np.zeros((2, 3, 4, 6), np.float32)
    _, cache = layer.forward(x)
    with pytest.raises(ValueError, match="dy"):
        layer.backward(cache, np.zeros((2, 5, 6), np.float32))
    with pytest.raises(ValueError, match="dx"):
        layer.jvp(x, np.zeros((2, 3, 4, 5), np.float32))


def test_embedding_scatter_add_equals_numpy_add_at_with_repeated_ids():
    from nograd.layers.embedding import scatter_add_rows

    rng = np.random.default_rng(7)
    idx = rng.integers(0, 9, (5, 13))                   # repeats, unsorted, some ids never drawn
    idx[0, :4] = 3
    rows = rng.normal(size=(idx.size, 6))
    expected = np.zeros((11, 6))
    np.add.at(expected, idx.reshape(-1), rows)
    got = scatter_add_rows((11, 6), idx, rows)
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-14)
    assert np.all(got[[9, 10]] == 0)
