"""Convolution and pooling over hypothesis-drawn geometries: gradients, adjoint, PyTorch, errors."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nograd.layers import (AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, GroupNorm, MaxPool2d,
                           Upsample2d)
from nograd.layers.conv import out_size
from nograd.testing import check_adjoint, check_jvp, check_vjp

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def conv_geometry(draw):
    groups = draw(st.integers(1, 3))
    g = dict(groups=groups, cin=groups * draw(st.integers(1, 2)), cout=groups * draw(st.integers(1, 2)),
             kh=draw(st.integers(1, 3)), kw=draw(st.integers(1, 3)), sh=draw(st.integers(1, 3)),
             sw=draw(st.integers(1, 3)), ph=draw(st.integers(0, 2)), pw=draw(st.integers(0, 2)),
             dh=draw(st.integers(1, 2)), dw=draw(st.integers(1, 2)), n=draw(st.integers(1, 3)),
             h=draw(st.integers(1, 9)), w=draw(st.integers(1, 9)), seed=draw(st.integers(0, 2**31)))
    assume(out_size(g["h"], g["kh"], g["sh"], g["ph"], g["dh"]) >= 1)
    assume(out_size(g["w"], g["kw"], g["sw"], g["pw"], g["dw"]) >= 1)
    return g


def make_conv(g, dtype=np.float64, transpose=False):
    rng = np.random.default_rng(g["seed"])
    kw = dict(stride=(g["sh"], g["sw"]), padding=(g["ph"], g["pw"]), dilation=(g["dh"], g["dw"]),
              groups=g["groups"], rng=rng, dtype=dtype)
    if transpose:
        op = (min(g["sh"], g["dh"]) - 1, 0)      # legal: smaller than the stride or the dilation
        layer = ConvTranspose2d(g["cin"], g["cout"], (g["kh"], g["kw"]), output_padding=op, **kw)
    else:
        layer = Conv2d(g["cin"], g["cout"], (g["kh"], g["kw"]), **kw)
    layer._own["bias"] = rng.normal(size=g["cout"]).astype(dtype)
    x = rng.normal(size=(g["n"], g["cin"], g["h"], g["w"])).astype(dtype)
    return layer, x


@SETTINGS
@given(conv_geometry(), st.booleans())
def test_conv_gradients_any_geometry(g, transpose):
    layer, x = make_conv(g, transpose=transpose)
    try:
        layer.output_shape(x.shape)
    except ValueError:
        assume(False)
    assert check_vjp(layer, x) < 1e-6
    assert check_jvp(layer, x) < 1e-6
    assert check_adjoint(layer, x) < 1e-9


@SETTINGS
@given(conv_geometry(), st.booleans())
def test_conv_matches_pytorch(g, transpose):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    layer, x = make_conv(g, transpose=transpose)
    try:
        layer.output_shape(x.shape)
    except ValueError:
        assume(False)
    W, b = (torch.from_numpy(layer.params[k]) for k in ("weight", "bias"))
    tx = torch.from_numpy(x).requires_grad_()
    Wt = W.clone().requires_grad_()
    if transpose:
        ty = F.conv_transpose2d(tx, Wt, b, layer.stride, layer.padding, layer.output_padding,
                                layer.groups, layer.dilation)
    else:
        ty = F.conv2d(tx, Wt, b, layer.stride, layer.padding, layer.dilation, layer.groups)
    y, cache = layer.forward(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    dy = np.random.default_rng(0).normal(size=y.shape)
    ty.backward(torch.from_numpy(dy))
    dx, grads = layer.backward(cache, dy)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads["weight"], Wt.grad.numpy(), rtol=1e-10, atol=1e-10)


@st.composite
def pool_geometry(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    g = dict(kh=kh, kw=kw, sh=draw(st.integers(1, 3)), sw=draw(st.integers(1, 3)),
             ph=draw(st.integers(0, kh // 2)), pw=draw(st.integers(0, kw // 2)),
             n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), h=draw(st.integers(1, 8)),
             w=draw(st.integers(1, 8)), seed=draw(st.integers(0, 2**31)))
    assume(g["h"] + 2 * g["ph"] >= kh and g["w"] + 2 * g["pw"] >= kw)
    return g


def distinct_input(g):
    rng = np.random.default_rng(g["seed"])
    size = g["n"] * g["c"] * g["h"] * g["w"]
    return (rng.permutation(size) * 0.05).reshape(g["n"], g["c"], g["h"], g["w"])


@SETTINGS
@given(pool_geometry(), st.sampled_from(["max", "avg", "avg-exclude"]))
def test_pool_gradients_any_geometry(g, kind):
    args = ((g["kh"], g["kw"]), (g["sh"], g["sw"]), (g["ph"], g["pw"]))
    layer = MaxPool2d(*args) if kind == "max" else AvgPool2d(*args, count_include_pad=kind == "avg")
    x = distinct_input(g)                 # pairwise gaps of 0.05: no ties within the difference step
    assert check_vjp(layer, x) < 1e-6
    assert check_jvp(layer, x) < 1e-6
    assert check_adjoint(layer, x) < 1e-9


@SETTINGS
@given(pool_geometry(), st.sampled_from(["max", "avg", "avg-exclude"]))
def test_pool_matches_pytorch(g, kind):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    args = ((g["kh"], g["kw"]), (g["sh"], g["sw"]), (g["ph"], g["pw"]))
    x = distinct_input(g)
    if kind == "max":
        ours, ref = MaxPool2d(*args)(x), F.max_pool2d(torch.from_numpy(x), *args)
    else:
        cip = kind == "avg"
        ours = AvgPool2d(*args, count_include_pad=cip)(x)
        ref = F.avg_pool2d(torch.from_numpy(x), *args, count_include_pad=cip)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-12, atol=1e-12)


def test_norms_and_upsample_match_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5, 6))
    bn = BatchNorm2d(4, dtype=np.float64)
    rm, rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    ref = F.batch_norm(torch.from_numpy(x), rm, rv, training=True, momentum=0.1, eps=1e-5)
    np.testing.assert_allclose(bn(x, train=True), ref.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(bn.buffers["running_var"], rv.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn(x), F.batch_norm(torch.from_numpy(x), rm, rv).numpy(), rtol=1e-10, atol=1e-12)
    gn = GroupNorm(2, 4, dtype=np.float64)
    np.testing.assert_allclose(gn(x), F.group_norm(torch.from_numpy(x), 2).numpy(), rtol=1e-10, atol=1e-10)
    up = Upsample2d((2, 3))(x)
    np.testing.assert_array_equal(up, F.interpolate(torch.from_numpy(x), scale_factor=(2, 3)).numpy())


def test_groupnorm_works_with_batch_size_one():
    x = np.random.default_rng(0).normal(size=(1, 4, 3, 3))
    gn = GroupNorm(2, 4, dtype=np.float64)
    assert check_adjoint(gn, x) < 1e-10
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm2d(4, dtype=np.float64).forward(np.zeros((1, 4, 1, 1)), train=True)


def test_conv_errors_name_the_problem():
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2d(3, 2, 5)(x)
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2d(3, 2, 3, dilation=2)(x)
    with pytest.raises(ValueError, match="divisible by groups"):
        Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="divisible by groups"):
        ConvTranspose2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="x must be 4-D"):
        Conv2d(3, 2, 3)(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="3 channels"):
        Conv2d(3, 2, 3)(np.zeros((2, 4, 4, 4), np.float32))
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2d(3, 2, 0)
    with pytest.raises(ValueError, match="output_padding"):
        ConvTranspose2d(3, 2, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        MaxPool2d(5)(x)
    with pytest.raises(ValueError, match="at most half the kernel"):
        MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="x must be 4-D"):
        AvgPool2d(2)(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="divisible by num_groups"):
        GroupNorm(3, 4)


def test_float32_conv_keeps_dtype_and_agrees_with_float64():
    rng = np.random.default_rng(0)
    layer = Conv2d(3, 5, 3, padding=1, rng=0)
    x = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    y, cache = layer.forward(x)
    dx, grads = layer.backward(cache, np.ones_like(y))
    assert y.dtype == dx.dtype == grads["weight"].dtype == np.float32
    layer64 = Conv2d(3, 5, 3, padding=1, rng=0, dtype=np.float64)
    y64 = layer64(x.astype(np.float64), params={k: v.astype(np.float64) for k, v in layer.params.items()})
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-5)
