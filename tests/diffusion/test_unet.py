"""The diffusion U-Net, its time embedding and its LoRA adapters on the module contract (float64)."""
import numpy as np
import pytest

from nograd.layers import Conv2d, SinusoidalEmbedding
from nograd.models.diffusion import UNet
from nograd.models.diffusion_lora import LoRAConv2d, add_lora, lora_params
from nograd.testing import check_adjoint, check_jvp, check_vjp

from diffusion._tiny import Bound, check_maps, tiny_unet


@pytest.mark.parametrize("num_classes", [None, 3])
def test_unet_gradients_match_differences_and_each_other(num_classes):
    net = tiny_unet(num_classes)
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 4))
    labels = None if num_classes is None else np.array([0, 2])
    vjp, jvp, adjoint = check_maps(Bound(net, np.array([3, 400]), labels), x, seed=2)
    assert vjp < 1e-7 and jvp < 1e-7 and adjoint < 1e-11


def test_unet_with_lora_gradients_and_only_adapters_added():
    net = tiny_unet()
    before = set(net.params)
    wrapped = add_lora(net, 2, rng=3)
    assert any(name.endswith("conv_in") for name in wrapped) and "time_mlp.0" in wrapped
    lp = lora_params(net)
    assert lp and set(lp) == set(net.params) - {k for k in before if k in net.params}
    rng = np.random.default_rng(4)
    for v in lp.values():
        v += rng.normal(0, 0.3, v.shape)
    x = rng.standard_normal((2, 1, 4, 4))
    vjp, jvp, adjoint = check_maps(Bound(net, np.array([10, 900])), x, seed=5)
    assert vjp < 1e-7 and jvp < 1e-7 and adjoint < 1e-11


def test_lora_conv_is_the_merged_convolution():
    rng = np.random.default_rng(0)
    base = Conv2d(3, 4, 3, padding=1, groups=1, rng=0, dtype=np.float64)
    lora = LoRAConv2d(base, 2, alpha=3.0, rng=1)
    lora._own["lora_B"][...] = rng.standard_normal((4, 2))
    x = rng.standard_normal((2, 3, 5, 5))
    W = base.weight + 1.5 * (lora.lora_B @ lora.lora_A).reshape(base.weight.shape)
    np.testing.assert_allclose(lora(x), base(x, params={"weight": W}), rtol=1e-12, atol=1e-12)
    assert set(lora.params) == {"lora_A", "lora_B"}
    assert check_vjp(lora, x, seed=2) < 1e-6 and check_jvp(lora, x, seed=2) < 1e-6
    assert check_adjoint(lora, x, seed=2) <= 1e-9


def test_time_embedding_is_the_paper_formula():
    emb = SinusoidalEmbedding(8, max_period=10000.0)
    t = np.array([0.0, 7.0, 999.0])
    k = np.arange(4)
    w = 10000.0 ** (-k / 4)
    want = np.concatenate([np.sin(t[:, None] * w), np.cos(t[:, None] * w)], axis=1)
    np.testing.assert_allclose(emb(t), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="dim must be even"):
        SinusoidalEmbedding(5)


def test_unet_refuses_bad_conditioning():
    net = tiny_unet(num_classes=3)
    x = np.zeros((2, 1, 4, 4))
    with pytest.raises(TypeError, match="t "):
        net.forward(x)
    with pytest.raises(ValueError, match="t must"):
        net.forward(x, t=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="labels"):
        net.forward(x, t=1, labels=np.array([0, 4]))
    with pytest.raises(ValueError, match="divisible"):
        net.forward(np.zeros((2, 1, 5, 4)), t=1)
    with pytest.raises(ValueError, match="channels"):
        net.forward(np.zeros((2, 2, 4, 4)), t=1)
    with pytest.raises(ValueError, match="unconditional"):
        tiny_unet().forward(x, t=1, labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="groups"):
        UNet(1, 6, (1, 2), groups=4)


def test_unet_keeps_float32_and_is_per_sample():
    net = UNet(1, 8, (1, 2), groups=4, rng=0)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    y = net(x, t=np.array([0, 500, 999]))
    assert y.dtype == np.float32 and y.shape == x.shape
    rows = np.concatenate([net(x[i:i + 1], t=np.array([[0, 500, 999][i]])) for i in range(3)])
    np.testing.assert_allclose(y, rows, rtol=1e-5, atol=1e-6)
