"""ViT (Dosovitskiy et al. 2021, §3.1): the whole model against a PyTorch ViT built from
nn.TransformerEncoderLayer (pre-norm, GELU) with the same arrays — logits, every gradient and the
image's cotangent — for both poolings; shapes and parameters of each pooling; the registry builder;
a short learning run on the digits; errors."""
import numpy as np
import pytest

from nograd import AdamW, Backprop
from nograd.data import load_digits
from nograd.models import ViT, get_model


def _torch_vit(torch, model, x):
    """PyTorch logits for ``x`` with ``model``'s arrays, and the leaf tensors keyed like model.params."""
    p = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in model.params.items()}
    nn = torch.nn
    D = model.dim
    xt = torch.from_numpy(x).requires_grad_(True)
    ph, pw = model._children["patch"].patch_size
    t = torch.nn.functional.conv2d(xt, p["patch.weight"], p["patch.bias"], stride=(ph, pw))
    t = t.flatten(2).transpose(1, 2)                                   # (N, L, D), row-major grid
    if model.pool == "cls":
        t = torch.cat([p["cls_token"].expand(x.shape[0], 1, D), t], dim=1)
    h = t + p["pos.weight"]
    for i in range(model.depth):
        b = f"blocks.{i}."
        hidden = p[b + "mlp.0.weight"].shape[0]
        layer = nn.TransformerEncoderLayer(D, model._children["blocks"][i]._children["attn"].num_heads,
                                           hidden, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True, dtype=torch.float64)
        tensors = {"self_attn.in_proj_weight": "attn.in_proj.weight",
                   "self_attn.in_proj_bias": "attn.in_proj.bias",
                   "self_attn.out_proj.weight": "attn.out_proj.weight",
                   "self_attn.out_proj.bias": "attn.out_proj.bias",
                   "linear1.weight": "mlp.0.weight", "linear1.bias": "mlp.0.bias",
                   "linear2.weight": "mlp.2.weight", "linear2.bias": "mlp.2.bias",
                   "norm1.weight": "ln1.weight", "norm1.bias": "ln1.bias",
                   "norm2.weight": "ln2.weight", "norm2.bias": "ln2.bias"}
        h = torch.func.functional_call(layer, {k: p[b + v] for k, v in tensors.items()}, (h,))
    h = torch.nn.functional.layer_norm(h, (D,), p["norm.weight"], p["norm.bias"], eps=1e-5)
    z = h[:, 0] if model.pool == "cls" else h.mean(dim=1)
    return xt, p, z @ p["head.weight"].T + p["head.bias"]


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_matches_a_pytorch_vit_float64(pool):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    model = ViT((4, 6), 2, 2, 5, dim=8, depth=2, heads=2, mlp_ratio=2, pool=pool, rng=rng, dtype=np.float64)
    for k, v in model.params.items():                      # every array off its init
        v += rng.normal(0, 0.3, v.shape)
    x = rng.standard_normal((3, 2, 4, 6))
    dy = rng.standard_normal((3, 5))
    y, cache = model.forward(x)
    dx, grads = model.backward(cache, dy)
    xt, p, yt = _torch_vit(torch, model, x)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    for k in model.params:
        np.testing.assert_allclose(grads[k], p[k].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


def test_shapes_and_parameters_of_each_pooling():
    x = np.random.default_rng(0).random((5, 3, 8, 4)).astype(np.float32)
    cls = ViT((8, 4), 2, 3, 7, dim=12, depth=2, heads=3, rng=0)
    mean = ViT((8, 4), 2, 3, 7, dim=12, depth=2, heads=3, pool="mean", rng=0)
    assert cls.params["cls_token"].shape == (1, 1, 12) and "cls_token" not in mean.params
    assert cls.params["pos.weight"].shape == (9, 12) and mean.params["pos.weight"].shape == (8, 12)
    assert cls.params["blocks.1.mlp.0.weight"].shape == (24, 12)           # mlp_ratio 2
    for model in (cls, mean):
        y, cache = model.forward(x)
        assert y.shape == (5, 7) and y.dtype == np.float32
        dx, grads = model.backward(cache, np.ones_like(y))
        assert dx.shape == x.shape and set(grads) == set(model.params)


def test_class_token_pool_reads_the_class_token_and_mean_pool_reads_every_token():
    rng = np.random.default_rng(2)
    x = rng.random((2, 1, 4, 4))
    # "cls" pooling: the class token's own array reaches the logits (eq. 4: y = LN(z_L^0))
    cls = ViT(4, 2, 1, 3, dim=4, depth=1, heads=2, rng=0, dtype=np.float64)
    y0 = cls(x)
    cls._own["cls_token"] += 0.5        # a constant shift alone would vanish in the LayerNorms
    assert np.abs(cls(x) - y0).max() < 1e-12
    cls._own["cls_token"] += rng.normal(0, 0.5, (1, 1, 4))
    assert np.abs(cls(x) - y0).max() > 1e-3
    mean = ViT(4, 2, 1, 3, dim=4, depth=1, heads=2, pool="mean", rng=0, dtype=np.float64)
    y, cache = mean.forward(x)
    # the head's input is the mean over the 4 tokens of the final LayerNorm's output
    h = mean._children["norm"](mean._children["blocks"](mean._children["pos"](mean._children["patch"](x))))
    np.testing.assert_allclose(y, mean._children["head"](h.mean(axis=1)), rtol=1e-12)


def test_registry_builder():
    model = get_model("vit", (1, 8, 8), 10, rng=0)
    assert isinstance(model, ViT) and model._children["patch"].patch_size == (4, 4)
    assert model.pool == "cls" and model.depth == 4 and model.dim == 64
    y = model(np.zeros((3, 1, 8, 8), np.float32))
    assert y.shape == (3, 10)
    small = get_model("vit", (1, 8, 8), 10, rng=0, patch_size=2, dim=8, depth=1, heads=2, pool="mean")
    assert small.num_tokens == 16
    a, b = get_model("vit", (1, 8, 8), 10, rng=3), get_model("vit", (1, 8, 8), 10, rng=3)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    with pytest.raises(ValueError, match="C, H, W"):
        get_model("vit", (64,), 10)


def test_loss_falls_on_a_digits_subset():
    X, y, _, _ = load_digits(flatten=False)
    X, y = X[:256], y[:256]
    model = ViT(8, 4, 1, 10, dim=32, depth=1, heads=2, pool="mean", rng=0)
    opt, rule, rng = AdamW(model.params, lr=3e-3), Backprop(), np.random.default_rng(0)
    losses = []
    for _ in range(8):
        for i in range(0, len(y), 32):
            grads, info = rule.grads(model, X[i:i + 32], y[i:i + 32], rng=rng)
            opt.step(grads)
            losses.append(float(info["loss"]))
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8])
    assert np.mean(model(X).argmax(axis=1) == y) > 0.8


def test_errors():
    model = ViT(8, 4, 1, 10, dim=8, depth=1, heads=2, rng=0)
    with pytest.raises(ValueError, match="x"):
        model.forward(np.zeros((2, 1, 6, 6), np.float32))              # wrong image size
    with pytest.raises(ValueError, match="x"):
        model.forward(np.zeros((2, 8, 8), np.float32))                 # no channel axis
    with pytest.raises(ValueError, match="dy"):
        y, cache = model.forward(np.zeros((2, 1, 8, 8), np.float32))
        model.backward(cache, np.zeros((2, 9), np.float32))
    with pytest.raises(ValueError, match="pool"):
        ViT(8, 4, 1, 10, pool="max")
    with pytest.raises(ValueError, match="divisible"):
        ViT(8, 3, 1, 10)
    with pytest.raises(ValueError, match="dropout"):
        ViT(8, 4, 1, 10, dropout=1.0)
    with pytest.raises(ValueError, match="cls_token"):
        model.jvp(np.zeros((2, 1, 8, 8)), None, {"cls_token": np.zeros((1, 8))})
