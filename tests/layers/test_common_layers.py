"""The layers PyTorch users reach for (issue #20): ELU, Mish, PReLU, Hardtanh, Dropout2d,
AdaptiveAvgPool2d, Conv1d, MaxPool1d, AvgPool1d — each against PyTorch in float64 (forward, input
and weight gradients, forward mode), then their own properties and bad-argument errors.

The registry (tests/registry.py) runs the gradient, adjoint, dtype and determinism checks."""
import numpy as np
import pytest

import nograd
from nograd.layers import (ELU, AdaptiveAvgPool2d, AvgPool1d, Conv1d, Dropout2d, Hardtanh, MaxPool1d,
                           Mish, PReLU)

TOL = dict(rtol=1e-10, atol=1e-12)
# torch.func.jvp's first call scripts a helper with torch.jit, which newer torch versions deprecate
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _torch():
    return pytest.importorskip("torch")


def _against_torch(layer, ref, x, seed=0):
    """Forward, backward (input and every array) and jvp of ``layer`` against the PyTorch module
    ``ref`` (its arrays copied from ``layer`` by name) in float64."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    names = list(layer.params)
    assert names == [n for n, _ in ref.named_parameters()]
    with torch.no_grad():
        for n in names:
            ref.get_parameter(n).copy_(torch.from_numpy(layer.params[n]))
    y, cache = layer.forward(x)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = ref(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    dy = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(dy))
    dx, grads = layer.backward(cache, dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    assert list(grads) == names
    for n in names:
        np.testing.assert_allclose(grads[n], ref.get_parameter(n).grad.numpy(), **TOL, err_msg=n)
    u = rng.standard_normal(x.shape)
    dp = {n: rng.standard_normal(v.shape) for n, v in layer.params.items()}
    primals = (torch.from_numpy(x),) + tuple(torch.from_numpy(layer.params[n]) for n in names)
    tangents = (torch.from_numpy(u),) + tuple(torch.from_numpy(dp[n]) for n in names)

    def f(xx, *ps):
        return torch.func.functional_call(ref, dict(zip(names, ps)), (xx,))

    _, t_ref = torch.func.jvp(f, primals, tangents)
    y2, t = layer.jvp(x, u, dp)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_allclose(t, t_ref.numpy(), **TOL)


def _away(rng, shape, kinks, margin=0.05, scale=3.0):
    """Normal draws moved at least ``margin`` away from every kink."""
    x = scale * rng.standard_normal(shape)
    for k in kinks:
        near = np.abs(x - k) < margin
        x[near] = k + margin * np.where(x[near] >= k, 1, -1) * 2
    return x


# --------------------------------------------------------------------------- activations
@pytest.mark.parametrize("alpha", [1.0, 0.3, 2.5])
def test_elu_matches_torch(alpha):
    torch = _torch()
    x = _away(np.random.default_rng(1), (4, 3, 5), [0.0], scale=4.0)
    x.flat[0], x.flat[1] = -40.0, 30.0                 # deep left tail and far right
    _against_torch(ELU(alpha), torch.nn.ELU(alpha), x)


def test_mish_matches_torch_over_the_whole_range():
    torch = _torch()
    x = np.random.default_rng(2).standard_normal((5, 6)) * 4
    x[0] = [-700.0, -40.0, -20.0, 20.0, 40.0, 700.0]
    _against_torch(Mish(), torch.nn.Mish(), x)


@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (-0.5, 2.0), (0.0, 6.0)])
def test_hardtanh_matches_torch(bounds):
    torch = _torch()
    x = _away(np.random.default_rng(3), (3, 4, 5), bounds)
    _against_torch(Hardtanh(*bounds), torch.nn.Hardtanh(*bounds), x)


@pytest.mark.parametrize("num_parameters, shape", [(1, (4, 7)), (3, (2, 3, 5, 4)), (3, (4, 3)),
                                                   (1, (2, 3, 4)), (5, (2, 5, 6))])
def test_prelu_matches_torch(num_parameters, shape):
    torch = _torch()
    rng = np.random.default_rng(4)
    layer = PReLU(num_parameters, dtype=np.float64)
    layer._own["weight"] = rng.uniform(-0.5, 1.5, num_parameters)      # off the 0.25 init
    ref = torch.nn.PReLU(num_parameters, dtype=torch.float64)
    _against_torch(layer, ref, _away(rng, shape, [0.0]))


def test_prelu_init_layout_and_errors():
    layer = PReLU(4, init=0.1)
    assert layer.params["weight"].shape == (4,) and layer.params["weight"].dtype == np.float32
    np.testing.assert_array_equal(layer.params["weight"], np.full(4, 0.1, np.float32))
    with pytest.raises(ValueError, match="x must have 4 channels"):
        layer.forward(np.ones((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="x must have 4 channels"):
        layer.forward(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="num_parameters"):
        PReLU(0)
    with pytest.raises(ValueError, match="init"):
        PReLU(1, init=float("nan"))


def test_activation_arguments_are_checked():
    with pytest.raises(ValueError, match="alpha"):
        ELU(alpha=float("inf"))
    with pytest.raises(ValueError, match="alpha"):
        ELU(alpha="1")
    with pytest.raises(ValueError, match="min_val"):
        Hardtanh(1.0, -1.0)
    with pytest.raises(ValueError, match="max_val"):
        Hardtanh(0.0, float("nan"))


def test_new_activations_are_named():
    from nograd.layers import get_activation
    for name, cls in [("elu", ELU), ("mish", Mish), ("hardtanh", Hardtanh)]:
        assert isinstance(get_activation(name), cls)
    y = ELU()(np.array([[-1e30, 0.0, 1e30]], np.float32))   # no overflow warning, finite
    assert np.all(np.isfinite(y))


# --------------------------------------------------------------------------- Dropout2d
def test_dropout2d_drops_whole_channels_and_rescales():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20, 30, 3, 4)).astype(np.float32)
    layer = Dropout2d(0.4)
    y, cache = layer.forward(x, train=True, rng=np.random.default_rng(6))
    assert y.dtype == np.float32
    ratio = y / x
    kept = np.abs(ratio - 1 / 0.6) < 1e-5
    dropped = y == 0
    assert np.all(kept | dropped)
    per_channel = kept.reshape(20, 30, -1)
    assert np.all(per_channel.all(axis=2) | ~per_channel.any(axis=2))       # all or nothing
    frac = dropped.reshape(20, 30, -1)[:, :, 0].mean()
    assert abs(frac - 0.4) < 0.05                   # 600 channels: 4 standard deviations
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, _ = layer.backward(cache, dy)
    mask = np.where(dropped, np.float32(0), np.float32(1 / 0.6))
    np.testing.assert_array_equal(dx, dy * mask)
    y2, t = layer.jvp(x, dy, train=True, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(t, dx)
    np.testing.assert_array_equal(layer(x), x)       # evaluation: identity


def test_dropout2d_errors():
    with pytest.raises(ValueError, match="x must be 4-D"):
        Dropout2d(0.5).forward(np.ones((2, 3, 4), np.float32), train=True, rng=0)
    with pytest.raises(ValueError, match="p must be"):
        Dropout2d(1.0)
    with pytest.raises(ValueError, match="rng"):
        Dropout2d(0.5).forward(np.ones((2, 3, 4, 4), np.float32), train=True)


# --------------------------------------------------------------------------- AdaptiveAvgPool2d
@pytest.mark.parametrize("hw, out", [((7, 5), 3), ((6, 6), (2, 3)), ((5, 4), (5, 4)), ((3, 4), (5, 7)),
                                     ((7, 9), (None, 4)), ((4, 6), 1)])
def test_adaptive_avgpool2d_matches_torch(hw, out):
    torch = _torch()
    x = np.random.default_rng(7).standard_normal((2, 3) + hw)
    _against_torch(AdaptiveAvgPool2d(out), torch.nn.AdaptiveAvgPool2d(out), x)


def test_adaptive_avgpool2d_windows_follow_pytorch_rule():
    """Window i of an axis of length n pooled to m spans [⌊i n/m⌋, ⌈(i+1) n/m⌉)."""
    x = np.arange(10.0).reshape(1, 1, 1, 10)
    y = AdaptiveAvgPool2d((1, 4))(x)
    np.testing.assert_allclose(y.ravel(), [np.mean([0, 1, 2]), np.mean([2, 3, 4]), np.mean([5, 6, 7]),
                                           np.mean([7, 8, 9])])
    assert AdaptiveAvgPool2d(3).output_size == (3, 3)


def test_adaptive_avgpool2d_errors():
    with pytest.raises(ValueError, match="output_size"):
        AdaptiveAvgPool2d(0)
    with pytest.raises(ValueError, match="output_size"):
        AdaptiveAvgPool2d((2, 3, 4))
    with pytest.raises(ValueError, match="x must be 4-D"):
        AdaptiveAvgPool2d(2).forward(np.ones((2, 3, 4), np.float32))


# --------------------------------------------------------------------------- Conv1d and pooling 1-d
@pytest.mark.parametrize("cfg", [
    dict(cin=3, cout=4, k=3, stride=1, padding=0, dilation=1, groups=1, bias=True, L=9),
    dict(cin=4, cout=6, k=2, stride=2, padding=1, dilation=3, groups=2, bias=True, L=11),
    dict(cin=3, cout=3, k=5, stride=3, padding=2, dilation=1, groups=3, bias=False, L=7),
    dict(cin=2, cout=5, k=1, stride=1, padding=0, dilation=1, groups=1, bias=True, L=1),
])
def test_conv1d_matches_torch(cfg):
    torch = _torch()
    rng = np.random.default_rng(8)
    kw = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups", "bias")}
    layer = Conv1d(cfg["cin"], cfg["cout"], cfg["k"], rng=rng, dtype=np.float64, **kw)
    if cfg["bias"]:
        layer._own["bias"] = rng.standard_normal(cfg["cout"])
    assert layer.params["weight"].shape == (cfg["cout"], cfg["cin"] // cfg["groups"], cfg["k"])
    ref = torch.nn.Conv1d(cfg["cin"], cfg["cout"], cfg["k"], dtype=torch.float64, **kw)
    _against_torch(layer, ref, rng.standard_normal((3, cfg["cin"], cfg["L"])))


def test_conv1d_attributes_and_errors():
    conv = Conv1d(2, 4, 3, stride=2, padding=1, rng=0)
    assert (conv.kernel_size, conv.stride, conv.padding, conv.dilation) == ((3,), (2,), (1,), (1,))
    assert conv.output_shape((5, 2, 10)) == (5, 4, 5)
    x = np.ones((5, 2, 10), np.float32)
    assert conv(x).shape == (5, 4, 5) and conv(x).dtype == np.float32
    with pytest.raises(ValueError, match="x must be 3-D"):
        conv.forward(np.ones((5, 2, 1, 10), np.float32))
    with pytest.raises(ValueError, match="x must have 2 channels"):
        conv.forward(np.ones((5, 3, 10), np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv1d(2, 4, 5, rng=0).forward(np.ones((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="kernel_size"):
        Conv1d(2, 4, (3, 3), rng=0)
    with pytest.raises(ValueError, match="stride"):
        Conv1d(2, 4, 3, stride=0, rng=0)
    with pytest.raises(ValueError, match="dy"):
        conv.backward(conv.forward(x)[1], np.ones((5, 4, 1, 5), np.float32))


@pytest.mark.parametrize("k, stride, padding, L", [(2, None, 0, 9), (3, 2, 1, 10), (3, 1, 1, 5),
                                                   (4, 3, 2, 13)])
def test_pool1d_match_torch(k, stride, padding, L):
    torch = _torch()
    rng = np.random.default_rng(9)
    x = rng.permutation(2 * 3 * L).reshape(2, 3, L) * 0.1 - 3.0     # distinct: no ties
    _against_torch(MaxPool1d(k, stride, padding), torch.nn.MaxPool1d(k, stride, padding), x)
    for include in (True, False):
        _against_torch(AvgPool1d(k, stride, padding, count_include_pad=include),
                       torch.nn.AvgPool1d(k, stride, padding, count_include_pad=include), x)


def test_pool1d_errors():
    for cls in (MaxPool1d, AvgPool1d):
        with pytest.raises(ValueError, match="x must be 3-D"):
            cls(2).forward(np.ones((2, 3, 4, 4), np.float32))
        with pytest.raises(ValueError, match="padding"):
            cls(2, padding=2)
        with pytest.raises(ValueError, match="larger than the padded input"):
            cls(5).forward(np.ones((2, 3, 4), np.float32))
        assert cls(3).kernel_size == (3,) and cls(3).stride == (3,)


def test_all_are_exported_at_the_top_level():
    for name in ("ELU", "Mish", "PReLU", "Hardtanh", "SiLU", "Dropout2d", "AdaptiveAvgPool2d",
                 "Conv1d", "MaxPool1d", "AvgPool1d"):
        assert getattr(nograd, name) is getattr(nograd.layers, name), name
        assert name in nograd.__all__ and name in nograd.layers.__all__, name
